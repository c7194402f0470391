//! Host memory readings: `/proc/meminfo` and a sandbox's cgroup.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Bytes from `/proc/meminfo`.
#[derive(Debug, Clone, Copy)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
    /// tmpfs and shared memory.
    pub shmem: u64,
}

impl MemInfo {
    /// What the host uses, page cache that can be reclaimed excluded.
    pub fn used(self) -> u64 {
        self.total.saturating_sub(self.available)
    }
}

pub fn meminfo() -> Result<MemInfo> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Result<MemInfo> {
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
            .with_context(|| format!("{name} missing from /proc/meminfo"))?;
        let kib: u64 = line[name.len() + 1..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("parsing {line:?}"))?;
        Ok(kib * 1024)
    };
    Ok(MemInfo {
        total: field("MemTotal")?,
        available: field("MemAvailable")?,
        shmem: field("Shmem")?,
    })
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The directories a sandbox's cgroup has on this host: one per v1
/// controller, or one in the unified tree (the runtime's layout,
/// `sandbar-<instance>/<id>`).
pub fn sandbox_cgroup_dirs(instance: &str, id: &str) -> Vec<PathBuf> {
    let rel = Path::new(&format!("sandbar-{instance}")).join(id);
    let root = Path::new(CGROUP_ROOT);
    let mut dirs = vec![root.join(&rel)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            dirs.push(e.path().join(&rel));
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs.retain(|d| d.is_dir());
    dirs
}

/// The sandbox's instance-level cgroup directories that still exist.
pub fn instance_cgroup_dirs(instance: &str) -> Vec<PathBuf> {
    let name = format!("sandbar-{instance}");
    let root = Path::new(CGROUP_ROOT);
    let mut dirs = vec![root.join(&name)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            dirs.push(e.path().join(&name));
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Memory charged to the sandbox's cgroup, in bytes (v1
/// `memory.usage_in_bytes` or v2 `memory.current`).
pub fn sandbox_memory(instance: &str, id: &str) -> Result<u64> {
    for dir in sandbox_cgroup_dirs(instance, id) {
        for file in ["memory.usage_in_bytes", "memory.current"] {
            let path = dir.join(file);
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text
                    .trim()
                    .parse()
                    .with_context(|| format!("parsing {}", path.display()));
            }
        }
    }
    anyhow::bail!("no memory cgroup found for sandbox {id} (looked for {CGROUP_ROOT}/*/sandbar-{instance}/{id})")
}

/// Host pids of the processes in the sandbox's cgroup.
pub fn sandbox_pids(instance: &str, id: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = sandbox_cgroup_dirs(instance, id)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_fields() {
        let m = parse_meminfo(
            "MemTotal:       2048 kB\nMemFree:  1 kB\nMemAvailable:   1024 kB\nShmem: 8 kB\n",
        )
        .unwrap();
        assert_eq!(
            (m.total, m.available, m.used()),
            (2048 * 1024, 1024 * 1024, 1024 * 1024)
        );
        assert!(parse_meminfo("MemTotal: 1 kB\n").is_err());
    }

    #[test]
    fn live_meminfo_is_sane() {
        let m = meminfo().unwrap();
        assert!(m.total > 0 && m.available <= m.total);
    }
}
