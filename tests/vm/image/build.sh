#!/usr/bin/env bash
# Builds the cached VM image of tests/vm/run-cgroup-v2.sh into OUT_DIR:
#   root.img     ext4 (label sbroot) of a minimal Debian 12 with systemd as init
#   vmlinuz      Debian's kernel (linux-image-amd64) from the image's /boot
#   initrd.img   its initramfs
# Everything in this directory (tests/vm/image/) is the recipe: the runner
# keys the cache on a hash of it, so any edit here rebuilds the image.
#
#   tests/vm/image/build.sh OUT_DIR [APT_ARCHIVES_CACHE]
set -euo pipefail

out="$1"
archives="${2:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mirror="${VM_MIRROR:-http://deb.debian.org/debian}"
security="${VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

# Only what sandbar needs at run time (nft for its table, ip for the test's
# checks, nss-myhostname for *.localhost, curl for the API), plus systemd,
# the kernel and its initramfs. No apt inside: the image is never updated.
packages=(
  systemd-sysv udev kmod linux-image-amd64 initramfs-tools
  nftables iproute2 libnss-myhostname ca-certificates curl procps btrfs-progs
)

root="$out/rootfs"
mkdir -p "$out"
rm -rf "$root"

hooks=()
if [[ -n "$archives" ]]; then
  # Downloaded .debs are kept between image builds (a recipe edit then
  # downloads only what changed).
  mkdir -p "$archives"
  hooks+=(
    --skip=essential/unlink
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/'
    --setup-hook="sync-in '$archives' /var/cache/apt/archives/"
    --customize-hook="sync-out /var/cache/apt/archives '$archives'"
  )
fi

mmdebstrap --mode=root --variant=essential --format=directory \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --setup-hook="sh '$here/setup.sh' \"\$1\"" \
  "${hooks[@]}" \
  --customize-hook="sh '$here/customize.sh' \"\$1\" '$here'" \
  bookworm "$root" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main"

# The kernel and initramfs are booted directly by qemu (-kernel/-initrd).
vmlinuz=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)
cp "$vmlinuz" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"
basename "$vmlinuz" | sed 's/^vmlinuz-//' > "$out/kernel-version"
rm -f "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-*

# An ext4 image straight from the directory (no loop mount); room to spare
# for the test's data dir (writes go to a per-run snapshot, never here).
mb=$(du -sm "$root" | cut -f1)
rm -f "$out/root.img"
mkfs.ext4 -q -F -L sbroot -d "$root" "$out/root.img" "$((mb + 1024))M"
rm -rf "$root"
