//! Removing what a previous process of the same instance left behind:
//! processes (through their cgroups) and mounts. Its sandboxes' files are
//! recovered (`runtime::persist::recover`), not removed.

use std::path::{Path, PathBuf};

use crate::cgroup::Hierarchy;

/// Mount points at or below `dir` in this process's mount namespace,
/// deepest first.
pub(crate) fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes one sandbox directory without ever recursing through a mount:
/// its known entries one by one, then the directory.
pub(crate) fn remove_sandbox_dir(dir: &Path) -> std::io::Result<()> {
    // criu's work dir (logs, statistics, pidfile): plain files only.
    let criu = dir.join("criu");
    if let Ok(rd) = std::fs::read_dir(&criu) {
        for entry in rd.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    for sub in ["root", "rw", "dev", "sys", "criu"] {
        match std::fs::remove_dir(dir.join(sub)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("remove {}: {e}", dir.join(sub).display()),
                ))
            }
        }
    }
    for file in [
        crate::sandbox_log::LOG_FILE,
        crate::sandbox_log::ROTATED_FILE,
        "sandbox.json",
        ".sandbox.json.tmp",
    ] {
        match std::fs::remove_file(dir.join(file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(std::io::Error::new(
            e.kind(),
            format!("remove {}: {e}", dir.display()),
        )),
        _ => Ok(()),
    }
}

/// What startup cleanup found.
#[derive(Debug, Default)]
pub(crate) struct Leftovers {
    pub cgroups: usize,
    pub mounts: usize,
}

pub(crate) fn clean(instance: &str, sandboxes_dir: &Path, cgroups: &Hierarchy) -> Leftovers {
    let mut left = Leftovers {
        cgroups: cgroups.remove_instance(instance),
        ..Default::default()
    };
    for m in mounts_below(sandboxes_dir) {
        match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => left.mounts += 1,
            Err(e) => {
                tracing::warn!(mount = %m.display(), error = %e, "leftover mount could not be removed")
            }
        }
    }
    // The sandbox directories stay: the runtime takes them (and their
    // writable layers) back as paused sandboxes, see `persist::recover`.
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn sandbox_dirs_are_removed_without_recursing() {
        let d = tempfile::tempdir().unwrap();
        let sb = d.path().join("sb1");
        std::fs::create_dir_all(sb.join("root")).unwrap();
        std::fs::create_dir_all(sb.join("rw")).unwrap();
        std::fs::write(sb.join("envd.log"), "x").unwrap();
        remove_sandbox_dir(&sb).unwrap();
        assert!(!sb.exists());
        // Content where a mount would be is never deleted.
        std::fs::create_dir_all(sb.join("root/etc")).unwrap();
        assert!(remove_sandbox_dir(&sb).is_err());
        assert!(sb.join("root/etc").exists());
    }
}
