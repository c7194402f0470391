#!/usr/bin/env bash
# Runs the end-to-end suites (official E2B SDKs, JS and Python) against a
# running sandbar server: every test file creates its sandboxes through the API
# and kills them at the end. See README.md.
#
#   eval "$(sandbar env)"              E2B_API_KEY, E2B_DOMAIN, E2B_API_URL, CA vars
#   tests/e2e/run-sandbar.sh
#
# The same knobs as run-envd.sh: E2E_SUITES, E2E_JS_FILES, E2E_PYTEST_ARGS;
# E2E_TEMPLATE picks the template of the base suites (default: base).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

[[ -n "${E2B_API_KEY:-}" ]] || die 'E2B_API_KEY is not set: run eval "$(sandbar env)" first'
[[ -n "${E2B_DOMAIN:-}${E2B_API_URL:-}" ]] || die 'neither E2B_DOMAIN nor E2B_API_URL is set: run eval "$(sandbar env)" first'
if [[ "${E2B_DEBUG:-false}" == true ]]; then
  die "E2B_DEBUG=true would bypass the server: unset it"
fi

ensure_sdks

work="$(mktemp -d -t sandbar-e2e.XXXXXX)"
trap 'rm -rf "$work"' EXIT

export E2E_TARGET=sandbar
unset E2E_ENVD_ACCESS_TOKEN E2B_SANDBOX_URL
run_suites "$work"
