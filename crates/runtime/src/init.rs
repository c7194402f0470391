//! The sandbox helper: a freshly exec'd, single-threaded process that builds
//! one sandbox and hands its first process (envd) back to the runtime.
//!
//! Why a separate exec and not a fork of the server: namespace calls
//! (`unshare(CLONE_NEWUSER)`, `setns`) refuse multi-threaded callers, and a
//! forked copy of a tokio server may only call async-signal-safe functions
//! until it execs. So the server spawns `sandbar __sandbox-init` (or any
//! binary that calls [`main_if_requested`] first thing in `main`), which:
//!
//! 1. joins the sandbox's cgroups, so everything after is limited;
//! 2. enters the sandbox's network namespace (or makes a private one);
//! 3. unshares mount, pid and cgroup namespaces and, still as host root,
//!    mounts the sandbox: tmpfs for the writable layer (its size is the disk
//!    limit), the overlay root, `/dev`, devpts, `/dev/shm`, envd (and, for
//!    templates that start it, `sandbar-interpreter`) read-only, and writes
//!    `/etc/resolv.conf` and envd's init file;
//! 4. forks the sandbox's PID 1 as a *sibling* (`CLONE_PARENT`), so that the
//!    runtime is its parent and reaps it through a pidfd;
//! 5. the child mounts `/proc` and `/sys` (which must be done from inside
//!    the new pid namespace), pivots into the root, detaches the host's
//!    mounts, unshares a user namespace whose maps the helper writes
//!    (`0 <uid_base> 65536`), becomes root of it, unshares uts and ipc
//!    namespaces owned by it, installs seccomp and execs envd;
//! 6. the helper confirms the exec and exits.
//!
//! Every mount lives only in the sandbox's mount namespace, so when its last
//! process dies the kernel takes all of them down: nothing to unmount on the
//! host, and nothing left behind by a crash.
//!
//! Protocol with the runtime: the spec is JSON on stdin; stdout carries
//! `pid <n>\n` (the sandbox's PID 1 as the host sees it) and is then handed
//! to envd as its ready fd, so the next byte on it means envd listens;
//! errors go to stderr and the exit status is non-zero.

use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde::{Deserialize, Serialize};

use crate::sys;

/// The argument that selects the helper in a binary's `main`.
pub const INIT_ARG: &str = "__sandbox-init";

/// Where envd finds its init file inside the sandbox; removed once envd is ready.
pub const INIT_FILE: &str = "/run/sandbar-init.json";
/// Where the envd binary is bind-mounted inside the sandbox.
pub const ENVD_PATH: &str = "/usr/bin/envd";

/// The device nodes of a sandbox's `/dev` (a tmpfs of its own): name,
/// major, minor. Shared with the restore of a checkpoint, which rebuilds it.
pub(crate) const DEV_NODES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];
/// The symbolic links of a sandbox's `/dev`: name, target.
/// The options of a sandbox's `/dev/shm` tmpfs (`uid_base`: the host uid
/// of the sandbox's root); a restore mounts a new one the same way.
pub(crate) fn shm_options(uid_base: u32) -> String {
    format!("mode=1777,size=64m,uid={uid_base},gid={uid_base}")
}

pub(crate) const DEV_LINKS: &[(&str, &str)] = &[
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];
/// Where the code-interpreter server is bind-mounted, when the template
/// starts it.
pub use crate::templates::INTERPRETER_PATH;

