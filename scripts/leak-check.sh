#!/usr/bin/env bash
# The test suite's leak check, by instance (see scripts/host-state.sh).
#
#   scripts/leak-check.sh start STATE   before the tests: records what the
#       host holds and which instances are live (a running sandbar, such as
#       the one setup.sh started, holds its claim). Objects of instances that
#       no process holds are left over from an earlier run: they are named
#       now, not blamed on this run later.
#   scripts/leak-check.sh end STATE     after the tests: every object that
#       was not there at the start and belongs to an instance that was not
#       live at the start is a leak, listed by instance; exit 1 then.
#
# A live server's own churn (its namespace pool moving on, sandboxes made and
# killed) never counts: its instance was live at the start, and the suite
# never uses that instance, its ports, data dir or subnet.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mode="${1:?usage: leak-check.sh start|end STATE}"
state="${2:?usage: leak-check.sh start|end STATE}"

# Prints the lines of $1 (host-state output) whose instance is not in $2
# (a list of instances, one a line).
not_of() {
  awk 'NR==FNR { skip[$1] = 1; next } !($1 in skip)' "$2" "$1"
}

case "$mode" in
  start)
    mkdir -p "$state"
    "$here/host-state.sh" >"$state/before"
    "$here/host-state.sh" --live >"$state/live"
    if [[ -s "$state/live" ]]; then
      echo "live sandbar instances, left alone by the leak check: $(tr '\n' ' ' <"$state/live")"
    fi
    not_of "$state/before" "$state/live" >"$state/stale"
    if [[ -s "$state/stale" ]]; then
      echo "left over on this host from an earlier run (no process holds these instances):"
      awk '{print $1}' "$state/stale" | sort | uniq -c | while read -r n inst; do
        echo "  instance $inst: $n objects, e.g. $(grep -m1 "^$inst " "$state/stale" | cut -d' ' -f2-)"
      done
      echo "(they are not counted as leaks of this run; a sandbar started with that instance name removes them)"
    fi
    ;;
  end)
    [[ -f "$state/before" && -f "$state/live" ]] || { echo "leak-check.sh: no start state in $state" >&2; exit 2; }
    "$here/host-state.sh" >"$state/after"
    # New objects of instances that were not live at the start.
    not_of "$state/after" "$state/live" | sort >"$state/after.ours"
    sort "$state/before" >"$state/before.sorted"
    comm -13 "$state/before.sorted" "$state/after.ours" >"$state/leaks"
    if [[ -s "$state/leaks" ]]; then
      echo "left on the host by this run (leak):"
      awk '{print $1}' "$state/leaks" | sort -u | while read -r inst; do
        echo "  instance $inst:"
        grep "^$inst " "$state/leaks" | cut -d' ' -f2- | sed 's/^/    /'
      done
      exit 1
    fi
    echo "nothing left on the host by this run"
    ;;
  *) echo "usage: leak-check.sh start|end STATE" >&2; exit 2 ;;
esac
