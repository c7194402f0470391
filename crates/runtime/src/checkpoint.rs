//! Memory that outlives the processes holding it: a sandbox's process tree
//! checkpointed to disk with CRIU (`criu dump`) and restored from there
//! (`criu restore`), into the same sandbox (resume after a restart of the
//! server) or a new one (a fork, a create from a snapshot taken with memory).
//!
//! Only the processes are in the images: the files are the sandbox's layers
//! (the root is rebuilt as an overlay of them and given as `--root`), and
//! what the host lends a sandbox is given back at restore as CRIU
//! "external" mounts: `/dev` (a tmpfs with the device nodes, which root
//! inside a user namespace could not make), `/sys` (mounted from inside the
//! target network namespace, which root inside could not do either), the
//! boot id file bound over `/proc/sys/kernel/random/boot_id`, and the envd
//! and sandbar-interpreter binaries (the very same builds: their code is
//! mapped from the file, not saved; a checkpoint records their
//! [`crate::binaries::fingerprint`]s). envd's log pipe is made anew and
//! handed over with `--inherit-fd` (key `pipe:[inode]`).
//!
//! How criu runs, and why:
//!
//! - In the sandbox's network namespace (entered between fork and exec):
//!   the tree then shares criu's, so the netns is not in the images and a
//!   restore lands in whatever namespace criu runs in (the new sandbox's).
//! - Established TCP connections are closed (`--tcp-close`, at dump and
//!   restore): restoring them needs TCP_REPAIR, i.e. CAP_NET_ADMIN over the
//!   namespace's owner (the host), which the restored tasks do not have.
//!   Listening sockets come back; clients reconnect.
//! - Dumps run with the euid that owns the sandbox's user namespace (see
//!   [`crate::privileges::namespace_owner`]) and every capability the
//!   runtime has, as ambient capabilities: the owner has all capabilities in
//!   that namespace, which criu needs to read the tasks' rlimits (host root
//!   without CAP_SYS_RESOURCE, as on some hosts, fails with `Can't get
//!   rlimit 0: Operation not permitted` otherwise). criu wants
//!   `--unprivileged` for any euid but 0; that mode only leaves the cgroups
//!   out of the images, and the runtime places restored tasks itself.
//! - Restores run as host root. criu writes the restored uts namespace's
//!   hostname through `/proc/sys/kernel/hostname`, whose permission check
//!   admits the global root euid only (`Can't open sysctl kernel/hostname:
//!   Permission denied` as the owner uid), so the user namespace criu makes
//!   is owned by host root: a restored sandbox shares host root's per-user
//!   kernel limits (inotify, signals, message queues), as every sandbox did
//!   before the per-sandbox owners. Booted sandboxes keep their own owner;
//!   the trade-off is criu's, not sandbar's choice.
//! - cgroups: criu itself joins the target sandbox's cgroups and unshares a
//!   cgroup namespace rooted there before it execs, and restores with
//!   `--manage-cgroups=ignore`: the restored tree is born in them, with the
//!   limits the runtime set, whatever the images say (unprivileged dumps
//!   carry no cgroups at all).
//! - Between fork and exec the child only makes raw system calls on
//!   arguments prepared beforehand ([`Step`]): the runtime is
//!   multi-threaded, and a forked copy of it must not allocate.
//! - `/dev/shm`, the one tmpfs inside, is saved by criu with tar and
//!   unpacked with tar at every restore (about 5 ms of a 26 ms restore):
//!   when it is empty at the dump it is left out as an external mount, and
//!   a restore mounts a new empty one (as the helper does) in its place.
//! - `criu restore -d -S`: the restored init is a sibling of criu, i.e. a
//!   child of the runtime, which reaps it through a pidfd as any sandbox's.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::binaries::RUN_ROOT;
use crate::init::{shm_options, DEV_LINKS, DEV_NODES, ENVD_PATH, INTERPRETER_PATH};
use crate::sys;

mod kdat;
pub(crate) use kdat::DIR as CACHE_DIR;

