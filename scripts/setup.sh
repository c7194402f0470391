#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine (with Rust) to a running
# sandbar: installs system packages, builds and installs the binaries, builds
# the default templates, and starts `sandbar serve`. Run as root (with sudo
# only where you are not root).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $EUID -eq 0 ]] || { echo "setup.sh must run as root (it installs packages and manages namespaces)" >&2; exit 1; }

scripts/install-deps.sh

echo "==> building the web dashboard (embedded in the sandbar binary)"
scripts/build-web.sh

echo "==> building sandbar, envd and sandbar-interpreter (release)"
cargo build --release --locked -p sandbar -p envd -p sandbar-interpreter
target_dir="${CARGO_TARGET_DIR:-target}"
# `sandbar serve` finds envd and sandbar-interpreter next to itself.
install -m 0755 "$target_dir/release/sandbar" "$target_dir/release/envd" \
  "$target_dir/release/sandbar-interpreter" /usr/local/bin/

echo "==> checking this host (sandbar doctor)"
if ! sandbar doctor; then
  echo "setup.sh stopped: fix the problems above (each has its fix) and run it again" >&2
  exit 1
fi

echo "==> building the default templates (cached after the first time)"
sandbar template build base
sandbar template build code-interpreter-v1

if pgrep -x sandbar >/dev/null; then
  echo "==> restarting the running sandbar"
  pkill -TERM -x sandbar || true
  for _ in $(seq 50); do pgrep -x sandbar >/dev/null || break; sleep 0.2; done
fi

# `sandbar serve` options given to this script as SANDBAR_* variables (e.g.
# SANDBAR_PUBLIC_RANGES, which `sandbar doctor` may suggest) are kept for the
# service; a later run without any leaves the kept ones alone.
mkdir -p /etc/sandbar
if env | grep -q '^SANDBAR_'; then
  env | grep '^SANDBAR_' | sort >/etc/sandbar/serve.env
  echo "==> kept for the service in /etc/sandbar/serve.env: $(cut -d= -f1 /etc/sandbar/serve.env | tr '\n' ' ')"
fi

echo "==> starting sandbar serve"
if [[ -d /run/systemd/system ]]; then
  cat > /etc/systemd/system/sandbar.service <<'UNIT'
[Unit]
Description=sandbar sandbox cloud
After=network-online.target

[Service]
EnvironmentFile=-/etc/sandbar/serve.env
ExecStart=/usr/local/bin/sandbar serve
KillMode=mixed
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now sandbar.service
else
  mkdir -p /var/log/sandbar
  (
    set -a
    # shellcheck disable=SC1091
    [[ -r /etc/sandbar/serve.env ]] && source /etc/sandbar/serve.env
    exec nohup /usr/local/bin/sandbar serve >>/var/log/sandbar/serve.log 2>&1
  ) &
fi

# Ready when the API answers at the URL `sandbar env` hands to the SDKs.
api=""
for _ in $(seq 150); do
  api=$(sandbar env 2>/dev/null | sed -n "s/^export E2B_API_URL='\(.*\)'$/\1/p" || true)
  [[ -n "$api" ]] && curl -fsS -o /dev/null "$api/health" 2>/dev/null && break
  api=""
  sleep 0.2
done
if [[ -z "$api" ]]; then
  echo "sandbar did not become ready; see /var/log/sandbar/serve.log or 'journalctl -u sandbar'" >&2
  exit 1
fi
echo
echo "sandbar is running at $api (sandboxes at https://{port}-{id}.$(sandbar env | sed -n "s/^export E2B_DOMAIN='\(.*\)'$/\1/p"))."
echo "Next: point the E2B SDKs at it and run the example (the README's program):"
sandbar example --help | sed -n '/eval/,$p'
