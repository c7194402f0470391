//! Per-sandbox cgroups: `sandbar-<instance>/<id>` under each v1 controller
//! (cpu, cpuacct, memory, pids) or under the v2 unified tree, with the
//! sandbox's CPU, memory and pids limits, and the readings metrics need.
//!
//! Where the tree lives on v2: `sandbar-<instance>` directly under the root
//! of the cgroup2 mount, not under the cgroup the server itself runs in
//! (`system.slice/sandbar.service`, a session scope, ...):
//!
//! - v2's "no internal processes" rule: a non-root cgroup can hand
//!   controllers to its children (`cgroup.subtree_control`) only while it has
//!   no process of its own. Nesting under the server's cgroup would mean
//!   moving the server out of it first, into a cgroup systemd owns unless the
//!   unit says `Delegate=yes` (scripts/setup.sh's does not; a server started
//!   from a shell sits in a session scope, never delegated), and systemd
//!   rewrites `cgroup.subtree_control` of the cgroups it owns on any reload.
//!   The root is exempt from the rule, and systemd leaves cgroups it did not
//!   make alone.
//! - One fixed path whatever started the server, as on v1: a server
//!   restarted after a crash finds its predecessor's sandboxes, and so do the
//!   host-state checks.
//! - The cost: systemd does not see sandboxes as the unit's (`systemctl stop`
//!   kills only the server, which kills its sandboxes on SIGTERM; the next
//!   start removes what a SIGKILLed one left), and the unit's own limits
//!   (`MemoryMax=`) cover the control plane, not the sandboxes.
//!
//! systemd turns controllers at the root off when no unit of its own needs
//! them (on Debian 12 `cpu` is off until sandbar turns it on); it cannot while
//! `sandbar-<instance>` has them in its own `cgroup.subtree_control` (EBUSY),
//! so they stay on for as long as the tree exists.
//!
//! In a cgroup namespace (a container on a v2 host, e.g. Docker's default
//! `--cgroupns=private`) the mount's root is the container's own cgroup,
//! which is not exempt: it holds the container's processes, the server among
//! them. Those are moved into a leaf `init` first (what Docker-in-Docker and
//! kind do), see [`delegate_v2`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// `freezer` holds a paused sandbox still in place (v2 has `cgroup.freeze`).
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "freezer"];
/// How long a freeze may take before it counts as failed (processes in
/// uninterruptible sleep delay it).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {source}")]
pub struct CgroupError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError {
        path: path.to_path_buf(),
        source,
    }
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One mount per controller: `(controller, its mount dir)`.
    V1(Vec<(String, PathBuf)>),
    /// The unified tree.
    V2(PathBuf),
}

/// The limits a sandbox gets.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpus: u32,
    pub pids_max: u64,
}

impl Hierarchy {
    pub fn detect() -> Result<Self, CgroupError> {
        let root = Path::new(ROOT);
        let fs = nix::sys::statfs::statfs(root).map_err(|e| err(root)(e.into()))?;
        if fs.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC {
            return Ok(Self::V2(root.to_path_buf()));
        }
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for ctrl in V1_CONTROLLERS {
            let dir = root.join(ctrl);
            // Co-mounted controllers (cpu,cpuacct) share one directory: use it once.
            let real = std::fs::canonicalize(&dir).map_err(err(&dir))?;
            if !mounts.iter().any(|(_, d)| *d == real) {
                mounts.push((ctrl.to_string(), real));
            }
        }
        Ok(Self::V1(mounts))
    }

    /// `sandbar-<instance>` in each controller.
    fn instance_dirs(&self, instance: &str) -> Vec<PathBuf> {
        let name = format!("sandbar-{instance}");
        match self {
            Self::V1(m) => m.iter().map(|(_, d)| d.join(&name)).collect(),
            Self::V2(root) => vec![root.join(name)],
        }
    }

