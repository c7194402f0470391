//! The node runtime: the catalog of sandboxes (running and paused), making
//! and killing them, metrics, startup recovery and shutdown. Booting lives in
//! [`launch`], what outlives processes (pause, resume, snapshots, restarts)
//! in [`persist`], sandboxes made ahead in [`pool`].

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sandbar_layers::{LayerStore, StoreConfig, Writable};
use sandbar_net::{EgressPolicy, NetError, Network, SandboxNet};

mod launch;
mod persist;
mod pool;
mod restore;

pub use pool::{DemandPools, WarmDepth, WarmSpec};

use crate::cgroup::{Cgroup, Hierarchy};
use crate::lifecycle::{PauseMode, State};
use crate::pid1::Pid1;
use crate::templates::{Template, TemplateStore};
use crate::{
    BoxFuture, Catalog, DialError, Found, Metrics, Route, RuntimeConfig, RuntimeError, SandboxInfo,
    SandboxSpec,
};

/// envd's port inside every sandbox.
pub const ENVD_PORT: u16 = 49983;

/// Tunables with sensible defaults.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Binary that runs the helper when given [`crate::init::INIT_ARG`] as
    /// its first argument (it calls [`crate::init::main_if_requested`]).
    /// Default: the running executable, which is right for `sandbar`.
    pub helper_exe: Option<PathBuf>,
    /// How long a create may take until envd is ready.
    pub create_timeout: Duration,
    /// Process cap per sandbox.
    pub pids_max: u64,
    /// Install the seccomp filter (only turned off to debug).
    pub seccomp: bool,
    pub hostname: String,
    /// Sandboxes to keep made ahead of demand, whatever the demand.
    pub warm: Vec<WarmSpec>,
    /// Pools sized by demand for every template created from (`None`:
    /// only the `warm` floors).
    pub demand_pools: Option<DemandPools>,
    /// Size of a new layer-store image (`None`: 80% of the free space).
    pub store_size: Option<u64>,
    /// The criu binary that checkpoints and restores sandboxes' processes
    /// (memory that survives a restart of the server, snapshots and forks
    /// with their processes). `None`, or one whose `criu check` fails at
    /// start: files only, as without it.
    pub criu: Option<PathBuf>,
    /// Speaks HTTP to servers inside a sandbox (envd's `/init` and
    /// `/health`, the interpreter's readiness) on a stream the runtime has
    /// connected there: the runtime itself does not. `None`: warm pools and
    /// restores from a checkpoint fail with an error that says so.
    pub sandbox_client: Option<crate::SandboxClient>,
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
            demand_pools: None,
            store_size: None,
            criu: None,
            sandbox_client: None,
        }
    }
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

/// What happened to a sandbox that its owner (the API) did not ask for, or
/// that it must record: the runtime tells, the API keeps its records true.
#[derive(Debug, Clone)]
pub enum RuntimeEvent {
    /// Resumed by a request to its URL (auto-resume).
    Resumed { id: String },
    /// Paused by the runtime (at shutdown).
    Paused { id: String, mode: PauseMode },
    /// Its processes ended on their own; it is gone.
    Died { id: String },
}

/// How sandboxes get their network.
enum NetMode {
    /// From the node network's pool (internet, DNS, isolation rules).
    Node(Arc<Network>),
    /// Each sandbox in a private namespace with only loopback.
    Private,
}

