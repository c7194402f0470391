#!/usr/bin/env bash
# Throughput and p99 of the proxy against nginx reverse-proxying the same
# backend, and against the backend directly, with wrk on loopback, over plain
# HTTP and TLS.
#
#   cargo build --release -p sandbar-proxy --example bench_proxy
#   crates/proxy/bench/compare.sh [SECONDS] [CONNECTIONS]
#
# The backend is an nginx answering a fixed body; the proxies route
# Host 3000-bench.sbx.test to it with kept-alive upstream connections.
set -euo pipefail

secs=${1:-10}
conns=${2:-64}
target_dir=${CARGO_TARGET_DIR:-$(dirname "$0")/../../../target}
bin=${BENCH_PROXY_BIN:-$target_dir/release/examples/bench_proxy}
host=3000-bench.sbx.test

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for conf in backend proxy; do
        [ -f "$work/$conf.pid" ] && kill "$(cat "$work/$conf.pid")" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend=$(free_port); nginx_http=$(free_port); nginx_tls=$(free_port)
sandbar_http=$(free_port); sandbar_tls=$(free_port)

"$bin" "127.0.0.1:$backend" "127.0.0.1:$sandbar_http" "127.0.0.1:$sandbar_tls" "$work/tls" sbx.test 2>"$work/sandbar.log" &
pids+=($!)
for _ in $(seq 50); do grep -q ready "$work/sandbar.log" && break; sleep 0.1; done

common="pid PIDFILE; error_log $work/error.log warn;
events { worker_connections 4096; }"
temp_paths="client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp; uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;"
mkdir -p "$work/tmp"

cat > "$work/backend.conf" <<CONF
worker_processes 1; ${common//PIDFILE/$work/backend.pid}
http { access_log off; keepalive_requests 1000000; $temp_paths
  server { listen 127.0.0.1:$backend; location / { return 200 "hello from the backend\n"; } } }
CONF
cat > "$work/proxy.conf" <<CONF
worker_processes auto; ${common//PIDFILE/$work/proxy.pid}
http { access_log off; keepalive_requests 1000000; $temp_paths
  upstream app { server 127.0.0.1:$backend; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_http; listen 127.0.0.1:$nginx_tls ssl;
    ssl_certificate $work/tls/server.pem; ssl_certificate_key $work/tls/server.key;
    location / {
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host;
    } } }
CONF
nginx -e "$work/error.log" -p "$work" -c "$work/backend.conf"
nginx -e "$work/error.log" -p "$work" -c "$work/proxy.conf"
sleep 0.3

# CPU time (clock ticks) used so far by the given processes.
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{t += $1} END {print t}'; }

run() { # name url pid...
    local name=$1 url=$2 out before after rps p99 cpu
    shift 2
    before=$(ticks "$@")
    out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Host: $host" "$url")
    after=$(ticks "$@")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    # CPU per request is steadier than req/s on a machine doing other work.
    cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v r="$rps" -v s="$secs" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / (r * s) }')
    printf '%-14s %10s req/s   p99 %-9s %6s us CPU/req\n' "$name" "$rps" "$p99" "$cpu"
    echo "$rps" > "$work/rps.$name"
}

curl -sf -H "Host: $host" "http://127.0.0.1:$sandbar_http/" >/dev/null
curl -sfk -H "Host: $host" "https://127.0.0.1:$sandbar_tls/" >/dev/null

echo "wrk -t2 -c$conns -d${secs}s on $(nproc) cores"
backend_pids=$(pgrep -P "$(cat "$work/backend.pid")")
nginx_pids=$(pgrep -P "$(cat "$work/proxy.pid")")
sandbar_pid=${pids[0]}
# shellcheck disable=SC2086 # word splitting of pid lists is intended
{
run direct "http://127.0.0.1:$backend/" $backend_pids
run nginx-http "http://127.0.0.1:$nginx_http/" $nginx_pids
run sandbar-http "http://127.0.0.1:$sandbar_http/" "$sandbar_pid"
run nginx-tls "https://127.0.0.1:$nginx_tls/" $nginx_pids
run sandbar-tls "https://127.0.0.1:$sandbar_tls/" "$sandbar_pid"
}
for t in http tls; do
    awk -v a="$(cat "$work/rps.sandbar-$t")" -v b="$(cat "$work/rps.nginx-$t")" -v t="$t" \
        'BEGIN { printf "sandbar/nginx %-4s %.1f%%\n", t, 100 * a / b }'
done
