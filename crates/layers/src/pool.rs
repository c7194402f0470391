//! The store's filesystem: a btrfs image in the data dir on a loop device
//! of its own (direct I/O, so its pages are not cached twice; auto-clear, so
//! the device goes with the mount), mounted at `<data_dir>/store` with
//! quotas on. A mount a crashed server left is taken over as it is.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use crate::{btrfs, io, LayerError};

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
/// The image's size when none is given: this share of the free space where
/// it is made, within these bounds. The image is sparse (it takes what is
/// written), and freed extents are given back to the host (`discard`).
const DEFAULT_SHARE: f64 = 0.8;
const MIN_SIZE: u64 = 4 << 30;
const MAX_SIZE: u64 = 1 << 40;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `<data_dir>/store` is the mount point, `<data_dir>/store.btrfs` the image.
    pub data_dir: PathBuf,
    /// Size of a new image; `None`: 80% of the free space (4 GiB to 1 TiB).
    pub size_bytes: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Pool {
    mount: PathBuf,
    uuid: String,
}

impl Pool {
    pub(crate) fn open(config: &StoreConfig) -> Result<Self, LayerError> {
        let mount = config.data_dir.join("store");
        std::fs::create_dir_all(&mount).map_err(io(format!("create {}", mount.display())))?;
        if !is_btrfs(&mount)? {
            let image = config.data_dir.join("store.btrfs");
            if !image.exists() {
                make_image(&image, config.size_bytes)?;
            }
            attach_and_mount(&image, &mount)?;
        }
        let root = std::fs::File::open(&mount).map_err(io("open the store"))?;
        let uuid = btrfs::fs_uuid(root.as_fd()).map_err(io("read the store's uuid"))?;
        let qgroups = Path::new("/sys/fs/btrfs").join(&uuid).join("qgroups");
        if !qgroups.exists() {
            let how =
                btrfs::enable_quotas(root.as_fd()).map_err(io("turn on quotas in the store"))?;
            tracing::info!(store = %mount.display(), how, "quotas on in the layer store");
        }
        Ok(Self { mount, uuid })
    }

    pub(crate) fn mount_point(&self) -> &Path {
        &self.mount
    }

    pub(crate) fn qgroup_referenced(&self, subvol: u64) -> Option<u64> {
        let f = Path::new("/sys/fs/btrfs")
            .join(&self.uuid)
            .join("qgroups")
            .join(format!("0_{subvol}"))
            .join("referenced");
        std::fs::read_to_string(f).ok()?.trim().parse().ok()
    }

    pub(crate) fn close(self) {
        match nix::mount::umount(&self.mount) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(store = %self.mount.display(), error = %e, "layer store busy at close; detaching it");
                let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn is_btrfs(path: &Path) -> Result<bool, LayerError> {
    let st = nix::sys::statfs::statfs(path)
        .map_err(|e| io(format!("statfs {}", path.display()))(e.into()))?;
    Ok(st.filesystem_type().0 as i64 == BTRFS_SUPER_MAGIC)
}

fn make_image(image: &Path, size: Option<u64>) -> Result<(), LayerError> {
    let dir = image.parent().unwrap_or(Path::new("/"));
    let size = match size {
        Some(s) => s,
        None => {
            let st = nix::sys::statvfs::statvfs(dir)
                .map_err(|e| io(format!("statvfs {}", dir.display()))(e.into()))?;
            let free = st.blocks_available() * st.fragment_size();
            ((free as f64 * DEFAULT_SHARE) as u64).clamp(MIN_SIZE, MAX_SIZE)
        }
    };
    let tmp = image.with_extension("btrfs.tmp");
    let f = std::fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    f.set_len(size).map_err(io("size the store image"))?;
    drop(f);
    // Single copies of metadata: the image lives on the host's own storage.
    let out = std::process::Command::new("mkfs.btrfs")
        .args([
            "-q",
            "-f",
            "-m",
            "single",
            "-d",
            "single",
            "-L",
            "sandbar-store",
        ])
        .arg(&tmp)
        .output()
        .map_err(io("run mkfs.btrfs (Debian package btrfs-progs)"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(LayerError::Setup(format!(
            "mkfs.btrfs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, image).map_err(io("install the store image"))?;
    tracing::info!(image = %image.display(), size_gib = size >> 30, "made the layer store image");
    Ok(())
}

// The loop ioctls (linux/loop.h), by hand for the same reason as btrfs.rs:
// the loopdev crate needs bindgen and libclang to build.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn attach_and_mount(image: &Path, mount: &Path) -> Result<(), LayerError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io(format!("open {}", image.display())))?;
    let ctl = std::fs::File::open("/dev/loop-control").map_err(io("open /dev/loop-control"))?;
    // A free device can be taken by someone else between the two calls: retry.
    let mut last = None;
    for _ in 0..16 {
        // SAFETY: plain ioctl without arguments.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io("find a free loop device")(
                std::io::Error::last_os_error(),
            ));
        }
        let dev_path = format!("/dev/loop{n}");
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev_path)
            .map_err(io(format!("open {dev_path}")))?;
        let mut config = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 4096,
            // SAFETY: all-zero is a valid loop_info64.
            info: unsafe { std::mem::zeroed() },
            reserved: [0; 8],
        };
        config.info.flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        let name = image.to_string_lossy();
        let n_bytes = name.len().min(63);
        config.info.file_name[..n_bytes].copy_from_slice(&name.as_bytes()[..n_bytes]);
        // SAFETY: a valid loop_config for the call's duration.
        if unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        } < 0
        {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                last = Some(e);
                continue;
            }
            return Err(io(format!("attach {} to {dev_path}", image.display()))(e));
        }
        // With auto-clear, the device detaches when its last user (the mount,
        // or this fd if the mount fails) goes.
        let mounted = nix::mount::mount(
            Some(dev_path.as_str()),
            mount,
            Some("btrfs"),
            nix::mount::MsFlags::MS_NOATIME
                | nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV,
            Some("discard=async"),
        );
        drop(dev);
        return mounted
            .map_err(|e| io(format!("mount the layer store on {}", mount.display()))(e.into()));
    }
    Err(io("attach the store image to a loop device")(
        last.unwrap_or_else(|| std::io::Error::other("every loop device was busy")),
    ))
}
