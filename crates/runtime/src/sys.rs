//! Thin wrappers over Linux calls that neither `nix` nor `std` expose in the
//! shape needed here (pidfds, `openat2` confined to a root, raw `clone`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A pidfd for `pid`: stable even if the pid is reused, pollable for exit.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed; the fd is valid for the call.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// Reaps the (exited) child behind `pidfd`; `None` when it is still running.
pub(crate) fn pidfd_try_reap(pidfd: &OwnedFd) -> io::Result<Option<i32>> {
    // SAFETY: zeroed siginfo is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a siginfo_t that lives across the call.
    let ret = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled in the pid field (0 when nothing has exited).
    let pid = unsafe { info.si_pid() };
    if pid == 0 {
        return Ok(None);
    }
    // SAFETY: for an exited child the status field is valid.
    Ok(Some(unsafe { info.si_status() }))
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` resolved as if `root` were `/`: symlinks (absolute ones too)
/// and `..` cannot leave it. Used for every file the host writes into a
/// sandbox's root filesystem, whose content the host does not trust.
pub(crate) fn open_in_root(
    root: &OwnedFd,
    path: &str,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let c = CString::new(path)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & libc::O_CREAT != 0 {
            mode as u64
        } else {
            0
        },
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid C string and open_how for the duration of the call.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Removes `path` (a file) inside `root`, resolved as by [`open_in_root`].
pub(crate) fn unlink_in_root(root: &OwnedFd, path: &str) -> io::Result<()> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
        None => (".", path),
    };
    let dirfd = open_in_root(root, dir, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))?;
    // SAFETY: valid dir fd and C string.
    cvt(unsafe { libc::unlinkat(dirfd.as_raw_fd(), name.as_ptr(), 0) } as libc::c_long)?;
    Ok(())
}

/// `open(2)`, close-on-exec; files it creates get mode 0600.
pub(crate) fn open_path(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: valid C string; the mode argument is read only with O_CREAT.
    let fd = cvt(
        unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600 as libc::c_uint) }
            as libc::c_long,
    )?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `fork` whose child gets the caller's parent as its parent (`CLONE_PARENT`).
/// Returns the child's pid in the parent and 0 in the child.
///
/// # Safety
/// The caller must be single-threaded (the helper process is).
pub(crate) unsafe fn fork_as_sibling() -> io::Result<i32> {
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: with a null stack, clone behaves like fork; the caller is
    // single-threaded, so the child's copy of memory is consistent.
    let pid =
        cvt(unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) })?;
    Ok(pid as i32)
}

pub(crate) fn dup2(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on integer descriptors.
    cvt(unsafe { libc::dup2(old, new) } as libc::c_long)?;
    Ok(())
}

/// Enters a namespace through an open namespace file.
pub(crate) fn setns(fd: &OwnedFd, nstype: i32) -> io::Result<()> {
    // SAFETY: valid fd for the duration of the call.
    cvt(unsafe { libc::setns(fd.as_raw_fd(), nstype) } as libc::c_long)?;
    Ok(())
}

/// `mount --make-rprivate /`: what the caller (in a mount namespace of its
/// own) mounts from now on stays out of the namespace it came from.
pub(crate) fn make_mounts_private() -> io::Result<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    Ok(())
}

/// Brings `lo` up in the caller's network namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation.
    let sock = cvt(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }
            as libc::c_long,
    )?;
    // SAFETY: the kernel just returned this descriptor to us.
    let sock = unsafe { OwnedFd::from_raw_fd(sock as RawFd) };
    // SAFETY: zeroed ifreq is valid; the name fits.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags =
        (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads an ifreq we own.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } as libc::c_long)?;
    Ok(())
}
