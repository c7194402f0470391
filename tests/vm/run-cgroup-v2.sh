#!/usr/bin/env bash
# Runs sandbar on a cgroup v2 host: a Debian 12 VM under qemu's software
# emulation (TCG, no KVM needed), booted with the unified hierarchy, where
# tests/vm/guest/cgroup-v2-test.sh starts `sandbar serve`, makes a sandbox and
# checks that its memory, pids and CPU limits are enforced and that deleting
# it and stopping the server leave nothing behind. See tests/vm/README.md.
#
#   sudo tests/vm/run-cgroup-v2.sh
#
# Inputs (environment):
#   E2E_SANDBAR_BIN, E2E_ENVD_BIN  binaries to test
#                                  (default /var/cache/sandbar-target/debug/{sandbar,envd})
#   VM_TEMPLATE_DIR   the `base` template (default /var/lib/sandbar/templates/base)
#   VM_TEMPLATE_WAIT  seconds to wait for its template.json (default 900)
#   VM_CPUS, VM_MEM_MB  the VM's size (default 3 vCPUs, 3072 MiB: a sandbox
#                     gets 2 CPUs, so only a VM with more can show the cap bind)
#   VM_TIMEOUT        seconds before qemu is killed (default 900)
#   VM_KEEP_LOG       file to copy the serial console log to
#   VM_VERBOSE=1      stream the whole console (kernel and systemd too)
#   VM_GUEST_SCRIPT   another script to run in the VM instead of the test
#
# The VM image (root filesystem, kernel, initramfs) is built once with
# mmdebstrap and cached under /var/cache/sandbar-vm/, keyed by a hash of
# tests/vm/image/; it is booted from a throw-away snapshot and never changes.
# Everything per run (binaries, template, test script) goes on a second
# disk image made fresh in a temporary directory, removed at exit with the
# qemu process.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache=/var/cache/sandbar-vm
sandbar_bin="${E2E_SANDBAR_BIN:-/var/cache/sandbar-target/debug/sandbar}"
envd_bin="${E2E_ENVD_BIN:-/var/cache/sandbar-target/debug/envd}"
template_dir="${VM_TEMPLATE_DIR:-/var/lib/sandbar/templates/base}"
template_wait="${VM_TEMPLATE_WAIT:-900}"
vm_cpus="${VM_CPUS:-3}"
vm_mem="${VM_MEM_MB:-3072}"
vm_timeout="${VM_TIMEOUT:-900}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'run-cgroup-v2: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[[ $EUID -eq 0 ]] || die "run as root (mmdebstrap --mode=root, image ownership)"
t_all=$(now)

# --- 1. host packages --------------------------------------------------------
need=()
for pkg in qemu-system-x86 mmdebstrap e2fsprogs binutils; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' ||
    need+=("$pkg")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[[ -x "$sandbar_bin" ]] || die "no sandbar binary at $sandbar_bin (cargo build -p sandbar -p envd)"
[[ -x "$envd_bin" ]] || die "no envd binary at $envd_bin (cargo build -p sandbar -p envd)"

# --- 2. the cached VM image --------------------------------------------------
key=$(cd "$here/image" && cat $(ls) | sha256sum | cut -c1-16)
img="$cache/img-$key"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one builder at a time; concurrent runs share the result
if [[ ! -f "$img/ok" ]]; then
  t=$(now)
  say "building the VM image (recipe $key; a few minutes, once)"
  build="$cache/.build-$key"
  rm -rf "$build"
  if ! "$here/image/build.sh" "$build" "$cache/apt-archives" >"$cache/build-$key.log" 2>&1; then
    tail -n 30 "$cache/build-$key.log" >&2
    rm -rf "$build"
    die "image build failed; log: $cache/build-$key.log"
  fi
  touch "$build/ok"
  # Older recipes' images are dead weight (the apt archives stay).
  find "$cache" -maxdepth 1 -name 'img-*' ! -name "img-$key" -exec rm -rf {} +
  mv "$build" "$img"
  say "image built in $(since "$t") s"
else
  say "VM image $key cached ($(cat "$img/kernel-version"))"
fi
flock -u 9

# --- 3. the per-run disk: binaries, template, test ---------------------------
tmp=$(mktemp -d /var/tmp/sandbar-vm.XXXXXX)
qemu_pid=
tail_pid=
cleanup() {
  local rc=$? kids
  if [[ -n "$tail_pid" ]]; then
    pkill -P "$tail_pid" 2>/dev/null
    kill "$tail_pid" 2>/dev/null
  fi
  if [[ -n "$qemu_pid" ]] && kill -0 "$qemu_pid" 2>/dev/null; then
    # $qemu_pid is timeout(1); qemu is its child.
    kids=$(pgrep -P "$qemu_pid" || true)
    kill "$qemu_pid" 2>/dev/null # timeout passes SIGTERM on to qemu
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$qemu_pid" 2>/dev/null || break
      sleep 0.3
    done
    # shellcheck disable=SC2086
    kill -KILL $kids "$qemu_pid" 2>/dev/null
  fi
  wait 2>/dev/null
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ! -f "$template_dir/template.json" ]]; then
  say "waiting up to ${template_wait}s for $template_dir/template.json"
  deadline=$((SECONDS + template_wait))
  until [[ -f "$template_dir/template.json" ]]; do
    ((SECONDS < deadline)) || die "no template at $template_dir (build it: sandbar template build base)"
    sleep 5
  done
