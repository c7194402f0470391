#!/usr/bin/env bash
# `sandbar sandbox shell` in a real terminal: tmux runs it in a pane, types
# into it and reads the screen back. Checks: the prompt answers a command,
# a resize of the window reaches the sandbox's terminal, Ctrl-C interrupts
# the foreground command (not the shell), and the shell's exit code is the
# command's.
#
#   tests/e2e/cli/shell.sh SANDBOX_ID sandbar [--data-dir DIR]...
set -euo pipefail
id=$1
shift
command -v tmux >/dev/null || { echo "not ok - tmux is not installed"; exit 1; }
session="sbshell-$$"
out="$(mktemp)"
trap 'tmux kill-session -t "$session" 2>/dev/null || true; rm -f "$out"' EXIT
status=0
check() { # description, command...
  local what="$1"; shift
  if "$@"; then echo "ok - shell: $what"; else echo "not ok - shell: $what"; status=1; fi
}
screen() { tmux capture-pane -p -t "$session" -S -200; }
# Waits until a line of the screen is exactly $1.
wait_line() {
  for _ in $(seq 100); do
    screen | grep -qx -- "$1" && return 0
    sleep 0.1
  done
  echo "--- screen:" >&2; screen >&2
  return 1
}

printf -v cmd '%q ' "$@" sandbox shell "$id"
tmux new-session -d -s "$session" -x 120 -y 40 "$cmd; echo \"EXIT=\$?\" >$out; sleep 30"
tmux send-keys -t "$session" 'echo "hello-$((6 * 7))"' Enter
check "a command runs and prints" wait_line "hello-42"
tmux send-keys -t "$session" 'whoami' Enter
check "it is the sandbox's default user" wait_line "user"

tmux resize-window -t "$session" -x 100 -y 30
sleep 0.5
tmux send-keys -t "$session" 'stty size' Enter
check "a resize reaches the sandbox's terminal" wait_line "30 100"

tmux send-keys -t "$session" 'sleep 300' Enter
sleep 0.5
tmux send-keys -t "$session" C-c
tmux send-keys -t "$session" 'echo "after-$?"' Enter
check "Ctrl-C interrupts the command, not the shell" wait_line "after-130"

tmux send-keys -t "$session" 'exit 7' Enter
for _ in $(seq 100); do [[ -s "$out" ]] && break; sleep 0.1; done
check "the shell's exit code is the command's" grep -qx "EXIT=7" "$out"
exit "$status"