/// Everything the helper needs to build one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitSpec {
    pub id: String,
    /// The overlay's read-only lower layers, top first: snapshot layers,
    /// then the template's root filesystem.
    pub lowers: Vec<PathBuf>,
    /// The sandbox's writable layer (on the layer store, with its quota).
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Per-sandbox dir: `root/` (the overlay's mount point), logs, spec.
    pub dir: PathBuf,
    /// Bound over `/proc/sys/kernel/random/boot_id` inside.
    pub boot_id_file: PathBuf,
    pub uid_base: u32,
    /// Bind-mounted network namespace to join; `None`: a private one with
    /// loopback only.
    pub netns: Option<PathBuf>,
    /// The sandbox's DNS resolver for `/etc/resolv.conf`.
    pub resolver: Option<Ipv4Addr>,
    pub hostname: String,
    pub envd_bin: PathBuf,
    /// Bound read-only at [`INTERPRETER_PATH`] when set.
    #[serde(default)]
    pub interpreter_bin: Option<PathBuf>,
    pub envd_port: u16,
    /// Content of envd's `--init-file`.
    pub init_json: String,
    /// Files to write `0` into to join the sandbox's cgroups, before
    /// anything else (see [`crate::cgroup::Cgroup::join_files`]).
    pub cgroup_join: Vec<PathBuf>,
    pub seccomp: bool,
    /// The helper's descriptor holding the write end of the runtime's log
    /// pipe ([`LOG_FD`]): envd's stdout and stderr.
    #[serde(default = "default_log_fd")]
    pub log_fd: i32,
}

/// Where the runtime puts the write end of envd's log pipe in the helper.
pub const LOG_FD: i32 = 4;

fn default_log_fd() -> i32 {
    LOG_FD
}

#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct InitError {
    step: String,
    #[source]
    source: io::Error,
}

trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, InitError>;
}

impl<T, E: Into<io::Error>> Step<T> for Result<T, E> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, InitError> {
        self.map_err(|e| InitError {
            step: what(),
            source: e.into(),
        })
    }
}

fn other(step: &str, msg: impl Into<String>) -> InitError {
    InitError {
        step: step.to_string(),
        source: io::Error::other(msg.into()),
    }
}

/// If this process was started as the sandbox helper, runs it and exits;
/// otherwise returns at once. Call it first thing in `main`, before any
/// thread (tokio runtime) exists.
pub fn main_if_requested() {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(INIT_ARG)) {
        return;
    }
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(io::stderr(), "{e}");
            1
        }
    };
    std::process::exit(code);
}

