//! Booting a sandbox: its directory and writable layer, cgroup, network, the
//! helper (see [`crate::init`]) and envd's readiness; and undoing all of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbar_net::SandboxNet;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{io, NetMode, Runtime, Sandbox, ENVD_PORT};
use crate::cgroup::{Cgroup, Limits};
use crate::init::{InitSpec, INIT_ARG, INIT_FILE};
use crate::pid1::Pid1;
use crate::templates::Template;
use crate::{RuntimeError, SandboxInfo, SandboxSpec};

/// Resources of a sandbox being booted, undone if booting fails. What it
/// finds already there (a paused sandbox's files) is not undone.
#[derive(Default)]
pub(super) struct Partial {
    pub dir: Option<PathBuf>,
    pub writable: Option<String>,
    pub cgroup: Option<Cgroup>,
    pub net: Option<SandboxNet>,
    pub pid1: Option<Pid1>,
    pub log: Option<tokio::task::JoinHandle<()>>,
}

/// What a boot needs beyond the spec.
pub(super) struct Boot<'a> {
    pub template: &'a Template,
    /// Snapshot layers' upper dirs, top first, above the template.
    pub layers: Vec<PathBuf>,
    pub envd_bin: &'a Path,
    pub interpreter_bin: Option<PathBuf>,
    /// The cgroup's CPU weight from its first process on (`None`: the
    /// default share; warm sandboxes boot at a low one).
    pub cpu_weight: Option<u16>,
}

