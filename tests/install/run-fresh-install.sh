#!/usr/bin/env bash
# Proves the README's first command installs what a build and a server need,
# on a brand-new Debian 12 root filesystem rather than on this machine (which
# keeps whatever was ever installed by hand):
#
# 1. a bare Debian 12 (minbase) root filesystem, made with mmdebstrap once and
#    cached as a tarball (keyed by its recipe), is unpacked into a scratch dir;
# 2. scripts/install-deps.sh runs inside it (chroot, private mount and pid
#    namespaces, so nothing it mounts or starts can outlive this script);
#    downloaded packages are cached between runs;
# 3. inside, the result must do what setup.sh's build and server need:
#    protoc compiles the project's protos (with the well-known includes such
#    as google/protobuf/timestamp.proto), cc links a program, pkg-config
#    runs, every tool setup.sh and the server call is on PATH,
#    *.sandbar.localhost resolves to loopback, and the server's criu
#    (built by scripts/install-criu.sh, which install-deps.sh runs) reports
#    the pinned version. The criu tarball comes from this host's cache
#    (/var/cache/sandbar/criu, bound in), so it is not downloaded again.
#
#   tests/install/run-fresh-install.sh
#   FRESH_INSTALL_DEPS=/path/to/install-deps.sh   check another package list
#                                                 (the suite's own negative test:
#                                                 the packages alone, no criu)
# Rust is the one precondition of the README (not installed here); the
# build itself is what test.sh runs next.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
[[ $(id -u) -eq 0 ]] || { echo "run-fresh-install.sh must run as root" >&2; exit 2; }
deps_script="${FRESH_INSTALL_DEPS:-$repo/scripts/install-deps.sh}"
with_criu=1
[[ -z "${FRESH_INSTALL_DEPS:-}" ]] || with_criu=0
criu_version="$(sed -n 's/^CRIU_VERSION=//p' "$repo/scripts/install-criu.sh")"
criu_cache=/var/cache/sandbar/criu
mkdir -p "$criu_cache"

cache=/var/cache/sandbar-fresh-rootfs
# shellcheck source=../lib/minbase.sh
source "$repo/tests/lib/minbase.sh"

started=$SECONDS
tarball="$(minbase_tarball)"

root="$(mktemp -d /var/tmp/sandbar-fresh-root.XXXXXX)"
cleanup() { rm -rf --one-file-system "$root"; }
trap cleanup EXIT
tar -xf "$tarball" -C "$root"
echo "==> fresh root filesystem unpacked in $((SECONDS - started)) s"

install -D -m 0755 "$deps_script" "$root/opt/sandbar/scripts/install-deps.sh"
install -D -m 0755 "$repo/scripts/install-criu.sh" "$root/opt/sandbar/scripts/install-criu.sh"
mkdir -p "$root/var/cache/sandbar/criu"
cp -r "$repo/crates/proto/proto" "$root/opt/sandbar/proto"
# The dashboard's sources and their build script (setup.sh runs it before
# cargo build); npm's download cache is this host's, bound in.
tar -C "$repo" --exclude=web/node_modules --exclude=web/dist -cf - web scripts/build-web.sh |
  tar -C "$root/opt/sandbar" -xf -
