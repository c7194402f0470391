#!/bin/bash
# Runs inside the VM of tests/vm/run-cgroup-v2.sh (as /mnt/sbdata/guest/run.sh,
# started by sandbar-vm-test.service once the system is up): sandbar on a
# cgroup v2 host. Every line for the host starts with "[sbvm]"; the last is
# "[sbvm] RESULT: N passed, M failed".
#
# sandbar runs the way scripts/setup.sh runs it on a systemd host: as
# sandbar.service (KillMode=mixed, no Delegate=), so it lives in
# /sys/fs/cgroup/system.slice/sandbar.service.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C

disk=/mnt/sbdata
sb=$disk/bin/sandbar
data=/var/lib/sbvm
inst=vm
cgroot=/sys/fs/cgroup
api=http://127.0.0.1:3049

pass=0
fail=0
log() { printf '[sbvm] %s\n' "$*"; }
ok() { pass=$((pass + 1)); log "ok   $*"; }
bad() { fail=$((fail + 1)); log "FAIL $*"; }
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
eq() { [[ "$1" == "$2" ]] || { log "     got '$1', want '$2'"; return 1; }; }
ms() { date +%s%3N; }
# waits up to $1 seconds for a command to succeed
within() {
  local deadline=$(($(date +%s) + $1))
  shift
  local rc
  until "$@"; do
    rc=$?
    ((rc != 2)) || return 2
    (($(date +%s) < deadline)) || return 1
    sleep 0.2
  done
}
finish() {
  if ((fail)); then
    log "server log (tail):"
    tail -n 40 "$data/serve.log" 2>/dev/null | sed 's/^/[sbvm]   | /'
  fi
  log "RESULT: $pass passed, $fail failed"
  exit 0
}

read -r up _ </proc/uptime
log "TEST-START: ${up} s after the kernel started ($(uname -r), $(nproc) vCPUs)"
log "timing: boot to test start ${up} s"

# --- the host is cgroup v2 --------------------------------------------------
check "/sys/fs/cgroup is cgroup2" eq "$(stat -fc %T $cgroot)" cgroup2fs
log "root cgroup.controllers: $(cat $cgroot/cgroup.controllers)"
log "root cgroup.subtree_control: $(cat $cgroot/cgroup.subtree_control)"
log "this test runs in cgroup $(cut -d: -f3 /proc/self/cgroup)"
if [[ "$(stat -fc %T $cgroot)" != cgroup2fs ]]; then finish; fi

# Everything sandbar leaves on a host (as scripts/host-state.sh lists it).
host_state() {
  echo "cgroups: $(find $cgroot -maxdepth 3 -type d -name 'sandbar*' | sort | tr '\n' ' ')"
  echo "mounts: $(grep -h "$data/sandboxes\|sandbar" /proc/[0-9]*/mountinfo 2>/dev/null | awk '{print $5}' | sort -u | tr '\n' ' ')"
  echo "netns: $(find /run/sandbar -path '*/netns/*' 2>/dev/null | sort | tr '\n' ' ')"
  echo "veths: $(ip -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1 | sort | tr '\n' ' ')"
  echo "nft: $(nft list tables 2>/dev/null | grep -i sandbar | tr '\n' ' ')"
  echo "processes: $(pgrep -x 'envd|sandbar' | tr '\n' ' ')"
}
clean_state=$(host_state)

