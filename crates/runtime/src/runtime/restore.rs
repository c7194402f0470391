//! Memory on disk: checkpointing a live sandbox's processes (see
//! [`crate::checkpoint`]) and bringing them back, into the same sandbox (a
//! resume after a restart) or a new one (a fork, a create from a snapshot
//! taken with memory). A sandbox brought back this way is not booted: its
//! envd is the checkpointed one, already listening, and the runtime holds
//! it as any other (it is the runtime's child, reaped through a pidfd).

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;

use super::launch::Partial;
use super::{io, NetMode, Runtime, Sandbox, ENVD_PORT};
use crate::cgroup::Limits;
use crate::checkpoint::{self, Criu, Meta};
use crate::pid1::Pid1;
use crate::{RuntimeError, SandboxInfo, SandboxSpec};

/// How long envd's `/init` may take when a copy is given its own token.
const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn failed(what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Checkpoint(what.to_string())
}

impl Runtime {
    fn criu(&self) -> Result<Criu, RuntimeError> {
        self.criu
            .clone()
            .ok_or_else(|| failed("this node has no working criu"))
    }

    /// Checkpoints `live`'s processes into `images` (an empty directory),
    /// with what a restore needs beside them. The caller has frozen the
    /// sandbox; it stays frozen.
    pub(super) async fn dump_into(
        &self,
        live: &Sandbox,
        spec: &SandboxSpec,
        images: PathBuf,
    ) -> Result<(), RuntimeError> {
        let criu = self.criu()?;
        let binaries = self
            .binaries
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| RuntimeError::Start("the runtime is shutting down".into()))?;
        let freezer = live
            .cgroup
            .freezer_dir()
            .ok_or_else(|| failed("the sandbox has no freezer cgroup"))?;
        let work_dir = live.dir.join("criu");
        let (pid, netns) = (live.pid1.pid, live.netns.clone());
        let interpreter = self
            .template_for(&spec.template)
            .map(|t| t.meta.runs_interpreter())
            .unwrap_or(false);
        let mut meta = Meta {
            log_pipe: String::new(),
            boot_id: live.info.boot_id.clone(),
            access_token: spec.envd_access_token.clone(),
            template: spec.template.clone(),
            uid_base: self.config.uid_base,
            envd: String::new(),
            interpreter: None,
            taken_at: Utc::now(),
            shm_external: false,
        };
        let started = Instant::now();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&work_dir)
                .map_err(|e| failed(format!("create {}: {e}", work_dir.display())))?;
            meta.log_pipe = checkpoint::log_pipe_of(pid)
                .map_err(|e| failed(format!("envd's log pipe: {e}")))?;
            let (envd, interp) = binaries.fingerprints().clone();
            meta.envd = envd;
            meta.interpreter = if interpreter { interp } else { None };
            meta.shm_external = criu
                .dump(&checkpoint::Dump {
                    pid,
                    netns: &netns,
                    freezer: &freezer,
                    images: &images,
                    work_dir: &work_dir,
                    interpreter,
                })
                .map_err(failed)?;
            checkpoint::hand_images_to(&images, meta.uid_base)
                .map_err(|e| failed(format!("set the images' owner: {e}")))?;
            checkpoint::write_meta(&images, &meta)
                .map_err(|e| failed(format!("write the checkpoint's record: {e}")))
        })
        .await
        .map_err(|e| RuntimeError::Start(format!("checkpoint panicked: {e}")))??;
        tracing::debug!(
            sandbox = %spec.id,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "processes checkpointed"
        );
        Ok(())
    }

    /// Brings back the processes in `images` as sandbox `spec`: its own
    /// (`fresh: false`, on its writable layer) or a new one (`fresh: true`:
    /// a new writable layer on `spec.base_layer`, and envd gets the new
    /// sandbox's token and env vars). Undone on failure.
    pub(super) async fn restore(
        &self,
        spec: &SandboxSpec,
        images: &Path,
        fresh: bool,
    ) -> Result<Sandbox, RuntimeError> {
        let criu = self.criu()?;
        let meta =
            checkpoint::read_meta(images).ok_or_else(|| failed("the images are incomplete"))?;
        if meta.template != spec.template || meta.uid_base != self.config.uid_base {
            return Err(failed(format!(
                "the images are of template '{}' (uid base {}), not '{}' (uid base {})",
                meta.template, meta.uid_base, spec.template, self.config.uid_base
            )));
        }
        let template = self.template_for(&spec.template)?;
        let mut lowers = self.layer_lowers(spec)?;
        lowers.push(template.rootfs.clone());
        let binaries = self
            .binaries
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| RuntimeError::Start("the runtime is shutting down".into()))?;
        let interpreter = self.interpreter_for(&spec.template, &template, &binaries)?;
        let prints = {
            let b = binaries.clone();
            tokio::task::spawn_blocking(move || b.fingerprints().clone())
                .await
                .map_err(|e| RuntimeError::Start(format!("fingerprint panicked: {e}")))?
        };
        if prints.0 != meta.envd {
            return Err(failed(
                "envd is not the build the processes were checkpointed with",
            ));
        }
        if interpreter.is_some() && prints.1 != meta.interpreter {
            return Err(failed(
                "sandbar-interpreter is not the build the processes were checkpointed with",
            ));
        }
        let mut partial = Partial::default();
        let made = self
            .restore_into(
                spec,
                &meta,
                &criu,
                images,
                lowers,
                binaries.envd.clone(),
                interpreter,
                fresh,
                &mut partial,
            )
            .await;
        match made {
            Ok(sandbox) => {
                // A copy answers with its own token and env vars before anyone
                // can reach it; any restore must have a working envd.
                let began = Instant::now();
                if let Err(e) = self.greet(&sandbox, spec, &meta, fresh).await {
                    self.stop(&sandbox, !fresh).await;
                    return Err(e);
                }
                tracing::debug!(sandbox = %spec.id, elapsed_ms = began.elapsed().as_secs_f64() * 1e3, "restored envd greeted");
                Ok(sandbox)
            }
            Err(e) => {
                self.undo(partial).await;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn restore_into(
        &self,
        spec: &SandboxSpec,
        meta: &Meta,
        criu: &Criu,
        images: &Path,
        lowers: Vec<PathBuf>,
        envd_bin: PathBuf,
        interpreter_bin: Option<PathBuf>,
        fresh: bool,
        partial: &mut Partial,
    ) -> Result<Sandbox, RuntimeError> {
        let started = Instant::now();
        let dir = self.sandbox_dir(&spec.id);
        if !dir.exists() {
            partial.dir = Some(dir.clone());
        }
        std::fs::create_dir_all(dir.join("criu"))
            .map_err(io(format!("create {}", dir.join("criu").display())))?;
        let store = self.layers()?;
        let writable = match (fresh, store.writable(&spec.id)) {
            (false, Some(w)) => w,
            (false, None) => return Err(failed("the sandbox's writable layer is gone")),
            (true, Some(_)) => return Err(RuntimeError::AlreadyExists(spec.id.clone())),
            (true, None) => {
                let (s, id, disk) = (store.clone(), spec.id.clone(), spec.disk_mb);
                let w = tokio::task::spawn_blocking(move || s.create_writable(&id, disk))
                    .await
                    .map_err(|e| {
                        RuntimeError::Start(format!("making the writable layer panicked: {e}"))
                    })??;
                partial.writable = Some(spec.id.clone());
                w
            }
        };
        // The processes go on in the boot they were checkpointed in.
        let boot_id_file = writable.dir.join("boot_id");
        std::fs::write(&boot_id_file, format!("{}\n", meta.boot_id))
            .map_err(io("write boot_id"))?;
        super::persist::save(&dir, spec, None)?;

        let cgroup = self.cgroups.create(
            &self.config.instance,
            &spec.id,
            Limits {
                memory_bytes: spec.memory_mb.max(16) << 20,
                cpus: spec.cpu_count.max(1),
                pids_max: self.options.pids_max,
            },
        )?;
        partial.cgroup = Some(cgroup.clone());
        let net = match &self.net {
            NetMode::Node(n) => Some(n.acquire(&spec.egress).await?),
            NetMode::Private => None,
        };
        partial.net = net.clone();
        let netns_path = net.as_ref().map(|n| n.netns_path.clone());
        let netns: Arc<OwnedFd> = Arc::new(
            tokio::task::spawn_blocking(move || match netns_path {
                Some(path) => {
                    let fd = Arc::new(crate::sys::open_path(&path, libc::O_RDONLY)?);
                    checkpoint::prepare_netns(fd.clone())?;
                    Arc::try_unwrap(fd).map_err(|_| std::io::Error::other("netns fd shared"))
                }
                None => checkpoint::private_netns(),
            })
            .await
            .map_err(|e| RuntimeError::Start(format!("netns setup panicked: {e}")))?
            .map_err(io("prepare the network namespace"))?,
        );

        let (upper, work) = (writable.upper(), writable.work());
        {
            let (upper, lowers, base) = (upper.clone(), lowers.clone(), self.config.uid_base);
            let resolver = net.as_ref().map(|n| n.gateway);
            tokio::task::spawn_blocking(move || prepare_upper(&upper, &lowers, resolver, base))
                .await
                .map_err(|e| RuntimeError::Start(format!("preparing the files panicked: {e}")))?
                .map_err(io("prepare the sandbox's files"))?;
        }

        let (log_read, log_write) =
            crate::sandbox_log::pipe().map_err(io("make envd's log pipe"))?;
        partial.log = Some(
            crate::sandbox_log::spawn(log_read, dir.clone()).map_err(io("read envd's log pipe"))?,
        );
        let restored = {
            let criu = criu.clone();
            let images = images.to_path_buf();
            let (dir, netns) = (dir.clone(), netns.clone());
            let join = cgroup.join_files();
            let shm_external = meta.shm_external;
            let log_pipe = meta.log_pipe.clone();
            let uid_base = self.config.uid_base;
            let stage = checkpoint::stage_dir(&self.config.instance, &spec.id);
            tokio::task::spawn_blocking(move || {
                let began = Instant::now();
                let pid = criu.restore(&checkpoint::Restore {
                    images: &images,
                    work_dir: &dir.join("criu"),
                    stage: &stage,
                    lowers: &lowers,
                    upper: &upper,
                    work: &work,
                    netns: &netns,
                    cgroup_join: &join,
                    envd: &envd_bin,
                    interpreter: interpreter_bin.as_deref(),
                    boot_id: &boot_id_file,
                    log_write: &log_write,
                    log_pipe: &log_pipe,
                    uid_base,
                    shm_external,
                });
                // Only the restored processes hold the write end now.
                drop(log_write);
                (pid, began.elapsed())
            })
            .await
            .map_err(|e| RuntimeError::Start(format!("restore panicked: {e}")))?
        };
        let (pid, criu_took) = restored;
        let pid = pid.map_err(failed)?;
        partial.pid1 = Some(Pid1::adopt(pid).map_err(io("watch the sandbox's init"))?);
        let cpu_ns = cgroup.usage().map(|u| u.cpu_ns).unwrap_or(0);
        let pid1 = partial.pid1.take().expect("just set");
        let log = partial.log.take();
        *partial = Partial::default();
        tracing::debug!(
            sandbox = %spec.id,
            pid,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            criu_ms = criu_took.as_secs_f64() * 1e3,
            "processes restored"
        );
        Ok(Sandbox {
            info: SandboxInfo::running(
                spec,
                net.as_ref().map(|n| n.addr),
                meta.boot_id.clone(),
                true,
            ),
            route: spec.route.clone(),
            net,
            netns,
            pid1,
            cgroup,
            dir,
            writable,
            cpu_sample: Mutex::new((Instant::now(), cpu_ns)),
            log: Mutex::new(log),
        })
    }

    /// Waits until the restored envd answers; a copy (`fresh`) is then
    /// given its sandbox's token and env vars, as a warm sandbox is at its
    /// hand-over (authorized by the token the images were taken with).
    async fn greet(
        &self,
        sandbox: &Sandbox,
        spec: &SandboxSpec,
        meta: &Meta,
        fresh: bool,
    ) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.options.create_timeout;
        loop {
            match self
                .http(sandbox, ENVD_PORT, "GET", "/health", String::new(), None)
                .await
            {
                Ok((s, _)) if (200..300).contains(&s) => break,
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    if sandbox.pid1.has_exited() {
                        return Err(failed(format!(
                            "the restored envd exited; its log: {}",
                            crate::sandbox_log::tail(&sandbox.dir, 5)
                        )));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Ok((s, body)) => {
                    return Err(failed(format!(
                        "the restored envd answers /health with {s} {body}"
                    )))
                }
                Err(e) => return Err(failed(format!("the restored envd does not answer: {e}"))),
            }
        }
        if !fresh {
            return Ok(());
        }
        let body = super::launch::handover_json(spec);
        let sent = tokio::time::timeout(
            INIT_TIMEOUT,
            self.http(
                sandbox,
                ENVD_PORT,
                "POST",
                "/init",
                body.to_string(),
                meta.access_token.as_deref(),
            ),
        )
        .await
        .map_err(|_| failed(format!("envd's /init took over {INIT_TIMEOUT:?}")))?
        .map_err(failed)?;
        match sent {
            (s, _) if (200..300).contains(&s) => Ok(()),
            (s, text) => Err(failed(format!("envd /init: {s} {}", text.trim()))),
        }
    }
}

/// The writable layer as the helper leaves it at boot: its root owned and
/// moded as the bottom layer's (what the overlay's root takes), and
/// `/etc/resolv.conf` naming this sandbox's resolver (a copy carries its
/// source's, and a resumed sandbox has a new network). Written inside the
/// upper directory only, never following what the sandbox made there.
fn prepare_upper(
    upper: &Path,
    lowers: &[PathBuf],
    resolver: Option<Ipv4Addr>,
    uid_base: u32,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let bottom = lowers
        .last()
        .ok_or_else(|| std::io::Error::other("no lower layer"))?;
    let m = std::fs::metadata(bottom)?;
    std::os::unix::fs::chown(upper, Some(m.uid()), Some(m.gid()))?;
    std::fs::set_permissions(
        upper,
        std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777),
    )?;
    let Some(resolver) = resolver else {
        return Ok(());
    };
    let root = crate::sys::open_path(upper, libc::O_PATH | libc::O_DIRECTORY)?;
    match crate::sys::open_in_root(&root, "/etc", libc::O_PATH | libc::O_DIRECTORY, 0) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // As the layers below have it (the topmost that does).
            let like = lowers.iter().find_map(|l| {
                std::fs::symlink_metadata(l.join("etc"))
                    .ok()
                    .filter(|m| m.is_dir())
            });
            let (mode, uid, gid) = like
                .map(|m| (m.mode() & 0o7777, m.uid(), m.gid()))
                .unwrap_or((0o755, uid_base, uid_base));
            nix::sys::stat::mkdirat(
                root.as_fd(),
                "etc",
                nix::sys::stat::Mode::from_bits_truncate(mode),
            )?;
            let etc = crate::sys::open_in_root(&root, "/etc", libc::O_PATH | libc::O_DIRECTORY, 0)?;
            nix::unistd::fchownat(
                etc.as_fd(),
                "",
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_EMPTY_PATH,
            )?;
        }
        Err(e) => return Err(e),
    }
    match crate::sys::unlink_in_root(&root, "/etc/resolv.conf") {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let fd = crate::sys::open_in_root(
        &root,
        "/etc/resolv.conf",
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o644,
    )?;
    nix::unistd::fchown(
        &fd,
        Some(nix::unistd::Uid::from_raw(uid_base)),
        Some(nix::unistd::Gid::from_raw(uid_base)),
    )?;
    use std::io::Write;
    std::fs::File::from(fd).write_all(format!("nameserver {resolver}\n").as_bytes())
}
