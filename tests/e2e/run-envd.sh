#!/usr/bin/env bash
# Runs the end-to-end suites (official E2B SDKs, JS and Python) against a
# standalone envd on this machine. Needs root (envd switches users), node >= 20
# and python3 >= 3.9. See README.md.
#
#   tests/e2e/run-envd.sh              build envd, run both suites
#   E2E_ENVD_BIN=/path/to/envd ...     use that binary instead of building
#   E2E_ENVD_PORT=49984 ...            serve envd on another port
#   E2E_SUITES="js" ...                run only some suites (js, python)
#   E2E_JS_FILES="js/pty.test.mjs"     narrow the JS suite (paths under tests/e2e)
#   E2E_PYTEST_ARGS="-k stdin"         extra pytest arguments
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# 49983 is where the SDK's debug mode looks; another port is reached through
# the SDK's sandbox-URL override instead (E2E_ENVD_URL).
port="${E2E_ENVD_PORT:-49983}"

# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root: envd starts processes as other users"

ensure_sdks

# --- the `user` account envd runs commands as by default --------------------
if ! id user >/dev/null 2>&1; then
  log "creating the 'user' account"
  uid_opt=()
  getent passwd 1000 >/dev/null || uid_opt=(-u 1000)
  # Another process may create it at the same moment: accept that outcome.
  useradd -m -k /etc/skel -s /bin/bash "${uid_opt[@]}" user || id user >/dev/null
fi

# --- envd --------------------------------------------------------------------
if [[ -n "${E2E_ENVD_BIN:-}" ]]; then
  envd_bin="$E2E_ENVD_BIN"
else
  log "building envd"
  (cd "$repo" && cargo build -p envd)
  envd_bin="${CARGO_TARGET_DIR:-$repo/target}/debug/envd"
fi
[[ -x "$envd_bin" ]] || die "envd binary not found or not executable: $envd_bin"

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || ss -Hltn "sport = :$port" | grep -q .; then
  die "port $port is already in use (another envd?): stop it first"
fi

work="$(mktemp -d -t sandbar-e2e.XXXXXX)"
envd_pid=""
envd_log="$work/envd.log"
token="e2e-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# Every process envd started, found by walking the process tree from envd.
descendants() {
  local pid="$1" child
  for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

stop_envd() {
  local status=$?
  if [[ -n "$envd_pid" ]] && kill -0 "$envd_pid" 2>/dev/null; then
    local left
    left="$(descendants "$envd_pid" | tr '\n' ' ')"
    kill -TERM "$envd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$envd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$envd_pid" 2>/dev/null || true
    wait "$envd_pid" 2>/dev/null || true
    # Processes the tests left running (a test bug) or envd failed to reap.
    local survivors=()
    for pid in $left; do
      kill -0 "$pid" 2>/dev/null && survivors+=("$pid")
    done
    if ((${#survivors[@]})); then
      echo "run-envd: processes survived envd: ${survivors[*]}; killing them" >&2
      (IFS=,; ps -o pid,user,args -p "${survivors[*]}" >&2) || true
      kill -KILL "${survivors[@]}" 2>/dev/null || true
    fi
  fi
  if [[ $status -ne 0 && -s "$envd_log" ]]; then
    echo "--- last lines of envd's log ($envd_log copied to tests/e2e/.deps/envd.log)" >&2
    tail -n 30 "$envd_log" >&2
    mkdir -p "$here/.deps" && cp "$envd_log" "$here/.deps/envd.log"
  fi
  rm -rf "$work"
  exit "$status"
}
trap stop_envd EXIT
trap 'exit 130' INT TERM

# The init file: what the control plane would POST to /init.
python3 - "$here/fixtures/sandbox-envs.json" "$token" >"$work/init.json" <<'PY'
import json, sys
envs = json.load(open(sys.argv[1]))
json.dump({"accessToken": sys.argv[2], "envVars": envs, "defaultUser": "user"}, sys.stdout)
PY

log "starting $envd_bin on port $port"
ENVD_LOG="${ENVD_LOG:-info}" "$envd_bin" --port "$port" --init-file "$work/init.json" >"$envd_log" 2>&1 &
envd_pid=$!
for _ in $(seq 100); do
  kill -0 "$envd_pid" 2>/dev/null || die "envd exited at start: $(tail -n 20 "$envd_log")"
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)"
  [[ "$code" == 204 || "$code" == 200 ]] && break
  sleep 0.1
done
[[ "${code:-}" == 204 || "${code:-}" == 200 ]] || die "envd did not answer /health within 10 s (last status: ${code:-none})"

export E2E_TARGET=envd
export E2E_ENVD_ACCESS_TOKEN="$token"
if [[ "$port" != 49983 ]]; then export E2E_ENVD_URL="http://127.0.0.1:$port"; else unset E2E_ENVD_URL; fi
export E2B_DEBUG=true
unset E2B_SANDBOX_URL E2B_API_KEY E2B_ACCESS_TOKEN

status=0
run_suites "$work" || status=1

# Every test kills what it starts: anything envd still runs is a test's leak.
leftover="$(curl -sf -X POST -H 'Content-Type: application/json' -H "X-Access-Token: $token" \
  -d '{}' "http://127.0.0.1:$port/process.Process/List" | python3 -c '
import json, sys
for p in json.load(sys.stdin).get("processes", []):
    c = p.get("config", {})
    print("  pid", p.get("pid"), c.get("cmd"), " ".join(c.get("args", [])))
')" || leftover="  (could not list envd's processes)"
if [[ -n "$leftover" ]]; then
  echo "LEAK: processes still running in envd after the suites:"
  echo "$leftover"
  status=1
fi
exit "$status"