# --- start the server, as a systemd service --------------------------------
unit=sandbar
# start_server [WRAPPER...]: starts `sandbar serve` as $unit.service, data in
# $data, run through WRAPPER when given.
start_server() {
  systemctl reset-failed "$unit.service" 2>/dev/null
  mkdir -p "$data"
  rm -f "$data/exit" "$data/exit-cgroups"
  # ExecStopPost records how the server ended (systemd counts a death by
  # SIGTERM as success, so its own Result says too little) and the sandbar
  # cgroups left once it is gone (before systemd trims the unit's cgroup).
  # A script, not an inline command: that keeps its quoting across the
  # daemon-reloads below.
  cat >/run/sbvm-stop-post <<'SH'
echo "$EXIT_CODE $EXIT_STATUS" > "$1/exit"
find /sys/fs/cgroup -mindepth 1 -type d -name 'sandbar-*' > "$1/exit-cgroups"
SH
  systemd-run --quiet --unit="$unit" --service-type=simple \
    -p KillMode=mixed -p "StandardOutput=append:$data/serve.log" -p "StandardError=append:$data/serve.log" \
    -p "ExecStopPost=/bin/sh /run/sbvm-stop-post $data" \
    "${unit_props[@]}" \
    --setenv=RUST_LOG=info --setenv=SANDBAR_POOL_SIZE=2 \
    "$@" "$sb" serve --data-dir "$data" --templates-dir "$disk/templates" \
    --envd "$disk/bin/envd" --instance "$inst" --warm code-interpreter-v1=0 \
    --warm-budget-mb 0 # no warm sandboxes: after a DELETE nothing of the instance is left
}
unit_props=()
# Fails at once (status 2) when the server died: no use waiting for it.
api_up() {
  systemctl is-active -q "$unit.service" || return 2
  [[ -f $data/api-key ]] && curl -sf -o /dev/null -H "X-API-KEY: $(cat $data/api-key)" "$api/sandboxes"
}
main_pid() { systemctl show -p MainPID --value "$unit.service"; }
t0=$(ms)
start_server
if ! within 180 api_up; then
  bad "sandbar serve answers on $api"
  finish
fi
log "timing: server start to API up $(($(ms) - t0)) ms"
srv_cg=$(cut -d: -f3 "/proc/$(main_pid)/cgroup")
check "the server runs in its service's cgroup ($srv_cg)" eq "$srv_cg" /system.slice/sandbar.service
key=$(cat $data/api-key)

