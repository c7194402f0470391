#!/bin/sh
# Customize hook of the `base` template, run by mmdebstrap on the host with the
# new root filesystem as $1 (after the packages are installed).
set -eu
root="$1"

# The default user: uid/gid 1000, home from /etc/skel, bash, sudo without a
# password (the sandbox is the isolation boundary, not the password).
chroot "$root" groupadd --gid 1000 user
chroot "$root" useradd --uid 1000 --gid 1000 --create-home --skel /etc/skel \
    --shell /bin/bash user
printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\n' > "$root/etc/sudoers.d/user"
chmod 0440 "$root/etc/sudoers.d/user"

# Identity. The runtime sets the hostname (UTS namespace) and writes
# /etc/resolv.conf when a sandbox starts; these are the defaults it overlays.
printf 'sandbox\n' > "$root/etc/hostname"
cat > "$root/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
127.0.1.1	sandbox
HOSTS
: > "$root/etc/resolv.conf"

# A UTF-8 locale, as developers expect from a cloud machine.
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$root/etc/locale.gen"
chroot "$root" locale-gen
printf 'LANG=en_US.UTF-8\n' > "$root/etc/default/locale"

# `pip install` works for the user, as in E2B's images: the sandbox is a
# throwaway machine, so Debian's guard against mixing pip and apt is lifted.
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED

# Sandboxes trust the CAs the operator added to the host (for example the CA
# of a TLS-inspecting egress proxy), so HTTPS works inside as it does on the
# host. The recipe hash covers these files: changing them rebuilds the image.
if [ -d /usr/local/share/ca-certificates ]; then
    cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
# Node ignores the system store unless told; point it there for every login shell.
printf 'export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\n' \
    > "$root/etc/profile.d/sandbar-ca.sh"

# Nothing of the build host's identity stays in the image.
: > "$root/etc/machine-id"