/// The sandbox's own files beside its images: what a restore needs, and the
/// mark that the images are complete (written last).
pub(crate) const META_FILE: &str = "checkpoint.json";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// Where criu may look for the paths of inotify watches (envd's watchers):
/// overlayfs gives no usable file handle, so criu searches for the inode.
const IRMAP_SCAN: &[&str] = &["/home", "/root", "/tmp"];
const DUMP_LOG: &str = "dump.log";
const RESTORE_LOG: &str = "restore.log";
const PIDFILE: &str = "restored.pid";

/// A working criu binary.
#[derive(Debug, Clone)]
pub(crate) struct Criu {
    bin: PathBuf,
    /// What criu would otherwise probe at every run ([`kdat`]).
    cache: kdat::KernelCache,
    /// Where dumps find their half of it ([`Criu::place_cache`]).
    owner_cache: Option<PathBuf>,
}

/// What a checkpoint records beside its images ([`META_FILE`], mode 0600:
/// it holds envd's access token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// The key of envd's log pipe for `--inherit-fd`: `pipe:[inode]`.
    pub log_pipe: String,
    /// The boot the processes belong to (a restore continues it).
    pub boot_id: String,
    /// envd's access token when the images were taken: a copy needs it to
    /// be given its own (`/init` wants the current one).
    pub access_token: Option<String>,
    pub template: String,
    pub uid_base: u32,
    /// [`crate::binaries::fingerprint`]s of envd and the interpreter
    /// (`None`: the template does not run it).
    pub envd: String,
    pub interpreter: Option<String>,
    pub taken_at: chrono::DateTime<chrono::Utc>,
    /// `/dev/shm` was empty at the dump and left out of the images (an
    /// external mount): a restore gives the copy a new empty one instead
    /// of unpacking the dumped tmpfs with tar. Older images: false.
    #[serde(default)]
    pub shm_external: bool,
}

pub(crate) fn write_meta(images: &Path, meta: &Meta) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = images.join(".checkpoint.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(meta).expect("serializable"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, images.join(META_FILE))
}

/// Makes the images readable by the restore and nobody else but root:
/// owned by host root, group the sandboxes' root (`uid_base`), mode 0640
/// (dir 0750). Part of a restore opens them from inside the restored user
/// namespace, some before its id maps are written (still host root, the
/// owner), some after (its root, the group); no capability helps there,
/// and other host users must not read a sandbox's memory.
pub(crate) fn hand_images_to(images: &Path, uid_base: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(images)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::os::unix::fs::lchown(entry.path(), Some(0), Some(uid_base))?;
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o640))?;
        }
    }
    std::os::unix::fs::lchown(images, Some(0), Some(uid_base))?;
    std::fs::set_permissions(images, std::fs::Permissions::from_mode(0o750))
}

/// The record of complete images in `images` (`None`: none, or unfinished).
pub(crate) fn read_meta(images: &Path) -> Option<Meta> {
    serde_json::from_slice(&std::fs::read(images.join(META_FILE)).ok()?).ok()
}

/// A dump of one sandbox's tree.
pub(crate) struct Dump<'a> {
    /// The sandbox's PID 1 as the host sees it.
    pub pid: i32,
    pub netns: &'a OwnedFd,
    /// The sandbox's freezer ([`crate::cgroup::Cgroup::freezer_dir`]),
    /// frozen by the caller; it stays frozen after the dump.
    pub freezer: &'a Path,
    pub images: &'a Path,
    /// For criu's log and statistics.
    pub work_dir: &'a Path,
    /// The interpreter is bound into the sandbox.
    pub interpreter: bool,
}

/// A restore into a sandbox the caller prepared (cgroups, netns, layers).
pub(crate) struct Restore<'a> {
    pub images: &'a Path,
    pub work_dir: &'a Path,
    /// An empty directory on the host ([`stage_dir`]) where criu's own
    /// mount namespace gets a tmpfs holding the root overlay, `/dev`,
    /// `/sys` and the boot id: the paths criu opens from inside the
    /// restored user namespace, see [`stage_dir`].
    pub stage: &'a Path,
    /// The overlay: lower layers top first, the writable layer's dirs.
    pub lowers: &'a [PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
    pub netns: &'a OwnedFd,
    /// The sandbox's cgroup files to join ([`crate::cgroup::Cgroup::join_files`]).
    pub cgroup_join: &'a [PathBuf],
    pub envd: &'a Path,
    pub interpreter: Option<&'a Path>,
    /// The boot id file (bound over the sandbox's, read through the stage).
    pub boot_id: &'a Path,
    /// The write end of envd's new log pipe, and the old pipe's key.
    pub log_write: &'a OwnedFd,
    pub log_pipe: &'a str,
    pub uid_base: u32,
    /// The images left `/dev/shm` out ([`Meta::shm_external`]).
    pub shm_external: bool,
}