    /// Makes the sandbox's cgroup and sets its limits.
    pub fn create(&self, instance: &str, id: &str, limits: Limits) -> Result<Cgroup, CgroupError> {
        let cg = Cgroup {
            dirs: self
                .instance_dirs(instance)
                .into_iter()
                .map(|d| d.join(id))
                .collect(),
            v2: matches!(self, Self::V2(_)),
        };
        if let Self::V2(root) = self {
            let parent = root.join(format!("sandbar-{instance}"));
            // Controllers must be delegated down to where the sandbox lives:
            // in the root's and the parent's `cgroup.subtree_control`.
            // systemd may turn one off at the root between the two writes
            // (a reload while the parent does not have it yet): then the
            // parent finds it unavailable, and the root is done again.
            let mut attempt = 0;
            loop {
                delegate_v2(root, true)?;
                mkdir(&parent)?;
                match delegate_v2(&parent, false) {
                    Err(e) if e.source.kind() == io::ErrorKind::Unsupported && attempt < 2 => {
                        attempt += 1;
                    }
                    result => break result?,
                }
            }
        }
        for dir in &cg.dirs {
            if let Some(parent) = dir.parent() {
                mkdir(parent)?;
            }
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(dir)(e)),
            }
        }
        if let Err(e) = cg.set_limits(limits) {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    /// Kills and removes every sandbox cgroup of `instance`; returns how many.
    pub fn remove_instance(&self, instance: &str) -> usize {
        let mut removed = 0;
        let v2 = matches!(self, Self::V2(_));
        for parent in self.instance_dirs(instance) {
            let Ok(entries) = std::fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let cg = Cgroup {
                        dirs: vec![entry.path()],
                        v2,
                    };
                    cg.kill_all(Duration::from_secs(5));
                    match cg.remove() {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            tracing::warn!(error = %e, "leftover cgroup could not be removed")
                        }
                    }
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
        removed
    }
}

/// What every sandbox cgroup needs on v2.
const V2_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

/// Enables [`V2_CONTROLLERS`] for `dir`'s children, writing only those
/// missing from its `cgroup.subtree_control` (most creates write nothing).
/// `mount_root`: `dir` is the root of the cgroup2 mount.
///
/// Enabling fails with EBUSY in a non-root cgroup that has processes of its
/// own. Of the cgroups sandbar writes to, only the mount's root can have any,
/// and only when it is not the real root (which has no `cgroup.type`): the
/// root of a cgroup namespace, i.e. a container's cgroup. Its processes
/// (the server, maybe the container's init) are then moved into the leaf
/// `init` below it, where they keep the container's limits, and the write is
/// tried again. The real root is never touched that way.
fn delegate_v2(dir: &Path, mount_root: bool) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let has = |text: &str, c: &str| text.split_whitespace().any(|w| w == c);
    let enabled = read(&file)?;
    let missing: Vec<&str> = V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !has(&enabled, c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let offered_file = dir.join("cgroup.controllers");
    let offered = read(&offered_file)?;
    if let Some(c) = missing.iter().find(|c| !has(&offered, c)) {
        return Err(err(&offered_file)(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "controller {c} is not delegated here (available: '{}'); the cgroup above must enable it in its cgroup.subtree_control",
                offered.trim()
            ),
        )));
    }
    let value = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let busy = |e: &io::Error| e.raw_os_error() == Some(libc::EBUSY);
    let mut result = std::fs::write(&file, &value);
    if matches!(&result, Err(e) if busy(e)) && mount_root && dir.join("cgroup.type").exists() {
        evacuate(dir)?;
        result = std::fs::write(&file, &value);
    }
    result.map_err(|e| {
        let hint = if busy(&e) {
            ": it holds processes, and v2 enables controllers for child cgroups only in a cgroup without processes of its own"
        } else {
            ""
        };
        err(&file)(io::Error::new(e.kind(), format!("enabling {value}: {e}{hint}")))
    })
}

/// Moves every process of the cgroup `dir` into its child `init`.
fn evacuate(dir: &Path) -> Result<(), CgroupError> {
    let leaf = dir.join("init");
    mkdir(&leaf)?;
    let target = leaf.join("cgroup.procs");
    // A few rounds: a process may fork while the others are moved.
    for _ in 0..5 {
        let procs = read(&dir.join("cgroup.procs"))?;
        if procs.trim().is_empty() {
            break;
        }
        for pid in procs.split_whitespace() {
            match std::fs::write(&target, pid) {
                // ESRCH: it exited meanwhile.
                Err(e) if e.raw_os_error() != Some(libc::ESRCH) => return Err(err(&target)(e)),
                _ => {}
            }
        }
    }
    tracing::info!(
        cgroup = %dir.display(),
        "moved the processes of this cgroup namespace's root into init/, so that it can delegate controllers"
    );
    Ok(())
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(dir)(e)),
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(err(path))
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(err(path))
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let s = read(path)?;
    let s = s.trim();
    if s == "max" {
        return Ok(u64::MAX);
    }
    s.parse().map_err(|_| {
        err(path)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a number: {s}"),
        ))
    })
}