impl Runtime {
    pub(super) fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("sandboxes").join(id)
    }

    /// Boots `spec`: on its existing writable layer when it has one (a
    /// paused sandbox), else on a new one.
    pub(super) async fn launch(
        &self,
        spec: &SandboxSpec,
        boot: Boot<'_>,
        partial: &mut Partial,
    ) -> Result<Sandbox, RuntimeError> {
        let t_start = Instant::now();
        let dir = self.sandbox_dir(&spec.id);
        if !dir.exists() {
            partial.dir = Some(dir.clone());
        }
        std::fs::create_dir_all(dir.join("root"))
            .map_err(io(format!("create {}", dir.join("root").display())))?;
        let layers = self.layers()?;
        let writable = match layers.writable(&spec.id) {
            Some(w) => w,
            None => {
                let (layers2, id, disk) = (layers.clone(), spec.id.clone(), spec.disk_mb);
                let w = tokio::task::spawn_blocking(move || layers2.create_writable(&id, disk))
                    .await
                    .map_err(|e| {
                        RuntimeError::Start(format!("making the writable layer panicked: {e}"))
                    })??;
                partial.writable = Some(spec.id.clone());
                w
            }
        };
        // Every boot its own id, as a machine's. Kept beside the writable
        // layer (outside what the sandbox sees): the bind mount's source then
        // names no host path in the sandbox's mountinfo.
        let boot_id = uuid_v4();
        let boot_id_file = writable.dir.join("boot_id");
        std::fs::write(&boot_id_file, format!("{boot_id}\n")).map_err(io("write boot_id"))?;
        super::persist::save(&dir, spec, None)?;

        let limits = Limits {
            memory_bytes: spec.memory_mb.max(16) << 20,
            cpus: spec.cpu_count.max(1),
            pids_max: self.options.pids_max,
        };
        let cgroup = self
            .cgroups
            .create(&self.config.instance, &spec.id, limits)?;
        partial.cgroup = Some(cgroup.clone());
        if let Some(weight) = boot.cpu_weight {
            if let Err(e) = cgroup.set_cpu_weight(weight) {
                tracing::debug!(sandbox = %spec.id, error = %e, "the sandbox keeps the normal CPU weight");
            }
        }
        let net = match &self.net {
            NetMode::Node(n) => Some(n.acquire(&spec.egress).await?),
            NetMode::Private => None,
        };
        partial.net = net.clone();

        let mut lowers = boot.layers.clone();
        lowers.push(boot.template.rootfs.clone());
        let init_json = init_json(spec, boot.template.meta.start_cmd.as_deref());
        let init = InitSpec {
            id: spec.id.clone(),
            lowers,
            upper: writable.upper(),
            work: writable.work(),
            dir: dir.clone(),
            boot_id_file,
            uid_base: self.config.uid_base,
            netns: net.as_ref().map(|n| n.netns_path.clone()),
            resolver: net.as_ref().map(|n| n.gateway),
            hostname: self.options.hostname.clone(),
            envd_bin: boot.envd_bin.to_path_buf(),
            interpreter_bin: boot.interpreter_bin,
            envd_port: ENVD_PORT,
            init_json: init_json.to_string(),
            cgroup_join: cgroup.join_files(),
            seccomp: self.options.seccomp,
            log_fd: crate::init::LOG_FD,
        };
        let t_prepared = Instant::now();
        let pid = self.run_helper(&init, &dir, partial).await?;
        let t_forked = Instant::now();
        tracing::debug!(
            sandbox = %spec.id,
            prepare_ms = (t_prepared - t_start).as_secs_f64() * 1e3,
            helper_ms = (t_forked - t_prepared).as_secs_f64() * 1e3,
            "sandbox phases"
        );
        let root = crate::sys::open_path(
            Path::new(&format!("/proc/{pid}/root")),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(io("open the sandbox root"))?;
        if let Err(e) = crate::sys::unlink_in_root(&root, INIT_FILE) {
            tracing::warn!(sandbox = %spec.id, error = %e, "could not remove envd's init file");
        }
        drop(root);
        let netns = Arc::new(
            crate::sys::open_path(Path::new(&format!("/proc/{pid}/ns/net")), libc::O_RDONLY)
                .map_err(io("open the sandbox's network namespace"))?,
        );
        let cpu_ns = cgroup.usage().map(|u| u.cpu_ns).unwrap_or(0);
        let pid1 = partial.pid1.take().expect("set by run_helper");
        let log = partial.log.take();
        *partial = Partial::default();
        Ok(Sandbox {
            info: SandboxInfo::running(spec, net.as_ref().map(|n| n.addr), boot_id, false),
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

    /// Runs the helper on `init` until envd inside listens; returns the
    /// sandbox's PID 1 (held in `partial`).
    async fn run_helper(
        &self,
        init: &InitSpec,
        dir: &Path,
        partial: &mut Partial,
    ) -> Result<i32, RuntimeError> {
        let input = serde_json::to_vec(init)
            .map_err(|e| RuntimeError::Start(format!("encode the helper spec: {e}")))?;
        let (log_read, log_write) =
            crate::sandbox_log::pipe().map_err(io("make envd's log pipe"))?;
        partial.log = Some(
            crate::sandbox_log::spawn(log_read, dir.to_path_buf())
                .map_err(io("read envd's log pipe"))?,
        );
        let log_write_fd = std::os::fd::AsRawFd::as_raw_fd(&log_write);
        let mut command = tokio::process::Command::new(&self.helper);
        command
            .arg(INIT_ARG)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // SAFETY: dup2 is async-signal-safe; it runs in the forked child
        // before exec, and clears CLOEXEC on the copy it makes.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(log_write_fd, crate::init::LOG_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // The helper (and envd after it) hold the write end now; ours would
        // keep the log reader from ever seeing the end.
        drop(log_write);
        let mut helper = spawned.map_err(io(format!(
            "run the sandbox helper {}",
            self.helper.display()
        )))?;
        let mut stdin = helper.stdin.take().expect("piped");
        let mut stdout = BufReader::new(helper.stdout.take().expect("piped"));
        let mut stderr = helper.stderr.take().expect("piped");
        let errors = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });

        let deadline = tokio::time::Instant::now() + self.options.create_timeout;
        let handshake = async {
            stdin.write_all(&input).await?;
            drop(stdin);
            let mut line = String::new();
            stdout.read_line(&mut line).await?;
            Ok::<_, std::io::Error>(line)
        };
        let line = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(io("talk to the sandbox helper")(e)),
            Err(_) => {
                let _ = helper.start_kill();
                let _ = helper.wait().await;
                return Err(RuntimeError::Start(format!(
                    "the sandbox helper did not start within {:?}",
                    self.options.create_timeout
                )));
            }
        };
        let Some(pid) = crate::init::parse_pid_line(&line) else {
            let status = helper
                .wait()
                .await
                .map_err(io("wait for the sandbox helper"))?;
            let msg = errors.await.unwrap_or_default();
            return Err(RuntimeError::Start(format!(
                "sandbox helper failed ({status}): {}",
                msg.trim()
            )));
        };
        partial.pid1 = Some(Pid1::adopt(pid).map_err(io("watch the sandbox's init"))?);

        // The next byte on the pipe is envd's: it listens.
        let mut byte = [0u8; 1];
        let ready = tokio::time::timeout_at(deadline, stdout.read(&mut byte)).await;
        let status = tokio::time::timeout_at(deadline, helper.wait()).await;
        let helper_failed = match &status {
            Ok(Ok(s)) => (!s.success()).then(|| s.to_string()),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => {
                let _ = helper.start_kill();
                Some("timed out".into())
            }
        };
        match ready {
            Ok(Ok(1)) if helper_failed.is_none() => Ok(pid),
            Ok(Ok(_)) | Ok(Err(_)) => {
                let msg = errors.await.unwrap_or_default();
                Err(RuntimeError::Start(if msg.trim().is_empty() {
                    format!(
                        "envd exited before it was ready; its log: {}",
                        crate::sandbox_log::tail(dir, 10)
                    )
                } else {
                    msg.trim().to_string()
                }))
            }
            Err(_) => Err(RuntimeError::Start(format!(
                "envd was not ready within {:?}; its log: {}",
                self.options.create_timeout,
                crate::sandbox_log::tail(dir, 10)
            ))),
        }
    }

    /// Undoes a failed boot.
    pub(super) async fn undo(&self, partial: Partial) {
        if let Some(pid1) = &partial.pid1 {
            if !pid1.kill_and_wait(Duration::from_secs(10)).await {
                tracing::warn!(pid = pid1.pid, "a failed sandbox's init did not exit");
            }
        }
        let files = Files {
            dir: partial.dir,
            writable: partial.writable,
        };
        self.release(partial.cgroup, partial.log, files, partial.net)
            .await;
    }

    /// Stops a sandbox's processes and frees what they held: cgroup, log,
    /// network, and (unless it is kept, a paused sandbox's) its files.
    pub(super) async fn stop(&self, sandbox: &Sandbox, keep_files: bool) {
        // A frozen sandbox (paused in place, or just checkpointed) dies only
        // once thawed: killed first, it thaws into its death without running
        // another instruction (a checkpoint's files stay as they were).
        let cg = sandbox.cgroup.clone();
        let _ = tokio::task::spawn_blocking(move || {
            cg.signal_all(nix::sys::signal::Signal::SIGKILL);
            let _ = cg.thaw();
        })
        .await;
        if !sandbox.pid1.kill_and_wait(Duration::from_secs(10)).await {
            tracing::warn!(sandbox = %sandbox.info.id, "sandbox init did not exit after SIGKILL");
        }
        let log = sandbox.log.lock().unwrap().take();
        let files = if keep_files {
            Files::default()
        } else {
            Files {
                dir: Some(sandbox.dir.clone()),
                writable: Some(sandbox.writable.id.clone()),
            }
        };
        self.release(
            Some(sandbox.cgroup.clone()),
            log,
            files,
            sandbox.net.clone(),
        )
        .await;
    }

    /// Frees a sandbox's cgroup, log, files and network, in that order.
    pub(super) async fn release(
        &self,
        cgroup: Option<Cgroup>,
        log: Option<tokio::task::JoinHandle<()>>,
        files: Files,
        net: Option<SandboxNet>,
    ) {
        let killed = tokio::task::spawn_blocking(move || {
            if let Some(cg) = &cgroup {
                // A frozen sandbox must be thawed for SIGKILL to finish it.
                let _ = cg.thaw();
                cg.kill_all(Duration::from_secs(5));
            }
            cgroup
        })
        .await;
        // With every process dead the log pipe has no writer left: its
        // reader finishes (and writes no more into the directory).
        if let Some(mut log) = log {
            if tokio::time::timeout(Duration::from_secs(5), &mut log)
                .await
                .is_err()
            {
                tracing::warn!("envd's log pipe stayed open after its sandbox died");
                log.abort();
            }
        }
        let layers = self.layers().ok();
        let cleaned = tokio::task::spawn_blocking(move || {
            if let Ok(Some(cg)) = killed {
                if let Err(e) = cg.remove() {
                    tracing::warn!(error = %e, "sandbox cgroup not removed");
                }
            }
            files.remove(layers.as_deref());
        })
        .await;
        if let Err(e) = cleaned {
            tracing::warn!(error = %e, "sandbox cleanup panicked");
        }
        if let (Some(net), NetMode::Node(n)) = (net, &self.net) {
            if let Err(e) = n.release(net).await {
                tracing::warn!(error = %e, "sandbox network not released");
            }
        }
    }
}

