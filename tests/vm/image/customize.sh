#!/bin/sh
# mmdebstrap customize hook: the VM's configuration, after all packages.
set -eu
root="$1"
here="$2"

echo sandbar-vm > "$root/etc/hostname"
cat > "$root/etc/hosts" <<'HOSTS'
127.0.0.1 localhost
127.0.1.1 sandbar-vm
::1 localhost ip6-localhost ip6-loopback
HOSTS
# A fixed machine id: an empty one would make every boot a "first boot".
echo 5a6e6462617276f6d2c3e3a1b2c3d4e5 > "$root/etc/machine-id"
# No network device, but sandbar's DNS forwarder wants an upstream to relay
# to: a documentation address (TEST-NET-1) that nothing answers.
echo 'nameserver 192.0.2.1' > "$root/etc/resolv.conf"

# vda: this image (booted from a throw-away snapshot); vdb: the per-run disk
# with the binaries, the template and the test script. No fsck: both are
# fresh every run.
mkdir -p "$root/mnt/sbdata"
cat > "$root/etc/fstab" <<'FSTAB'
/dev/vda  /            ext4  rw,errors=remount-ro,noinit_itable  0 0
/dev/vdb  /mnt/sbdata  ext4  rw,noinit_itable,x-systemd.device-timeout=60s  0 0
FSTAB

# The test runs once the system is up and powers the VM off.
install -m 0644 "$here/sandbar-vm-test.service" "$root/etc/systemd/system/"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf ../sandbar-vm-test.service \
  "$root/etc/systemd/system/multi-user.target.wants/sandbar-vm-test.service"

# Nothing waits for a login: no gettys (the test owns the serial console).
for unit in getty.target serial-getty@ttyS0.service getty@tty1.service \
  e2scrub_reap.service e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# *.localhost must resolve (sandbar's default domain): nss-myhostname.
grep -q myhostname "$root/etc/nsswitch.conf" ||
  sed -i 's/^hosts:.*/& myhostname/' "$root/etc/nsswitch.conf"
