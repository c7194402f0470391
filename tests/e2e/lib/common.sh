# Shared by run-envd.sh and run-sandbar.sh: installing the SDKs and running the
# suites. Sourced, not executed; expects `here` = tests/e2e.

log() { printf '\n=== %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 2; }

# Installs the pinned SDKs when missing or when the pins changed.
ensure_sdks() {
  (
    cd "$here"
    if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
      log "installing the JS SDKs (npm ci)"
      npm ci --no-audit --no-fund
    fi
    if [[ ! -x .venv/bin/python || requirements.txt -nt .venv/.installed || constraints.txt -nt .venv/.installed ]]; then
      log "installing the Python SDKs into tests/e2e/.venv"
      python3 -m venv .venv
      .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
      touch .venv/.installed
    fi
  )
}

# Runs the suites named in E2E_SUITES (default: js python) with the current
# environment; prints each runner's summary. Returns non-zero on any failure.
# Output of the runners is kept in "$1" (a scratch directory).
run_suites() {
  local out="$1" suites="${E2E_SUITES:-js python}" failed=() summaries=()
  cd "$here"
  if [[ " $suites " == *" js "* ]]; then
    log "JS suite (node --test, e2b $(node -p 'require("./node_modules/e2b/package.json").version'))"
    # shellcheck disable=SC2086 # E2E_JS_FILES is a list of paths
    if node --test --test-concurrency=3 --test-reporter=spec ${E2E_JS_FILES:-js/} 2>&1 | tee "$out/js.out"; then :; else failed+=(js); fi
    summaries+=("JS:     $(grep -E '^ℹ (tests|pass|fail|cancelled|skipped|duration_ms) ' "$out/js.out" | sed 's/^ℹ //' | tr '\n' ' ')")
  fi
  if [[ " $suites " == *" python "* ]]; then
    log "Python suite (pytest, e2b $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("e2b"))'))"
    # E2E_PYTEST_ARGS is split like a shell would, so `-k "a or b"` works.
    local py_args=()
    mapfile -t py_args < <(python3 -c 'import shlex, sys; sys.stdout.writelines(a + "\n" for a in shlex.split(sys.argv[1]))' "${E2E_PYTEST_ARGS:-}")
    if .venv/bin/python -m pytest python/ "${py_args[@]}" 2>&1 | tee "$out/py.out"; then :; else failed+=(python); fi
    summaries+=("Python: $(grep -E '^=+ .* in [0-9.]+s' "$out/py.out" | tail -n 1 || echo 'pytest did not finish: see above')")
  fi
  log "summary"
  printf '%s\n' "${summaries[@]}"
  if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    return 1
  fi
  echo "all suites passed"
}

# The package registries' IPv4 addresses as /32s, comma-separated: where
# this network reaches the internet through special-purpose addresses (as
# here), a test server passes them as --public-range so that its sandboxes
# reach the registries, the suite's "internet". Harmless where they are
# public anyway.
registry_public_ranges() {
  local name out=()
  for name in pypi.org files.pythonhosted.org registry.npmjs.org deb.debian.org; do
    while read -r ip _; do out+=("$ip/32"); done < <(getent ahostsv4 "$name" | awk '$2 == "STREAM"')
  done
  printf '%s\n' "${out[@]}" | sort -u | paste -sd, -
}
