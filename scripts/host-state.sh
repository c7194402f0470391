#!/usr/bin/env bash
# What sandbar instances hold on this host, one object a line, each with the
# instance it belongs to:
#
#   <instance> <kind> <object>
#
# Kinds: mount (namespace pins, layer stores), netns, veth, nft (the
# instance's table), loop (a layer store's device),
# cgroup, process (envd and helpers in the instance's cgroups; a server by
# the claim it holds). Objects that name no instance are listed under `?`.
#
#   scripts/host-state.sh           everything
#   scripts/host-state.sh --live    instances a running process holds (its
#                                   claim: /run/sandbar/locks/<instance>.lock
#                                   is locked), one a line
#
# Every object sandbar makes carries its instance: veths `sb<instance>-<n>`,
# table `sandbar_<instance>`, cgroups `sandbar-<instance>`, namespaces pinned
# under `/run/sandbar/<instance>/`.
set -u
locks=/run/sandbar/locks

if [[ "${1:-}" == "--live" ]]; then
  for f in "$locks"/*.lock; do
    [[ -e "$f" ]] || continue
    # A held claim makes a non-blocking lock fail.
    flock -n "$f" true 2>/dev/null || basename "$f" .lock
  done | sort -u
  exit 0
fi

{
  grep -E 'sandbar' /proc/mounts | awk '{print $2}' | while read -r m; do
    if [[ "$m" =~ ^/run/sandbar/([a-z0-9]+)/ ]]; then echo "${BASH_REMATCH[1]} mount $m"; else echo "? mount $m"; fi
  done
  find /run/sandbar -mindepth 3 -maxdepth 3 -path '/run/sandbar/*/netns/*' 2>/dev/null | while read -r n; do
    [[ "$n" =~ ^/run/sandbar/([a-z0-9]+)/ ]] && echo "${BASH_REMATCH[1]} netns $n"
  done
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | while read -r l; do
    if [[ "$l" =~ ^sb([a-z0-9]+)-[0-9]+$ ]]; then echo "${BASH_REMATCH[1]} veth $l"
    elif [[ "$l" == sb* ]]; then echo "? veth $l"; fi
  done
  nft list tables 2>/dev/null | awk '{print $3}' | while read -r t; do
    if [[ "$t" =~ ^sandbar_([a-z0-9]+)$ ]]; then echo "${BASH_REMATCH[1]} nft $t"
    elif [[ "$t" == *sandbar* ]]; then echo "? nft $t"; fi
  done
  find /sys/fs/cgroup -maxdepth 3 -type d -name 'sandbar*' 2>/dev/null | while read -r c; do
    if [[ "$c" =~ /sandbar-([A-Za-z0-9_-]+)$ ]]; then echo "${BASH_REMATCH[1]} cgroup $c"; else echo "? cgroup $c"; fi
  done
  # Loop devices of layer stores (their image lives in a data dir).
  losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk '$2 ~ /store\.btrfs/ {print "? loop " $1 " " $2}'
  for p in $(pgrep -x 'envd|sandbar|sandbar-interpr' 2>/dev/null); do
    inst=""
    # envd and the processes it starts live in the instance's cgroups.
    if [[ "$(cat "/proc/$p/cgroup" 2>/dev/null)" =~ /sandbar-([A-Za-z0-9_-]+)/ ]]; then
      inst="${BASH_REMATCH[1]}"
    else
      # A server (or a test process) holds the instance's claim open.
      for fd in /proc/"$p"/fd/*; do
        t="$(readlink "$fd" 2>/dev/null)" || continue
        if [[ "$t" =~ ^$locks/([A-Za-z0-9_-]+)\.lock ]]; then inst="${BASH_REMATCH[1]}"; break; fi
      done
    fi
    echo "${inst:-?} process $(cat "/proc/$p/comm" 2>/dev/null)"
  done
} | sort
exit 0
