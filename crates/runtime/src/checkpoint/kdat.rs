//! criu's cache of what it learned about the kernel ("kerndat"), probed
//! once per start of the runtime instead of at every criu run.
//!
//! Every criu run first probes the kernel's features (namespaces, memory,
//! sockets, ...): about 40 ms on a 2-core host, more than a whole restore
//! of a sandbox takes once that is known. criu keeps the result in
//! `/run/criu.kdat` (as root) or `$XDG_RUNTIME_DIR/criu.kdat`
//! (`--unprivileged`), but it saves the file only on a tmpfs, and never
//! again once a killed run left its `criu.kdat.tmp` behind; where `/run` is
//! no tmpfs (some VMs and containers) every run probes anew.
//!
//! So the runtime probes at start, twice (as host root, for restores; as an
//! owner uid with `--unprivileged`, for dumps: criu skips root-only probes
//! then), each in a mount namespace of its own with a tmpfs on `/run`
//! where criu may save, and keeps the bytes. Each run gets them back:
//! a restore in its own mount namespace, on a tmpfs over `/run` (with the
//! host's `/run/sandbar` bound back in); a dump, as the owner, through
//! `XDG_RUNTIME_DIR` pointing at [`owner_dir`], a root-owned directory it
//! can read and not write. Nothing of it is written to the host's `/run`.
//! A stale or unreadable cache costs nothing but the probe: criu checks
//! the file's magic and probes again when it does not match.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, MsFlags};

use super::{last_cap, on_own_thread, Plan, Step, PATH};

/// The name criu gives its cache file in either directory.
pub(crate) const FILE: &str = "criu.kdat";

/// What the probes found (each `None` where its probe failed; criu then
/// probes at each run, as it would anyway).
#[derive(Debug, Clone, Default)]
pub(crate) struct KernelCache {
    /// As host root sees the kernel: for restores.
    pub root: Option<Vec<u8>>,
    /// As an owner uid with `--unprivileged` sees it: for dumps, in
    /// [`owner_dir`] once [`KernelCache::place`] put it there.
    pub owner: Option<Vec<u8>>,
}

/// The directory dumps read their cache from (`XDG_RUNTIME_DIR`): in the
/// runtime's run directory, removed with it.
pub(crate) fn owner_dir(instance: &str) -> PathBuf {
    crate::binaries::run_dir(instance).join(DIR)
}

/// [`owner_dir`]'s name in the run directory.
pub(crate) const DIR: &str = "criu";

impl KernelCache {
    /// Both probes (blocking; about 0.1 s). A failure is said once and
    /// leaves that half empty.
    pub(crate) fn probe(bin: &Path) -> KernelCache {
        let take = |owner: Option<u32>| match probe(bin, owner) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::warn!(criu = %bin.display(), unprivileged = owner.is_some(), error = %e, "probing criu's kernel cache failed: every criu run probes the kernel itself (slower)");
                None
            }
        };
        KernelCache {
            root: take(None),
            owner: take(Some(crate::privileges::OWNER_BASE)),
        }
    }

    /// Writes the owner half into [`owner_dir`] (root-owned, mode 0755;
    /// the file 0644: criu as an owner uid reads it and cannot change it).
    /// Returns the directory, `None` if there is nothing to place or it
    /// could not be written (said once).
    pub(crate) fn place(&self, instance: &str) -> Option<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let bytes = self.owner.as_ref()?;
        let dir = owner_dir(instance);
        let written = (|| {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(dir.join(FILE))?;
            io::Write::write_all(&mut f, bytes)
        })();
        match written {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not place criu's kernel cache: every dump probes the kernel itself (slower)");
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }
}

/// One `criu check` in a mount namespace of its own with a tmpfs on `/run`
/// (where criu saves its cache, whatever the host's `/run` is); returns the
/// cache it saved. `owner`: run as that uid with every capability, as
/// dumps do ([`Step::BecomeOwner`]), with `--unprivileged`.
fn probe(bin: &Path, owner: Option<u32>) -> io::Result<Vec<u8>> {
    let bin = bin.to_path_buf();
    on_own_thread(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
        crate::sys::make_mounts_private()?;
        mount(
            Some("tmpfs"),
            "/run",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=1777,size=1m"),
        )?;
        let mut cmd = Command::new(&bin);
        cmd.arg("check")
            .env_clear()
            .env("PATH", PATH)
            .env("XDG_RUNTIME_DIR", "/run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        if let Some(uid) = owner {
            cmd.arg("--unprivileged");
            let mut plan = Plan::default();
            plan.push(
                "become an owner uid",
                Step::BecomeOwner {
                    uid,
                    last_cap: last_cap(),
                },
            );
            let report = report_w.as_raw_fd();
            // SAFETY: `Plan::run` makes only async-signal-safe system
            // calls on data prepared before the fork.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || plan.run(report));
            }
        }
        let out = cmd.output();
        drop(report_w);
        let out = out.map_err(|e| {
            let mut step = String::new();
            let _ = std::fs::File::from(report_r).read_to_string(&mut step);
            io::Error::other(if step.is_empty() {
                format!("run criu check: {e}")
            } else {
                format!("before criu check: {step}: {e}")
            })
        })?;
        // `check` may find a feature missing (and fail) after it saved the
        // cache: the cache is what counts here.
        std::fs::read(Path::new("/run").join(FILE)).map_err(|e| {
            io::Error::other(format!(
                "criu check ({}) saved no cache ({e}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the project's install puts criu; the test says why it skips.
    const CRIU: &str = "/usr/local/sbin/criu";

    #[test]
    fn both_halves_are_probed_and_the_hosts_run_is_left_alone() {
        if !Path::new(CRIU).exists() || !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root and {CRIU} (scripts/install-criu.sh)");
            return;
        }
        let host_file = Path::new("/run").join(FILE);
        let before = std::fs::read(&host_file).ok();
        let cache = KernelCache::probe(Path::new(CRIU));
        let root = cache.root.expect("the root probe saved a cache");
        let owner = cache.owner.expect("the owner probe saved a cache");
        assert!(!root.is_empty() && root.len() == owner.len());
        assert_eq!(
            std::fs::read(&host_file).ok(),
            before,
            "/run/{FILE} changed"
        );
    }
}
