#!/usr/bin/env bash
# Starts a private `sandbar serve` (unique data dir, instance, subnet and
# ports), points the official SDKs at it with `sandbar env`, runs the platform
# suites (tests/e2e/platform: the seed program and its Python twin, lifecycle,
# list, public URLs, private sandboxes, egress by address and by name
# against a test host of its own, timeouts, template builds with images
# from registries of its own), stops the server
# and checks that nothing of that instance is left on the host.
#
#   tests/e2e/run-platform.sh
#   E2E_SANDBAR_BIN=/path/to/sandbar   use that binary instead of building
#   E2E_ENVD_BIN=/path/to/envd         the envd put into sandboxes
#   E2E_INTERPRETER_BIN=/path/to/sandbar-interpreter
#                                      the code-interpreter server put into code-interpreter-v1 sandboxes
#   E2E_TEMPLATES_DIR=/dir             built templates (default /var/lib/sandbar/templates;
#                                      base and code-interpreter-v1 are built there if missing)
#   E2E_SUITES="js python cli"         which platform suites
#   E2E_WITH_SDK_SUITES=1              also run the envd suites (js/, python/) against this server
#   E2E_PYTEST_ARGS="-k private"       extra pytest arguments
#   E2E_JS_FILES="platform/x.test.mjs" narrow the JS suite
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"
# shellcheck source=lib/test_registry.sh
source "$here/lib/test_registry.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root: sandbar makes namespaces, cgroups and nftables tables"
ensure_sdks

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [[ -z "${E2E_SANDBAR_BIN:-}" || -z "${E2E_ENVD_BIN:-}" || -z "${E2E_INTERPRETER_BIN:-}" ]]; then
  log "building sandbar, envd and sandbar-interpreter"
  (cd "$repo" && cargo build -p sandbar -p envd -p sandbar-interpreter)
fi
sandbar="${E2E_SANDBAR_BIN:-$target_dir/debug/sandbar}"
envd="${E2E_ENVD_BIN:-$target_dir/debug/envd}"
interpreter="${E2E_INTERPRETER_BIN:-$target_dir/debug/sandbar-interpreter}"
[[ -x "$sandbar" ]] || die "sandbar binary not found: $sandbar"
[[ -x "$envd" ]] || die "envd binary not found: $envd"
[[ -x "$interpreter" ]] || die "sandbar-interpreter binary not found: $interpreter"
templates="${E2E_TEMPLATES_DIR:-/var/lib/sandbar/templates}"

for t in base code-interpreter-v1; do
  "$sandbar" --templates-dir "$templates" template build "$t"
done

# --- a unique server ----------------------------------------------------------
rand() { od -An -N"$1" -tu"$1" /dev/urandom | tr -d ' '; }
instance="e$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-5)"
subnet="10.$((100 + $(rand 1) % 100)).$(( ($(rand 1) % 64) * 4 )).0/22"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port="$(free_port)"; https_port="$(free_port)"; http_port="$(free_port)"
work="$(mktemp -d -t sandbar-platform.XXXXXX)"
data="$work/data"
server_log="$work/serve.log"
server_pid=""

leaks() {
  local found=0
  if ip -o link show | grep -q "sb${instance}-"; then
    echo "LEAK: veths of instance $instance:"; ip -o link show | grep "sb${instance}-"; found=1
  fi
  if nft list table inet "sandbar_${instance}" >/dev/null 2>&1; then
    echo "LEAK: nftables table inet sandbar_${instance}"; found=1
  fi
  if [[ -e "/run/sandbar/$instance" ]]; then
    echo "LEAK: /run/sandbar/$instance:"; find "/run/sandbar/$instance" | head; found=1
  fi
  if grep -q -e "$data" -e "/run/sandbar/$instance/" /proc/mounts; then
    echo "LEAK: mounts:"; grep -e "$data" -e "/run/sandbar/$instance/" /proc/mounts; found=1
  fi
  local cg
  cg="$(find /sys/fs/cgroup -maxdepth 3 -name "sandbar-${instance}" 2>/dev/null || true)"
  if [[ -n "$cg" ]]; then
    echo "LEAK: cgroups:"; echo "$cg"; found=1
  fi
  local procs
  procs="$(ps -eo pid=,args= | grep -F -e "$data" | grep -v -e grep -e "$$" || true)"
  if [[ -n "$procs" ]]; then
    echo "LEAK: processes:"; echo "$procs"; found=1
  fi
  return "$found"
}

