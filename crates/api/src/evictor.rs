//! Kills sandboxes when their end time passes. Sleeps until the earliest end
//! time in the store (woken early when a timeout moves), so no polling loop
//! spins while nothing is due.

use std::time::Duration;

use chrono::Utc;

use crate::routes::{kill_sandbox, pause_sandbox};
use crate::AppState;

/// Upper bound on a sleep, so that end times changed by another API process
/// sharing the database are noticed too.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Back-off after a database error.
const ERROR_SLEEP: Duration = Duration::from_secs(2);

pub async fn run(state: AppState) {
    loop {
        let sleep = match evict_due(&state).await {
            Ok(Some(next)) => (next - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP),
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                tracing::warn!(error = %e, "evictor: store error");
                ERROR_SLEEP
            }
        };
        if sleep.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = state.evictor_wake.notified() => {}
        }
    }
}

/// Kills what is due; returns the next end time.
async fn evict_due(state: &AppState) -> Result<Option<chrono::DateTime<Utc>>, crate::ApiError> {
    let node = &state.config.node;
    for id in state.store.expired_sandbox_ids(node, Utc::now()).await? {
        let Some(rec) = state.store.get_live_sandbox(&id).await? else {
            continue;
        };
        if rec.lifecycle.auto_pause {
            let mode = if rec.lifecycle.auto_pause_memory {
                sandbar_runtime::PauseMode::Full
            } else {
                sandbar_runtime::PauseMode::Filesystem
            };
            match pause_sandbox(state, &rec, mode).await {
                Ok(()) => {
                    tracing::info!(sandbox = %id, mode = mode.as_str(), "sandbox timed out and was paused");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "pausing a timed-out sandbox failed; killing it")
                }
            }
        }
        match kill_sandbox(state, &id).await {
            Ok(_) => tracing::info!(sandbox = %id, "sandbox timed out and was killed"),
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "killing a timed-out sandbox failed");
                // Marked gone regardless: leaving it would retry forever, and
                // the runtime cleans what it could not kill on its next start.
                state.store.mark_killed(&id).await?;
            }
        }
    }
    Ok(state.store.next_end_at(node).await?)
}
