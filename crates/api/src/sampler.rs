//! Metrics over time: every `metrics_interval` each running sandbox of this
//! node is sampled (CPU since the previous sample, memory, disk) and the
//! samples go to the store in one transaction; once an hour samples older
//! than the retention go.

use std::time::{Duration, Instant};

use chrono::Utc;
use sandbar_store::MetricSample;

use crate::AppState;

const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(state.config.metrics_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<Instant> = None;
    loop {
        tick.tick().await;
        match sample_once(&state).await {
            Ok((n, took)) => {
                tracing::debug!(
                    sandboxes = n,
                    took_ms = took.as_secs_f64() * 1e3,
                    "metrics sampled"
                );
                crate::telemetry::sampled(n, took);
            }
            Err(e) => tracing::warn!(error = %e, "metrics sampling failed"),
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            let Some(cutoff) = chrono::Duration::from_std(state.config.metrics_retention)
                .ok()
                .and_then(|r| Utc::now().checked_sub_signed(r))
            else {
                continue;
            };
            match state.store.prune_metrics(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(samples = n, "old metric samples pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning metric samples failed"),
            }
        }
    }
}

/// One round: how many sandboxes were sampled, and how long it took.
pub(crate) async fn sample_once(state: &AppState) -> Result<(usize, Duration), crate::ApiError> {
    let start = Instant::now();
    let running = state.store.running_sandboxes(&state.config.node).await?;
    let backend = state.backend.clone();
    // Reading cgroup files and the layer store's quota: blocking work.
    let samples = tokio::task::spawn_blocking(move || {
        let at = Utc::now();
        running
            .into_iter()
            .filter_map(|(id, team)| {
                let m = backend.metrics(&id).ok()?;
                Some(MetricSample {
                    sandbox_id: id,
                    team_id: team,
                    at,
                    cpu_count: m.cpu_count,
                    cpu_used_pct: m.cpu_used_pct,
                    mem_used: m.mem_used,
                    mem_total: m.mem_total,
                    mem_cache: m.mem_cache,
                    disk_used: m.disk_used,
                    disk_total: m.disk_total,
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| crate::ApiError::internal(format!("metrics sampling panicked: {e}")))?;
    state.store.put_metrics(&samples).await?;
    Ok((samples.len(), start.elapsed()))
}