/// `key value` lines of a stat file.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Raw readings of one sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_ns: u64,
    pub mem_used: u64,
    pub mem_limit: u64,
    pub mem_cache: u64,
}

/// One sandbox's cgroup (a directory per v1 controller, or one on v2).
#[derive(Debug, Clone)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl Cgroup {
    fn dir_with(&self, file: &str) -> Option<PathBuf> {
        self.dirs.iter().map(|d| d.join(file)).find(|p| p.exists())
    }

    pub(crate) fn set_limits(&self, l: Limits) -> Result<(), CgroupError> {
        if self.v2 {
            let d = &self.dirs[0];
            write(&d.join("memory.max"), &l.memory_bytes.to_string())?;
            if d.join("memory.swap.max").exists() {
                write(&d.join("memory.swap.max"), "0")?;
            }
            write(&d.join("pids.max"), &l.pids_max.to_string())?;
            write(
                &d.join("cpu.max"),
                &format!(
                    "{} {CPU_PERIOD_US}",
                    u64::from(l.cpus.max(1)) * CPU_PERIOD_US
                ),
            )?;
            return Ok(());
        }
        let need = |f: &str| {
            self.dir_with(f).ok_or_else(|| {
                err(&self.dirs[0])(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no controller file {f}"),
                ))
            })
        };
        let memory = need("memory.limit_in_bytes")?;
        let value = l.memory_bytes.to_string();
        // Swap off: memory+swap may not exceed memory (only when swap
        // accounting exists). The kernel keeps memsw >= memory at every
        // write: memsw goes first when the limit grows (a warm sandbox
        // handed over with more memory), last when it shrinks.
        match self.dir_with("memory.memsw.limit_in_bytes") {
            Some(memsw) => {
                if write(&memory, &value).is_err() {
                    write(&memsw, &value)?;
                    write(&memory, &value)?;
                }
                write(&memsw, &value)?;
            }
            None => write(&memory, &value)?,
        }
        if let Some(swappiness) = self.dir_with("memory.swappiness") {
            let _ = write(&swappiness, "0");
        }
        write(&need("pids.max")?, &l.pids_max.to_string())?;
        write(&need("cpu.cfs_period_us")?, &CPU_PERIOD_US.to_string())?;
        write(
            &need("cpu.cfs_quota_us")?,
            &(u64::from(l.cpus.max(1)) * CPU_PERIOD_US).to_string(),
        )?;
        Ok(())
    }

    /// Sets the CPU weight relative to other sandboxes (100 is the default
    /// share): warm sandboxes start in the background at a low weight so
    /// they do not slow the sandboxes in use.
    pub fn set_cpu_weight(&self, weight: u16) -> Result<(), CgroupError> {
        let weight = weight.clamp(1, 10_000);
        if self.v2 {
            return write(&self.dirs[0].join("cpu.weight"), &weight.to_string());
        }
        // v1 shares: 1024 is the default, as 100 is cpu.weight's.
        let shares = (u64::from(weight) * 1024 / 100).max(2);
        match self.dir_with("cpu.shares") {
            Some(f) => write(&f, &shares.to_string()),
            None => Ok(()),
        }
    }

    /// Stops every process of the cgroup in place (they keep their memory,
    /// use no CPU) and returns once they all are.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        // (control file, value to write, file that tells, done when it reads)
        let (file, value, state_file) = match (self.v2, frozen) {
            (true, true) => ("cgroup.freeze", "1", "cgroup.events"),
            (true, false) => ("cgroup.freeze", "0", "cgroup.events"),
            (false, true) => ("freezer.state", "FROZEN", "freezer.state"),
            (false, false) => ("freezer.state", "THAWED", "freezer.state"),
        };
        let v2 = self.v2;
        let done = |s: &str| {
            if v2 {
                stat_value(s, "frozen") == Some(u64::from(frozen))
            } else {
                s.trim() == value
            }
        };
        let path = self.dir_with(file).ok_or_else(|| {
            err(&self.dirs[0])(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {file}: the freezer controller is not mounted"),
            ))
        })?;
        write(&path, value)?;
        let state = path.with_file_name(state_file);
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        // Freezing is asynchronous: wait until the kernel says it is done
        // (usually within a millisecond).
        let mut pause = Duration::from_micros(100);
        loop {
            if done(&read(&state)?) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(&state)(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "not {} within {FREEZE_TIMEOUT:?}",
                        if frozen { "frozen" } else { "thawed" }
                    ),
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// The files a single-threaded process writes `0` into to join: on v1
    /// `tasks`, because moving only the calling thread skips the global
    /// threadgroup lock, whose RCU grace period otherwise costs each sandbox
    /// ~10 ms; on v2 `cgroup.procs`.
    pub fn join_files(&self) -> Vec<PathBuf> {
        let file = if self.v2 { "cgroup.procs" } else { "tasks" };
        self.dirs.iter().map(|d| d.join(file)).collect()
    }

    /// The `cgroup.procs` files (the member processes).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The directory whose freezer holds the sandbox still (v1 `freezer`,
    /// or the v2 cgroup itself): what `criu dump --freeze-cgroup` takes.
    pub fn freezer_dir(&self) -> Option<PathBuf> {
        if self.v2 {
            return self.dirs.first().cloned();
        }
        self.dir_with("freezer.state")
            .and_then(|f| f.parent().map(Path::to_path_buf))
    }

    /// Sends `signal` once to every process in the cgroup. A frozen process
    /// keeps it pending and acts on it as it thaws, before it runs again:
    /// how a frozen sandbox is killed without running another instruction.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// SIGKILLs every process in the cgroup until it is empty (or `timeout`).
    /// Returns whether it is empty.
    pub fn kill_all(&self, timeout: Duration) -> bool {
        if self.v2 {
            let kill = self.dirs[0].join("cgroup.kill");
            if kill.exists() {
                let _ = std::fs::write(&kill, "1");
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                tracing::warn!(cgroup = %self.dirs[0].display(), left = pids.len(), "processes survive SIGKILL");
                return false;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the cgroup directories (they must be empty of processes).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut result = Ok(());
        for dir in &self.dirs {
            // Freshly exited tasks can keep a cgroup busy for a moment.
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 500 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        result = Err(err(dir)(e));
                        break;
                    }
                }
            }
        }
        result
    }

    pub fn usage(&self) -> Result<Usage, CgroupError> {
        let find = |f: &str| {
            self.dir_with(f).ok_or_else(|| {
                err(&self.dirs[0])(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no controller file {f}"),
                ))
            })
        };
        if self.v2 {
            let d = &self.dirs[0];
            let cpu = read(&d.join("cpu.stat"))?;
            let stat = read(&d.join("memory.stat"))?;
            let current = read_u64(&d.join("memory.current"))?;
            let inactive = stat_value(&stat, "inactive_file").unwrap_or(0);
            return Ok(Usage {
                cpu_ns: stat_value(&cpu, "usage_usec").unwrap_or(0) * 1000,
                mem_used: current.saturating_sub(inactive),
                mem_limit: read_u64(&d.join("memory.max"))?,
                mem_cache: stat_value(&stat, "file").unwrap_or(0),
            });
        }
        let stat = read(&find("memory.stat")?)?;
        let usage = read_u64(&find("memory.usage_in_bytes")?)?;
        let inactive = stat_value(&stat, "total_inactive_file").unwrap_or(0);
        Ok(Usage {
            cpu_ns: read_u64(&find("cpuacct.usage")?)?,
            // Like `docker stats`: the working set, without reclaimable page cache.
            mem_used: usage.saturating_sub(inactive),
            mem_limit: read_u64(&find("memory.limit_in_bytes")?)?,
            mem_cache: stat_value(&stat, "total_cache").unwrap_or(0),
        })
    }

    /// Whether the OOM killer acted in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.dir_with(file)
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| stat_value(&s, "oom_kill"))
            .unwrap_or(0)
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_cgroup(enabled: &str, offered: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.subtree_control"), enabled).unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), offered).unwrap();
        dir
    }

    #[test]
    fn v2_delegation_writes_only_the_missing_controllers() {
        let dir = fake_cgroup("memory pids\n", "cpuset cpu io memory pids\n");
        delegate_v2(dir.path(), false).unwrap();
        let written = std::fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(written, "+cpu");

        let dir = fake_cgroup("cpu memory pids\n", "cpu memory pids\n");
        delegate_v2(dir.path(), true).unwrap();
        let left = std::fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(left, "cpu memory pids\n", "nothing to write");
    }

    #[test]
    fn v2_delegation_names_a_controller_the_parent_withholds() {
        let dir = fake_cgroup("", "memory pids\n");
        let e = delegate_v2(dir.path(), false).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::Unsupported);
        assert!(
            e.to_string().contains("controller cpu is not delegated"),
            "{e}"
        );
    }
}
