//! A process's claim on an instance name.
//!
//! Everything sandbar makes on the host carries its instance name (veths,
//! the nftables table, namespace pins, cgroups), and a starting server
//! removes what a previous process of the same instance left. Two live
//! processes with one instance name would therefore tear down each other's
//! sandboxes. The claim prevents that: an exclusive `flock` on
//! `/run/sandbar/locks/<instance>.lock`, held for as long as the process
//! manages the instance. The kernel drops it when the process dies, so a
//! crashed server never blocks its successor, and anyone (the test suite's
//! leak check included) can tell a live instance from leftovers by trying
//! the lock.
//!
//! Within one process the claim is shared: the network and the runtime of a
//! server both hold it, and it is released when the last holder drops it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::NetError;

/// Where claims are kept.
pub const LOCK_DIR: &str = "/run/sandbar/locks";

/// The lock file of `instance`.
pub fn lock_path(instance: &str) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("{instance}.lock"))
}

/// Held claims of this process, by instance.
fn held() -> &'static Mutex<HashMap<String, Weak<Held>>> {
    static HELD: OnceLock<Mutex<HashMap<String, Weak<Held>>>> = OnceLock::new();
    HELD.get_or_init(Default::default)
}

struct Held {
    /// Holds the lock: it goes when this descriptor closes.
    _file: File,
    path: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Unlink while still holding the lock (the fd closes after this):
        // a process racing to claim the name then finds that its file is no
        // longer the one at the path, and retries on a fresh one.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// This process's claim on an instance; the instance is free again when the
/// last clone is dropped.
#[derive(Clone)]
pub struct InstanceClaim {
    instance: String,
    _held: Arc<Held>,
}

impl std::fmt::Debug for InstanceClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceClaim")
            .field("instance", &self.instance)
            .finish()
    }
}

impl InstanceClaim {
    /// Claims `instance` for this process, or shares the claim this process
    /// already holds. Fails with [`NetError::InstanceInUse`] when another
    /// live process holds it.
    pub fn acquire(instance: &str) -> Result<Self, NetError> {
        let mut map = held().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get(instance).and_then(Weak::upgrade) {
            return Ok(Self {
                instance: instance.to_string(),
                _held: h,
            });
        }
        std::fs::create_dir_all(LOCK_DIR)
            .map_err(|e| NetError::Setup(format!("creating {LOCK_DIR}: {e}")))?;
        let path = lock_path(instance);
        let file = loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| NetError::Setup(format!("opening {}: {e}", path.display())))?;
            // SAFETY: flock on an fd we own; nix's Flock wrapper would take
            // ownership of the File, which we keep using below.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    return Err(NetError::InstanceInUse {
                        instance: instance.to_string(),
                        pid: pid.trim().parse().ok(),
                    });
                }
                return Err(NetError::Setup(format!(
                    "locking {}: {err}",
                    path.display()
                )));
            }
            // The holder we waited for may have unlinked the file just before
            // releasing it: only a lock on the file still at `path` counts.
            let same = std::fs::metadata(&path)
                .ok()
                .zip(file.metadata().ok())
                .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
            if same {
                file.set_len(0)
                    .and_then(|_| file.rewind())
                    .and_then(|_| writeln!(file, "{}", std::process::id()))
                    .map_err(|e| NetError::Setup(format!("writing {}: {e}", path.display())))?;
                break file;
            }
        };
        let h = Arc::new(Held { _file: file, path });
        map.insert(instance.to_string(), Arc::downgrade(&h));
        Ok(Self {
            instance: instance.to_string(),
            _held: h,
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique() -> String {
        format!("c{:05x}", rand::random::<u32>() & 0xfffff)
    }

    #[test]
    fn a_claim_is_shared_in_process_and_released_with_the_last_holder() {
        let name = unique();
        let a = InstanceClaim::acquire(&name).unwrap();
        let b = InstanceClaim::acquire(&name).unwrap();
        assert!(lock_path(&name).exists());
        let pid = std::fs::read_to_string(lock_path(&name)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        drop(a);
        assert!(lock_path(&name).exists(), "still held by b");
        drop(b);
        assert!(!lock_path(&name).exists(), "released with the last holder");
    }

    #[test]
    fn another_process_holding_the_name_is_refused_with_its_pid() {
        let name = unique();
        std::fs::create_dir_all(LOCK_DIR).unwrap();
        let marker = std::env::temp_dir().join(format!("sandbar-claim-{name}"));
        // `flock` (util-linux) holds the lock in a child process, which
        // writes its pid the way a claim does and then says it holds it.
        // `-o`: only flock itself holds the lock, so killing it frees the name.
        let mut child = std::process::Command::new("flock")
            .arg("-o")
            .arg(lock_path(&name))
            .args(["sh", "-c", "echo 4242 > \"$0\"; touch \"$1\"; sleep 30"])
            .arg(lock_path(&name))
            .arg(&marker)
            .spawn()
            .expect("flock(1) runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !marker.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "flock(1) never took the lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let err = InstanceClaim::acquire(&name).unwrap_err();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&marker);
        assert!(err.to_string().contains("4242"), "names the holder: {err}");
        match err {
            NetError::InstanceInUse { instance, pid } => {
                assert_eq!(instance, name);
                assert_eq!(pid, Some(4242));
            }
            other => panic!("unexpected {other}"),
        }

        // Free again once that process is gone.
        drop(InstanceClaim::acquire(&name).unwrap());
    }
}
