//! The E2B-compatible control-plane REST API on axum: sandboxes (create, get,
//! list, kill, timeouts, connect, metrics, logs, network), API-key auth, the
//! evictor that kills sandboxes at their end time, the metrics sampler, and
//! the Prometheus endpoint.
//!
//! Owns: HTTP semantics of the control plane and sandbox timeouts. Must not
//! touch: sockets into sandboxes (those go through the runtime).

mod auth;
mod backend;
mod body;
mod builds;
mod leases;
pub use builds::image::parse_mirror as parse_registry_mirror;
mod egress_log;
mod error;
mod events;
mod evictor;
mod model;
mod quota;
mod routes;
mod sampler;
mod starts;
pub mod telemetry;
mod timeouts;
mod wake_gate;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sandbar_store::Store;
use tokio::sync::Notify;

pub use backend::{LocalRuntime, SandboxBackend};
pub use error::ApiError;
pub use model::{NetworkConfig, NewSandbox, Sandbox, SandboxDetail};

/// How the API presents itself and what it allows.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The `domain` field returned to clients: the public sandbox domain,
    /// with `:port` when the proxy does not listen on 443.
    pub public_domain: String,
    /// Timeout when a create request gives none.
    pub default_timeout: Duration,
    /// Longest timeout a request may ask for.
    pub max_timeout: Duration,
    /// Which node this API's runtime is (recorded with every sandbox).
    pub node: String,
    /// Constant `clientID` (the SDKs require the field; its value is opaque).
    pub client_id: String,
    pub envd_version: String,
    pub default_cpu_count: u32,
    pub default_memory_mb: u64,
    pub default_disk_mb: u64,
    /// How often each running sandbox is sampled for metrics over time.
    pub metrics_interval: Duration,
    /// How long samples are kept.
    pub metrics_retention: Duration,
    /// Where the files of template builds' `COPY` steps are kept (`None`:
    /// template builds are refused with a message).
    pub build_files_dir: Option<std::path::PathBuf>,
    /// Where images of a registry are pulled from instead: registry (as
    /// references name it, `docker.io` for Docker Hub), then the mirror's
    /// `http(s)://host[:port]`.
    pub registry_mirrors: Vec<(String, String)>,
    /// How long a cached build step, an uploaded file and the image root
    /// filesystems they need are kept after the last build used them.
    pub build_cache_retention: Duration,
    /// Template builds one team may run at once (each has a build sandbox,
    /// outside the team's sandbox limits).
    pub max_builds_per_team: usize,
    /// The node's data directory: `/metrics` shows its filesystem's size
    /// and free space as the node's disk (`None`: not shown).
    pub data_dir: Option<std::path::PathBuf>,
    /// Sandboxes the node starts at once; more creates queue (in order).
    pub max_starting: usize,
    /// How long a create may wait in that queue before a 503.
    pub start_queue_wait: Duration,
}

impl ApiConfig {
    pub fn new(public_domain: impl Into<String>) -> Self {
        Self {
            public_domain: public_domain.into(),
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(24 * 3600),
            node: "local".into(),
            client_id: "6532622b".into(),
            // What our envd implements, as the SDKs gate on it: file metadata
            // (0.6.2), entry info in watch events (0.6.3), network-mount flag
            // on watches (0.6.4).
            envd_version: "0.6.4".into(),
            default_cpu_count: 2,
            default_memory_mb: 512,
            default_disk_mb: 2048,
            metrics_interval: Duration::from_secs(5),
            metrics_retention: Duration::from_secs(7 * 24 * 3600),
            build_files_dir: None,
            registry_mirrors: Vec::new(),
            build_cache_retention: Duration::from_secs(7 * 24 * 3600),
            max_builds_per_team: 4,
            data_dir: None,
            max_starting: 16,
            start_queue_wait: Duration::from_secs(10),
        }
    }
}

/// Shared by every handler.
pub(crate) struct Shared {
    pub config: ApiConfig,
    pub store: Store,
    pub backend: Arc<dyn SandboxBackend>,
    /// Wakes the evictor when an end time may have moved earlier.
    pub evictor_wake: Notify,
    /// Team limits and the creates in flight against them.
    pub quotas: quota::Quotas,
    pub builds: builds::Builds,
    /// Layers and roots in use by work in flight (see [`leases`]).
    pub leases: leases::Leases,
    /// Places among the sandboxes starting on the node (see [`starts`]).
    pub starts: starts::Starts,
}

pub(crate) type AppState = Arc<Shared>;

/// The API service and its background evictor.
pub struct Api {
    shared: AppState,
    evictor: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
    events: Option<tokio::task::JoinHandle<()>>,
    build_sweeper: tokio::task::JoinHandle<()>,
}

impl Api {
    /// Reconciles the store with what the runtime holds (sandboxes that did
    /// not survive a restart are marked gone) and starts the evictor.
    pub async fn start(
        config: ApiConfig,
        store: Store,
        backend: Arc<dyn SandboxBackend>,
    ) -> Result<Self, ApiError> {
        let builds =
            builds::Builds::new(config.build_files_dir.clone(), config.max_builds_per_team);
        let starts = starts::Starts::new(config.max_starting, config.start_queue_wait);
        let shared = Arc::new(Shared {
            starts,
            config,
            store,
            backend,
            evictor_wake: Notify::new(),
            quotas: quota::Quotas::default(),
            builds,
            leases: leases::Leases::default(),
        });
        for id in shared.store.unfinished_builds(&shared.config.node).await? {
            let reason = serde_json::json!({
                "message": "the server stopped during the build; start it again",
                "step": "finalize",
                "logEntries": [],
            });
            shared.store.fail_build(&id, &reason).await?;
            tracing::info!(build = %id, "a build the server stopped during is marked failed");
        }
        let events = shared
            .backend
            .subscribe()
            .map(|rx| tokio::spawn(events::run(shared.clone(), rx)));
        let (paused, gone) = events::reconcile(&shared).await?;
        if paused + gone > 0 {
            tracing::info!(
                paused,
                gone,
                "sandboxes of a previous run: paused on their files, or gone"
            );
        }
        let evictor = tokio::spawn(evictor::run(shared.clone()));
        let sampler = tokio::spawn(sampler::run(shared.clone()));
        let build_sweeper = tokio::spawn(builds::gc::run(shared.clone()));
        Ok(Self {
            shared,
            evictor,
            sampler,
            events,
            build_sweeper,
        })
    }

    /// The edge proxy's catalog: `node`'s, with auto-resume bound by the
    /// sandbox's team limits (see `wake_gate`).
    pub fn proxy_catalog(
        &self,
        node: Arc<dyn sandbar_runtime::Catalog>,
    ) -> Arc<dyn sandbar_runtime::Catalog> {
        Arc::new(wake_gate::WakeGate {
            inner: node,
            state: self.shared.clone(),
        })
    }

    /// The HTTP service (serve it, or hand it to the proxy for `api.{domain}`).
    pub fn router(&self) -> Router {
        routes::router(self.shared.clone())
    }

    /// Stops the evictor and records what the runtime's shutdown left
    /// (paused sandboxes as paused, the rest as gone); call after it.
    pub async fn shutdown(self) -> Result<(), ApiError> {
        self.evictor.abort();
        self.sampler.abort();
        self.build_sweeper.abort();
        if let Some(events) = self.events {
            events.abort();
        }
        events::reconcile(&self.shared).await?;
        Ok(())
    }
}