fn run() -> Result<(), InitError> {
    let mut input = String::new();
    io::stdin()
        .read_to_string(&mut input)
        .step(|| "reading the spec".into())?;
    let spec: InitSpec =
        serde_json::from_str(&input).map_err(|e| other("parsing the spec", e.to_string()))?;

    // Files we create get exactly the modes we ask for.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    // Keep fd 3 taken so that the pipes below never land on it: the child
    // puts envd's ready fd there.
    let devnull =
        sys::open_path(Path::new("/dev/null"), libc::O_RDWR).step(|| "open /dev/null".into())?;
    sys::dup2(devnull.as_raw_fd(), 3).step(|| "reserve fd 3".into())?;

    for file in &spec.cgroup_join {
        std::fs::write(file, "0").step(|| format!("join cgroup {}", file.display()))?;
    }
    join_network(&spec)?;
    let netns_inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata("/proc/self/ns/net").step(|| "stat the network namespace".into())?,
    );
    let owner = crate::privileges::namespace_owner(netns_inode);
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWCGROUP)
        .step(|| "unshare mount/pid/cgroup namespaces".into())?;
    crate::sys::make_mounts_private().step(|| "make / private".into())?;

    let root = spec.dir.join("root");
    let targets = mount_root(&spec, &root)?;
    let filters = if spec.seccomp {
        crate::seccomp::filters().map_err(|e| other("seccomp", e.to_string()))?
    } else {
        Vec::new()
    };

    // The child's pivot_root moves this process's root too (same mount
    // namespace): keep a handle on the host's /proc to reach the child's id maps.
    let host_proc = sys::open_path(Path::new("/proc"), libc::O_PATH | libc::O_DIRECTORY)
        .step(|| "open /proc".into())?;
    let (to_parent_r, to_parent_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    let (to_child_r, to_child_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;

    // SAFETY: this process is single-threaded (a fresh exec that started no threads).
    let pid =
        unsafe { sys::fork_as_sibling() }.step(|| "fork the sandbox's first process".into())?;
    if pid == 0 {
        drop(to_parent_r);
        drop(to_child_w);
        let mut report = std::fs::File::from(to_parent_w);
        let err = child(
            &spec,
            owner,
            &root,
            &targets,
            &filters,
            to_child_r,
            &mut report,
        );
        let _ = write!(report, "{err}");
        // SAFETY: leave without running the parent's exit handlers.
        unsafe { libc::_exit(1) };
    }
    drop(to_parent_w);
    drop(to_child_r);

    // The runtime learns the pid before anything else can be written to this pipe.
    let mut out = std::fs::File::from(
        io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .step(|| "dup stdout".into())?,
    );
    writeln!(out, "pid {pid}").step(|| "report pid".into())?;
    drop(out);

    let mut from_child = std::fs::File::from(to_parent_r);
    let mut byte = [0u8; 1];
    let n = from_child
        .read(&mut byte)
        .step(|| "wait for the user namespace".into())?;
    if n == 1 && byte[0] == b'U' {
        write_id_maps(&host_proc, pid, spec.uid_base)?;
        std::fs::File::from(to_child_w)
            .write_all(b"G")
            .step(|| "release the child".into())?;
    } else {
        drop(to_child_w);
    }
    // EOF without a message: the child's exec closed the pipe.
    let mut msg = String::from_utf8_lossy(&byte[..n]).into_owned();
    from_child
        .read_to_string(&mut msg)
        .step(|| "wait for exec".into())?;
    let msg = msg.trim_start_matches('U');
    if !msg.is_empty() || n == 0 {
        let msg = if msg.is_empty() {
            "the sandbox's first process died before exec"
        } else {
            msg
        };
        return Err(other("sandbox init", msg));
    }
    Ok(())
}

fn join_network(spec: &InitSpec) -> Result<(), InitError> {
    match &spec.netns {
        Some(path) => {
            let fd = sys::open_path(path, libc::O_RDONLY)
                .step(|| format!("open netns {}", path.display()))?;
            sys::setns(&fd, libc::CLONE_NEWNET).step(|| "enter the network namespace".into())?;
        }
        None => {
            unshare(CloneFlags::CLONE_NEWNET).step(|| "unshare network namespace".into())?;
            sys::loopback_up().step(|| "bring lo up".into())?;
        }
    }
    // Root inside a user namespace may not bind ports below 1024 nor open
    // ICMP sockets in a network namespace the host owns; allow both, as root
    // on a machine of one's own expects. These sysctls are per namespace.
    std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")
        .step(|| "allow low ports".into())?;
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")
        .step(|| "allow ping".into())?;
    Ok(())
}

fn mnt(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    mount(Some(src), target, Some(fstype), flags, data)
        .step(|| format!("mount {fstype} on {}", target.display()))
}

/// Mount points the child fills from inside the new pid namespace.
struct ChildTargets {
    proc: PathBuf,
    sys: PathBuf,
    /// The file bound over the new /proc's boot_id.
    boot_id: PathBuf,
}

fn mount_root(spec: &InitSpec, root: &Path) -> Result<ChildTargets, InitError> {
    let base = spec.uid_base;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let (upper, work) = (&spec.upper, &spec.work);
    // The overlay's root takes its owner and mode from the upper dir.
    let bottom = spec
        .lowers
        .last()
        .ok_or_else(|| other("overlay", "no lower layer"))?;
    let lower_meta = std::fs::metadata(bottom).step(|| format!("stat {}", bottom.display()))?;
    std::os::unix::fs::chown(
        upper,
        Some(std::os::unix::fs::MetadataExt::uid(&lower_meta)),
        Some(std::os::unix::fs::MetadataExt::gid(&lower_meta)),
    )
    .step(|| "chown upper".into())?;
    std::fs::set_permissions(
        upper,
        std::fs::Permissions::from_mode(std::os::unix::fs::MetadataExt::mode(&lower_meta) & 0o7777),
    )
    .step(|| "chmod upper".into())?;
    // The layers are named by descriptor: overlayfs shows its options in
    // the sandbox's /proc/self/mountinfo as given, and a host path there
    // would tell root inside where the host keeps things.
    let layer = |p: &Path| -> Result<String, InitError> {
        let fd = sys::open_path(p, libc::O_PATH | libc::O_DIRECTORY)
            .step(|| format!("open layer {}", p.display()))?;
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        // Open until the mount is made; the helper is short-lived and the
        // descriptor closes at envd's exec.
        std::mem::forget(fd);
        Ok(path)
    };
    let lowers = spec
        .lowers
        .iter()
        .map(|p| layer(p))
        .collect::<Result<Vec<_>, _>>()?
        .join(":");
    // Layers must mean the same under any stack they end up in (a
    // snapshot's becomes a lower layer of other sandboxes): no redirects,
    // no index, no metadata-only copies.
    let opts = format!(
        "lowerdir={lowers},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off",
        layer(upper)?,
        layer(work)?
    );
    mnt("overlay", root, "overlay", MsFlags::empty(), Some(&opts))?;

    let rootfd =
        sys::open_path(root, libc::O_PATH | libc::O_DIRECTORY).step(|| "open root".into())?;
    let owned = |fd: &OwnedFd, what: &str| {
        nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(base)),
            Some(nix::unistd::Gid::from_raw(base)),
        )
        .step(|| format!("chown {what}"))
    };
    if let Some(resolver) = spec.resolver {
        write_in_root(
            &rootfd,
            "/etc/resolv.conf",
            0o644,
            format!("nameserver {resolver}\n").as_bytes(),
            &owned,
        )?;
    }
    write_in_root(&rootfd, INIT_FILE, 0o600, spec.init_json.as_bytes(), &owned)?;

    // /dev: a small tmpfs with the safe device nodes; pseudo-terminals come
    // from a devpts instance of the sandbox's own.
    let dev = target_in_root(&rootfd, "/dev", true)?;
    mnt(
        "tmpfs",
        &dev,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;
    let dev = root.join("dev");
    for &(name, major, minor) in DEV_NODES {
        let p = dev.join(name);
        nix::sys::stat::mknod(
            &p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
        )
        .step(|| format!("mknod {name}"))?;
        std::os::unix::fs::lchown(&p, Some(base), Some(base)).step(|| format!("chown {name}"))?;
    }
    for &(link, target) in DEV_LINKS {
        std::os::unix::fs::symlink(target, dev.join(link))
            .step(|| format!("symlink /dev/{link}"))?;
    }
    for d in ["pts", "shm"] {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dev.join(d))
            .step(|| format!("mkdir /dev/{d}"))?;
    }
    mnt(
        "devpts",
        &dev.join("pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&format!(
            "newinstance,ptmxmode=0666,mode=0620,gid={}",
            base + 5
        )),
    )?;
    mnt(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        nosuid_nodev | MsFlags::MS_NOEXEC,
        Some(&shm_options(base)),
    )?;
    std::os::unix::fs::lchown(&dev, Some(base), Some(base)).step(|| "chown /dev".into())?;

    // The host's binaries, read-only.
    bind_binary(&rootfd, &spec.envd_bin, ENVD_PATH, "envd")?;
    if let Some(interpreter) = &spec.interpreter_bin {
        bind_binary(
            &rootfd,
            interpreter,
            INTERPRETER_PATH,
            "sandbar-interpreter",
        )?;
    }
    Ok(ChildTargets {
        proc: target_in_root(&rootfd, "/proc", true)?,
        sys: target_in_root(&rootfd, "/sys", true)?,
        boot_id: spec.boot_id_file.clone(),
    })
}

