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
    /// [`fingerprint`]s of envd and the interpreter, made on first use.
    fingerprints: std::sync::OnceLock<(String, Option<String>)>,
}

impl Binaries {
    /// What tells these binaries from other builds: a checkpoint records it,
    /// and its processes come back only onto the same binaries (their code
    /// is mapped from the file, not saved with the memory).
    pub(crate) fn fingerprints(&self) -> &(String, Option<String>) {
        self.fingerprints.get_or_init(|| {
            let of = |p: &Path| fingerprint(p).unwrap_or_else(|e| format!("unreadable: {e}"));
            (of(&self.envd), self.interpreter.as_deref().map(of))
        })
    }
}

/// A cheap identity of a binary: SHA-256 of its size, its first MiB (ELF
/// headers and the build id note, which every build changes) and its last
/// 64 KiB. Hashing all of envd (~120 MiB) would cost about a second.
pub(crate) fn fingerprint(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut h = sha2::Sha256::new();
    h.update(len.to_le_bytes());
    let mut head = vec![0u8; (1 << 20).min(len as usize)];
    f.read_exact(&mut head)?;
    h.update(&head);
    let tail_len = (64u64 << 10).min(len);
    f.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail)?;
    h.update(&tail);
    Ok(hex::encode(h.finalize()))
}

/// The directory in [`run_dir`] of the restores' stages
/// ([`crate::checkpoint::stage_dir`]), removed with the binaries.
pub(crate) const STAGES: &str = "restore";

/// The parent of every instance's [`run_dir`].
pub(crate) const RUN_ROOT: &str = "/run/sandbar";

/// The runtime's directory of `instance` for what lives only while it runs.
pub(crate) fn run_dir(instance: &str) -> PathBuf {
    PathBuf::from(RUN_ROOT).join(instance)
}

/// Where the tmpfs of `instance` is mounted.
pub(crate) fn dir_of(instance: &str) -> PathBuf {
    run_dir(instance).join("bin")
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
                    fingerprints: std::sync::OnceLock::new(),
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
        let _ = std::fs::remove_dir(parent.join(STAGES));
        let _ = std::fs::remove_dir_all(parent.join(crate::checkpoint::CACHE_DIR));
        let _ = std::fs::remove_dir(parent);
    }
}
