#!/usr/bin/env bash
# Builds and installs CRIU (checkpoint/restore of process trees), pinned, as
# root, on Debian 12 (bookworm). Idempotent: exits at once when the pinned
# version is already installed at $CRIU_BIN.
#
# Why build: bookworm's own criu (3.17.1) fails on current kernels
# ("vdso: Unexpected rt vDSO area bounds"), and trixie's 4.1.1 cannot dump
# any process holding a TCP socket on Linux >= 6.16 ("sockets: Can't get
# 1:16 opt: Operation not supported": SO_PASSCRED is now refused on inet
# sockets; fixed upstream in 4.2, criu PR #2711). 4.2.1 is what Debian
# forky/sid ship; we build it from the pristine upstream tarball in Debian's
# archive (the ".orig" of that source package), verified by its SHA-256.
#
# Only the `criu` binary is built and installed (no docs, no libcriu, no
# crit/pycriu, no plugins). Takes about 20 s to build on 2 cores, plus the
# package installs on a fresh machine.
#
#   scripts/install-criu.sh           install if needed, then `criu check`
#   scripts/install-criu.sh --force   rebuild and reinstall even if present
#
# Environment: CRIU_BIN (install path, default /usr/local/sbin/criu),
# CRIU_TARBALL (a local copy of the tarball to use instead of downloading;
# it is still checked against the pinned hash), CRIU_CHECK=warn (a failing
# `criu check` after the install is a warning, not an error: sandbar runs
# without memory persistence then; install-deps.sh sets it).
set -euo pipefail

CRIU_VERSION=4.2.1
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CRIU_SHA1=943aa42a53e9678fee0c8cb85c544afa2d331229 # snapshot.debian.org's file key
CRIU_ORIG=criu_${CRIU_VERSION}.orig.tar.xz
# Debian's pool keeps the file while a suite (forky, sid) ships this
# version; snapshot.debian.org keeps it for good (addressed by its SHA-1).
# Plain HTTP, as apt uses: the pinned hash is what makes the download
# trustworthy, and HTTP also passes TLS-inspecting egress proxies whose CA
# the machine may not trust yet.
CRIU_URLS=(
  "http://deb.debian.org/debian/pool/main/c/criu/${CRIU_ORIG}"
  "http://snapshot.debian.org/file/${CRIU_SHA1}"
)
CRIU_BIN=${CRIU_BIN:-/usr/local/sbin/criu}
CACHE_DIR=/var/cache/sandbar/criu

# Build dependencies (Debian 12 names). The -dev packages pull the shared
# libraries the binary needs at run time; nothing else is needed to run it.
build_pkgs=(
  gcc libc6-dev make pkgconf            # toolchain (gcc only *recommends* libc6-dev)
  protobuf-c-compiler protobuf-compiler # protoc-c for images/*.proto
  libprotobuf-c-dev libprotobuf-dev     # protobuf-c runtime; google/protobuf/descriptor.proto
  libnl-3-dev libnet1-dev libcap-dev uuid-dev  # required by criu's Makefile
  libbsd-dev                            # setproctitle() (optional upstream)
  libnftables-dev                       # nftables network lock (optional upstream)
  libgnutls28-dev                       # encrypted page-server/images (optional upstream)
  curl ca-certificates xz-utils         # to fetch and unpack the tarball
)

die() { echo "install-criu: $*" >&2; exit 1; }

force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  *) die "usage: $0 [--force]" ;;
esac

installed_version() {
  [[ -x "$CRIU_BIN" ]] || return 0
  "$CRIU_BIN" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1
}

if ((!force)) && [[ "$(installed_version)" == "$CRIU_VERSION" ]]; then
  echo "criu $CRIU_VERSION already installed at $CRIU_BIN"
  exit 0
fi

[[ $EUID -eq 0 ]] || die "must run as root (installs packages and $CRIU_BIN)"
command -v apt-get >/dev/null || die "needs apt-get (Debian or Ubuntu)"
case "$(uname -m)" in
  x86_64 | aarch64) ;;
  *) die "untested architecture $(uname -m)" ;;
esac

missing=()
for p in "${build_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing build dependencies: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install failed for: ${missing[*]}"
fi

work=$(mktemp -d /var/tmp/criu-build.XXXXXX)
trap 'rm -rf "$work"' EXIT

verify() { echo "$CRIU_SHA256  $1" | sha256sum --quiet -c - 2>/dev/null; }

tarball=""
if [[ -n "${CRIU_TARBALL:-}" ]]; then
  verify "$CRIU_TARBALL" || die "$CRIU_TARBALL does not match the pinned SHA-256 $CRIU_SHA256"
  tarball=$CRIU_TARBALL
elif [[ -f "$CACHE_DIR/$CRIU_ORIG" ]] && verify "$CACHE_DIR/$CRIU_ORIG"; then
  tarball=$CACHE_DIR/$CRIU_ORIG
else
  for url in "${CRIU_URLS[@]}"; do
    echo "==> downloading $url"
    if curl -fsSL --retry 2 --connect-timeout 15 -o "$work/$CRIU_ORIG" "$url"; then
      verify "$work/$CRIU_ORIG" ||
        die "downloaded $CRIU_ORIG does not match the pinned SHA-256 $CRIU_SHA256 (got $(sha256sum "$work/$CRIU_ORIG" | cut -d' ' -f1))"
      mkdir -p "$CACHE_DIR"
      cp "$work/$CRIU_ORIG" "$CACHE_DIR/$CRIU_ORIG"
      tarball=$CACHE_DIR/$CRIU_ORIG
      break
    fi
    echo "    failed" >&2
  done
  [[ -n "$tarball" ]] || die "could not download $CRIU_ORIG from: ${CRIU_URLS[*]} (set CRIU_TARBALL to a local copy)"
fi

echo "==> building criu $CRIU_VERSION"
tar -xJf "$tarball" -C "$work"
src="$work/criu-$CRIU_VERSION"
[[ -d "$src" ]] || die "unexpected tarball layout: no criu-$CRIU_VERSION/"
jobs=$(nproc 2>/dev/null || echo 2)
if ! nice -n 10 make -C "$src" -j"$jobs" criu >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  die "build failed (last lines above)"
fi
[[ -x "$src/criu/criu" ]] || die "build produced no criu/criu"
# Optional features the build left out (nftables locking is the one sandbar
# relies on: this host has no iptables).
grep -E "Building without|Warn: Building" "$work/build.log" | grep -v -E "amdgpu|ia32|selinux" >&2 || true

install -D -m 0755 "$src/criu/criu" "$CRIU_BIN"
got=$(installed_version)
[[ "$got" == "$CRIU_VERSION" ]] || die "$CRIU_BIN --version reports '${got:-nothing}', expected $CRIU_VERSION"
echo "==> installed $CRIU_BIN ($("$CRIU_BIN" --version | head -n1))"

echo "==> criu check"
if "$CRIU_BIN" check; then
  echo "criu check: ok"
elif [[ "${CRIU_CHECK:-fatal}" == warn ]]; then
  echo "install-criu: warning: criu check failed here (see above); $CRIU_BIN is installed, and sandbar serves without memory persistence where it fails" >&2
else
  die "criu check failed on this kernel (see above); $CRIU_BIN is installed but may not work"
fi
