//! The node runtime: creating sandboxes through the helper (see [`crate::init`]),
//! the catalog of live ones, metrics, teardown and startup cleanup.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use sandbar_net::{EgressPolicy, NetError, Network, SandboxNet};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

mod pool;

pub use pool::WarmSpec;

use crate::cgroup::{Cgroup, Hierarchy, Limits};
use crate::init::{InitSpec, INIT_ARG, INIT_FILE};
use crate::pid1::Pid1;
use crate::templates::{Template, TemplateStore};
use crate::{
    BoxFuture, Catalog, DialError, Metrics, Route, RuntimeConfig, RuntimeError, SandboxInfo,
    SandboxSpec,
};

/// envd's port inside every sandbox.
pub const ENVD_PORT: u16 = 49983;

/// Tunables with sensible defaults.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Binary that runs the helper when given [`INIT_ARG`] as its first
    /// argument (it calls [`crate::init::main_if_requested`]). Default: the
    /// running executable, which is right for the `sandbar` binary.
    pub helper_exe: Option<PathBuf>,
    /// How long a create may take until envd is ready.
    pub create_timeout: Duration,
    /// Process cap per sandbox.
    pub pids_max: u64,
    /// Install the seccomp filter (only turned off to debug).
    pub seccomp: bool,
    pub hostname: String,
    /// Sandboxes to keep made ahead of demand.
    pub warm: Vec<WarmSpec>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            helper_exe: None,
            create_timeout: Duration::from_secs(20),
            pids_max: 1024,
            seccomp: true,
            hostname: "sandbox".into(),
            warm: Vec::new(),
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

/// How sandboxes get their network.
enum NetMode {
    /// From the node network's pool (internet, DNS, isolation rules).
    Node(Arc<Network>),
    /// Each sandbox in a private namespace with only loopback.
    Private,
}

/// A live sandbox.
struct Sandbox {
    info: SandboxInfo,
    route: Route,
    net: Option<SandboxNet>,
    /// The sandbox's network namespace, for dialing into a private one.
    netns: Arc<OwnedFd>,
    pid1: Pid1,
    cgroup: Cgroup,
    dir: PathBuf,
    cpu_sample: Mutex<(Instant, u64)>,
    /// Copies envd's output into the sandbox's log; ends once every process
    /// of the sandbox is gone.
    log: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

enum Slot {
    Starting,
    Live(Arc<Sandbox>),
}

/// The node runtime.
pub struct Runtime {
    /// Held for the runtime's life: no other process manages this
    /// instance's cgroups and sandbox directories.
    _claim: sandbar_net::InstanceClaim,
    /// envd and sandbar-interpreter as sandboxes see them; gone at shutdown.
    binaries: Mutex<Option<Arc<crate::binaries::Binaries>>>,
    config: RuntimeConfig,
    options: RuntimeOptions,
    net: NetMode,
    store: TemplateStore,
    cgroups: Hierarchy,
    helper: PathBuf,
    sandboxes: Mutex<HashMap<String, Slot>>,
    pool: pool::WarmPool,
    this: Weak<Runtime>,
}

/// Resources of a sandbox being made, undone if making it fails.
#[derive(Default)]
struct Partial {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    net: Option<SandboxNet>,
    pid1: Option<Pid1>,
    log: Option<tokio::task::JoinHandle<()>>,
}

impl Runtime {
    /// Starts the runtime on the node network: opens the template store and
    /// cleans what a previous process of the same instance left.
    pub async fn start(
        config: RuntimeConfig,
        net: Arc<Network>,
    ) -> Result<Arc<Self>, RuntimeError> {
        Self::start_with(config, Some(net), RuntimeOptions::default()).await
    }