# --- test hosts for the egress tests --------------------------------------
# A web server in a network namespace of its own (on a random /30 of
# 172.31/16, declared public to this server), and a DNS server for the test
# zone on loopback that the server's forwarder asks (other names go on to
# this host's own resolver, for the registries).
egress_ns="sbe2e-$instance"
egress_veth="sbe2e$instance"
egress_base=$(( (172 << 24) + (31 << 16) + ($(rand 2) % 16384) * 4 ))
ip4() { echo "$(( $1 >> 24 & 255 )).$(( $1 >> 16 & 255 )).$(( $1 >> 8 & 255 )).$(( $1 & 255 ))"; }
egress_net="$(ip4 "$egress_base")/30"
egress_gw="$(ip4 $((egress_base + 1)))"
egress_web="$(ip4 $((egress_base + 2)))"
egress_dns_port="$(free_port)"
egress_pids=()

stop_egress_hosts() {
  local pid
  for pid in "${egress_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${egress_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip link del "$egress_veth" 2>/dev/null || true
  ip netns del "$egress_ns" 2>/dev/null || true
}

start_egress_hosts() {
  ip netns add "$egress_ns"
  ip link add "$egress_veth" type veth peer name eth0 netns "$egress_ns"
  ip addr add "$egress_gw/30" dev "$egress_veth"
  ip link set "$egress_veth" up
  ip -n "$egress_ns" addr add "$egress_web/30" dev eth0
  ip -n "$egress_ns" link set eth0 up
  ip -n "$egress_ns" link set lo up
  ip -n "$egress_ns" route add default via "$egress_gw"
  ip netns exec "$egress_ns" python3 "$here/lib/egress_hosts.py" web "$egress_web" &
  egress_pids+=($!)
  local resolver
  resolver="$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf)"
  python3 "$here/lib/egress_hosts.py" dns "127.0.0.1:$egress_dns_port" \
    "allowed.e2e.test=$egress_web,denied.e2e.test=$egress_web" "$resolver" &
  egress_pids+=($!)
  for _ in $(seq 100); do
    curl -s -o /dev/null -m 1 "http://$egress_web/" && return 0
    sleep 0.1
  done
  die "the egress test host does not answer"
}

stop_server() {
  local status=$?
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    log "stopping sandbar (SIGTERM)"
    kill -TERM "$server_pid"
    for _ in $(seq 200); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "sandbar did not stop within 20 s of SIGTERM; killing it" >&2
      kill -KILL "$server_pid" || true
      status=1
    fi
    wait "$server_pid" 2>/dev/null || { echo "sandbar exited with an error" >&2; status=1; }
  fi
  stop_egress_hosts
  registries_stop
  if ip netns list | grep -q "^$egress_ns\b"; then echo "LEAK: namespace $egress_ns"; status=1; fi
  if [[ -n "$server_pid" ]]; then
    log "checking for leftovers of instance $instance"
    if leaks; then echo "nothing left behind"; else status=1; fi
  fi
  if [[ ( $status -ne 0 || -n "${E2E_KEEP_SERVER_LOG:-}" ) && -s "$server_log" ]]; then
    mkdir -p "$here/.deps" && cp "$server_log" "$here/.deps/platform-serve.log"
    echo "--- last lines of the server log (kept in tests/e2e/.deps/platform-serve.log)" >&2
    tail -n 40 "$server_log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

start_egress_hosts
export E2E_EGRESS_WEB="$egress_web"
log "starting the test registries (an image of a bare Debian 12)"
registries_start "$work" || die "the test registries did not start"
export E2E_REGISTRY_AUTH="$REGISTRY_AUTH" E2E_REGISTRY_USER="$REGISTRY_USER" E2E_REGISTRY_PASSWORD="$REGISTRY_PASSWORD"
log "starting sandbar: instance $instance, subnet $subnet, API :$api_port, HTTPS :$https_port"
serve_args=(--instance "$instance" --subnet "$subnet"
  --api-listen "127.0.0.1:$api_port" --https-listen "127.0.0.1:$https_port" --http-listen "127.0.0.1:$http_port"
  --envd "$envd" --interpreter "$interpreter" --public-range "$(registry_public_ranges),$egress_net"
  --dns-upstream "127.0.0.1:$egress_dns_port"
  --registry-mirror "docker.io=http://$REGISTRY_OPEN,$REGISTRY_AUTH=http://$REGISTRY_AUTH")
"$sandbar" --data-dir "$data" --templates-dir "$templates" serve "${serve_args[@]}" >"$server_log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
  kill -0 "$server_pid" 2>/dev/null || die "sandbar exited at start: $(tail -n 20 "$server_log")"
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api_port/health" || true)" == 200 ]] && break
  sleep 0.1