# create_sandbox: sets $id
create_sandbox() {
  local t0 resp code
  t0=$(ms)
  resp=$(curl -sS --max-time 180 -H "X-API-KEY: $key" -H 'content-type: application/json' \
    -d '{"templateID":"base","timeout":900}' -w '\n%{http_code}' "$api/sandboxes")
  create_ms=$(($(ms) - t0))
  code=${resp##*$'\n'}
  id=$(sed -n 's/.*"sandboxID":"\([^"]*\)".*/\1/p' <<<"$resp")
  [[ "$code" == 201 || "$code" == 200 ]] && [[ -n "$id" ]] || {
    log "     create answered $code: ${resp%$'\n'*}"
    return 1
  }
}
run() { timeout 180 "$sb" sandbox exec --data-dir "$data" "$id" "$@"; }

if ! create_sandbox; then
  bad "create a sandbox of template base"
  finish
fi
ok "create a sandbox of template base ($id)"
log "timing: create ${create_ms} ms"
cg=$cgroot/sandbar-$inst/$id
check "its cgroup is $cg" test -d "$cg"
check "memory.max is 512 MiB" eq "$(cat "$cg/memory.max")" $((512 << 20))
check "memory.swap.max is 0" eq "$(cat "$cg/memory.swap.max" 2>/dev/null)" 0
check "pids.max is 1024" eq "$(cat "$cg/pids.max")" 1024
check "cpu.max is 2 CPUs" eq "$(cat "$cg/cpu.max")" "200000 100000"
for c in cpu memory pids; do
  check "controller $c is enabled for the sandbox" grep -qw $c "$cg/cgroup.controllers"
done
envd_pid=$(head -n1 "$cg/cgroup.procs")
check "envd is the sandbox cgroup's process" eq "$(cat /proc/$envd_pid/comm 2>/dev/null)" envd

# --- commands -----------------------------------------------------------------
check "a command runs in the sandbox" eq "$(run echo hello 2>&1)" hello
lat=()
for _ in 1 2 3 4 5; do
  t0=$(ms)
  run true
  lat+=($(($(ms) - t0)))
done
log "timing: command (sandbar sandbox exec ID true) ${lat[*]} ms; median $(printf '%s\n' "${lat[@]}" | sort -n | sed -n 3p) ms"
check "the sandbox sees its own cgroup as / (cgroup namespace)" eq "$(run cat /proc/self/cgroup)" "0::/"

# --- memory: beyond 512 MiB is OOM-killed, the sandbox lives on -------------
oom0=$(awk '$1 == "oom_kill" {print $2}' "$cg/memory.events")
out=$(run "python3 -c 'b = b\"x\" * (800 << 20); print(\"allocated\", len(b))'" 2>&1)
rc=$?
oom1=$(awk '$1 == "oom_kill" {print $2}' "$cg/memory.events")
log "     800 MiB allocation: exit $rc; memory.events oom_kill $oom0 -> $oom1; memory.peak $(cat "$cg/memory.peak" 2>/dev/null)"
check "an 800 MiB allocation does not succeed" test "$rc" -ne 0 -a "${out/allocated/}" == "$out"
check "the OOM killer acted in the sandbox's cgroup" test "$oom1" -gt "$oom0"
check "the sandbox survives the OOM kill" eq "$(run echo alive 2>&1)" alive
check "envd survives the OOM kill" eq "$(cat /proc/$envd_pid/comm 2>/dev/null)" envd
check "a 300 MiB allocation still succeeds" eq \
  "$(run "python3 -c 'b = b\"x\" * (300 << 20); print(len(b) >> 20)'" 2>&1)" 300

# --- pids: a fork loop stops at the cap -------------------------------------
spawner=$(base64 -w0 <<'PY'
import os, time
kids = []
while len(kids) < 5000:
    try:
        kids.append(os.posix_spawn("/bin/sleep", ["sleep", "300"], {}))
    except OSError:
        break
print(len(kids), flush=True)
for k in kids:
    os.kill(k, 9)
for k in kids:
    os.waitpid(k, 0)
PY
)
base=$(cat "$cg/pids.current")
max0=$(awk '$1 == "max" {print $2}' "$cg/pids.events")
got=$(run "echo $spawner | base64 -d > /tmp/spawn.py && python3 /tmp/spawn.py" 2>&1)
max1=$(awk '$1 == "max" {print $2}' "$cg/pids.events")
log "     fork loop got $got processes (cgroup had $base tasks before; pids.events max $max0 -> $max1)"
check "the fork loop is stopped near the cap (1024 tasks in all)" \
  test "${got:-0}" -gt $((1024 - base - 24)) -a "${got:-0}" -lt $((1024 - base + 1))
check "pids.events counts the refused forks" test "${max1:-0}" -gt "${max0:-0}"
check "the sandbox works after the fork loop" eq "$(run echo alive 2>&1)" alive

# --- CPU: 4 busy processes get at most ~2 CPUs ------------------------------
# Sampled in the steady state, away from the exec's start and end. Only a VM
# with more than 2 vCPUs can show the cap binding (the default has 3).
busy="for i in 1 2 3 4; do timeout 8 sh -c 'while :; do :; done' & done; wait"
# cpus_used CPU_STAT_FILE: CPUs of time used over 4 s, from 2.5 s on
cpus_used() {
  local u0 u1 t0 t1
  sleep 2.5
  u0=$(awk '$1 == "usage_usec" {print $2}' "$1"); t0=$(ms)
  sleep 4
  u1=$(awk '$1 == "usage_usec" {print $2}' "$1"); t1=$(ms)
  awk -v u=$((u1 - u0)) -v w=$((t1 - t0)) 'BEGIN { printf "%.2f", u / (w * 1000) }'
}
th0=$(awk '$1 == "nr_throttled" {print $2}' "$cg/cpu.stat")
run "$busy" >/dev/null 2>&1 &
cpus=$(cpus_used "$cg/cpu.stat")
wait
th1=$(awk '$1 == "nr_throttled" {print $2}' "$cg/cpu.stat")
log "     4 busy loops in the sandbox: ${cpus} CPUs of time (vCPUs $(nproc)); nr_throttled $th0 -> $th1"
check "4 busy loops get at most ~2 CPUs (${cpus})" awk -v c="$cpus" 'BEGIN { exit !(c <= 2.2) }'
if (($(nproc) > 2)); then
  check "and close to 2, where $(nproc) vCPUs were there to take (${cpus})" awk -v c="$cpus" 'BEGIN { exit !(c >= 1.6) }'
  check "the CFS quota throttled them" test "$th1" -gt "$th0"
  # The control: the same loops outside any limit take more than 2 CPUs.
  systemd-run --quiet --scope --unit=sbvm-busy bash -c "$busy" >/dev/null 2>&1 &
  free_cpus=$(cpus_used $cgroot/system.slice/sbvm-busy.scope/cpu.stat)
  wait
  log "     the same loops outside the sandbox: ${free_cpus} CPUs of time"
  check "the same loops outside the sandbox get more than 2.3 CPUs (${free_cpus})" \
    awk -v c="$free_cpus" 'BEGIN { exit !(c > 2.3) }'
else
  log "     (with $(nproc) vCPUs the 2-CPU cap cannot bind: this check cannot fail; VM_CPUS=3 makes it strict)"
fi

# --- systemd rewriting the tree keeps the sandbox's controllers --------------
# systemd turns off controllers at the root that no unit of its own needs
# (cpu here) whenever it reconfigures: a reload, a unit with other settings.
systemctl daemon-reload
# (--scope: runs in the foreground without D-Bus, which this VM has not.)
check "systemd starts a unit with accounting off" \
  systemd-run --quiet --scope -p CPUAccounting=no -p MemoryAccounting=no -p TasksAccounting=no true
systemctl daemon-reload
check "after systemd reconfigured: the root still delegates cpu, memory, pids" \
  eq "$(tr ' ' '\n' <$cgroot/cgroup.subtree_control | grep -xE 'cpu|memory|pids' | tr '\n' ' ')" "cpu memory pids "
check "after systemd reconfigured: the sandbox keeps its controllers and cpu.max" \
  eq "$(cat "$cg/cgroup.controllers") / $(cat "$cg/cpu.max")" "cpu memory pids / 200000 100000"

# --- metrics come from the v2 files -------------------------------------------
metrics=$(curl -sS -H "X-API-KEY: $key" "$api/sandboxes/$id/metrics")
check "metrics report the 512 MiB limit and memory in use" \
  bash -c '[[ "$1" == *"\"memTotal\":536870912"* && "$1" =~ \"memUsed\":[1-9] ]]' _ "$metrics"

# --- DELETE leaves nothing ---------------------------------------------------
# What belongs to this sandbox: its init, its network namespace, its veth.
netns_ino=$(stat -L -c %i "/proc/$envd_pid/ns/net")
peer_ifindex=$(run cat /sys/class/net/eth0/iflink 2>/dev/null)
veth=$(ip -o link | awk -F': ' -v i="$peer_ifindex" '$1 == i {print $2}' | cut -d@ -f1)
log "     sandbox: envd pid $envd_pid, netns inode $netns_ino, host veth '${veth}' (ifindex $peer_ifindex)"
netns_held() {
  local f
  for f in /proc/[0-9]*/ns/net; do
    [[ "$(stat -L -c %i "$f" 2>/dev/null)" == "$netns_ino" ]] && return 0
  done
  for f in /run/sandbar/$inst/netns/*; do
    [[ -e "$f" && "$(stat -L -c %i "$f" 2>/dev/null)" == "$netns_ino" ]] && return 0
  done
  return 1
}
gone() {
  [[ ! -d "$cg" ]] &&
    [[ -z "$(find $cgroot/sandbar-$inst -mindepth 1 -type d 2>/dev/null)" ]] &&
    ! kill -0 "$envd_pid" 2>/dev/null &&
    [[ -z "$(pgrep -x envd)" ]] &&
    ! grep -qs "$id" /proc/[0-9]*/mountinfo &&
    ! netns_held &&
    ! ip -o link | grep -q "^$peer_ifindex:" &&
    [[ ! -e "$data/sandboxes/$id" ]]
}
t0=$(ms)
code=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H "X-API-KEY: $key" "$api/sandboxes/$id")
del_ms=$(($(ms) - t0))
check "DELETE /sandboxes/$id answers 204" eq "$code" 204
within 10 bash -c "[[ ! -d '$cg' ]] && ! kill -0 $envd_pid 2>/dev/null && ! ip -o link | grep -q '^$peer_ifindex:'"
log "timing: delete (DELETE -> 204) ${del_ms} ms; cgroup, init and veth gone $(($(ms) - t0)) ms"
if within 10 gone; then
  ok "after DELETE: no cgroup, process, mount, netns or veth of the sandbox"
