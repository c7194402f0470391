#!/usr/bin/env bash
# The whole test suite, as root on a Debian/Ubuntu machine: formatting and
# lints, unit and integration tests (real namespaces, nftables, cgroups), then
# the end-to-end suites that drive sandbar with the official E2B SDKs, and a
# final check that nothing was left on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $EUID -eq 0 ]] || { echo "test.sh must run as root (tests make namespaces, cgroups and nftables rules)" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/sandbar-target}"
export CARGO_TERM_COLOR=never
bin="$CARGO_TARGET_DIR/debug"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
scripts/install-deps.sh --with-test-tools

leak_state="$(mktemp -d -t sandbar-leak-check.XXXXXX)"
# shellcheck source=tests/lib/postgres.sh
source tests/lib/postgres.sh
# The scratch cluster's own dir: the postgres user must reach it, which it
# cannot below a 0700 directory of root's such as $leak_state.
pg_dir="$(mktemp -d -t sandbar-test-pg.XXXXXX)"
trap 'pg_scratch_stop "$pg_dir"; rm -rf "$leak_state" "$pg_dir"' EXIT
step "what this host holds before the tests"
scripts/leak-check.sh start "$leak_state"

step "the web dashboard (TypeScript check and Vite build; the binary embeds it)"
scripts/build-web.sh

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "fresh install: install-deps.sh on a brand-new Debian 12 root filesystem"
tests/install/run-fresh-install.sh
# The check must be able to fail: without the well-known protos the build breaks.
sed 's/ libprotobuf-dev//' scripts/install-deps.sh >"$leak_state/install-deps-without-protos.sh"
if FRESH_INSTALL_DEPS="$leak_state/install-deps-without-protos.sh" tests/install/run-fresh-install.sh >"$leak_state/fresh-negative.log" 2>&1; then
  echo "the fresh-install check passed without libprotobuf-dev: it cannot catch a missing package" >&2
  exit 1
fi
grep -q 'not ok - protoc compiles' "$leak_state/fresh-negative.log"
echo "ok - without libprotobuf-dev the fresh-install check fails as it should"

step "build"
cargo build --workspace --locked

step "templates (built once, then cached)"
"$bin/sandbar" template build base
"$bin/sandbar" template build code-interpreter-v1

step "unit and integration tests (the store on SQLite and on a scratch PostgreSQL)"
pg_scratch_start "$pg_dir"
cargo test --workspace --locked
pg_scratch_stop "$pg_dir"

step "end-to-end: envd with the official SDKs"
E2E_ENVD_BIN="$bin/envd" tests/e2e/run-envd.sh

step "end-to-end: the platform with the official SDKs"
E2E_SANDBAR_BIN="$bin/sandbar" E2E_ENVD_BIN="$bin/envd" E2E_INTERPRETER_BIN="$bin/sandbar-interpreter" \
  E2E_WITH_SDK_SUITES=1 tests/e2e/run-platform.sh

step "end-to-end: restarts of sandbar lose nothing (SIGTERM, kill -9)"
E2E_SANDBAR_BIN="$bin/sandbar" E2E_ENVD_BIN="$bin/envd" E2E_INTERPRETER_BIN="$bin/sandbar-interpreter" \
  tests/e2e/run-restart.sh

step "end-to-end: the suite beside a live sandbar that is in use"
E2E_SANDBAR_BIN="$bin/sandbar" E2E_ENVD_BIN="$bin/envd" E2E_INTERPRETER_BIN="$bin/sandbar-interpreter" \
  tests/e2e/run-beside-live.sh

step "sandbar on a cgroup v2 host (a qemu VM), when the code it covers changed"
# The VM run takes minutes under software emulation: it runs when the
# runtime, the network or the VM test changed since it last passed here.
vm_key="$(cat crates/runtime/src/*.rs crates/runtime/src/*/*.rs crates/layers/src/*.rs crates/net/src/*.rs tests/vm/*.sh tests/vm/*/* 2>/dev/null | sha256sum | cut -c1-16)"
vm_stamp="/var/cache/sandbar-vm/passed-$vm_key"
if [[ -e "$vm_stamp" ]]; then
  echo "unchanged since it passed (key $vm_key): skipped"
else
  E2E_SANDBAR_BIN="$bin/sandbar" E2E_ENVD_BIN="$bin/envd" tests/vm/run-cgroup-v2.sh
  mkdir -p /var/cache/sandbar-vm && touch "$vm_stamp"
fi

step "benchmark smoke run (every row, tiny counts)"
"$bin/sandbar-bench" --smoke

step "nothing left on the host"
scripts/leak-check.sh end "$leak_state"
