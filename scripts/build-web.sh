#!/usr/bin/env bash
# Builds the web dashboard (web/: TypeScript and Vite) into web/dist, which
# the sandbar binary embeds (crates/dashboard/build.rs) — so run it before
# `cargo build`. Dependencies come from the npm registry at the versions
# pinned in web/package-lock.json (`npm ci`, again only when the lock file
# changed); nothing is fetched from a CDN when the dashboard runs.
#
#   scripts/build-web.sh
set -euo pipefail
cd "$(dirname "$0")/../web"

command -v npm >/dev/null || { echo "build-web.sh needs Node.js and npm (scripts/install-deps.sh installs them)" >&2; exit 1; }

stamp=node_modules/.sandbar-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "==> web: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
echo "==> web: type check and build (web/dist)"
# Vite notes that the SDK's Node-only modules are left out of the browser
# bundle; those lines are expected, so only the summary is shown.
npm run --silent build >build.log 2>&1 || { cat build.log >&2; exit 1; }
grep -E '^(dist/|✓ built)' build.log || true
rm -f build.log