else
  bad "after DELETE: no cgroup, process, mount, netns or veth of the sandbox"
  log "     cgroup dir: $(ls -d "$cg" 2>&1); left under sandbar-$inst: $(find $cgroot/sandbar-$inst -mindepth 1 -type d 2>/dev/null)"
  log "     envd: $(pgrep -x envd | tr '\n' ' '); mounts: $(grep -ls "$id" /proc/[0-9]*/mountinfo | tr '\n' ' ')"
  log "     netns held: $(netns_held && echo yes || echo no); veth: $(ip -o link | grep "^$peer_ifindex:")"
fi

# --- SIGTERM: the server leaves nothing --------------------------------------
t0=$(ms)
systemctl stop "$unit.service" # SIGTERM to the server (KillMode=mixed)
log "timing: stop (SIGTERM -> exited) $(($(ms) - t0)) ms"
check "the server exited with status 0 on SIGTERM" eq "$(cat "$data/exit" 2>/dev/null)" "exited 0"
left=$(host_state)
if [[ "$left" == "$clean_state" ]]; then
  ok "after the server stopped: the host is as before it started"
else
  bad "after the server stopped: the host is as before it started"
  diff <(echo "$clean_state") <(echo "$left") | sed 's/^/[sbvm]      /'
fi

# --- a crash: a restarted server removes what the dead one left --------------
# The server is SIGKILLed with a sandbox running; systemd kills its service
# cgroup, but the sandbox lives in sandbar's own cgroup and outlives it. The
# next start must find and remove it (cgroup.kill, rmdir).
start_server
if within 180 api_up && create_sandbox; then
  cg=$cgroot/sandbar-$inst/$id
  envd_pid=$(head -n1 "$cg/cgroup.procs")
  run "sleep 600 & sleep 600 & echo started" >/dev/null 2>&1
  systemctl kill -s KILL sandbar.service
  within 20 bash -c '! systemctl is-active -q sandbar.service'
  check "a sandbox outlives a SIGKILLed server" kill -0 "$envd_pid"
  t0=$(ms)
  start_server
  within 180 api_up
  log "timing: restart after a crash to API up $(($(ms) - t0)) ms"
  check "the restarted server removed the dead one's sandbox (cgroup, processes)" \
    within 10 bash -c "[[ ! -d '$cg' ]] && ! kill -0 $envd_pid 2>/dev/null && [[ -z \"\$(pgrep -x envd)\" ]]"
  systemctl stop sandbar.service
  left=$(host_state)
  if [[ "$left" == "$clean_state" ]]; then
    ok "after a crash, a restart and a stop: the host is as before"
  else
    bad "after a crash, a restart and a stop: the host is as before"
    diff <(echo "$clean_state") <(echo "$left") | sed 's/^/[sbvm]      /'
  fi