impl Criu {
    /// The criu at `bin` if `criu check` passes there (blocking). Says once
    /// why memory persistence is off otherwise.
    pub(crate) fn detect(bin: Option<&Path>) -> Option<Criu> {
        let Some(bin) = bin else {
            tracing::info!("no criu configured: pauses and snapshots keep files only across restarts, forks and snapshots");
            return None;
        };
        let out = Command::new(bin)
            .arg("check")
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                tracing::info!(criu = %bin.display(), "criu works: processes survive restarts, snapshots and forks");
                Some(Criu {
                    bin: bin.to_path_buf(),
                    cache: kdat::KernelCache::probe(bin),
                    owner_cache: None,
                })
            }
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                tracing::warn!(criu = %bin.display(), status = %o.status, output = %text.trim(), "`criu check` fails: no memory persistence (pauses and snapshots keep files only across restarts, forks and snapshots)");
                None
            }
            Err(e) => {
                tracing::warn!(criu = %bin.display(), error = %e, "criu cannot run: no memory persistence (pauses and snapshots keep files only across restarts, forks and snapshots)");
                None
            }
        }
    }

    /// Puts the dumps' half of the kernel cache into `instance`'s run
    /// directory (once the runtime made it; it goes with it).
    pub(crate) fn place_cache(&mut self, instance: &str) {
        self.owner_cache = self.cache.place(instance);
    }

    /// Checkpoints the tree of `d.pid` into `d.images`, leaving it frozen
    /// (the caller then kills or thaws it). Blocking. Returns whether
    /// `/dev/shm` was left out ([`Meta::shm_external`]).
    pub(crate) fn dump(&self, d: &Dump<'_>) -> Result<bool, String> {
        let owner = namespace_owner_of(d.pid)
            .map_err(|e| format!("read the owner of the sandbox's user namespace: {e}"))?;
        // A tmpfs criu saves with tar and unpacks with tar at every restore
        // (about 5 ms of each): nothing to keep when it is empty.
        let shm_external = std::fs::read_dir(format!("/proc/{}/root/dev/shm", d.pid))
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false);
        let mut args: Vec<String> = vec![
            "dump".into(),
            "-t".into(),
            d.pid.to_string(),
            "-D".into(),
            path_arg(d.images)?,
            "-W".into(),
            path_arg(d.work_dir)?,
            "-o".into(),
            DUMP_LOG.into(),
            "--freeze-cgroup".into(),
            path_arg(d.freezer)?,
            "--leave-running".into(),
            // See the module's comment: connections come back closed.
            "--tcp-close".into(),
            // Nothing to lock: no connection is dumped.
            "--network-lock".into(),
            "skip".into(),
            "--file-locks".into(),
            "--ghost-limit".into(),
            "64M".into(),
        ];
        for (path, key) in externals(d.interpreter, shm_external) {
            args.push("--external".into());
            args.push(format!("mnt[{path}]:{key}"));
        }
        for p in IRMAP_SCAN {
            args.push("--irmap-scan-path".into());
            args.push(p.to_string());
        }
        if owner != 0 {
            args.push("--unprivileged".into());
        }
        let mut plan = Plan::default();
        plan.push(
            "enter the sandbox's network namespace",
            Step::SetNs(d.netns.as_raw_fd(), libc::CLONE_NEWNET),
        );
        if owner != 0 {
            plan.push(
                "become the owner of the sandbox's user namespace",
                Step::BecomeOwner {
                    uid: owner,
                    last_cap: last_cap(),
                },
            );
        }
        let mut env = Vec::new();
        if let (true, Some(dir)) = (owner != 0, &self.owner_cache) {
            env.push(("XDG_RUNTIME_DIR", dir.as_path()));
        }
        let _ = std::fs::remove_file(d.work_dir.join(DUMP_LOG));
        self.run(&args, &env, plan, d.work_dir, DUMP_LOG)
            .map(|_| shm_external)
    }

    /// Restores the tree in `r.images` into the prepared sandbox; returns
    /// the restored init's host pid (a child of this process). Blocking.
    pub(crate) fn restore(&self, r: &Restore<'_>) -> Result<i32, String> {
        let pidfile = r.work_dir.join(PIDFILE);
        match std::fs::remove_file(&pidfile) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(format!("remove {}: {e}", pidfile.display()))
            }
            _ => {}
        }
        let _ = std::fs::remove_file(r.work_dir.join(RESTORE_LOG));
        let (root, dev, sys_dir, boot_id, shm) = (
            r.stage.join("root"),
            r.stage.join("dev"),
            r.stage.join("sys"),
            r.stage.join("bootid"),
            r.stage.join("shm"),
        );
        let mut args: Vec<String> = vec![
            "restore".into(),
            "-D".into(),
            path_arg(r.images)?,
            "-W".into(),
            path_arg(r.work_dir)?,
            "-o".into(),
            RESTORE_LOG.into(),
            "--root".into(),
            path_arg(&root)?,
            "--tcp-close".into(),
            "--file-locks".into(),
            "--manage-cgroups=ignore".into(),
            "--restore-detached".into(),
            "--restore-sibling".into(),
            "--pidfile".into(),
            path_arg(&pidfile)?,
            "--inherit-fd".into(),
            format!("fd[{}]:{}", r.log_write.as_raw_fd(), r.log_pipe),
        ];
        let mut sources = vec![
            ("envd", r.envd),
            ("dev", dev.as_path()),
            ("sys", sys_dir.as_path()),
            ("bootid", boot_id.as_path()),
        ];
        if let Some(i) = r.interpreter {
            sources.push(("interpreter", i));
        }
        if r.shm_external {
            sources.push(("shm", shm.as_path()));
        }
        for (key, source) in sources {
            args.push("--external".into());
            args.push(format!("mnt[{key}]:{}", path_arg(source)?));
        }

        // The overlay names its layers by descriptor, as the helper does:
        // its options show in the sandbox's mountinfo. Descriptors opened
        // here would name the host namespace's mounts, which overlayfs
        // refuses in another namespace ("failed to clone upperpath"): the
        // child opens them after its unshare, into descriptor numbers
        // reserved here (placeholders it replaces).
        let layers: Vec<&Path> = r
            .lowers
            .iter()
            .map(PathBuf::as_path)
            .chain([r.upper, r.work])
            .collect();
        let slots = layers
            .iter()
            .map(|_| sys::open_path(Path::new("/dev/null"), libc::O_RDONLY))
            .collect::<Result<Vec<OwnedFd>, _>>()
            .map_err(|e| format!("reserve descriptors: {e}"))?;
        let fd_path = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
        let n = r.lowers.len();
        let overlay = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off",
            slots[..n].iter().map(fd_path).collect::<Vec<_>>().join(":"),
            fd_path(&slots[n]),
            fd_path(&slots[n + 1]),
        );

        let c = |p: &Path| sys::cstr(p).map_err(|e| e.to_string());
        let s = |v: &str| CString::new(v).expect("no NUL");
        let mut plan = Plan::default();
        plan.push(
            "enter the sandbox's network namespace",
            Step::SetNs(r.netns.as_raw_fd(), libc::CLONE_NEWNET),
        );
        for f in r.cgroup_join {
            plan.push("join the sandbox's cgroups", Step::WriteFile(c(f)?, b"0"));
        }
        plan.push(
            "unshare a cgroup namespace",
            Step::Unshare(libc::CLONE_NEWCGROUP),
        );
        plan.push(
            "unshare a mount namespace",
            Step::Unshare(libc::CLONE_NEWNS),
        );
        plan.push("make / private", Step::MakePrivate);
        // Where criu reads its kernel cache as root ([`kdat`]): a tmpfs
        // over `/run` holding it, the host's `/run/sandbar` (the stage's
        // parent, the binaries) bound back in.
        let run_sandbar = match &self.cache.root {
            Some(bytes) => {
                let slot = sys::open_path(Path::new("/dev/null"), libc::O_RDONLY)
                    .map_err(|e| format!("reserve a descriptor: {e}"))?;
                plan.push(
                    "open /run/sandbar",
                    Step::OpenAt {
                        path: s(RUN_ROOT),
                        slot: slot.as_raw_fd(),
                    },
                );
                plan.push(
                    "mount a tmpfs on /run",
                    Step::Mount {
                        src: s("tmpfs"),
                        target: s("/run"),
                        fstype: s("tmpfs"),
                        flags: libc::MS_NOSUID | libc::MS_NODEV,
                        data: Some(s("mode=0755,size=1m")),
                    },
                );
                plan.push("make /run/sandbar", Step::Mkdir(s(RUN_ROOT)));
                plan.push(
                    "bind /run/sandbar back",
                    Step::Mount {
                        src: s(&format!("/proc/self/fd/{}", slot.as_raw_fd())),
                        target: s(RUN_ROOT),
                        fstype: s("none"),
                        flags: libc::MS_BIND | libc::MS_REC,
                        data: None,
                    },
                );
                plan.push(
                    "write criu's kernel cache",
                    Step::CreateWith(s(&format!("/run/{}", kdat::FILE)), bytes.clone()),
                );
                Some(slot)
            }
            None => None,
        };
        plan.push(
            "mount the stage",
            Step::Mount {
                src: s("tmpfs"),
                target: c(r.stage)?,
                fstype: s("tmpfs"),
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: Some(s("mode=0755,size=64k")),
            },
        );
        for d in [&root, &dev, &sys_dir] {
            plan.push("make a mount point on the stage", Step::Mkdir(c(d)?));
        }
        if r.shm_external {
            // As the helper mounts it (see `init::mount_root`).
            plan.push("make a mount point on the stage", Step::Mkdir(c(&shm)?));
            plan.push(
                "mount /dev/shm",
                Step::Mount {
                    src: s("shm"),
                    target: c(&shm)?,
                    fstype: s("tmpfs"),
                    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    data: Some(s(&shm_options(r.uid_base))),
                },
            );
        }
        plan.push(
            "make the boot id's mount point",
            Step::CreateFile(c(&boot_id)?),
        );
        plan.push(
            "bind the boot id",
            Step::Mount {
                src: c(r.boot_id)?,
                target: c(&boot_id)?,
                fstype: s("none"),
                flags: libc::MS_BIND,
                data: None,
            },
        );
        for (layer, slot) in layers.iter().zip(&slots) {
            plan.push(
                "open a layer",
                Step::OpenAt {
                    path: c(layer)?,
                    slot: slot.as_raw_fd(),
                },
            );
        }
        plan.push(
            "mount the root overlay",
            Step::Mount {
                src: s("overlay"),
                target: c(&root)?,
                fstype: s("overlay"),
                flags: 0,
                data: Some(s(&overlay)),
            },
        );
        // /dev as the helper makes it (see `init::mount_root`).
        plan.push(
            "mount /dev",
            Step::Mount {
                src: s("tmpfs"),
                target: c(&dev)?,
                fstype: s("tmpfs"),
                flags: libc::MS_NOSUID | libc::MS_NOEXEC,
                data: Some(s("mode=0755,size=64k")),
            },
        );
        for &(name, major, minor) in DEV_NODES {
            let path = c(&dev.join(name))?;
            plan.push(
                "make a device node",
                Step::Mknod {
                    path: path.clone(),
                    dev: libc::makedev(major, minor),
                },
            );
            plan.push("chown a device node", Step::Lchown(path, r.uid_base));
        }
        for &(link, target) in DEV_LINKS {
            plan.push(
                "make a /dev symlink",
                Step::Symlink {
                    target: s(target),
                    link: c(&dev.join(link))?,
                },
            );
        }
        for d in ["pts", "shm"] {
            plan.push("make a /dev directory", Step::Mkdir(c(&dev.join(d))?));
        }
        plan.push("chown /dev", Step::Lchown(c(&dev)?, r.uid_base));
        plan.push(
            "mount /sys",
            Step::Mount {
                src: s("sysfs"),
                target: c(&sys_dir)?,
                fstype: s("sysfs"),
                flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: None,
            },
        );
        plan.push(
            "pass envd's log pipe",
            Step::KeepOpen(r.log_write.as_raw_fd()),
        );

        std::fs::create_dir_all(r.stage)
            .map_err(|e| format!("create {}: {e}", r.stage.display()))?;
        let ran = self.run(&args, &[], plan, r.work_dir, RESTORE_LOG);
        drop(slots);
        drop(run_sandbar);
        // Its mounts went with criu's mount namespace: an empty directory.
        let _ = std::fs::remove_dir(r.stage);
        ran?;
        let pid =
            std::fs::read_to_string(&pidfile).map_err(|e| format!("criu wrote no pidfile: {e}"))?;
        let _ = std::fs::remove_file(&pidfile);
        pid.trim()
            .parse()
            .map_err(|_| format!("criu's pidfile holds '{}'", pid.trim()))
    }

    /// Runs criu with `args` after `plan`; its error lines when it fails.
    fn run(
        &self,
        args: &[String],
        env: &[(&str, &Path)],
        plan: Plan,
        work_dir: &Path,
        log: &str,
    ) -> Result<(), String> {
        let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("make a pipe: {e}"))?;
        let report = report_w.as_raw_fd();
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", PATH)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: `Plan::run` makes only async-signal-safe system calls on
        // data prepared before the fork (see `Step`).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || plan.run(report));
        }
        let spawned = cmd.spawn();
        drop(report_w);
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let mut step = String::new();
                let _ = std::fs::File::from(report_r).read_to_string(&mut step);
                return Err(if step.is_empty() {
                    format!("run {}: {e}", self.bin.display())
                } else {
                    format!("before running criu: {step}: {e}")
                });
            }
        };
        let out = child
            .wait_with_output()
            .map_err(|e| format!("wait for criu: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(failure(&out, &work_dir.join(log)))
    }
}

