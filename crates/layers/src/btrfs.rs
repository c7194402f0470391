//! The btrfs ioctls the layer store needs: subvolumes (create, read-only
//! snapshot, destroy), simple quotas and their limits, a subvolume's id.
//!
//! Written against the kernel's UAPI (`linux/btrfs.h`) by hand: the one Rust
//! binding of libbtrfsutil needs that C library and bindgen at build time,
//! and these five calls are fixed-layout structs. The CLI (`btrfs ...`)
//! would cost a process per call on the sandbox create path.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const MAGIC: u8 = 0x94;
const VOL_NAME_MAX: usize = 4087;
const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_SUBVOL_RDONLY`
const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_QGROUP_LIMIT_MAX_RFER`
const LIMIT_MAX_RFER: u64 = 1;
/// `BTRFS_QUOTA_CTL_ENABLE`, `BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA`
const QUOTA_ENABLE: u64 = 1;
const QUOTA_ENABLE_SIMPLE: u64 = 4;
/// `BTRFS_FIRST_FREE_OBJECTID`: the root directory of every subvolume.
const FIRST_FREE_OBJECTID: u64 = 256;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; VOL_NAME_MAX + 1],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

#[repr(C)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 1024 - 32],
}

nix::ioctl_read!(ioc_fs_info, MAGIC, 31, FsInfoArgs);
nix::ioctl_write_ptr!(ioc_subvol_create, MAGIC, 14, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy, MAGIC, 15, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_create_v2, MAGIC, 23, VolArgsV2);
nix::ioctl_readwrite!(ioc_quota_ctl, MAGIC, 40, QuotaCtlArgs);
nix::ioctl_read!(ioc_qgroup_limit, MAGIC, 43, QgroupLimitArgs);
nix::ioctl_readwrite!(ioc_ino_lookup, MAGIC, 18, InoLookupArgs);

fn name_into<const N: usize>(name: &str, buf: &mut [u8; N]) -> io::Result<()> {
    let c = CString::new(name).map_err(|_| io::Error::other("name has a NUL byte"))?;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > N || name.contains('/') || name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad subvolume name {name:?}"),
        ));
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Creates subvolume `name` in the directory `parent`.
pub fn create_subvolume(parent: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut args = VolArgs {
        fd: 0,
        name: [0; VOL_NAME_MAX + 1],
    };
    name_into(name, &mut args.name)?;
    // SAFETY: a valid, initialised argument struct of the kernel's layout.
    unsafe { ioc_subvol_create(parent.as_raw_fd(), &args) }.map_err(errno)?;
    Ok(())
}

/// Makes `name` in `parent` a read-only snapshot of the subvolume `source`.
pub fn snapshot_readonly(
    source: BorrowedFd<'_>,
    parent: BorrowedFd<'_>,
    name: &str,
) -> io::Result<()> {
    let mut args = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: SUBVOL_RDONLY,
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    };
    name_into(name, &mut args.name)?;
    // SAFETY: as above.
    unsafe { ioc_snap_create_v2(parent.as_raw_fd(), &args) }.map_err(errno)?;
    Ok(())
}

/// Deletes subvolume `name` in `parent`, whatever it holds (the space is
/// reclaimed by the filesystem in the background).
pub fn destroy_subvolume(parent: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut args = VolArgs {
        fd: 0,
        name: [0; VOL_NAME_MAX + 1],
    };
    name_into(name, &mut args.name)?;
    // SAFETY: as above.
    unsafe { ioc_snap_destroy(parent.as_raw_fd(), &args) }.map_err(errno)?;
    Ok(())
}

/// Turns on simple quotas (kernel 6.7+), else classic qgroups. Simple
/// quotas charge an extent to the subvolume that wrote it, with no backref
/// walking at each commit: what keeps thousands of sandboxes cheap.
pub fn enable_quotas(fs: BorrowedFd<'_>) -> io::Result<&'static str> {
    for (cmd, what) in [
        (QUOTA_ENABLE_SIMPLE, "simple quotas"),
        (QUOTA_ENABLE, "qgroups"),
    ] {
        let mut args = QuotaCtlArgs { cmd, status: 0 };
        // SAFETY: as above.
        match unsafe { ioc_quota_ctl(fs.as_raw_fd(), &mut args) } {
            Ok(_) => return Ok(what),
            Err(nix::Error::EINVAL) | Err(nix::Error::EOPNOTSUPP) if cmd == QUOTA_ENABLE_SIMPLE => {
                continue
            }
            Err(e) => return Err(errno(e)),
        }
    }
    unreachable!("the loop returns")
}

/// Limits the subvolume `subvol` (an fd on its root) to `bytes`.
pub fn limit(subvol: BorrowedFd<'_>, bytes: u64) -> io::Result<()> {
    let mut args = QgroupLimitArgs {
        // 0: the subvolume the fd is in.
        qgroupid: 0,
        lim: QgroupLimit {
            flags: LIMIT_MAX_RFER,
            max_rfer: bytes,
            max_excl: 0,
            rsv_rfer: 0,
            rsv_excl: 0,
        },
    };
    // SAFETY: as above (the kernel reads the struct despite _IOR).
    unsafe { ioc_qgroup_limit(subvol.as_raw_fd(), &mut args) }.map_err(errno)?;
    Ok(())
}

/// The id of the subvolume `fd` is in.
pub fn subvolume_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: FIRST_FREE_OBJECTID,
        name: [0; 4080],
    };
    // SAFETY: as above.
    unsafe { ioc_ino_lookup(fd.as_raw_fd(), &mut args) }.map_err(errno)?;
    Ok(args.treeid)
}

/// The filesystem's UUID, as `/sys/fs/btrfs/<uuid>` names it.
pub fn fs_uuid(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut args = FsInfoArgs {
        max_id: 0,
        num_devices: 0,
        fsid: [0; 16],
        rest: [0; 1024 - 32],
    };
    // SAFETY: as above.
    unsafe { ioc_fs_info(fd.as_raw_fd(), &mut args) }.map_err(errno)?;
    let h = hex::encode(args.fsid);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::size_of::<QgroupLimitArgs>(), 48);
        assert_eq!(std::mem::size_of::<QuotaCtlArgs>(), 16);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
        assert_eq!(std::mem::size_of::<FsInfoArgs>(), 1024);
    }
}