/// A sandbox's files: its directory (log, spec, mount point) and its
/// writable layer.
#[derive(Default)]
pub(super) struct Files {
    pub dir: Option<PathBuf>,
    pub writable: Option<String>,
}

impl Files {
    pub fn remove(self, layers: Option<&sandbar_layers::LayerStore>) {
        if let Some(dir) = self.dir {
            if let Err(e) = crate::cleanup::remove_sandbox_dir(&dir) {
                tracing::warn!(error = %e, "sandbox dir not removed");
            }
        }
        if let (Some(id), Some(layers)) = (self.writable, layers) {
            if let Err(e) = layers.remove_writable(&id) {
                tracing::warn!(sandbox = %id, error = %e, "writable layer not removed");
            }
            // Its processes' images, if it was checkpointed.
            if let Err(e) = layers.remove_checkpoint(&id) {
                tracing::warn!(sandbox = %id, error = %e, "checkpoint not removed");
            }
        }
    }
}

/// envd's `/init` body for a sandbox: access token, env vars, default user,
/// and the template's start command (`startCmd`, run as root in the user's
/// home once envd listens).
pub(super) fn init_json(spec: &SandboxSpec, start_cmd: Option<&[String]>) -> serde_json::Value {
    let mut init = serde_json::json!({
        "accessToken": spec.envd_access_token,
        "envVars": spec.env_vars,
        // No default workdir unless a custom template set one: an empty
        // cwd is then the acting user's home (root's is /root), as in
        // E2B's sandboxes.
        "defaultUser": spec.start.user.as_deref().unwrap_or("user"),
    });
    if let Some(dir) = &spec.start.workdir {
        init["defaultWorkdir"] = serde_json::json!(dir);
    }
    if let Some(line) = &spec.start.start_cmd {
        // A custom template's start command: a shell line, as the
        // template's user in its workdir (E2B runs it so too).
        init["startCmd"] = serde_json::json!({
            "cmd": "/bin/bash",
            "args": ["-l", "-c", line],
            "user": spec.start.user.as_deref().unwrap_or("user"),
            "cwd": spec.start.workdir.as_deref().unwrap_or("/home/user"),
        });
    } else if let Some((cmd, args)) = start_cmd.and_then(|argv| argv.split_first()) {
        init["startCmd"] = serde_json::json!({
            "cmd": cmd,
            "args": args,
            "user": "root",
            "cwd": "/home/user",
        });
    }
    init
}