/// The stage of a restore of sandbox `id` of `instance`: below the runtime
/// directory, whose every parent anyone may search. Part of a restore runs
/// inside the restored user namespace, as its root (a host uid of the
/// sandbox range) without any power over host files, and opens the sources
/// of the external mounts by path from there (mount-v2's `open_tree`): a
/// path below a data dir under a directory only host root may search (a
/// `mktemp -d`, `/root`) fails with "Permission denied". The stage holds
/// nothing on the host: its tmpfs is in criu's mount namespace only, and
/// [`Criu::restore`] removes the directory.
pub(crate) fn stage_dir(instance: &str, id: &str) -> PathBuf {
    crate::binaries::run_dir(instance)
        .join(crate::binaries::STAGES)
        .join(id)
}

/// The sandbox mounts criu takes as external: (path inside, key).
fn externals(interpreter: bool, shm: bool) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        (ENVD_PATH, "envd"),
        ("/dev", "dev"),
        ("/sys", "sys"),
        (BOOT_ID_PATH, "bootid"),
    ];
    if interpreter {
        v.push((INTERPRETER_PATH, "interpreter"));
    }
    if shm {
        v.push(("/dev/shm", "shm"));
    }
    v
}

fn path_arg(p: &Path) -> Result<String, String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

/// What a failed criu run said: the error lines of its log (less the
/// harmless ones), else its output, else its status.
fn failure(out: &std::process::Output, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error (") && !l.contains("RLIMIT_NOFILE for self"))
        .map(str::trim)
        .collect();
    let mut msg = errors[errors.len().saturating_sub(4)..].join("; ");
    if msg.is_empty() {
        msg = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ");
    }
    if msg.is_empty() {
        msg = String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', "; ");
    }
    if msg.is_empty() {
        msg = format!("criu exited with {}", out.status);
    }
    msg
}

/// The key of `pid`'s stdout for `--inherit-fd` (envd's log pipe).
pub(crate) fn log_pipe_of(pid: i32) -> io::Result<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/1"))?;
    let link = link.to_string_lossy().into_owned();
    if link.starts_with("pipe:[") {
        Ok(link)
    } else {
        Err(io::Error::other(format!(
            "envd's output is {link}, not the runtime's log pipe"
        )))
    }
}

