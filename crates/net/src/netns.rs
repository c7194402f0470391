//! Network namespaces pinned by bind mounts under `<state_dir>/netns/`.
//!
//! A namespace is made by a short-lived thread that `unshare`s into a fresh
//! one, so nothing is forked and no other thread of the process changes
//! namespace. The thread also opens the netlink socket that configures the
//! inside, because a netlink socket talks to the namespace it was created in.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use rtnetlink::Handle;

use crate::NetError;

/// A freshly made namespace: an fd to it (to move a veth end in) and a
/// netlink handle bound inside it.
pub(crate) struct NewNamespace {
    pub(crate) fd: OwnedFd,
    pub(crate) netlink: Handle,
}

/// Makes a new network namespace and pins it at `path` (which must not exist).
pub(crate) async fn create(path: PathBuf) -> Result<NewNamespace, NetError> {
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sandbar-netns".into())
        .spawn(move || {
            // The thread exits right after, so the namespace it entered stays
            // referenced only by the bind mount and the returned fd.
            let _ = tx.send(create_on_this_thread(&path, &runtime));
        })
        .map_err(|e| NetError::Setup(format!("spawning the namespace thread: {e}")))?;
    rx.await
        .map_err(|_| NetError::Setup("the namespace thread died".into()))?
}

fn create_on_this_thread(
    path: &Path,
    runtime: &tokio::runtime::Handle,
) -> Result<NewNamespace, NetError> {
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetError::Setup(format!("unshare(CLONE_NEWNET): {e}")))?;
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| NetError::Setup(format!("creating {}: {e}", path.display())))?;
    if let Err(e) = mount(
        Some("/proc/thread-self/ns/net"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = fs::remove_file(path);
        return Err(NetError::Setup(format!(
            "bind-mounting the namespace on {}: {e}",
            path.display()
        )));
    }
    let inside = || -> Result<NewNamespace, NetError> {
        let fd = File::open("/proc/thread-self/ns/net")
            .map_err(|e| NetError::Setup(format!("opening the new namespace: {e}")))?;
        // /proc/sys/net shows the namespace of the calling thread. New links
        // copy `default`, so eth0 gets no IPv6 at all: sandboxes have no IPv6
        // egress, and a link-local address would only invite probing the host.
        write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")?;
        // The namespace belongs to the host's user namespace, so root inside a
        // sandbox (root of a child user namespace) has no network capability
        // here. As container runtimes do: every uid may use ICMP echo sockets
        // (ping) and bind ports below 1024 (servers on port 80).
        write_sysctl("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")?;
        write_sysctl("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")?;
        let _guard = runtime.enter();
        let (connection, netlink, _) = rtnetlink::new_connection()
            .map_err(|e| NetError::Setup(format!("netlink socket inside the namespace: {e}")))?;
        runtime.spawn(connection);
        Ok(NewNamespace {
            fd: fd.into(),
            netlink,
        })
    };
    inside().inspect_err(|_| {
        let _ = remove(path);
    })
}

pub(crate) fn write_sysctl(path: &str, value: &str) -> Result<(), NetError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| NetError::Setup(format!("writing {value:?} to {path}: {e}")))
}

pub(crate) fn read_sysctl(path: &str) -> Result<String, NetError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| NetError::Setup(format!("reading {path}: {e}")))
}

/// Unpins a namespace; the kernel frees it once no process is inside.
pub(crate) fn remove(path: &Path) -> Result<(), NetError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetError::Setup(format!(
                "unmounting {}: {e}",
                path.display()
            )));
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::Setup(format!("removing {}: {e}", path.display()))),
    }
}

/// Creates the namespace directory as a shared mount point of its own (as
/// `ip netns` does), so that unmounting a namespace here also drops the
/// copies that mount namespaces made after it still hold; otherwise a
/// sandbox's mount namespace could keep other sandboxes' network namespaces
/// alive.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), NetError> {
    fs::create_dir_all(dir)
        .map_err(|e| NetError::Setup(format!("creating {}: {e}", dir.display())))?;
    if !mount_points()?.iter().any(|m| m == dir) {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
            NetError::Setup(format!("bind-mounting {} on itself: {e}", dir.display()))
        })?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| NetError::Setup(format!("making {} a shared mount: {e}", dir.display())))?;
    Ok(())
}

/// Unpins every namespace left in `dir` (by a previous run or this one) and,
/// when `remove_dir` is set, the directory's own mount and the directory.
pub(crate) fn clean_dir(dir: &Path, remove_dir: bool) -> Result<usize, NetError> {
    let mut removed = 0;
    let mut under: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &under {
        remove(m)?;
        removed += 1;
    }
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                remove(&entry.path())?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(NetError::Setup(format!("listing {}: {e}", dir.display()))),
    }
    if remove_dir {
        while mount_points()?.iter().any(|m| m == dir) {
            umount2(dir, MntFlags::MNT_DETACH)
                .map_err(|e| NetError::Setup(format!("unmounting {}: {e}", dir.display())))?;
        }
        match fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NetError::Setup(format!("removing {}: {e}", dir.display()))),
        }
    }
    Ok(removed)
}

/// Mount points of this process's mount namespace, from /proc/self/mountinfo.
pub fn mount_points() -> Result<Vec<PathBuf>, NetError> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| NetError::Setup(format!("reading /proc/self/mountinfo: {e}")))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            let octal = digits.iter().all(|d| (b'0'..=b'7').contains(d));
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d.wrapping_sub(b'0')));
            if octal && value <= 0xff {
                out.push(value as u8);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::unescape_mountinfo;

    #[test]
    fn mountinfo_octal_escapes() {
        assert_eq!(unescape_mountinfo("/run/a\\040b"), "/run/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\"), "/end\\");
    }
}
