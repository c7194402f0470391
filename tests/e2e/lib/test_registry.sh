#!/usr/bin/env bash
# Registries of the template suites' own, on loopback (Debian's
# docker-registry), holding an image this script makes: the bare Debian 12
# root filesystem (tests/lib/minbase.sh) as one layer, plus a layer that
# adds /etc/sandbar-test-image and whites out /etc/motd, with an env var in
# its config. One registry is open (the mirror of docker.io, holding it as
# library/debian:stable, library/python:3.12-test, library/ubuntu:test and
# library/node:test: the same bytes under the names the SDKs' fromXImage
# methods ask for); one needs a
# password (holding it as private/debian:1).
#
#   source tests/e2e/lib/test_registry.sh
#   registries_start WORKDIR      # sets REGISTRY_OPEN, REGISTRY_AUTH (host:port),
#                                 # REGISTRY_USER, REGISTRY_PASSWORD, REGISTRY_PIDS
#   registries_stop

_registry_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

_registry_serve() { # dir port [htpasswd]
  local dir=$1 port=$2 htpasswd=${3:-}
  mkdir -p "$dir/storage"
  {
    echo "version: 0.1"
    echo "log: {level: error}"
    echo "storage: {filesystem: {rootdirectory: $dir/storage}, delete: {enabled: true}}"
    echo "http: {addr: 127.0.0.1:$port}"
    [[ -n "$htpasswd" ]] && echo "auth: {htpasswd: {realm: sandbar-test, path: $htpasswd}}"
  } >"$dir/config.yml"
  docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  REGISTRY_PIDS+=($!)
  local i
  for i in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && return 0
    sleep 0.1
  done
  echo "the test registry on :$port did not start: $(tail -5 "$dir/registry.log")" >&2
  return 1
}

registries_start() {
  local work=$1 repo
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
  # shellcheck source=../../lib/minbase.sh
  source "$repo/tests/lib/minbase.sh"
  REGISTRY_PIDS=()
  local open_port auth_port
  open_port="$(_registry_port)"; auth_port="$(_registry_port)"
  REGISTRY_OPEN="127.0.0.1:$open_port"
  REGISTRY_AUTH="127.0.0.1:$auth_port"
  REGISTRY_USER=puller
  REGISTRY_PASSWORD="pw-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  python3 -c 'import crypt,sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))' \
    "$REGISTRY_USER" "$REGISTRY_PASSWORD" 2>/dev/null >"$work/htpasswd"
  _registry_serve "$work/open" "$open_port" || return 1
  _registry_serve "$work/auth" "$auth_port" "$work/htpasswd" || return 1

  # The image: the bare root filesystem, then a layer with a marker and a
  # whiteout.
  local tarball oci="$work/oci" extra="$work/extra"
  tarball="$(minbase_tarball)" || return 1
  umoci init --layout "$oci"
  umoci new --image "$oci:test"
  umoci raw add-layer --image "$oci:test" "$tarball"
  mkdir -p "$extra/etc"
  echo "made by the template suites" >"$extra/etc/sandbar-test-image"
  : >"$extra/etc/.wh.motd"
  tar --numeric-owner --owner=0 --group=0 -C "$extra" -cf "$work/extra.tar" .
  umoci raw add-layer --image "$oci:test" "$work/extra.tar"
  umoci config --image "$oci:test" --config.env "IMAGE_VAR=from-the-image" \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  local to
  for to in "$REGISTRY_OPEN/library/debian:stable" "$REGISTRY_OPEN/library/python:3.12-test" \
    "$REGISTRY_OPEN/library/ubuntu:test" "$REGISTRY_OPEN/library/node:test"; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$oci:test" "docker://$to"
  done
  skopeo copy --quiet --dest-tls-verify=false --dest-creds "$REGISTRY_USER:$REGISTRY_PASSWORD" \
    "oci:$oci:test" "docker://$REGISTRY_AUTH/private/debian:1"
  rm -rf "$oci" "$extra" "$work/extra.tar"
}

registries_stop() {
  local pid
  for pid in "${REGISTRY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${REGISTRY_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  REGISTRY_PIDS=()
}