/// Binds the host's `src` read-only at `path` inside the root.
fn bind_binary(rootfd: &OwnedFd, src: &Path, path: &str, what: &str) -> Result<(), InitError> {
    let target = target_in_root(rootfd, path, false)?;
    mount(
        Some(src),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .step(|| format!("bind {what}"))?;
    // A remount must name the new mount itself, so resolve the path again.
    let target = target_in_root(rootfd, path, false)?;
    mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .step(|| format!("make {what} read-only"))
}

/// Replaces `path` inside the root with a new file holding `data`.
fn write_in_root(
    rootfd: &OwnedFd,
    path: &str,
    mode: u32,
    data: &[u8],
    owned: &dyn Fn(&OwnedFd, &str) -> Result<(), InitError>,
) -> Result<(), InitError> {
    match sys::unlink_in_root(rootfd, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(InitError {
                step: format!("replace {path}"),
                source: e,
            })
        }
    }
    let fd = sys::open_in_root(
        rootfd,
        path,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        mode,
    )
    .step(|| format!("create {path}"))?;
    owned(&fd, path)?;
    std::fs::File::from(fd)
        .write_all(data)
        .step(|| format!("write {path}"))
}

/// A mount target inside the root, resolved without leaving it; made if
/// missing. Returned as a `/proc/self/fd` path valid while the helper lives.
fn target_in_root(rootfd: &OwnedFd, path: &str, dir: bool) -> Result<PathBuf, InitError> {
    let flags = if dir {
        libc::O_PATH | libc::O_DIRECTORY
    } else {
        libc::O_PATH
    };
    let fd = match sys::open_in_root(rootfd, path, flags, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir => sys::open_in_root(
            rootfd,
            path,
            libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW,
            0o755,
        )
        .step(|| format!("create {path}"))?,
        Err(e) => {
            return Err(InitError {
                step: format!("open {path}"),
                source: e,
            })
        }
    };
    let p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    // The fd must stay open until the mount is made; the helper is short-lived.
    std::mem::forget(fd);
    Ok(p)
}