/// The host uid that owns `pid`'s user namespace.
pub(crate) fn namespace_owner_of(pid: i32) -> io::Result<u32> {
    /// `NS_GET_OWNER_UID` (`_IO(0xb7, 0x4)`).
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    let fd = sys::open_path(Path::new(&format!("/proc/{pid}/ns/user")), libc::O_RDONLY)?;
    let mut uid: libc::uid_t = 0;
    // SAFETY: the ioctl writes one uid_t through a valid pointer.
    sys::cvt(
        unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_OWNER_UID as _, &mut uid) } as libc::c_long,
    )?;
    Ok(uid)
}

pub(super) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Per network namespace: what the helper sets in a sandbox's (see
/// `init::join_network`); a restored sandbox's namespace needs the same.
const NETNS_SYSCTLS: &[(&str, &str)] = &[
    ("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0"),
    ("/proc/sys/net/ipv4/ping_group_range", "0 2147483647"),
];

/// Runs `f` on a short-lived thread of its own (namespace changes stay on it).
pub(super) fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::Builder::new()
        .name("sandbar-netns".into())
        .spawn(f)?
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?
}

/// A new network namespace with loopback only, for a restored sandbox off
/// the node network (the helper makes one the same way). Blocking.
pub(crate) fn private_netns() -> io::Result<OwnedFd> {
    on_own_thread(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        sys::loopback_up()?;
        for (file, value) in NETNS_SYSCTLS {
            std::fs::write(file, value)?;
        }
        sys::open_path(Path::new("/proc/thread-self/ns/net"), libc::O_RDONLY)
    })
}