/// A sandbox's processes and what they hold.
struct Sandbox {
    info: SandboxInfo,
    route: Route,
    net: Option<SandboxNet>,
    /// The sandbox's network namespace, for dialing into a private one.
    netns: Arc<OwnedFd>,
    pid1: Pid1,
    cgroup: Cgroup,
    dir: PathBuf,
    writable: Writable,
    cpu_sample: Mutex<(Instant, u64)>,
    /// Copies envd's output into the sandbox's log; ends once every process
    /// of the sandbox is gone.
    log: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A sandbox the runtime holds, with or without processes.
struct Entry {
    state: State,
    spec: Arc<SandboxSpec>,
    /// Its processes (running, or frozen by a full pause).
    live: Option<Arc<Sandbox>>,
}

/// The node runtime.
pub struct Runtime {
    /// Held for the runtime's life: no other process manages this
    /// instance's cgroups and sandbox directories.
    _claim: sandbar_net::InstanceClaim,
    /// envd and sandbar-interpreter as sandboxes see them; gone at shutdown.
    binaries: Mutex<Option<Arc<crate::binaries::Binaries>>>,
    /// Writable and snapshot layers; closed at shutdown.
    layer_store: Mutex<Option<Arc<LayerStore>>>,
    /// Checkpoints and restores processes (`None`: files only).
    criu: Option<crate::checkpoint::Criu>,
    config: RuntimeConfig,
    options: RuntimeOptions,
    net: NetMode,
    store: TemplateStore,
    cgroups: Hierarchy,
    helper: PathBuf,
    sandboxes: Mutex<HashMap<String, Entry>>,
    pool: pool::WarmPool,
    events: tokio::sync::broadcast::Sender<RuntimeEvent>,
    this: Weak<Runtime>,
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
        let store = TemplateStore::open(&config.templates_dir)?
            .with_images_dir(config.data_dir.join("images"))?;
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
        let store_config = StoreConfig {
            data_dir: config.data_dir.clone(),
            size_bytes: options.store_size,
        };
        let criu_bin = options.criu.clone();
        let criu = tokio::task::spawn_blocking(move || {
            crate::checkpoint::Criu::detect(criu_bin.as_deref())
        });
        let (left, layers) = tokio::task::spawn_blocking(move || {
            // Processes and mounts of a previous run go; its files stay.
            let left = crate::cleanup::clean(&instance, &dir, &hier);
            st.remove_retired();
            (left, LayerStore::open(&store_config))
        })
        .await
        .map_err(|e| RuntimeError::Start(format!("startup cleanup panicked: {e}")))?;
        let mut criu = criu
            .await
            .map_err(|e| RuntimeError::Start(format!("criu check panicked: {e}")))?;
        let layers = Arc::new(layers?);
        let binaries = crate::binaries::Binaries::install(
            &config.instance,
            &config.envd_bin,
            config.interpreter_bin.as_deref().filter(|p| p.is_file()),
        )?;
        if let Some(criu) = criu.as_mut() {
            // In the run directory the binaries' install made.
            criu.place_cache(&config.instance);
        }
        if left.cgroups + left.mounts > 0 {
            tracing::info!(
                cgroups = left.cgroups,
                mounts = left.mounts,
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
            layer_store: Mutex::new(Some(layers)),
            criu,
            config,
            options,
            net,
            store,
            cgroups,
            helper,
            sandboxes: Mutex::new(HashMap::new()),
            pool: pool::WarmPool::default(),
            events: tokio::sync::broadcast::channel(1024).0,
            this: this.clone(),
        });
        let (on_files, with_memory) = runtime.recover();
        if on_files + with_memory > 0 {
            tracing::info!(
                on_files,
                with_memory,
                "sandboxes of a previous run are paused (with their processes on disk, or on their files)"
            );
        }
        runtime.refill_pools();
        runtime.trim_pools_now_and_then();
        Ok(runtime)
    }

    pub fn templates(&self) -> &TemplateStore {
        &self.store
    }

    /// Whether processes can be checkpointed here (criu works): a shutdown
    /// then keeps them, and snapshots and forks can carry them.
    pub fn memory_persistence(&self) -> bool {
        self.criu.is_some()
    }

