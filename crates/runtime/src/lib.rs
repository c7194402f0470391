//! Node runtime: makes sandboxes from templates (overlay root filesystem,
//! user/mount/pid/uts/ipc/cgroup namespaces, cgroup limits, seccomp, envd as
//! init), keeps the catalog of live sandboxes, tears them down, and cleans up
//! what a crashed predecessor left.
//!
//! Owns: templates on disk, sandbox processes, mounts and cgroups, and each
//! sandbox's lifecycle ([`lifecycle`]): pause, resume, snapshots, what
//! survives a restart, and (with CRIU, `checkpoint.rs`) processes
//! checkpointed to disk and restored: across a restart, into forks and
//! sandboxes made from snapshots. Must not touch: HTTP, the database, TLS. Network
//! objects come from `sandbar-net`, writable and snapshot layers from
//! `sandbar-layers`.

mod asking;
mod binaries;
pub mod cgroup;
mod checkpoint;
mod cleanup;
mod dial;
pub mod init;
pub mod lifecycle;
mod pid1;
pub mod privileges;
mod runtime;
mod sandbox_log;
pub mod seccomp;
mod sys;
pub mod templates;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

pub use asking::{InnerAnswer, InnerRequest, SandboxClient};
use chrono::{DateTime, Utc};
pub use lifecycle::{LifecycleError, PauseMode, State};
pub use runtime::{
    DemandPools, Runtime, RuntimeEvent, RuntimeOptions, WarmDepth, WarmSpec, ENVD_PORT,
};
pub use sandbar_layers::LayerError;
pub use sandbar_net::{EgressPolicy, NetError, Network};

/// Where the runtime keeps its files and which ids it maps sandboxes to.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Same instance name as the network's; names cgroups and dirs.
    pub instance: String,
    /// Per-sandbox state: `<data_dir>/sandboxes/<id>/`.
    pub data_dir: PathBuf,
    /// Template store: `<templates_dir>/<name>/rootfs`.
    pub templates_dir: PathBuf,
    /// The envd binary bind-mounted into every sandbox.
    pub envd_bin: PathBuf,
    /// The `sandbar-interpreter` binary, bind-mounted into sandboxes of
    /// templates whose start command runs it (`code-interpreter-v1`); `None`:
    /// creating such a sandbox fails.
    pub interpreter_bin: Option<PathBuf>,
    /// Host uid/gid that root inside a sandbox maps to.
    pub uid_base: u32,
}

/// How the edge proxy should treat a sandbox's public traffic.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Route {
    /// When set, requests (except to envd's port) need header
    /// `e2b-traffic-access-token` with this value.
    pub traffic_access_token: Option<String>,
    /// `maskRequestHost`, with `${PORT}` still to substitute.
    pub mask_request_host: Option<String>,
}

/// What to make. Kept with the sandbox (`sandbox.json` in its directory,
/// root-only: env vars may hold secrets) so that a paused sandbox can boot
/// again, after a restart of the server too.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SandboxSpec {
    pub id: String,
    pub template: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub env_vars: BTreeMap<String, String>,
    /// envd's access token (`secure: true`), else None.
    pub envd_access_token: Option<String>,
    pub egress: EgressPolicy,
    pub route: Route,
    /// The layer to start on (a snapshot's), above the template.
    #[serde(default)]
    pub base_layer: Option<String>,
    /// Resumed by a request to its URL while paused.
    #[serde(default)]
    pub auto_resume: bool,
    /// What a custom template sets for its sandboxes: default user and
    /// workdir, and a start command (overrides the template's own).
    #[serde(default)]
    pub start: StartSettings,
}

/// A custom template's settings for each of its sandboxes, handed to envd
/// at `/init`: who commands run as and where, and the command envd starts
/// once it is up (a shell line, `/bin/bash -l -c`), as that user in that
/// workdir.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
}

/// A sandbox as the runtime sees it.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    pub id: String,
    pub template: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// When this boot of it started.
    pub started_at: DateTime<Utc>,
    /// Address of the sandbox inside the node's sandbox network (None
    /// while it has no network: paused to its files).
    pub addr: Option<std::net::Ipv4Addr>,
    pub state: State,
    /// This boot's `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// Its processes were restored from a checkpoint (a full pause that
    /// outlived the server, a snapshot with memory), not started afresh.
    pub restored: bool,
}

impl SandboxInfo {
    /// A sandbox of `spec` that has just started running (made, or restored
    /// from a checkpoint).
    pub(crate) fn running(
        spec: &SandboxSpec,
        addr: Option<std::net::Ipv4Addr>,
        boot_id: String,
        restored: bool,
    ) -> Self {
        Self {
            id: spec.id.clone(),
            template: spec.template.clone(),
            cpu_count: spec.cpu_count,
            memory_mb: spec.memory_mb,
            disk_mb: spec.disk_mb,
            started_at: Utc::now(),
            addr,
            state: State::Running,
            boot_id,
            restored,
        }
    }
}

/// A snapshot layer just made.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub layer: String,
    pub template: String,
    /// It carries the sandbox's processes (CRIU images): sandboxes made on
    /// it are restored, not booted.
    pub memory: bool,
    /// The sandbox's resources, which sandboxes started from it get.
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// Resource use read from the sandbox's cgroup and upper layer.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("template '{0}' not found")]
    TemplateNotFound(String),
    #[error("sandbox '{0}' not found")]
    NotFound(String),
    #[error("sandbox '{0}' already exists")]
    AlreadyExists(String),
    #[error("network: {0}")]
    Net(#[from] sandbar_net::NetError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox failed to start: {0}")]
    Start(String),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("layer store: {0}")]
    Layers(#[from] LayerError),
    #[error("{0}")]
    Invalid(String),
    /// The sandbox's processes could not be checkpointed or restored (the
    /// files are untouched: a files-only pause or snapshot still works).
    #[error("memory checkpoint: {0}")]
    Checkpoint(String),
}

impl From<templates::TemplateError> for RuntimeError {
    fn from(e: templates::TemplateError) -> Self {
        if let templates::TemplateError::Image(why) = e {
            // What an image is or where it is: the caller's to fix.
            return RuntimeError::Invalid(why);
        }
        RuntimeError::Io {
            context: "template store".into(),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl From<cgroup::CgroupError> for RuntimeError {
    fn from(e: cgroup::CgroupError) -> Self {
        RuntimeError::Io {
            context: format!("cgroup {}", e.path.display()),
            source: e.source,
        }
    }
}

/// Why a connection into a sandbox could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("sandbox not found")]
    NotFound,
    #[error("port {0} is not open")]
    PortClosed(u16),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the edge proxy finds under a sandbox id.
#[derive(Debug, Clone)]
pub enum Found {
    Running(Route),
    /// Paused; a request may wake it when `auto_resume` is set.
    Paused {
        route: Route,
        auto_resume: bool,
    },
}

/// What the edge proxy may know of sandboxes: where they are and how to reach
/// a port inside. Implemented by [`Runtime`] on one node; a multi-node
/// deployment implements it over the shared catalog.
pub trait Catalog: Send + Sync + 'static {
    /// A running sandbox's route (`None`: not running).
    fn lookup(&self, id: &str) -> Option<Route> {
        match self.find(id)? {
            Found::Running(route) => Some(route),
            Found::Paused { .. } => None,
        }
    }
    fn find(&self, id: &str) -> Option<Found>;
    /// Resumes a paused sandbox for a request that woke it (auto-resume).
    fn wake<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;
    fn dial<'a>(
        &'a self,
        id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, DialError>>;
}