fn write_id_maps(host_proc: &OwnedFd, pid: i32, base: u32) -> Result<(), InitError> {
    let map = format!("0 {base} 65536\n");
    for file in ["uid_map", "gid_map"] {
        let fd = nix::fcntl::openat(
            host_proc,
            format!("{pid}/{file}").as_str(),
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .step(|| format!("open {file}"))?;
        std::fs::File::from(fd)
            .write_all(map.as_bytes())
            .step(|| format!("write {file}"))?;
    }
    Ok(())
}

/// The sandbox's PID 1 until it execs envd. Returns only on failure.
fn child(
    spec: &InitSpec,
    owner: u32,
    root: &Path,
    targets: &ChildTargets,
    filters: &[seccompiler::BpfProgram],
    from_parent: OwnedFd,
    report: &mut std::fs::File,
) -> InitError {
    match child_steps(spec, owner, root, targets, filters, from_parent, report) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn child_steps(
    spec: &InitSpec,
    owner: u32,
    root: &Path,
    targets: &ChildTargets,
    filters: &[seccompiler::BpfProgram],
    from_parent: OwnedFd,
    report: &mut std::fs::File,
) -> Result<Never, InitError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", &targets.proc, "proc", flags, None)?;
    mnt(
        "sysfs",
        &targets.sys,
        "sysfs",
        flags | MsFlags::MS_RDONLY,
        None,
    )?;
    // This boot's own boot id, as a machine has (the kernel's is one for
    // the host): clients tell a resumed sandbox from a rebooted one by it.
    // Through the root's own path, not the /proc/self/fd one: a walk from
    // a descriptor's directory would not enter the proc mount made on it.
    let boot_id = root.join("proc/sys/kernel/random/boot_id");
    mount(
        Some(&targets.boot_id),
        &boot_id,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .step(|| "bind the boot id".into())?;
    mount(
        None::<&str>,
        &boot_id,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        None::<&str>,
    )
    .step(|| "make the boot id read-only".into())?;

    nix::unistd::chdir(root).step(|| "chdir root".into())?;
    nix::unistd::pivot_root(".", ".").step(|| "pivot_root".into())?;
    // The old root is now stacked on top of the new one: detach it, and with
    // it every host mount this namespace copied.
    umount2(".", MntFlags::MNT_DETACH).step(|| "detach the host's mounts".into())?;
    nix::unistd::chdir("/").step(|| "chdir /".into())?;

    become_owner(owner)?;
    unshare(CloneFlags::CLONE_NEWUSER).step(|| "unshare user namespace".into())?;
    // SAFETY: plain prctl; keep-caps ends here (exec clears it anyway).
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    report
        .write_all(b"U")
        .step(|| "report user namespace".into())?;
    let mut go = [0u8; 1];
    let n = std::fs::File::from(from_parent)
        .read(&mut go)
        .step(|| "wait for id maps".into())?;
    if n != 1 {
        return Err(other("wait for id maps", "the helper went away"));
    }
    nix::unistd::setgroups(&[]).step(|| "setgroups".into())?;
    let zero_gid = nix::unistd::Gid::from_raw(0);
    let zero_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(zero_gid, zero_gid, zero_gid).step(|| "setresgid 0".into())?;
    nix::unistd::setresuid(zero_uid, zero_uid, zero_uid).step(|| "setresuid 0".into())?;
    // Mount, uts and ipc namespaces owned by the sandbox's user namespace
    // (the mount namespace a locked copy of the one the helper built): what
    // lets CRIU checkpoint the sandbox as a whole.
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .step(|| "unshare mount/uts/ipc namespaces".into())?;
    nix::unistd::sethostname(&spec.hostname).step(|| "sethostname".into())?;
    // PID 1 leads its own session: no session or process group of the
    // sandbox points outside its pid namespace.
    nix::unistd::setsid().step(|| "setsid".into())?;

    // stdio: nothing in, envd's output to the runtime's log pipe (a pipe,
    // never a host file: see `sandbox_log`); fd 3: ready.
    sys::dup2(1, 3).step(|| "ready fd".into())?;
    let null =
        sys::open_path(Path::new("/dev/null"), libc::O_RDONLY).step(|| "open /dev/null".into())?;
    sys::dup2(null.as_raw_fd(), 0).step(|| "stdin".into())?;
    sys::dup2(spec.log_fd, 1).step(|| "stdout".into())?;
    sys::dup2(spec.log_fd, 2).step(|| "stderr".into())?;
    // Everything else closes at exec (the report pipe too, which tells the helper the exec happened).
    // SAFETY: plain syscall on a descriptor range.
    if unsafe { libc::close_range(4, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) } != 0 {
        return Err(InitError {
            step: "close_range".into(),
            source: io::Error::last_os_error(),
        });
    }

    let prog = CString::new(ENVD_PATH).expect("no NUL");
    let port = spec.envd_port.to_string();
    let args: Vec<CString> = [
        "envd",
        "--port",
        &port,
        "--init-file",
        INIT_FILE,
        "--ready-fd",
        "3",
    ]
    .iter()
    .map(|a| CString::new(*a).expect("no NUL"))
    .collect();
    let env: Vec<CString> = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "LANG=C.UTF-8",
    ]
    .iter()
    .map(|a| CString::new(*a).expect("no NUL"))
    .collect();
    crate::privileges::limit_to_sandbox_caps()
        .map_err(|e| other("drop capabilities", e.to_string()))?;
    crate::seccomp::install(filters).map_err(|e| other("seccomp", e.to_string()))?;
    let e = nix::unistd::execve(&prog, &args, &env).unwrap_err();
    Err(InitError {
        step: format!("exec {ENVD_PATH}"),
        source: e.into(),
    })
}

/// Takes on the host uid that will own the sandbox's user namespace (see
/// [`crate::privileges::namespace_owner`]) while keeping this process's
/// capabilities: the namespace's owner is the creator's effective uid, and
/// a creator without capabilities would be an unprivileged one (which some
/// distributions confine).
fn become_owner(owner: u32) -> Result<(), InitError> {
    use caps::CapSet;
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(InitError {
            step: "keep capabilities".into(),
            source: io::Error::last_os_error(),
        });
    }
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(owner),
        nix::unistd::Gid::from_raw(owner),
    );
    nix::unistd::setgroups(&[]).step(|| "drop supplementary groups".into())?;
    nix::unistd::setresgid(gid, gid, gid).step(|| "become the namespace's owner (gid)".into())?;
    nix::unistd::setresuid(uid, uid, uid).step(|| "become the namespace's owner (uid)".into())?;
    // The uid change emptied the effective set; the permitted one was kept.
    let permitted = caps::read(None, CapSet::Permitted)
        .map_err(|e| other("read capabilities", e.to_string()))?;
    caps::set(None, CapSet::Effective, &permitted)
        .map_err(|e| other("raise capabilities", e.to_string()))
}

/// The helper's first line on stdout: `pid <n>`.
pub(crate) fn parse_pid_line(line: &str) -> Option<i32> {
    line.trim().strip_prefix("pid ")?.parse().ok()
}
