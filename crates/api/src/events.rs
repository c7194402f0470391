//! Keeping the store's records true to what the node holds: what the
//! runtime did on its own (an auto-resume, a pause at shutdown, a sandbox
//! that died), and what a restart found.

use chrono::Utc;
use sandbar_runtime::{RuntimeEvent, State};
use tokio::sync::broadcast;

use crate::{ApiError, AppState};

pub async fn run(state: AppState, mut rx: broadcast::Receiver<RuntimeEvent>) {
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed runtime events; reconciling");
                if let Err(e) = reconcile(&state).await {
                    tracing::warn!(error = %e, "reconciling with the runtime");
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Err(e) = apply(&state, &event).await {
            tracing::warn!(?event, error = %e, "recording a runtime event");
        }
    }
}

async fn apply(state: &AppState, event: &RuntimeEvent) -> Result<(), ApiError> {
    match event {
        RuntimeEvent::Resumed { id } => {
            // An auto-resumed sandbox gets its create-time timeout again,
            // and the egress policy its record holds.
            let rec = state.store.get_live_sandbox(id).await?;
            if let Some(rec) = &rec {
                crate::routes::sandboxes::restore_egress(state, rec).await;
            }
            let timeout = rec.map(|r| r.lifecycle.timeout_ms).unwrap_or(300_000);
            let end_at = Utc::now() + chrono::Duration::milliseconds(timeout);
            state.store.set_running(id, end_at).await?;
            state.evictor_wake.notify_one();
            tracing::info!(sandbox = %id, "sandbox resumed by a request to it");
        }
        RuntimeEvent::Paused { id, mode } => {
            state.store.set_paused(id, mode.as_str()).await?;
        }
        RuntimeEvent::Died { id } => {
            state.store.mark_killed(id).await?;
        }
    }
    Ok(())
}

/// Makes the store's live records of this node agree with what the runtime
/// holds: paused ones recorded as paused, missing ones as gone; sandboxes
/// the runtime holds without a live record (killed while the server was
/// down, or never recorded) are removed. Returns (paused, gone).
pub async fn reconcile(state: &AppState) -> Result<(usize, usize), ApiError> {
    let (mut paused, mut gone) = (0, 0);
    let ids = state.store.live_sandbox_ids(&state.config.node).await?;
    for id in &ids {
        match state.backend.state(id) {
            Some(State::Paused(mode)) => {
                let rec = state.store.get_live_sandbox(id).await?;
                if rec.is_some_and(|r| r.pause_mode.as_deref() != Some(mode.as_str())) {
                    state.store.set_paused(id, mode.as_str()).await?;
                    paused += 1;
                }
            }
            Some(_) => {}
            None => {
                if state.store.mark_killed(id).await? {
                    gone += 1;
                }
            }
        }
    }
    for (id, _) in state.backend.held() {
        if !ids.contains(&id) {
            tracing::info!(sandbox = %id, "removing a sandbox no live record names");
            if let Err(e) = state.backend.kill(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "removing an unrecorded sandbox");
            }
        }
    }
    Ok((paused, gone))
}