fi

t=$(now)
stage="$tmp/stage"
mkdir -p "$stage/bin" "$stage/guest" "$stage/templates/base"
# Debug info is most of a debug build's size and no use inside: strip it
# (symbols stay, for backtraces).
objcopy --strip-debug "$sandbar_bin" "$stage/bin/sandbar"
objcopy --strip-debug "$envd_bin" "$stage/bin/envd"
install -m 0755 "${VM_GUEST_SCRIPT:-$here/guest/cgroup-v2-test.sh}" "$stage/guest/run.sh"
cp "$template_dir/template.json" "$stage/templates/base/"
# Hard links: no copy here; mkfs reads the files once, with their owners
# (the shifted uid range, 1000000+) and modes.
if ! cp -al "$template_dir/rootfs" "$stage/templates/base/rootfs" 2>/dev/null; then
  rm -rf "$stage/templates/base/rootfs" # on another filesystem: copy
  cp -a "$template_dir/rootfs" "$stage/templates/base/rootfs"
fi
mb=$(du -sm "$stage" | cut -f1)
files=$(find "$stage" | wc -l)
# nodiscard: the file is new, so zeroes already (the guest mounts it with
# noinit_itable, so nothing zeroes inode tables later either).
mkfs.ext4 -q -F -E nodiscard -L sbdata -N "$((files + files / 4 + 4096))" -d "$stage" \
  "$tmp/data.img" "$((mb + mb / 5 + 256))M" >/dev/null
rm -rf "$stage"

# mkfs -d must keep ownership: root of the template is uid_base, user is
# uid_base + 1000, exactly as on the host.
stat_owner() { debugfs -R "stat $1" "$tmp/data.img" 2>/dev/null | sed -n 's/.*User: *\([0-9]*\) *Group: *\([0-9]*\).*/\1:\2/p'; }
for p in rootfs rootfs/home/user rootfs/etc/passwd; do
  want=$(stat -c %u:%g "$template_dir/$p")
  got=$(stat_owner "/templates/base/$p")
  [[ "$got" == "$want" ]] || die "data disk: /templates/base/$p is owned by '$got', the template's by $want"
done
say "data disk ready in $(since "$t") s ($((mb)) MiB, ownership kept)"

# --- 4. boot --------------------------------------------------------------------
log="$tmp/serial.log"
: >"$log"
cmdline="console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1"
cmdline+=" panic=-1 mitigations=off"
[[ "${VM_VERBOSE:-}" == 1 ]] || cmdline+=" quiet loglevel=3 systemd.show_status=0"
say "booting the VM ($vm_cpus vCPUs, $vm_mem MiB, TCG; timeout ${vm_timeout}s)"
t_boot=$(now)
# TMPDIR: where snapshot=on puts the root disk's overlay, removed with $tmp.
TMPDIR="$tmp" timeout -k 5 "$vm_timeout" nice -n 10 qemu-system-x86_64 \
  -accel tcg,thread=multi -machine q35 \
  -smp "$vm_cpus" -m "$vm_mem" \
  -nodefaults -no-user-config -display none -no-reboot -nic none \
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$cmdline" \
  -drive "file=$img/root.img,format=raw,if=virtio,snapshot=on,cache=unsafe" \
  -drive "file=$tmp/data.img,format=raw,if=virtio,cache=unsafe" \
  -device virtio-rng-pci \
  -serial "file:$log" </dev/null >"$tmp/qemu.out" 2>&1 &
qemu_pid=$!
# The console, live; the host's clock notes when the test starts.
(
  tail -n +1 -F --pid="$qemu_pid" "$log" 2>/dev/null |
    while IFS= read -r line; do
      line=${line%$'\r'}
      [[ "$line" == '[sbvm] TEST-START'* ]] && since "$t_boot" >"$tmp/test-start"
      [[ "${VM_VERBOSE:-}" == 1 || "$line" == '[sbvm]'* ]] && printf '%s\n' "$line"
    done
) &
tail_pid=$!
set +e
wait "$qemu_pid"
qemu_rc=$?
set -e
qemu_pid=
vm_s=$(since "$t_boot")
wait "$tail_pid" 2>/dev/null || true # tail ends within a second of qemu
tail_pid=
[[ -n "${VM_KEEP_LOG:-}" ]] && cp "$log" "$VM_KEEP_LOG"

# --- 5. results -------------------------------------------------------------
result=$(tr -d '\r' <"$log" | grep -a '^\[sbvm\] RESULT:' | tail -n1 || true)
if ((qemu_rc == 124 || qemu_rc == 137)); then
  tr -d '\r' <"$log" | tail -n 40 >&2
  die "the VM did not finish within ${vm_timeout}s (killed)"
fi
if [[ -z "$result" ]]; then
  tr -d '\r' <"$log" | tail -n 60 >&2
  cat "$tmp/qemu.out" >&2
  die "the VM stopped (qemu exit $qemu_rc) without a test result"
fi
say "VM ran ${vm_s} s (qemu start to test start $(cat "$tmp/test-start" 2>/dev/null || echo '?') s; qemu exit $qemu_rc); whole run $(since "$t_all") s"
echo "${result#\[sbvm\] RESULT: }"
[[ "$result" =~ \ 0\ failed ]]
