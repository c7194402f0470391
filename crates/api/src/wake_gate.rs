//! The edge proxy's catalog as the API hands it over: the node's own, with
//! auto-resume bound by the team's limits. A paused sandbox holds no place
//! in them, so a request that wakes one must find a place as a connect does
//! (else pause, create another, then a request to the first goes past the
//! limit); refused, the request gets the proxy's "paused" answer and the
//! log says why.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sandbar_runtime::{BoxFuture, Catalog, DialError, Found, RuntimeError};

use crate::quota::{Admission, Claim};
use crate::AppState;

pub(crate) struct WakeGate {
    pub(crate) inner: Arc<dyn Catalog>,
    pub(crate) state: AppState,
}

impl WakeGate {
    async fn admitted_wake(&self, id: &str) -> Result<(), RuntimeError> {
        let refused = |why: String| RuntimeError::Start(format!("auto-resume refused: {why}"));
        let store = &self.state.store;
        let rec = store
            .get_live_sandbox(id)
            .await
            .map_err(|e| refused(e.to_string()))?
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let team = store
            .team(&rec.team_id)
            .await
            .map_err(|e| refused(e.to_string()))?
            .ok_or_else(|| refused(format!("team '{}' is gone", rec.team_id)))?;
        let timeout = Duration::from_millis(u64::try_from(rec.lifecycle.timeout_ms).unwrap_or(0));
        // Held until the record says running (then the store counts it).
        let _reservation = self
            .state
            .quotas
            .admit(
                store,
                &team,
                Claim::of(rec.memory_mb, rec.cpu_count),
                timeout,
                Admission::Resume,
            )
            .await
            .map_err(|e| refused(e.message))?;
        self.inner.wake(id).await?;
        // The event the runtime sends says so too, later: here while the
        // place is held.
        let end_at = Utc::now() + chrono::Duration::milliseconds(rec.lifecycle.timeout_ms);
        store
            .set_running(id, end_at)
            .await
            .map(|_| ())
            .map_err(|e| refused(e.to_string()))
    }
}

impl Catalog for WakeGate {
    fn find(&self, id: &str) -> Option<Found> {
        self.inner.find(id)
    }

    fn wake<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.admitted_wake(id))
    }

    fn dial<'a>(
        &'a self,
        id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, DialError>> {
        self.inner.dial(id, port)
    }
}