done

"$sandbar" --data-dir "$data" env >"$work/env.sh"
# shellcheck disable=SC1091
source "$work/env.sh"
export E2E_SANDBAR_ENV="$work/env.sh" E2E_TARGET=sandbar E2E_CODE_INTERPRETER=1
# Whether the server can carry processes (the criu it runs, checked as it
# checks it): the persistence tests then expect them in snapshots and forks
# rather than accepting a boot on the files.
if /usr/local/sbin/criu check >/dev/null 2>&1; then export E2E_CRIU=1; else export E2E_CRIU=0; fi
# A second team (isolation) and a team with a limit of one sandbox (quotas).
"$sandbar" --data-dir "$data" teams create e2e-other >/dev/null
"$sandbar" --data-dir "$data" teams create e2e-small --max-sandboxes 1 --max-lifetime 3600 >/dev/null
E2E_OTHER_TEAM_KEY="$("$sandbar" --data-dir "$data" keys create other --team e2e-other 2>/dev/null)"
E2E_SMALL_TEAM_KEY="$("$sandbar" --data-dir "$data" keys create small --team e2e-small 2>/dev/null)"
export E2E_OTHER_TEAM_KEY E2E_SMALL_TEAM_KEY
unset E2B_DEBUG E2B_SANDBOX_URL E2B_ACCESS_TOKEN E2E_ENVD_ACCESS_TOKEN

status=0
suites="${E2E_SUITES:-js python cli}"
cd "$here"
if [[ " $suites " == *" js "* ]]; then
  log "platform suite, JS"
  # shellcheck disable=SC2086 # a list of paths
  node --test --test-concurrency=1 --test-reporter=spec ${E2E_JS_FILES:-platform/} || status=1
fi
if [[ " $suites " == *" python "* ]]; then
  log "platform suite, Python"
  py_args=()
  mapfile -t py_args < <(python3 -c 'import shlex, sys; sys.stdout.writelines(a + "\n" for a in shlex.split(sys.argv[1]))' "${E2E_PYTEST_ARGS:-}")
  .venv/bin/python -m pytest platform/ "${py_args[@]}" || status=1
