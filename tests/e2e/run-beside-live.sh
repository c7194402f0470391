#!/usr/bin/env bash
# The test suite beside a sandbar that is in use: a part of the suite (the
# platform's JS and CLI suites, a runtime integration test) runs while a live
# server, as setup.sh starts it, creates and kills sandboxes all along; the
# suite's leak check must pass (the live server's churn is not a leak), and
# it must still catch a real leftover and name a stale one at the start.
#
# The live server is the one setup.sh started when it runs (instance `sb`,
# data dir /var/lib/sandbar); otherwise a stand-in with setup.sh's instance
# and subnet defaults, on free ports and a scratch data dir.
#
#   E2E_SANDBAR_BIN, E2E_ENVD_BIN, E2E_INTERPRETER_BIN   binaries (as run-platform.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root"

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
sandbar="${E2E_SANDBAR_BIN:-$target_dir/debug/sandbar}"
envd="${E2E_ENVD_BIN:-$target_dir/debug/envd}"
interpreter="${E2E_INTERPRETER_BIN:-$target_dir/debug/sandbar-interpreter}"
templates="${E2E_TEMPLATES_DIR:-/var/lib/sandbar/templates}"
work="$(mktemp -d -t sandbar-beside-live.XXXXXX)"
standin_pid="" churn_pid=""
fake="zq$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"

finish() {
  local status=$?
  [[ -n "$churn_pid" ]] && kill "$churn_pid" 2>/dev/null && wait "$churn_pid" 2>/dev/null
  ip link del "sb${fake}-1" 2>/dev/null || true
  ip link del "sb${fake}-2" 2>/dev/null || true
  if [[ -n "$standin_pid" ]]; then
    kill -TERM "$standin_pid" 2>/dev/null || true
    wait "$standin_pid" 2>/dev/null || { echo "the stand-in server did not stop cleanly" >&2; status=1; }
  fi
  rm -rf "$work"
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the live server ------------------------------------------------------------
if [[ "$("$repo/scripts/host-state.sh" --live)" == *sb* ]] && [[ -r /var/lib/sandbar/serve.json ]]; then
  log "using the live sandbar that setup.sh started (instance sb)"
  live_data=/var/lib/sandbar
  live_instance=sb
else
  live_data="$work/live"
  live_instance=sb
  subnet=10.201.0.0/16   # setup.sh's default
  log "starting a stand-in for setup.sh's server (instance sb, subnet $subnet)"
  "$sandbar" --data-dir "$live_data" --templates-dir "$templates" serve \
    --instance sb --subnet "$subnet" --api-listen "127.0.0.1:$(free_port)" \
    --https-listen "127.0.0.1:$(free_port)" --http-listen "127.0.0.1:$(free_port)" \
    --envd "$envd" --interpreter "$interpreter" >"$work/live.log" 2>&1 &
  standin_pid=$!
  for _ in $(seq 300); do
    [[ -s "$live_data/serve.json" ]] && "$sandbar" --data-dir "$live_data" env >/dev/null 2>&1 && break
    kill -0 "$standin_pid" 2>/dev/null || die "the stand-in did not start: $(tail -n 20 "$work/live.log")"
    sleep 0.1
  done
fi
live_api="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_url"])' "$live_data/serve.json")"
live_key="$(cat "$live_data/api-key")"
for _ in $(seq 100); do curl -fsS -o /dev/null "$live_api/health" && break; sleep 0.1; done

# Creates and kills sandboxes on the live server until stopped; counts rounds.
churn() {
  local n=0 id
  while :; do
    id="$(curl -fsS -H "X-API-KEY: $live_key" -H 'Content-Type: application/json' \
      -d '{"templateID":"base","timeout":60}' "$live_api/sandboxes" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["sandboxID"])')" || { sleep 0.2; continue; }
    sleep 0.3
    curl -fsS -o /dev/null -X DELETE -H "X-API-KEY: $live_key" "$live_api/sandboxes/$id" && n=$((n + 1))
    echo "$n" >"$work/churn"
  done
}

# --- a stale leftover, named at the start ----------------------------------------
ip link add "sb${fake}-1" type veth peer name "sb${fake}-101"
"$repo/scripts/leak-check.sh" start "$work/leak" | tee "$work/start.out"
grep -q "instance $fake: 2 objects" "$work/start.out" || die "the leak check did not name the stale leftover of instance $fake"
grep -q "$live_instance" "$work/leak/live" || die "the live server's instance is not seen as live"
ip link del "sb${fake}-1"

churn 2>"$work/churn.err" &
churn_pid=$!

log "part of the suite, while the live server works"
status=0
E2E_SANDBAR_BIN="$sandbar" E2E_ENVD_BIN="$envd" E2E_INTERPRETER_BIN="$interpreter" \
  E2E_SUITES="js cli" E2E_JS_FILES="platform/platform.test.mjs" "$here/run-platform.sh" || status=1
(cd "$repo" && cargo test --locked -p sandbar-runtime --test sandbox -- --test-threads 2) || status=1

kill "$churn_pid"; wait "$churn_pid" 2>/dev/null || true; churn_pid=""
rounds="$(cat "$work/churn" 2>/dev/null || echo 0)"
[[ "$status" == 0 ]] || die "the suite failed beside the live server"
[[ "$rounds" -gt 0 ]] || die "the live server made no sandboxes during the run: the test proves nothing ($(tail -n 5 "$work/churn.err"))"
echo "the live server created and killed $rounds sandboxes meanwhile"

log "the leak check: the live server's churn is not a leak"
"$repo/scripts/host-state.sh" | grep "^$live_instance " >"$work/live-after" || true
grep "^$live_instance " "$work/leak/before" >"$work/live-before" || true
if cmp -s "$work/live-before" "$work/live-after"; then
  echo "(the live server's objects happen to match; its churn was still excluded by instance)"
else
  echo "the live server's objects moved on during the run (as issue 16 saw): $(diff "$work/live-before" "$work/live-after" | grep -c '^[<>]') lines"
fi
"$repo/scripts/leak-check.sh" end "$work/leak"

log "the leak check still catches a real leftover"
ip link add "sb${fake}-2" type veth peer name "sb${fake}-102"
if "$repo/scripts/leak-check.sh" end "$work/leak" >"$work/end.out"; then
  cat "$work/end.out"; die "a leftover veth of instance $fake was not reported"
fi
grep -q "instance $fake:" "$work/end.out" || die "the leak was not named by its instance: $(cat "$work/end.out")"
ip link del "sb${fake}-2"
echo "ok - the leak check names instance $fake's leftover"
