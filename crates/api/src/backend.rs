//! What the API needs from the node runtime, as a trait: on one machine it
//! is [`sandbar_runtime::Runtime`]; a multi-node control plane would put a
//! client to a remote node behind the same methods.

use std::collections::HashSet;
use std::sync::Arc;

use sandbar_net::{Logged, Network};
use sandbar_runtime::templates::image::{ImageSettings, ImageSource};
use sandbar_runtime::{
    BoxFuture, EgressPolicy, Metrics, PauseMode, Runtime, RuntimeError, RuntimeEvent, SandboxInfo,
    SandboxSpec, SnapshotInfo, State, WarmDepth,
};

pub trait SandboxBackend: Send + Sync + 'static {
    fn has_template(&self, name: &str) -> bool;
    /// What exactly a built-in template is now (changes when it is rebuilt):
    /// layers built on it are only valid on this version.
    fn template_version(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }
    /// Whether a snapshot layer is on this node.
    fn has_layer(&self, id: &str) -> bool;
    fn create(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>>;
    /// `Ok(false)` when the sandbox did not exist.
    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>>;
    /// Where a sandbox the node holds is in its life (`None`: not held).
    fn state(&self, id: &str) -> Option<State>;
    /// Every sandbox the node holds, with its state.
    fn held(&self) -> Vec<(String, State)>;
    /// What the sandbox was made with (env vars included), for forks.
    fn spec(&self, id: &str) -> Option<SandboxSpec>;
    fn pause<'a>(&'a self, id: &'a str, mode: PauseMode)
        -> BoxFuture<'a, Result<(), RuntimeError>>;
    fn resume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SandboxInfo, RuntimeError>>;
    /// A snapshot layer of the sandbox's files, and with `memory` of its
    /// processes too (see [`memory_snapshots`](Self::memory_snapshots)).
    fn snapshot<'a>(
        &'a self,
        id: &'a str,
        memory: bool,
    ) -> BoxFuture<'a, Result<SnapshotInfo, RuntimeError>>;
    /// Whether this node can checkpoint processes (CRIU): snapshots and
    /// forks then carry them, and a stop of the server keeps them.
    fn memory_snapshots(&self) -> bool {
        false
    }
    /// Removes unused layers: none that a sandbox stands on or `kept` names.
    fn collect_layers(&self, kept: HashSet<String>) -> BoxFuture<'_, Vec<String>>;
    fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError>;
    fn set_egress<'a>(
        &'a self,
        id: &'a str,
        policy: EgressPolicy,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;
    /// What happens to sandboxes without the API asking.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<RuntimeEvent>>;
    /// Each warm pool of this node: template, ready, kept.
    fn warm_pools(&self) -> Vec<WarmDepth> {
        Vec::new()
    }
    /// The env vars a root filesystem template's processes start with (an
    /// image's `Env`).
    fn template_env(&self, name: &str) -> Vec<(String, String)> {
        let _ = name;
        Vec::new()
    }
    /// The digest of what an image reference names in its registry now.
    fn image_digest<'a>(
        &'a self,
        src: &'a ImageSource,
    ) -> BoxFuture<'a, Result<String, RuntimeError>> {
        let _ = src;
        Box::pin(async { Err(RuntimeError::Invalid("this node cannot pull images".into())) })
    }
    /// Makes root filesystem template `name` from an image.
    fn import_image<'a>(
        &'a self,
        name: &'a str,
        src: &'a ImageSource,
        digest: &'a str,
        progress: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> BoxFuture<'a, Result<ImageSettings, RuntimeError>> {
        let _ = (name, src, digest, progress);
        Box::pin(async { Err(RuntimeError::Invalid("this node cannot pull images".into())) })
    }
    /// The root filesystems pulled from images on this node.
    fn images(&self) -> Vec<String> {
        Vec::new()
    }
    /// Removes an image's root filesystem unless a sandbox stands on it.
    fn remove_image<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        let _ = name;
        Box::pin(async { Ok(false) })
    }
    /// A connection to `port` inside a running sandbox (envd's, for
    /// template builds and ready checks).
    fn dial<'a>(
        &'a self,
        id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, sandbar_runtime::DialError>> {
        let _ = (id, port);
        Box::pin(async { Err(sandbar_runtime::DialError::NotFound) })
    }
    /// The sandbox's egress log, oldest first (`None`: none kept here).
    fn egress_log<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<Vec<Logged>>> {
        let _ = id;
        Box::pin(async { None })
    }
}

