#!/usr/bin/env bash
# A scratch PostgreSQL server for the tests: its own cluster in a temp dir,
# owned by the `postgres` user, on a free loopback port, trust auth for
# loopback only. Source this file, then:
#
#   pg_scratch_start DIR   # sets SANDBAR_TEST_POSTGRES_URL (an admin URL)
#   pg_scratch_stop DIR    # stops it; the caller removes DIR
#
# Nothing is left behind: the cluster lives in DIR, the server stops with
# `pg_ctl stop -m immediate` even when the tests failed.

pg_bin_dir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" ]] && { echo "$d"; return 0; }
  done
  echo "no PostgreSQL server binaries found (install Debian's postgresql package)" >&2
  return 1
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_scratch_start() {
  local dir=$1 bin port
  bin=$(pg_bin_dir) || return 1
  port=$(pg_free_port)
  mkdir -p "$dir"
  chown postgres: "$dir"
  runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
    --no-instructions >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" \
    start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
  export SANDBAR_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') for the tests on 127.0.0.1:$port"
}

pg_scratch_stop() {
  local dir=$1 bin
  bin=$(pg_bin_dir) || return 0
  # Called again by exit traps after a normal stop: a server that is not
  # running is not an error (and must not trip the caller's errexit).
  if [[ -f "$dir/data/postmaster.pid" ]]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  return 0
}
