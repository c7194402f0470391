//! What the API needs from the node runtime, as a trait: on one machine it
//! is [`sandbar_runtime::Runtime`]; a multi-node control plane would put a
//! client to a remote node behind the same methods.

use std::sync::Arc;

use sandbar_runtime::{
    BoxFuture, EgressPolicy, Metrics, Runtime, RuntimeError, SandboxInfo, SandboxSpec,
};

pub trait SandboxBackend: Send + Sync + 'static {
    fn has_template(&self, name: &str) -> bool;
    fn create(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>>;
    /// `Ok(false)` when the sandbox did not exist.
    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>>;
    fn is_alive(&self, id: &str) -> bool;
    fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError>;
    fn set_egress<'a>(
        &'a self,
        id: &'a str,
        policy: EgressPolicy,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;
}

/// The local node's runtime.
pub struct LocalRuntime(pub Arc<Runtime>);

impl SandboxBackend for LocalRuntime {
    fn has_template(&self, name: &str) -> bool {
        self.0.has_template(name)
    }

    fn create(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>> {
        Box::pin(self.0.create(spec))
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(self.0.kill(id))
    }

    fn is_alive(&self, id: &str) -> bool {
        self.0.get(id).is_some()
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
}