/// The local node's runtime, and its network (for egress logs) when
/// sandboxes run on the node network.
pub struct LocalRuntime {
    runtime: Arc<Runtime>,
    network: Option<Arc<Network>>,
}

impl LocalRuntime {
    pub fn new(runtime: Arc<Runtime>, network: Option<Arc<Network>>) -> Self {
        Self { runtime, network }
    }
}

impl SandboxBackend for LocalRuntime {
    fn has_template(&self, name: &str) -> bool {
        self.runtime.has_template(name)
    }

    fn template_version(&self, name: &str) -> Option<String> {
        let t = self.runtime.templates().get(name).ok().flatten()?;
        Some(format!(
            "{name}@{}@{}",
            t.meta.recipe_hash,
            t.meta.built_at.timestamp_millis()
        ))
    }

    fn has_layer(&self, id: &str) -> bool {
        self.runtime.has_layer(id)
    }

    fn create(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>> {
        Box::pin(self.runtime.create(spec))
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(self.runtime.kill(id))
    }

    fn state(&self, id: &str) -> Option<State> {
        self.runtime.state(id)
    }

    fn held(&self) -> Vec<(String, State)> {
        self.runtime
            .list()
            .into_iter()
            .map(|i| (i.id, i.state))
            .collect()
    }

    fn spec(&self, id: &str) -> Option<SandboxSpec> {
        self.runtime.spec(id)
    }

    fn pause<'a>(
        &'a self,
        id: &'a str,
        mode: PauseMode,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.runtime.pause(id, mode))
    }

    fn resume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SandboxInfo, RuntimeError>> {
        Box::pin(self.runtime.resume(id))
    }

    fn snapshot<'a>(
        &'a self,
        id: &'a str,
        memory: bool,
    ) -> BoxFuture<'a, Result<SnapshotInfo, RuntimeError>> {
        Box::pin(self.runtime.snapshot(id, memory))
    }

    fn memory_snapshots(&self) -> bool {
        self.runtime.memory_persistence()
    }

    fn collect_layers(&self, kept: HashSet<String>) -> BoxFuture<'_, Vec<String>> {
        Box::pin(self.runtime.collect_layers(kept))
    }

    fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError> {
        self.runtime.metrics(id)
    }

    fn set_egress<'a>(
        &'a self,
        id: &'a str,
        policy: EgressPolicy,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.runtime.set_egress(id, policy))
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<RuntimeEvent>> {
        Some(self.runtime.subscribe())
    }

    fn warm_pools(&self) -> Vec<WarmDepth> {
        self.runtime.warm_pools()
    }

    fn dial<'a>(
        &'a self,
        id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, sandbar_runtime::DialError>> {
        sandbar_runtime::Catalog::dial(&*self.runtime, id, port)
    }

    fn image_digest<'a>(
        &'a self,
        src: &'a ImageSource,
    ) -> BoxFuture<'a, Result<String, RuntimeError>> {
        Box::pin(self.runtime.image_digest(src))
    }

    fn images(&self) -> Vec<String> {
        self.runtime.images()
    }

    fn remove_image<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(self.runtime.remove_image(name))
    }

    fn template_env(&self, name: &str) -> Vec<(String, String)> {
        match self.runtime.templates().get(name) {
            Ok(Some(t)) => t.meta.env,
            _ => Vec::new(),
        }
    }

    fn import_image<'a>(
        &'a self,
        name: &'a str,
        src: &'a ImageSource,
        digest: &'a str,
        progress: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> BoxFuture<'a, Result<ImageSettings, RuntimeError>> {
        Box::pin(self.runtime.import_image(name, src, digest, progress))
    }

    fn egress_log<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<Vec<Logged>>> {
        Box::pin(async move {
            let addr = self.runtime.get(id)?.addr?;
            self.network.as_ref()?.egress_log(addr).await
        })
    }
}