/// Sets [`NETNS_SYSCTLS`] in a pooled namespace for a restored sandbox.
pub(crate) fn prepare_netns(netns: std::sync::Arc<OwnedFd>) -> io::Result<()> {
    on_own_thread(move || {
        sys::setns(&netns, libc::CLONE_NEWNET)?;
        for (file, value) in NETNS_SYSCTLS {
            std::fs::write(file, value)?;
        }
        Ok(())
    })
}

/// One thing the child does between fork and exec of criu. Every argument
/// is made before the fork: the child only makes system calls.
enum Step {
    SetNs(RawFd, libc::c_int),
    Unshare(libc::c_int),
    /// `mount --make-rprivate /`
    MakePrivate,
    Mount {
        src: CString,
        target: CString,
        fstype: CString,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// A character device, mode 0666.
    Mknod {
        path: CString,
        dev: libc::dev_t,
    },
    /// A directory, mode 0755.
    Mkdir(CString),
    /// An empty file, mode 0644 (a mount point for a file).
    CreateFile(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Lchown(CString, u32),
    WriteFile(CString, &'static [u8]),
    /// A new file, mode 0600, holding the bytes.
    CreateWith(CString, Vec<u8>),
    /// Opens a directory (`O_PATH`) onto descriptor `slot`, close-on-exec.
    OpenAt {
        path: CString,
        slot: RawFd,
    },
    /// Clears close-on-exec, so criu gets the descriptor.
    KeepOpen(RawFd),
    /// Takes on `uid` (all ids) keeping every permitted capability across
    /// the exec, as ambient capabilities.
    BecomeOwner {
        uid: u32,
        last_cap: u32,
    },
}

#[derive(Default)]
struct Plan {
    steps: Vec<(&'static str, Step)>,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn ok(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Plan {
    fn push(&mut self, what: &'static str, step: Step) {
        self.steps.push((what, step));
    }

    /// In the forked child: every step in order; the name of a failed one
    /// goes to `report`.
    fn run(&self, report: RawFd) -> io::Result<()> {
        // SAFETY: plain syscall.
        unsafe { libc::umask(0) };
        for (what, step) in &self.steps {
            // SAFETY: the steps' pointers are to CStrings owned by the plan.
            if let Err(e) = unsafe { step.run() } {
                // SAFETY: writing a static string to a pipe we own.
                unsafe { libc::write(report, what.as_ptr().cast(), what.len()) };
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Opens `path` write-only with `flags` (and `mode` when it creates it)
/// and writes `data` in one call: the cgroup and cache files written here
/// are small. Only raw system calls (see [`Step`]).
///
/// # Safety
/// Between fork and exec, `path` a valid C string.
unsafe fn write_file(
    path: &CString,
    flags: libc::c_int,
    mode: libc::mode_t,
    data: &[u8],
) -> io::Result<()> {
    let fd = libc::open(
        path.as_ptr(),
        libc::O_WRONLY | libc::O_CLOEXEC | flags,
        mode,
    );
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = if data.is_empty() {
        0
    } else {
        libc::write(fd, data.as_ptr().cast(), data.len())
    };
    let err = io::Error::last_os_error();
    libc::close(fd);
    match n {
        n if n < 0 => Err(err),
        n if n as usize != data.len() => Err(io::Error::from(io::ErrorKind::WriteZero)),
        _ => Ok(()),
    }
}

impl Step {
    /// # Safety
    /// Only between fork and exec, in a single-threaded child.
    unsafe fn run(&self) -> io::Result<()> {
        match self {
            Step::SetNs(fd, ns) => ok(libc::setns(*fd, *ns)),
            Step::Unshare(flags) => ok(libc::unshare(*flags)),
            Step::MakePrivate => ok(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )),
            Step::Mount {
                src,
                target,
                fstype,
                flags,
                data,
            } => ok(libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                *flags,
                data.as_ref()
                    .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
            )),
            Step::Mknod { path, dev } => {
                ok(libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, *dev))
            }
            Step::Mkdir(path) => ok(libc::mkdir(path.as_ptr(), 0o755)),
            Step::CreateFile(path) => write_file(path, libc::O_CREAT | libc::O_EXCL, 0o644, &[]),
            Step::Symlink { target, link } => ok(libc::symlink(target.as_ptr(), link.as_ptr())),
            Step::Lchown(path, id) => ok(libc::lchown(path.as_ptr(), *id, *id)),
            Step::WriteFile(path, data) => write_file(path, 0, 0, data),
            Step::CreateWith(path, data) => {
                write_file(path, libc::O_CREAT | libc::O_EXCL, 0o600, data)
            }
            Step::OpenAt { path, slot } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let r = libc::dup3(fd, *slot, libc::O_CLOEXEC);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if r < 0 {
                    Err(err)
                } else {
                    Ok(())
                }
            }
            Step::KeepOpen(fd) => ok(libc::fcntl(*fd, libc::F_SETFD, 0)),
            Step::BecomeOwner { uid, last_cap } => {
                ok(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
                let id = *uid as libc::c_long;
                sys::cvt(libc::syscall(
                    libc::SYS_setgroups,
                    0,
                    std::ptr::null::<libc::gid_t>(),
                ))?;
                sys::cvt(libc::syscall(libc::SYS_setresgid, id, id, id))?;
                sys::cvt(libc::syscall(libc::SYS_setresuid, id, id, id))?;
                let mut hdr = CapHeader {
                    version: CAP_VERSION_3,
                    pid: 0,
                };
                let mut data = [CapData::default(); 2];
                sys::cvt(libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()))?;
                for d in &mut data {
                    d.effective = d.permitted;
                    d.inheritable = d.permitted;
                }
                sys::cvt(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()))?;
                for cap in 0..=*last_cap {
                    let word = data[(cap / 32) as usize].permitted;
                    if word & (1 << (cap % 32)) != 0 {
                        ok(libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                            cap as libc::c_ulong,
                            0,
                            0,
                        ))?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_says_what_criu_logged() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("dump.log");
        std::fs::write(
            &log,
            "(00.001) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n\
             (00.002) Warn  (criu/x.c:1): noise\n\
             (00.003) Error (criu/cr-dump.c:389): Can't get rlimit 0: Operation not permitted\n",
        )
        .unwrap();
        let out = Command::new("false").output().unwrap();
        let msg = failure(&out, &log);
        assert_eq!(
            msg,
            "(00.003) Error (criu/cr-dump.c:389): Can't get rlimit 0: Operation not permitted"
        );
        assert!(failure(&out, &d.path().join("none")).contains("exit status: 1"));
    }

    #[test]
    fn meta_is_complete_only_once_written() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_meta(d.path()).is_none());
        let meta = Meta {
            log_pipe: "pipe:[12]".into(),
            boot_id: "b".into(),
            access_token: Some("t".into()),
            template: "base".into(),
            uid_base: 1_000_000,
            envd: "e".into(),
            interpreter: None,
            taken_at: chrono::Utc::now(),
            shm_external: true,
        };
        write_meta(d.path(), &meta).unwrap();
        let back = read_meta(d.path()).unwrap();
        assert_eq!(back.log_pipe, "pipe:[12]");
        assert!(back.shm_external);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join(META_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "it holds a token");
    }
}
