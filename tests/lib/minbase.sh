#!/usr/bin/env bash
# A bare Debian 12 (minbase) root filesystem as a tarball, made with
# mmdebstrap once and cached (keyed by its recipe): the fresh-install check
# unpacks it, the template suites make a registry image of it. Source this
# file, then:
#
#   tarball="$(minbase_tarball)"   # builds it on first use (about a minute)

minbase_tarball() {
  local cache=/var/cache/sandbar-fresh-rootfs
  local mirror="${FRESH_INSTALL_MIRROR:-http://deb.debian.org/debian}"
  local recipe="mmdebstrap --variant=minbase bookworm $mirror"
  local key
  key="$(printf '%s' "$recipe" | sha256sum | cut -c1-16)"
  local tarball="$cache/bookworm-minbase-$key.tar"
  mkdir -p "$cache/apt-archives/partial"
  if [[ ! -s "$tarball" ]]; then
    echo "==> making a bare Debian 12 root filesystem (once; cached in $cache)" >&2
    command -v mmdebstrap >/dev/null || { echo "mmdebstrap is needed (apt-get install mmdebstrap)" >&2; return 2; }
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar bookworm "$tarball.tmp" "$mirror" >&2 || return 1
    mv "$tarball.tmp" "$tarball"
  fi
  printf '%s\n' "$tarball"
}
