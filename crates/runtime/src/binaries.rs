//! The host binaries every sandbox runs (envd, and sandbar-interpreter for
//! templates that start it), copied at start into a small tmpfs of the
//! runtime's own at `/run/sandbar/<instance>/bin`, from where the helper
//! binds them read-only into sandboxes.
//!
//! Why a copy: a bind mount shows, in the sandbox's `/proc/self/mountinfo`,
//! the path of its source within the source's filesystem. Bound straight
//! from where they were installed or built, the binaries would tell root
//! inside the host's directory layout; from this tmpfs they are `/envd` on
//! a filesystem that holds nothing else. It also pins the binaries a
//! running server uses: replacing the installed files (an upgrade) does not
//! change them under live sandboxes. The copy is shared by all sandboxes of
//! the instance, so its pages are in memory once.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::RuntimeError;

/// The binaries of one runtime, in their tmpfs.
#[derive(Debug)]
pub(crate) struct Binaries {
    dir: PathBuf,
    pub envd: PathBuf,
    pub interpreter: Option<PathBuf>,
}

/// Where the tmpfs of `instance` is mounted.
pub(crate) fn dir_of(instance: &str) -> PathBuf {
    PathBuf::from("/run/sandbar").join(instance).join("bin")
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |source| RuntimeError::Io { context, source }
}

impl Binaries {
    /// Mounts the tmpfs (removing one a crashed predecessor left) and
    /// copies the binaries in.
    pub(crate) fn install(
        instance: &str,
        envd: &Path,
        interpreter: Option<&Path>,
    ) -> Result<Self, RuntimeError> {
        let dir = dir_of(instance);
        remove(&dir);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let size: u64 = [Some(envd), interpreter]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        mount(
            Some("sandbar-bin"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={}k,mode=0755", size / 1024 + 1024).as_str()),
        )
        .map_err(|e| io(format!("mount a tmpfs on {}", dir.display()))(e.into()))?;
        let copy = |src: &Path, name: &str| -> Result<PathBuf, RuntimeError> {
            let dest = dir.join(name);
            std::fs::copy(src, &dest).map_err(io(format!(
                "copy {} to {}",
                src.display(),
                dest.display()
            )))?;
            Ok(dest)
        };
        let made = (|| {
            Ok::<_, RuntimeError>((
                copy(envd, "envd")?,
                interpreter
                    .map(|p| copy(p, "sandbar-interpreter"))
                    .transpose()?,
            ))
        })();
        match made {
            Ok((envd, interpreter)) => {
                // Nothing is written there again.
                let _ = mount(
                    None::<&str>,
                    &dir,
                    None::<&str>,
                    MsFlags::MS_REMOUNT
                        | MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV,
                    None::<&str>,
                );
                Ok(Self {
                    dir,
                    envd,
                    interpreter,
                })
            }
            Err(e) => {
                remove(&dir);
                Err(e)
            }
        }
    }
}

impl Drop for Binaries {
    fn drop(&mut self) {
        remove(&self.dir);
    }
}

/// Unmounts and removes the binaries' dir (and the instance dir if that
/// leaves it empty).
pub(crate) fn remove(dir: &Path) {
    // Lazily: a sandbox still bound to a binary keeps its own reference.
    while umount2(dir, MntFlags::MNT_DETACH).is_ok() {}
    let _ = std::fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}