/// envd's `/init` body for a sandbox that is running already (a warm one
/// handed over, a copy restored from a snapshot's processes): its own
/// token (empty clears the source's), env vars, and a custom template's
/// default user and workdir; stamped, so a replay is refused.
pub(super) fn handover_json(spec: &SandboxSpec) -> serde_json::Value {
    let mut init = serde_json::json!({
        "accessToken": spec.envd_access_token.clone().unwrap_or_default(),
        "envVars": spec.env_vars,
        "timestamp": chrono::Utc::now().to_rfc3339(),
    });
    if let Some(user) = &spec.start.user {
        init["defaultUser"] = serde_json::json!(user);
    }
    if let Some(dir) = &spec.start.workdir {
        init["defaultWorkdir"] = serde_json::json!(dir);
    }
    init
}

/// A random (version 4) UUID, in the form the kernel's boot_id has.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::INTERPRETER_PATH;

    pub(crate) fn spec() -> SandboxSpec {
        SandboxSpec {
            id: "sb1".into(),
            template: "t".into(),
            cpu_count: 1,
            memory_mb: 64,
            disk_mb: 64,
            env_vars: [("A".to_string(), "1".to_string())].into(),
            envd_access_token: None,
            egress: sandbar_net::EgressPolicy::default(),
            route: crate::Route::default(),
            base_layer: None,
            auto_resume: false,
            start: Default::default(),
        }
    }

    #[test]
    fn init_json_has_a_start_cmd_only_when_the_template_has_one() {
        let plain = init_json(&spec(), None);
        assert!(plain.get("startCmd").is_none(), "{plain}");
        assert_eq!(plain["envVars"]["A"], "1");
        assert_eq!(plain["defaultUser"], "user");
        assert!(init_json(&spec(), Some(&[])).get("startCmd").is_none());

        let argv = [
            INTERPRETER_PATH.to_string(),
            "--port".into(),
            "49999".into(),
        ];
        let with = init_json(&spec(), Some(&argv));
        assert_eq!(
            with["startCmd"],
            serde_json::json!({
                "cmd": INTERPRETER_PATH,
                "args": ["--port", "49999"],
                "user": "root",
                "cwd": "/home/user",
            })
        );
    }

    #[test]
    fn boot_ids_look_like_the_kernels() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, uuid_v4());
    }
}
