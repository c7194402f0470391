#!/usr/bin/env bash
# sandbar's own restarts lose nothing: a clean stop (SIGTERM) pauses every
# sandbox (with its processes on disk where the server's criu works, else on
# its files) and the next start holds them paused; `kill -9` of the server
# does too (the next start finds the writable layers on disk). Driven
# with the official JS SDK (tests/e2e/restart/steps.mjs); after each stop the
# host holds nothing of the instance but its data dir.
#
#   E2E_SANDBAR_BIN, E2E_ENVD_BIN, E2E_INTERPRETER_BIN   binaries (as run-platform.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root"
ensure_sdks

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
sandbar="${E2E_SANDBAR_BIN:-$target_dir/debug/sandbar}"
envd="${E2E_ENVD_BIN:-$target_dir/debug/envd}"
interpreter="${E2E_INTERPRETER_BIN:-$target_dir/debug/sandbar-interpreter}"
templates="${E2E_TEMPLATES_DIR:-/var/lib/sandbar/templates}"
instance="s$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-5)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port="$(free_port)"; https_port="$(free_port)"; http_port="$(free_port)"
subnet="10.$((100 + RANDOM % 100)).$(( (RANDOM % 64) * 4 )).0/22"
work="$(mktemp -d -t sandbar-restart.XXXXXX)"
data="$work/data"
export RESTART_STATE="$work/state.json"
server_pid=""

start() {
  "$sandbar" --data-dir "$data" --templates-dir "$templates" serve \
    --instance "$instance" --subnet "$subnet" --warm code-interpreter-v1=0 \
    --api-listen "127.0.0.1:$api_port" --https-listen "127.0.0.1:$https_port" --http-listen "127.0.0.1:$http_port" \
    --envd "$envd" --interpreter "$interpreter" >>"$work/serve.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 300); do
    kill -0 "$server_pid" 2>/dev/null || die "sandbar exited at start: $(tail -n 20 "$work/serve.log")"
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api_port/health" || true)" == 200 ]] && break
    sleep 0.1
  done
  "$sandbar" --data-dir "$data" env >"$work/env.sh"
  # shellcheck disable=SC1091
  source "$work/env.sh"
}

# Only the instance's data dir may remain: no mounts (the layer store is
# unmounted), loop devices, cgroups, veths, netns or processes.
nothing_but_files() {
  local left
  left="$("$repo/scripts/host-state.sh" | grep -e "^$instance " -e "$data" || true)"
  if [[ -n "$left" ]]; then echo "left on the host after the stop:"; echo "$left"; return 1; fi
  echo "ok - after the stop the host holds nothing of instance $instance but its files"
}

finish() {
  local status=$?
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true
  fi
  if [[ $status -ne 0 ]]; then tail -n 40 "$work/serve.log" >&2 || true; fi
  # The store image goes with the data dir; a store a failure left mounted first.
  umount -l "$data/store" 2>/dev/null || true
  rm -rf "$work"
  exit "$status"
}
trap finish EXIT

cd "$here"
# Whether the server carries processes across its stop (its criu, checked as
# it checks it): the steps then expect the same boot and processes.
if /usr/local/sbin/criu check >/dev/null 2>&1; then export E2E_CRIU=1; else export E2E_CRIU=0; fi
log "a server with two sandboxes (instance $instance)"
start
node restart/steps.mjs before

log "SIGTERM: sandboxes are paused (processes on disk with criu, else files)"
kill -TERM "$server_pid"; wait "$server_pid"; server_pid=""
nothing_but_files
start
node restart/steps.mjs afterStop

log "kill -9 of the server: the next start finds the files"
kill -KILL "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
start
node restart/steps.mjs afterCrash

log "a last clean stop"
kill -TERM "$server_pid"; wait "$server_pid"; server_pid=""
nothing_but_files
echo "sandbar's restarts lose nothing"