    /// Like [`start`](Self::start); with `net: None` every sandbox gets a
    /// private network namespace with loopback only (no internet), for
    /// machines or tests without the node network.
    pub async fn start_with(
        config: RuntimeConfig,
        net: Option<Arc<Network>>,
        options: RuntimeOptions,
    ) -> Result<Arc<Self>, RuntimeError> {
        if config.instance.is_empty()
            || !config
                .instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(RuntimeError::Start(format!(
                "invalid instance name '{}'",
                config.instance
            )));
        }
        // Before cleaning up: the leftovers must not be a live server's.
        let claim = sandbar_net::InstanceClaim::acquire(&config.instance)?;
        let helper = match &options.helper_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(io("find the running executable"))?,
        };
        if !config.envd_bin.is_file() {
            return Err(RuntimeError::Start(format!(
                "envd binary {} not found",
                config.envd_bin.display()
            )));
        }
        let store = TemplateStore::open(&config.templates_dir)?;
        let cgroups = Hierarchy::detect()?;
        let sandboxes_dir = config.data_dir.join("sandboxes");
        std::fs::create_dir_all(&sandboxes_dir)
            .map_err(io(format!("create {}", sandboxes_dir.display())))?;
        let (instance, dir, hier, st) = (
            config.instance.clone(),
            sandboxes_dir.clone(),
            cgroups.clone(),
            store.clone(),
        );
        let left = tokio::task::spawn_blocking(move || {
            let left = crate::cleanup::clean(&instance, &dir, &hier);
            st.remove_retired();
            left
        })
        .await
        .map_err(|e| RuntimeError::Start(format!("startup cleanup panicked: {e}")))?;
        let binaries = crate::binaries::Binaries::install(
            &config.instance,
            &config.envd_bin,
            config.interpreter_bin.as_deref().filter(|p| p.is_file()),
        )?;
        if left.cgroups + left.mounts + left.dirs > 0 {
            tracing::info!(
                cgroups = left.cgroups,
                mounts = left.mounts,
                dirs = left.dirs,
                "removed leftovers of a previous run"
            );
        }
        let net = match net {
            Some(n) => NetMode::Node(n),
            None => NetMode::Private,
        };
        let runtime = Arc::new_cyclic(|this| Self {
            _claim: claim,
            binaries: Mutex::new(Some(Arc::new(binaries))),
            config,
            options,
            net,
            store,
            cgroups,
            helper,
            sandboxes: Mutex::new(HashMap::new()),
            pool: pool::WarmPool::default(),
            this: this.clone(),
        });
        runtime.refill_pools();
        Ok(runtime)
    }

    pub fn templates(&self) -> &TemplateStore {
        &self.store
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("sandboxes").join(id)
    }

    /// Makes a sandbox (or hands over a warm one that fits); returns once
    /// envd inside accepts connections.
    pub async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo, RuntimeError> {
        if !valid_id(&spec.id) {
            return Err(RuntimeError::Start(format!(
                "invalid sandbox id '{}'",
                spec.id
            )));
        }
        {
            let mut map = self.sandboxes.lock().unwrap();
            if map.contains_key(&spec.id) {
                return Err(RuntimeError::AlreadyExists(spec.id));
            }
            map.insert(spec.id.clone(), Slot::Starting);
        }
        let started = Instant::now();
        let made = match self.take_warm(&spec).await {
            Some(sb) => Ok(sb),
            None => self.make(&spec).await,
        };
        let sandbox = match made {
            Ok(sb) => Arc::new(sb),
            Err(e) => {
                self.sandboxes.lock().unwrap().remove(&spec.id);
                return Err(e);
            }
        };
        let info = sandbox.info.clone();
        self.sandboxes
            .lock()
            .unwrap()
            .insert(spec.id.clone(), Slot::Live(sandbox.clone()));
        self.watch_exit(sandbox);
        tracing::debug!(id = %spec.id, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "sandbox ready");
        Ok(info)
    }

    /// Makes a sandbox that is in no catalog yet; undoes what it made if it
    /// fails.
    async fn make(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        let template = self
            .store
            .get(&spec.template)?
            .ok_or_else(|| RuntimeError::TemplateNotFound(spec.template.clone()))?;
        if template.meta.uid_base != self.config.uid_base {
            return Err(RuntimeError::Start(format!(
                "template '{}' was built for uid base {}, this runtime maps to {}: rebuild it",
                spec.template, template.meta.uid_base, self.config.uid_base
            )));
        }
        let binaries = self
            .binaries
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| RuntimeError::Start("the runtime is shutting down".into()))?;
        let interpreter_bin = self.interpreter_for(&spec.template, &template, &binaries)?;
        let mut partial = Partial::default();
        let made = self
            .launch(
                spec,
                &template,
                &binaries.envd,
                interpreter_bin,
                &mut partial,
            )
            .await;
        if made.is_err() {
            self.undo(partial).await;
        }
        made
    }

    /// The host binary to bind at [`crate::templates::INTERPRETER_PATH`] when `template`'s
    /// start command runs it; checked before anything is made, so that a
    /// node without it fails the create with a reason.
    fn interpreter_for(
        &self,
        name: &str,
        template: &Template,
        binaries: &crate::binaries::Binaries,
    ) -> Result<Option<PathBuf>, RuntimeError> {
        if !template.meta.runs_interpreter() {
            return Ok(None);
        }
        match &self.config.interpreter_bin {
            Some(_) if binaries.interpreter.is_some() => Ok(binaries.interpreter.clone()),
            Some(bin) => Err(RuntimeError::Start(format!(
                "template '{name}' runs sandbar-interpreter, but its binary {} is missing on this node",
                bin.display()
            ))),
            None => Err(RuntimeError::Start(format!(
                "template '{name}' runs sandbar-interpreter, but this node has no sandbar-interpreter binary (install it next to sandbar or pass --interpreter)"
            ))),
        }
    }

    async fn launch(
        &self,
        spec: &SandboxSpec,
        template: &Template,
        envd_bin: &Path,
        interpreter_bin: Option<PathBuf>,
        partial: &mut Partial,
    ) -> Result<Sandbox, RuntimeError> {
        let t_start = Instant::now();
        let dir = self.sandbox_dir(&spec.id);
        partial.dir = Some(dir.clone());
        for sub in ["root", "rw"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("create {}", dir.join(sub).display())))?;
        }
        let limits = Limits {
            memory_bytes: spec.memory_mb.max(16) << 20,
            cpus: spec.cpu_count.max(1),
            pids_max: self.options.pids_max,
        };
        let cgroup = self
            .cgroups
            .create(&self.config.instance, &spec.id, limits)?;
        partial.cgroup = Some(cgroup.clone());
        let net = match &self.net {
            NetMode::Node(n) => Some(n.acquire(&spec.egress).await?),
            NetMode::Private => None,
        };
        partial.net = net.clone();

        let init_json = init_json(spec, template.meta.start_cmd.as_deref());
        let init = InitSpec {
            id: spec.id.clone(),
            lower: template.rootfs.clone(),
            dir: dir.clone(),
            uid_base: self.config.uid_base,
            disk_mb: spec.disk_mb,
            netns: net.as_ref().map(|n| n.netns_path.clone()),
            resolver: net.as_ref().map(|n| n.gateway),
            hostname: self.options.hostname.clone(),
            envd_bin: envd_bin.to_path_buf(),
            interpreter_bin,
            envd_port: ENVD_PORT,
            init_json: init_json.to_string(),
            cgroup_join: cgroup.join_files(),
            seccomp: self.options.seccomp,
            log_fd: crate::init::LOG_FD,
        };
        let t_prepared = Instant::now();
        let input = serde_json::to_vec(&init)
            .map_err(|e| RuntimeError::Start(format!("encode the helper spec: {e}")))?;

        let (log_read, log_write) =
            crate::sandbox_log::pipe().map_err(io("make envd's log pipe"))?;
        partial.log = Some(
            crate::sandbox_log::spawn(log_read, dir.clone()).map_err(io("read envd's log pipe"))?,
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
        let t_forked = Instant::now();

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
            Ok(Ok(1)) if helper_failed.is_none() => {}
            Ok(Ok(_)) | Ok(Err(_)) => {
                let msg = errors.await.unwrap_or_default();
                let msg = if msg.trim().is_empty() {
                    format!(
                        "envd exited before it was ready; its log: {}",
                        crate::sandbox_log::tail(&dir, 10)
                    )
                } else {
                    msg.trim().to_string()
                };
                return Err(RuntimeError::Start(msg));
            }
            Err(_) => {
                return Err(RuntimeError::Start(format!(
                    "envd was not ready within {:?}; its log: {}",
                    self.options.create_timeout,
                    crate::sandbox_log::tail(&dir, 10)
                )));
            }
        }

        tracing::debug!(
            id = %spec.id,
            prepare_ms = (t_prepared - t_start).as_secs_f64() * 1e3,
            helper_ms = (t_forked - t_prepared).as_secs_f64() * 1e3,
            envd_ms = t_forked.elapsed().as_secs_f64() * 1e3,
            "sandbox phases"
        );
        let root = crate::sys::open_path(
            Path::new(&format!("/proc/{pid}/root")),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(io("open the sandbox root"))?;
        if let Err(e) = crate::sys::unlink_in_root(&root, INIT_FILE) {
            tracing::warn!(id = %spec.id, error = %e, "could not remove envd's init file");
        }
        let netns = Arc::new(
            crate::sys::open_path(Path::new(&format!("/proc/{pid}/ns/net")), libc::O_RDONLY)
                .map_err(io("open the sandbox's network namespace"))?,
        );
        let cpu_ns = cgroup.usage().map(|u| u.cpu_ns).unwrap_or(0);
        let pid1 = partial.pid1.take().expect("set above");
        let log = partial.log.take();
        partial.dir = None;
        partial.cgroup = None;
        partial.net = None;
        Ok(Sandbox {
            info: SandboxInfo {
                id: spec.id.clone(),
                template: spec.template.clone(),
                cpu_count: spec.cpu_count,
                memory_mb: spec.memory_mb,
                disk_mb: spec.disk_mb,
                started_at: Utc::now(),
                addr: net.as_ref().map(|n| n.addr).unwrap_or(Ipv4Addr::LOCALHOST),
            },
            route: spec.route.clone(),
            net,
            netns,
            pid1,
            cgroup,
            dir,
            cpu_sample: Mutex::new((Instant::now(), cpu_ns)),
            log: Mutex::new(log),
        })
    }

    /// Undoes a failed create.
    async fn undo(&self, partial: Partial) {
        if let Some(pid1) = &partial.pid1 {
            if !pid1.kill_and_wait(Duration::from_secs(10)).await {
                tracing::warn!(pid = pid1.pid, "a failed sandbox's init did not exit");
            }
        }
        self.release(partial.cgroup, partial.log, partial.dir, partial.net)
            .await;
    }

    /// Frees a sandbox's cgroup, log, directory and network, in that order.
    async fn release(
        &self,
        cgroup: Option<Cgroup>,
        log: Option<tokio::task::JoinHandle<()>>,
        dir: Option<PathBuf>,
        net: Option<SandboxNet>,
    ) {
        let killed = tokio::task::spawn_blocking(move || {
            if let Some(cg) = &cgroup {
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
        let cleaned = tokio::task::spawn_blocking(move || {
            if let Ok(Some(cg)) = killed {
                if let Err(e) = cg.remove() {
                    tracing::warn!(error = %e, "sandbox cgroup not removed");
                }
            }
            if let Some(dir) = dir {
                if let Err(e) = crate::cleanup::remove_sandbox_dir(&dir) {
                    tracing::warn!(error = %e, "sandbox dir not removed");
                }
            }
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

    /// Tears the sandbox down if its init dies on its own.
    fn watch_exit(&self, sandbox: Arc<Sandbox>) {
        let this = self.this.clone();
        let mut exited = sandbox.pid1.exited();
        tokio::spawn(async move {
            let _ = exited.wait_for(|d| *d).await;
            let Some(rt) = this.upgrade() else { return };
            if rt.take_if_live(&sandbox.info.id, &sandbox) {
                tracing::warn!(id = %sandbox.info.id, "sandbox init exited; tearing the sandbox down");
                rt.teardown(sandbox).await;
            }
        });
    }

    fn take_if_live(&self, id: &str, sandbox: &Arc<Sandbox>) -> bool {
        let mut map = self.sandboxes.lock().unwrap();
        match map.get(id) {
            Some(Slot::Live(s)) if Arc::ptr_eq(s, sandbox) => {
                map.remove(id);
                true
            }
            _ => false,
        }
    }

    async fn teardown(&self, sandbox: Arc<Sandbox>) {
        if !sandbox.pid1.kill_and_wait(Duration::from_secs(10)).await {
            tracing::warn!(id = %sandbox.info.id, "sandbox init did not exit after SIGKILL");
        }
        let log = sandbox.log.lock().unwrap().take();
        self.release(
            Some(sandbox.cgroup.clone()),
            log,
            Some(sandbox.dir.clone()),
            sandbox.net.clone(),
        )
        .await;
    }

    /// Kills a sandbox: every process, its mounts (with its mount
    /// namespace), cgroup, directory and network. `Ok(false)` if there was no
    /// such live sandbox.
    pub async fn kill(&self, id: &str) -> Result<bool, RuntimeError> {
        let sandbox = {
            let mut map = self.sandboxes.lock().unwrap();
            match map.get(id) {
                Some(Slot::Live(s)) => {
                    let s = s.clone();
                    map.remove(id);
                    s
                }
                _ => return Ok(false),
            }
        };
        self.teardown(sandbox).await;
        Ok(true)
    }

    pub fn get(&self, id: &str) -> Option<SandboxInfo> {
        self.live(id).map(|s| s.info.clone())
    }

    fn live(&self, id: &str) -> Option<Arc<Sandbox>> {
        match self.sandboxes.lock().unwrap().get(id) {
            Some(Slot::Live(s)) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn list(&self) -> Vec<SandboxInfo> {
        let mut out: Vec<SandboxInfo> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .filter_map(|s| match s {
                Slot::Live(s) => Some(s.info.clone()),
                Slot::Starting => None,
            })
            .collect();
        out.sort_by_key(|a| a.started_at);
        out
    }

    /// Host pid of a sandbox's init (envd).
    pub fn init_pid(&self, id: &str) -> Option<i32> {
        self.live(id).map(|s| s.pid1.pid)
    }

    /// The sandbox's cgroup (for inspection).
    pub fn cgroup(&self, id: &str) -> Option<Cgroup> {
        self.live(id).map(|s| s.cgroup.clone())
    }

    /// Resource use since the previous call (CPU) and now (memory, disk).
    pub fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError> {
        let sb = self
            .live(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let usage = sb.cgroup.usage()?;
        let now = Instant::now();
        let cpu_used_pct = {
            let mut last = sb.cpu_sample.lock().unwrap();
            let wall = now.duration_since(last.0).as_nanos() as f64;
            let used = usage.cpu_ns.saturating_sub(last.1) as f64;
            *last = (now, usage.cpu_ns);
            if wall > 0.0 {
                (used / (wall * f64::from(sb.info.cpu_count.max(1))) * 100.0).min(100.0)
            } else {
                0.0
            }
        };
        // statfs of an overlay reports its upper layer: the sandbox's tmpfs.
        let (disk_used, disk_total) =
            match nix::sys::statvfs::statvfs(format!("/proc/{}/root", sb.pid1.pid).as_str()) {
                Ok(st) => {
                    let frag = st.fragment_size();
                    ((st.blocks() - st.blocks_free()) * frag, st.blocks() * frag)
                }
                Err(e) => return Err(io("statfs the sandbox root")(e.into())),
            };
        Ok(Metrics {
            cpu_count: sb.info.cpu_count,
            cpu_used_pct,
            mem_used: usage.mem_used,
            mem_total: usage.mem_limit.min(sb.info.memory_mb << 20),
            mem_cache: usage.mem_cache,
            disk_used,
            disk_total,
        })
    }

    /// Whether a template exists in the store.
    pub fn has_template(&self, name: &str) -> bool {
        matches!(self.store.get(name), Ok(Some(_)))
    }

    pub async fn set_egress(&self, id: &str, policy: EgressPolicy) -> Result<(), RuntimeError> {
        let sb = self
            .live(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        match (&self.net, &sb.net) {
            (NetMode::Node(n), Some(net)) => Ok(n.set_policy(net, &policy).await?),
            _ => Err(RuntimeError::Net(NetError::Setup(
                "this runtime runs sandboxes without the node network".into(),
            ))),
        }
    }

    /// Kills every sandbox and releases their resources.
    pub async fn shutdown(&self) {
        let warm = self.pool.close().await;
        let all: Vec<Arc<Sandbox>> = {
            let mut map = self.sandboxes.lock().unwrap();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, s)| matches!(s, Slot::Live(_)))
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter()
                .filter_map(|id| match map.remove(id) {
                    Some(Slot::Live(s)) => Some(s),
                    _ => None,
                })
                .collect()
        };
        futures::future::join_all(all.into_iter().chain(warm).map(|s| self.teardown(s))).await;
        self.binaries.lock().unwrap().take();
        // Whatever a teardown could not remove (a cgroup still busy) goes now.
        let (cgroups, instance) = (self.cgroups.clone(), self.config.instance.clone());
        let left = tokio::task::spawn_blocking(move || cgroups.remove_instance(&instance))
            .await
            .unwrap_or(0);
        if left > 0 {
            tracing::warn!(
                left,
                "shutdown removed sandbox cgroups that teardown had left"
            );
        }
    }
}

/// envd's `/init` body for a sandbox: access token, env vars, default user,
/// and the template's start command (`startCmd`, run as root in the user's
/// home once envd listens).
fn init_json(spec: &SandboxSpec, start_cmd: Option<&[String]>) -> serde_json::Value {
    let mut init = serde_json::json!({
        "accessToken": spec.envd_access_token,
        "envVars": spec.env_vars,
        // No default workdir: an empty cwd is then the acting user's
        // home (root's is /root), as in E2B's sandboxes.
        "defaultUser": "user",
    });
    if let Some((cmd, args)) = start_cmd.and_then(|argv| argv.split_first()) {
        init["startCmd"] = serde_json::json!({
            "cmd": cmd,
            "args": args,
            "user": "root",
            "cwd": "/home/user",
        });
    }
    init
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Catalog for Runtime {
    fn lookup(&self, id: &str) -> Option<Route> {
        self.live(id).map(|s| s.route.clone())
    }

    fn dial<'a>(
        &'a self,
        id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, DialError>> {
        Box::pin(async move {
            let sb = self.live(id).ok_or(DialError::NotFound)?;
            let result = match (&self.net, &sb.net) {
                (NetMode::Node(_), Some(net)) => sandbar_net::dial(net, port).await,
                _ => crate::dial::dial_in_netns(sb.netns.clone(), port).await,
            };
            result.map_err(|e| {
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    tracing::debug!(id, port, error = %e, "dial into sandbox failed");
                }
                DialError::PortClosed(port)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::INTERPRETER_PATH;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            id: "sb1".into(),
            template: "t".into(),
            cpu_count: 1,
            memory_mb: 64,
            disk_mb: 64,
            env_vars: [("A".to_string(), "1".to_string())].into(),
            envd_access_token: None,
            egress: EgressPolicy::default(),
            route: Route::default(),
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
}
