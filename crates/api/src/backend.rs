//! What the API needs from the node runtime, as a trait: on one machine it
//! is [`sandbar_runtime::Runtime`]; a multi-node control plane would put a
//! client to a remote node behind the same methods.

use std::collections::HashSet;
use std::sync::Arc;

use sandbar_runtime::{
    BoxFuture, EgressPolicy, Metrics, PauseMode, Runtime, RuntimeError, RuntimeEvent, SandboxInfo,
    SandboxSpec, SnapshotInfo, State,
};

pub trait SandboxBackend: Send + Sync + 'static {
    fn has_template(&self, name: &str) -> bool;
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
    fn snapshot<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SnapshotInfo, RuntimeError>>;
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
}

/// The local node's runtime.
pub struct LocalRuntime(pub Arc<Runtime>);

impl SandboxBackend for LocalRuntime {
    fn has_template(&self, name: &str) -> bool {
        self.0.has_template(name)
    }

    fn has_layer(&self, id: &str) -> bool {
        self.0.has_layer(id)
    }

    fn create(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>> {
        Box::pin(self.0.create(spec))
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(self.0.kill(id))
    }

    fn state(&self, id: &str) -> Option<State> {
        self.0.state(id)
    }

    fn held(&self) -> Vec<(String, State)> {
        self.0.list().into_iter().map(|i| (i.id, i.state)).collect()
    }

    fn spec(&self, id: &str) -> Option<SandboxSpec> {
        self.0.spec(id)
    }

    fn pause<'a>(
        &'a self,
        id: &'a str,
        mode: PauseMode,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.0.pause(id, mode))
    }

    fn resume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SandboxInfo, RuntimeError>> {
        Box::pin(self.0.resume(id))
    }

    fn snapshot<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SnapshotInfo, RuntimeError>> {
        Box::pin(self.0.snapshot(id))
    }

    fn collect_layers(&self, kept: HashSet<String>) -> BoxFuture<'_, Vec<String>> {
        Box::pin(self.0.collect_layers(kept))
    }

    fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError> {
        self.0.metrics(id)
    }

    fn set_egress<'a>(
        &'a self,
        id: &'a str,
        policy: EgressPolicy,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.0.set_egress(id, policy))
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<RuntimeEvent>> {
        Some(self.0.subscribe())
    }
}