fi
if [[ " $suites " == *" cli "* ]]; then
  log "platform suite, CLI"
  cli_check() { # description, command...
    local what="$1"; shift
    if "$@"; then echo "ok - $what"; else echo "not ok - $what"; status=1; fi
  }
  sb=("$sandbar" --data-dir "$data")
  # doctor, with the flags the server runs with: this host can run it, and
  # the ports are the running server's; then a port held by another
  # program is a problem with its holder and the fix.
  doctor_out="$("$sandbar" --data-dir "$data" --templates-dir "$templates" doctor "${serve_args[@]}" 2>&1)" && code=0 || code=$?
  cli_check "doctor finds no problem on this host with the suite's flags" \
    bash -c '[[ $1 == 0 ]] && grep -q "^no problems found" <<<"$2"' _ "$code" "$doctor_out"
  cli_check "doctor checks root, user namespaces, cgroups, nftables, forwarding, the domain and the disk" \
    bash -c 'for w in "root" "user namespaces" "cgroup" "nftables" "forwarding" "resolves" "free for"; do grep -qi "^  ok  .*$w" <<<"$1" || { echo "no ok line about $w"; exit 1; }; done' _ "$doctor_out"
  cli_check "doctor knows the running server's ports" \
    grep -q "^  ok    HTTPS (edge proxy) port 127.0.0.1:$https_port is served by the running sandbar" <<<"$doctor_out"
  held_port="$(free_port)"
  python3 -c 'import socket, sys, time; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(120)' "$held_port" &
  holder=$!
  for _ in $(seq 50); do [[ -n "$(ss -Htln "sport = :$held_port")" ]] && break; sleep 0.1; done
  held_args=("${serve_args[@]}")
  for i in "${!held_args[@]}"; do
    [[ ${held_args[$i]} == --https-listen ]] && held_args[i+1]="127.0.0.1:$held_port"
  done
  doctor_out="$("$sandbar" --data-dir "$data" --templates-dir "$templates" doctor "${held_args[@]}" 2>&1)" && code=0 || code=$?
  kill "$holder"; wait "$holder" 2>/dev/null || true
  cli_check "doctor: a port held by another program fails, naming it and the fix" \
    bash -c '[[ $1 == 1 ]] && grep -q "^  FAIL  HTTPS (edge proxy) port 127.0.0.1:$3 is in use by python3 (pid $4)" <<<"$2" && grep -q "fix: stop it .* --https-listen" <<<"$2" && grep -q "^1 problem found" <<<"$2" || { echo "exit $1"; sed "s/^/    /" <<<"$2"; exit 1; }' _ "$code" "$doctor_out" "$held_port" "$holder"
  id="$("${sb[@]}" sandbox create -m cli=yes -e GREETING=hi)" || id=""
  cli_check "sandbox create prints an id" grep -Eq '^[a-z0-9]{20}$' <<<"$id"
  cli_check "sandbox ls shows it" grep -q "$id .*cli=yes" <<<"$("${sb[@]}" sandbox ls)"
  # Colours only on a terminal (script(1) gives the listing one), and never with NO_COLOR.
  no_escape() { ! grep -q $'\e'; }
  on_tty() { script -qec "$(printf '%q ' "$@")" /dev/null; }
  cli_check "colours: none into a pipe" no_escape <<<"$("${sb[@]}" sandbox ls)"
  cli_check "colours: the state coloured on a terminal" grep -q $'\e\\[32mrunning' <<<"$(on_tty "${sb[@]}" sandbox ls)"
  cli_check "colours: none on a terminal with NO_COLOR" no_escape <<<"$(NO_COLOR=1 on_tty "${sb[@]}" sandbox ls)"
  cli_check "sandbox exec runs with the sandbox's env" \
    test "$("${sb[@]}" sandbox exec "$id" 'echo "$GREETING $(whoami)"')" == "hi user"
  "${sb[@]}" sandbox exec "$id" 'exit 7' && code=0 || code=$?
  cli_check "sandbox exec exits with the command's status" test "$code" == 7
  "${sb[@]}" sandbox exec "$id" 'getent hosts allowed.e2e.test >/dev/null || true' >/dev/null
  cli_check "sandbox logs shows the egress log: the name asked, its verdict and answer" \
    grep -q " dns allowed.e2e.test A: allowed -> " <<<"$("${sb[@]}" sandbox logs "$id")"
  cli_check "sandbox logs --json is one JSON object per entry" \
    python3 -c 'import json, sys; rows = [json.loads(l) for l in sys.stdin]; sys.exit(not any("allowed.e2e.test" in r["message"] for r in rows))' \
    < <("${sb[@]}" sandbox logs "$id" --json)
  cli_check "sandbox ls --json is one JSON object per sandbox" \
    python3 -c 'import json, sys; rows = [json.loads(l) for l in sys.stdin]; sys.exit(not any(r["sandboxID"] == sys.argv[1] for r in rows))' "$id" \
    < <("${sb[@]}" sandbox ls --json)
  cli_check "sandbox shell: a terminal in the sandbox (tmux)" "$here/cli/shell.sh" "$id" "${sb[@]}"
  "${sb[@]}" sandbox exec "$id" 'sleep 300 >/dev/null 2>&1 &' >/dev/null
  cli_check "sandbox pause" "${sb[@]}" sandbox pause "$id"
  cli_check "sandbox ls --state paused lists it" grep -q "$id" <<<"$("${sb[@]}" sandbox ls --state paused)"
  cli_check "sandbox resume" grep -qx "resumed $id" <<<"$("${sb[@]}" sandbox resume "$id")"
  cli_check "a full pause kept its processes" \
    test "$("${sb[@]}" sandbox exec "$id" 'pgrep -x sleep >/dev/null && echo kept')" == kept
  cli_check "sandbox metrics prints samples" grep -Eq '^[0-9]{4}-.* [0-9.]+ ' <<<"$("${sb[@]}" sandbox metrics "$id")"
  cli_check "sandbox kill" "${sb[@]}" sandbox kill "$id"
  cli_check "a killed sandbox is gone" bash -c "! \"\$@\" sandbox kill $id 2>/dev/null" _ "${sb[@]}"
  key="$("${sb[@]}" keys create --name e2e 2>/dev/null)"
  cli_check "keys create prints a key" grep -Eq '^e2b_[0-9a-f]{40}$' <<<"$key"
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-KEY: $key" "$E2B_API_URL/v2/sandboxes")"
  cli_check "the new key works" test "$code" == 200
  cli_check "keys revoke" "${sb[@]}" keys revoke "${key:0:10}"
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-KEY: $key" "$E2B_API_URL/v2/sandboxes")"
  cli_check "a revoked key gets 401" test "$code" == 401

  # Templates: sandbar's CLI from a Dockerfile, then the official E2B CLI.
  ctx="$work/cli-template"
  mkdir -p "$ctx"
  cp -r "$here/platform/fixtures/template/." "$ctx/"
  printf 'FROM e2bdev/base\nENV GREETING="from the cli %s"\nWORKDIR /srv\nCOPY app /srv/app/\nRUN echo "built: $GREETING" > /srv/built.txt\nCMD python3 -m http.server 4000\n' "$instance" >"$ctx/Dockerfile"
  out="$("${sb[@]}" template build "cli-$instance" --dockerfile "$ctx/Dockerfile" --context "$ctx" \
    --ready-cmd '[ -n "$(ss -Htln sport = :4000)" ]' 2>&1)" || { echo "$out"; out=""; }
  cli_check "template build --dockerfile shows each step and its output" \
    bash -c 'grep -q "^\[5/7\] COPY app /srv/app/" <<<"$1" && grep -q "copied 3 file(s)" <<<"$1"' _ "$out"
  cli_check "template build again: every step cached" \
    bash -c 'out="$("$@" 2>&1)" && ! grep -q "^\[" <<<"$out" && grep -q "^CACHED \[7/7\]" <<<"$out"' _ "${sb[@]}" template build "cli-$instance" --dockerfile "$ctx/Dockerfile" --context "$ctx" \
    --ready-cmd '[ -n "$(ss -Htln sport = :4000)" ]'
  cli_check "template ls lists it" grep -q "^cli-$instance .* ready" <<<"$("${sb[@]}" template ls)"
  cli_check "template tags --add" grep -q "^v1 " <<<"$("${sb[@]}" template tags "cli-$instance" --add v1)"
  id="$("${sb[@]}" sandbox create --template "cli-$instance:v1")" || id=""
  cli_check "a sandbox of it has its files and env" \
    test "$("${sb[@]}" sandbox exec "$id" 'cat /srv/built.txt; pwd')" == "$(printf 'built: from the cli %s\n/srv' "$instance")"
  cli_check "its start command serves" \
    test "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$data/tls/ca.pem" "https://4000-$id.$E2B_DOMAIN/")" == 200
  cli_check "template build: a failing step exits non-zero with the step" \
    bash -c '! out="$("$@" 2>&1)" && grep -q "exit code 9" <<<"$out"' _ "${sb[@]}" template build "cli-fail-$instance" \
    --dockerfile <(printf 'FROM e2bdev/base\nRUN exit 9\n')
  e2b=(node_modules/.bin/e2b)
  export E2B_ACCESS_TOKEN="$E2B_API_KEY"
  cli_check "e2b sandbox list sees it" grep -q "$id" <<<"$("${e2b[@]}" sandbox list 2>&1)"
  cli_check "e2b sandbox info" grep -q "$id" <<<"$("${e2b[@]}" sandbox info "$id" 2>&1)"
  cli_check "e2b sandbox exec" test "$("${e2b[@]}" sandbox exec "$id" cat /srv/built.txt 2>&1)" == "built: from the cli $instance"
  cli_check "e2b sandbox pause" grep -q "has been paused" <<<"$("${e2b[@]}" sandbox pause "$id" 2>&1)"
  cli_check "e2b sandbox resume" grep -q "has been resumed" <<<"$("${e2b[@]}" sandbox resume "$id" 2>&1)"
  cli_check "e2b sandbox metrics" grep -q "CPU:" <<<"$("${e2b[@]}" sandbox metrics "$id" 2>&1)"
  cli_check "e2b sandbox kill" grep -q "has been killed" <<<"$("${e2b[@]}" sandbox kill "$id" 2>&1)"
  (cd "$ctx" && "$here/${e2b[0]}" template create "e2b-$instance" --dockerfile Dockerfile >"$work/e2b-create.log" 2>&1) || cat "$work/e2b-create.log"
  cli_check "e2b template create builds the Dockerfile" grep -q "e2b-$instance" <<<"$("${e2b[@]}" template list 2>&1)"
  "${e2b[@]}" template delete "e2b-$instance" -y >/dev/null 2>&1 || true
  cli_check "e2b template delete" \
    bash -c 'l="$("$3" template list 2>&1)" && grep -q "$2" <<<"$l" && ! grep -q "$1" <<<"$l"' _ "e2b-$instance" "cli-$instance" "${e2b[0]}"
  cli_check "template rm" "${sb[@]}" template rm "cli-$instance"
  unset E2B_ACCESS_TOKEN
fi
if [[ "${E2E_WITH_SDK_SUITES:-0}" == 1 ]]; then
  log "the envd suites against this server"
  E2E_PYTEST_ARGS="" run_suites "$work" || status=1
fi
exit "$status"