    fn layers(&self) -> Result<Arc<LayerStore>, RuntimeError> {
        self.layer_store
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| RuntimeError::Start("the runtime is shutting down".into()))
    }

    /// What happens to sandboxes without being asked (see [`RuntimeEvent`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RuntimeEvent> {
        self.events.subscribe()
    }

    fn emit(&self, event: RuntimeEvent) {
        let _ = self.events.send(event);
    }

    /// Makes a sandbox (or hands over a warm one that fits); returns once
    /// envd inside accepts connections.
    pub async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo, RuntimeError> {
        if !valid_id(&spec.id) {
            return Err(RuntimeError::Invalid(format!(
                "invalid sandbox id '{}'",
                spec.id
            )));
        }
        let spec = Arc::new(spec);
        {
            let mut map = self.sandboxes.lock().unwrap();
            if map.contains_key(&spec.id) {
                return Err(RuntimeError::AlreadyExists(spec.id.clone()));
            }
            map.insert(
                spec.id.clone(),
                Entry {
                    state: State::Starting,
                    spec: spec.clone(),
                    live: None,
                },
            );
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
        let killed_meanwhile = {
            let mut map = self.sandboxes.lock().unwrap();
            match map.get_mut(&spec.id) {
                Some(e) => {
                    e.state = State::Running;
                    e.live = Some(sandbox.clone());
                    false
                }
                None => true,
            }
        };
        if killed_meanwhile {
            self.stop(&sandbox, false).await;
            return Err(RuntimeError::NotFound(spec.id.clone()));
        }
        self.watch_exit(sandbox);
        tracing::debug!(sandbox = %spec.id, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "sandbox ready");
        Ok(info)
    }

    fn template_for(&self, name: &str) -> Result<Template, RuntimeError> {
        let template = self
            .store
            .get(name)?
            .ok_or_else(|| RuntimeError::TemplateNotFound(name.to_string()))?;
        if template.meta.uid_base != self.config.uid_base {
            return Err(RuntimeError::Start(format!(
                "template '{name}' was built for uid base {}, this runtime maps to {}: rebuild it",
                template.meta.uid_base, self.config.uid_base
            )));
        }
        Ok(template)
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

    /// Removes the sandbox if its init dies on its own (not through a pause
    /// or a kill).
    fn watch_exit(&self, sandbox: Arc<Sandbox>) {
        let this = self.this.clone();
        let mut exited = sandbox.pid1.exited();
        tokio::spawn(async move {
            let _ = exited.wait_for(|d| *d).await;
            let Some(rt) = this.upgrade() else { return };
            let id = sandbox.info.id.clone();
            let ours = {
                let mut map = rt.sandboxes.lock().unwrap();
                let live_is_this = map.get(&id).is_some_and(|e| {
                    e.live.as_ref().is_some_and(|l| Arc::ptr_eq(l, &sandbox))
                        && matches!(e.state, State::Running | State::Paused(PauseMode::Full))
                });
                if live_is_this {
                    map.remove(&id);
                }
                live_is_this
            };
            if ours {
                tracing::warn!(sandbox = %id, "sandbox init exited; tearing the sandbox down");
                rt.stop(&sandbox, false).await;
                rt.emit(RuntimeEvent::Died { id });
            }
        });
    }

    /// Kills a sandbox, running or paused: every process, its mounts (with
    /// its mount namespace), cgroup, files and network. `Ok(false)` if there
    /// was no such sandbox.
    pub async fn kill(&self, id: &str) -> Result<bool, RuntimeError> {
        let entry = {
            let mut map = self.sandboxes.lock().unwrap();
            match map.get(id).map(|e| e.state) {
                None | Some(State::Starting) => return Ok(false),
                // An operation in flight finds the entry gone and settles nothing.
                Some(_) => map.remove(id).expect("present"),
            }
        };
        match entry.live {
            Some(live) => self.stop(&live, false).await,
            None => {
                let layers = self.layers().ok();
                let files = launch::Files {
                    dir: Some(self.sandbox_dir(id)),
                    writable: Some(id.to_string()),
                };
                let _ = tokio::task::spawn_blocking(move || files.remove(layers.as_deref())).await;
            }
        }
        Ok(true)
    }

    /// A sandbox the runtime holds (running or paused).
    pub fn get(&self, id: &str) -> Option<SandboxInfo> {
        let map = self.sandboxes.lock().unwrap();
        let e = map.get(id)?;
        Some(info_of(id, e))
    }

    /// What a sandbox was made with.
    pub fn spec(&self, id: &str) -> Option<SandboxSpec> {
        let map = self.sandboxes.lock().unwrap();
        map.get(id).map(|e| (*e.spec).clone())
    }

    pub fn state(&self, id: &str) -> Option<State> {
        self.sandboxes.lock().unwrap().get(id).map(|e| e.state)
    }

    fn running(&self, id: &str) -> Option<Arc<Sandbox>> {
        match self.sandboxes.lock().unwrap().get(id) {
            Some(Entry {
                state: State::Running | State::Snapshotting,
                live: Some(s),
                ..
            }) => Some(s.clone()),
            _ => None,
        }
    }

    /// Every sandbox held (running and paused), oldest first.
    pub fn list(&self) -> Vec<SandboxInfo> {
        let mut out: Vec<SandboxInfo> = self
            .sandboxes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.state != State::Starting)
            .map(|(id, e)| info_of(id, e))
            .collect();
        out.sort_by_key(|a| a.started_at);
        out
    }

    /// Host pid of a running sandbox's init (envd).
    pub fn init_pid(&self, id: &str) -> Option<i32> {
        let map = self.sandboxes.lock().unwrap();
        map.get(id)?.live.as_ref().map(|s| s.pid1.pid)
    }

    /// The sandbox's cgroup (for inspection).
    pub fn cgroup(&self, id: &str) -> Option<Cgroup> {
        let map = self.sandboxes.lock().unwrap();
        map.get(id)?.live.as_ref().map(|s| s.cgroup.clone())
    }

    /// Resource use since the previous call (CPU) and now (memory, disk).
    pub fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError> {
        let sb = self
            .running(id)
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
        let disk_used = self
            .layers()
            .ok()
            .and_then(|l| l.used_bytes(&sb.writable))
            .unwrap_or(0);
        Ok(Metrics {
            cpu_count: sb.info.cpu_count,
            cpu_used_pct,
            mem_used: usage.mem_used,
            mem_total: usage.mem_limit.min(sb.info.memory_mb << 20),
            mem_cache: usage.mem_cache,
            disk_used,
            disk_total: sb.info.disk_mb << 20,
        })
    }

    /// Whether a template exists in the store.
    pub fn has_template(&self, name: &str) -> bool {
        matches!(self.store.get(name), Ok(Some(_)))
    }

    /// The digest of what `src` names in its registry now.
    pub async fn image_digest(
        &self,
        src: &crate::templates::image::ImageSource,
    ) -> Result<String, RuntimeError> {
        let src = src.clone();
        let scratch = self.config.data_dir.join("images");
        tokio::task::spawn_blocking(move || {
            let dir = scratch.join(format!(".inspect-{}", rand::random::<u32>()));
            std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Start(e.to_string()))?;
            let digest = crate::templates::image::manifest_digest(&src, &dir);
            let _ = std::fs::remove_dir_all(&dir);
            digest.map_err(RuntimeError::from)
        })
        .await
        .map_err(|e| RuntimeError::Start(format!("inspecting an image: {e}")))?
    }

    /// The root filesystems pulled from images on this node.
    pub fn images(&self) -> Vec<String> {
        self.store.image_names()
    }

    /// Removes an image's root filesystem unless a sandbox (in any state,
    /// starting included) stands on it; `Ok(false)` when one does.
    pub async fn remove_image(&self, name: &str) -> Result<bool, RuntimeError> {
        if self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .any(|e| e.spec.template == name)
        {
            return Ok(false);
        }
        let (store, name) = (self.store.clone(), name.to_string());
        tokio::task::spawn_blocking(move || store.remove_image(&name))
            .await
            .map_err(|e| RuntimeError::Start(format!("removing an image: {e}")))??;
        Ok(true)
    }

    /// Makes the root filesystem template `name` from the image `src`
    /// (with owners shifted into this node's range); `progress` gets its
    /// lines.
    pub async fn import_image(
        &self,
        name: &str,
        src: &crate::templates::image::ImageSource,
        digest: &str,
        progress: std::sync::Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Result<crate::templates::image::ImageSettings, RuntimeError> {
        let (store, name, src, digest) = (
            self.store.clone(),
            name.to_string(),
            src.clone(),
            digest.to_string(),
        );
        let uid_base = self.config.uid_base;
        tokio::task::spawn_blocking(move || {
            store
                .import_image(&name, &src, &digest, uid_base, &*progress)
                .map(|(_, settings)| settings)
                .map_err(RuntimeError::from)
        })
        .await
        .map_err(|e| RuntimeError::Start(format!("importing an image: {e}")))?
    }

    /// Whether a snapshot layer exists (sandboxes can start on it).
    pub fn has_layer(&self, id: &str) -> bool {
        self.layers().is_ok_and(|l| l.layer(id).is_ok())
    }

    pub async fn set_egress(&self, id: &str, policy: EgressPolicy) -> Result<(), RuntimeError> {
        let sb = self
            .running(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        match (&self.net, &sb.net) {
            (NetMode::Node(n), Some(net)) => Ok(n.set_policy(net, &policy).await?),
            _ => Err(RuntimeError::Net(NetError::Setup(
                "this runtime runs sandboxes without the node network".into(),
            ))),
        }
    }

    /// Pauses every sandbox (nothing written is lost; the next start holds
    /// them as paused): with its processes checkpointed to disk where criu
    /// works, else down to its files. Tears warm ones down, and closes the
    /// layer store.
    pub async fn shutdown(&self) {
        let warm = self.pool.close().await;
        futures::future::join_all(warm.iter().map(|s| self.stop(s, false))).await;
        self.pause_all_for_shutdown().await;
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
        self.binaries.lock().unwrap().take();
        let store = self.layer_store.lock().unwrap().take();
        if let Some(store) = store {
            match Arc::try_unwrap(store) {
                Ok(store) => {
                    let _ = tokio::task::spawn_blocking(move || store.close()).await;
                }
                Err(_) => {
                    tracing::warn!("the layer store is still in use at shutdown; left mounted")
                }
            }
        }
    }
}

fn info_of(id: &str, e: &Entry) -> SandboxInfo {
    match &e.live {
        Some(s) => SandboxInfo {
            state: e.state,
            ..s.info.clone()
        },
        None => SandboxInfo {
            id: id.to_string(),
            template: e.spec.template.clone(),
            cpu_count: e.spec.cpu_count,
            memory_mb: e.spec.memory_mb,
            disk_mb: e.spec.disk_mb,
            started_at: chrono::Utc::now(),
            addr: None,
            state: e.state,
            boot_id: String::new(),
            restored: false,
        },
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Catalog for Runtime {
    fn find(&self, id: &str) -> Option<Found> {
        let map = self.sandboxes.lock().unwrap();
        let e = map.get(id)?;
        match e.state {
            State::Running | State::Snapshotting => {
                e.live.as_ref().map(|s| Found::Running(s.route.clone()))
            }
            State::Paused(_) | State::Pausing | State::Resuming => Some(Found::Paused {
                route: e.spec.route.clone(),
                auto_resume: e.spec.auto_resume,
            }),
            _ => None,
        }
    }

    fn wake<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            // Someone else may be resuming it right now: wait for that.
            for _ in 0..200 {
                match self.state(id) {
                    Some(State::Running) => return Ok(()),
                    Some(State::Paused(_)) => match self.resume(id).await {
                        Ok(_) => {
                            self.emit(RuntimeEvent::Resumed { id: id.to_string() });
                            return Ok(());
                        }
                        Err(RuntimeError::Lifecycle(_)) => {}
                        Err(e) => return Err(e),
                    },
                    Some(_) => {}
                    None => return Err(RuntimeError::NotFound(id.to_string())),
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(RuntimeError::Start(format!(
                "sandbox '{id}' did not resume in time"
            )))
        })
    }

    fn dial<'a>(
        &'a self,
        id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, DialError>> {
        Box::pin(async move {
            let sb = self.running(id).ok_or(DialError::NotFound)?;
            let result = match (&self.net, &sb.net) {
                (NetMode::Node(_), Some(net)) => sandbar_net::dial(net, port).await,
                _ => crate::dial::dial_in_netns(sb.netns.clone(), port).await,
            };
            result.map_err(|e| {
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    tracing::debug!(sandbox = id, port, error = %e, "dial into sandbox failed");
                }
                DialError::PortClosed(port)
            })
        })
    }
}