npm_cache=/var/cache/sandbar/npm
# npm in there trusts what this host trusts (which may include a
# TLS-inspecting proxy's CA that a brand-new system does not have).
cat /etc/ssl/certs/ca-certificates.crt >"$root/opt/sandbar/host-ca.crt"
mkdir -p "$npm_cache" "$root/root/.npm"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# Inside: a private mount namespace (the bind mounts and /proc vanish with
# it) and a pid namespace (nothing apt starts survives it).
unshare --mount --pid --fork --propagation private bash -euo pipefail -c '
  root="$1" archives="$2" criu_cache="$3" with_criu="$4" criu_version="$5"
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount --bind "$archives" "$root/var/cache/apt/archives"
  mount --bind "$criu_cache" "$root/var/cache/sandbar/criu"
  mount --bind "$6" "$root/root/.npm"
  exec chroot "$root" /bin/bash -euo pipefail -c "
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive
    [[ $with_criu == 1 ]] || export SANDBAR_SKIP_CRIU=1
    # Downloads in there trust what this host trusts (see host-ca.crt).
    export CURL_CA_BUNDLE=/opt/sandbar/host-ca.crt npm_config_cafile=/opt/sandbar/host-ca.crt
    # apt in a minbase chroot deletes downloaded packages unless told to keep them.
    echo \"Binary::apt::APT::Keep-Downloaded-Packages \\\"true\\\";\" > /etc/apt/apt.conf.d/99keep
    echo \"==> scripts/install-deps.sh in the fresh root filesystem\"
    # The full check installs the test tools too (what test.sh asks for).
    # The packages first, alone: the build needs of criu pull in some of the same
    # ones (libprotobuf-dev among them), which would hide a package missing
    # from the list from the protoc check below.
    if [[ $with_criu == 1 ]]; then
      SANDBAR_SKIP_CRIU=1 /opt/sandbar/scripts/install-deps.sh --with-test-tools
    else
      /opt/sandbar/scripts/install-deps.sh
    fi
    echo \"==> what the build and the server need\"
    failed=0
    check() { local what=\"\$1\"; shift; if \"\$@\" >/tmp/out 2>&1; then echo \"ok - \$what\"; else echo \"not ok - \$what\"; sed \"s/^/    /\" /tmp/out; failed=1; fi; }
    cd /opt/sandbar/proto
    check \"protoc compiles the envd protos with the well-known includes\" \
      protoc --include_imports -o /dev/null -I . process/process.proto filesystem/filesystem.proto
    if [[ $with_criu == 1 ]]; then
      echo \"==> scripts/install-deps.sh again, now with criu (as the README runs it)\"
      /opt/sandbar/scripts/install-deps.sh --with-test-tools
    fi
    printf \"int main(void){return 0;}\\n\" > /tmp/t.c
    check \"cc compiles and links (the linker cargo uses)\" cc -o /tmp/t /tmp/t.c
    check \"pkg-config runs\" pkg-config --version
    # setup.sh: install pgrep pkill seq curl sed nohup; the server and its
    # templates: nft ip mmdebstrap mkfs.btrfs tar unshare flock; doctor: unshare.
    for tool in install pgrep pkill seq curl sed nohup nft ip mmdebstrap mkfs.btrfs tar unshare flock skopeo; do
      check \"\$tool is installed\" command -v \"\$tool\"
    done
    check \"*.sandbar.localhost resolves to loopback (nss-myhostname)\" \
      sh -c \"getent hosts 3000-abc.sandbar.localhost | grep -Eq \\\"^(127\\\\.|::1)\\\"\"
    if [[ $with_criu == 1 ]]; then
      check \"criu --version reports $criu_version (scripts/install-criu.sh)\" \
        sh -c \"criu --version | grep -qx \\\"Version: $criu_version\\\"\"
      check \"node is >= 20.18.1 (the SDK suites; Debian 12 has 18)\" \
        sh -c \"dpkg --compare-versions \$(node -p process.versions.node) ge 20.18.1\"
      for tool in npm chromium tmux wrk nginx sqlite3 tc docker-registry umoci; do
        check \"\$tool is installed (test tools)\" command -v \"\$tool\"
      done
      check \"the PostgreSQL server is installed (test tools)\" sh -c \"ls /usr/lib/postgresql/*/bin/initdb\"
      check \"python3 can make a venv with pip (test tools)\" python3 -m venv /tmp/venv-check
      check \"python3 makes bcrypt hashes (the password of the suites test registry)\" \
        python3 -W ignore -c \"import crypt as c; assert c.crypt(chr(120), c.mksalt(c.METHOD_BLOWFISH)).startswith(chr(36) + chr(50))\"
      check \"the dashboard builds (scripts/build-web.sh: npm, TypeScript, Vite)\" \
        sh -c \"/opt/sandbar/scripts/build-web.sh && test -s /opt/sandbar/web/dist/index.html\"
    fi
    exit \$failed
  "
' _ "$root" "$cache/apt-archives" "$criu_cache" "$with_criu" "$criu_version" "$npm_cache"
echo "==> the fresh install works ($((SECONDS - started)) s)"