else
  bad "restart the server and create a sandbox"
fi

# --- in a container: the server at the root of a cgroup namespace -----------
# As Docker runs it on a v2 host (--cgroupns=private): the server's own
# cgroup, delegated (Delegate=yes), is the root of its cgroup namespace and
# of the cgroup2 mount it sees, and the server is a process in it.
unit=sbct
data=/var/lib/sbvm-ct
unit_props=(-p Delegate=yes)
ctcg=$cgroot/system.slice/$unit.service
start_server unshare --cgroup --mount --propagation private sh -c \
  'umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$0" "$@"'
if within 180 api_up && key=$(cat $data/api-key) && create_sandbox; then
  ok "in a container's cgroup namespace: create a sandbox ($id)"
  cg=$ctcg/sandbar-$inst/$id
  check "its cgroup is inside the container's: $cg" test -d "$cg"
  check "memory.max, pids.max and cpu.max are set there" \
    eq "$(cat "$cg/memory.max" "$cg/pids.max" "$cg/cpu.max" 2>/dev/null | tr '\n' ' ')" "$((512 << 20)) 1024 200000 100000 "
  check "the server moved into the leaf init/ (no internal processes)" grep -qx "$(main_pid)" "$ctcg/init/cgroup.procs"
  check "a command runs in the sandbox" eq "$(run echo hello 2>&1)" hello
  envd_pid=$(head -n1 "$cg/cgroup.procs")
  code=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H "X-API-KEY: $key" "$api/sandboxes/$id")
  check "DELETE answers 204 and the sandbox's cgroup and processes go" \
    within 10 bash -c "[[ '$code' == 204 && ! -d '$cg' ]] && ! kill -0 $envd_pid 2>/dev/null"
  systemctl stop "$unit.service"
  check "the server exited with status 0 on SIGTERM" eq "$(cat "$data/exit" 2>/dev/null)" "exited 0"
  check "it removed its cgroups before exiting" \
    bash -c '[[ -f "$1" && -z "$(grep -v sandbar-vm-test.service "$1")" ]]' _ "$data/exit-cgroups"
  left=$(host_state)
  if [[ "$left" == "$clean_state" ]]; then
    ok "after the container's server stopped: the host is as before"
  else
    bad "after the container's server stopped: the host is as before"
    diff <(echo "$clean_state") <(echo "$left") | sed 's/^/[sbvm]      /'
  fi
else
  bad "in a container's cgroup namespace: create a sandbox"
  systemctl stop "$unit.service"
fi

finish
