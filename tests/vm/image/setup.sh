#!/bin/sh
# mmdebstrap setup hook: runs before any package is installed, so that the
# kernel's postinst builds the initramfs once, already small.
set -eu
root="$1"
# The VM's root is ext4 on virtio-blk: those drivers are all its initramfs
# needs. MODULES=most would pack every storage driver, and unpacking and
# probing them costs seconds under emulation.
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/etc/initramfs-tools/hooks"
cat > "$root/etc/initramfs-tools/conf.d/sandbar-vm.conf" <<'CONF'
MODULES=list
CONF
cat > "$root/etc/initramfs-tools/hooks/sandbar-vm" <<'HOOK'
#!/bin/sh
case "$1" in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_blk crc32c_generic ext4; do force_load "$m"; done
HOOK
chmod 0755 "$root/etc/initramfs-tools/hooks/sandbar-vm"
