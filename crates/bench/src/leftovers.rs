//! After sandbar stopped: what of its instance is still on the host
//! (cgroups, network namespaces, the nftables table, mounts, processes).
//! A clean shutdown leaves nothing; the bench reports whatever it finds.

use std::path::Path;
use std::process::Command;

use crate::memory::instance_cgroup_dirs;

pub fn find(instance: &str, data_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in instance_cgroup_dirs(instance) {
        found.push(format!("cgroup {}", dir.display()));
    }
    let netns = Path::new("/run/sandbar").join(instance).join("netns");
    if let Ok(entries) = std::fs::read_dir(&netns) {
        for e in entries.flatten() {
            found.push(format!("network namespace {}", e.path().display()));
        }
    }
    let table = format!("sandbar_{instance}");
    if let Ok(out) = Command::new("nft").args(["list", "tables"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.split_whitespace().last() == Some(table.as_str()) {
                found.push(format!("nftables {line}"));
            }
        }
    }
    let run_dir = format!("/run/sandbar/{instance}/");
    let data = format!("{}/", data_dir.display());
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines() {
            if let Some(point) = line.split(' ').nth(4) {
                if point.starts_with(&run_dir) || point.starts_with(&data) {
                    found.push(format!("mount {point}"));
                }
            }
        }
    }
    let cgroup_name = format!("/sandbar-{instance}/");
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let name = p.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let cg = std::fs::read_to_string(p.path().join("cgroup")).unwrap_or_default();
            if cg.contains(&cgroup_name) {
                let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                found.push(format!("process {pid} ({})", comm.trim()));
            }
        }
    }
    found
}
