//! Prometheus: the process-wide recorder every crate's `metrics` calls reach
//! (installed once), the control plane's own figures, and `GET /metrics`.
//!
//! Crates below the API (proxy, net, runtime) only call the `metrics`
//! facade; this module is the one place that renders them, so no crate
//! needs to know who scrapes.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Latency buckets (seconds) for every `*_seconds` histogram: sandbox
/// operations take milliseconds, requests through the proxy anything.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// Every `(state, template)` the sandboxes gauge has shown.
static SEEN: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
/// Every template the warm pool gauges have shown.
static SEEN_POOLS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Installs the Prometheus recorder as the process's `metrics` recorder
/// (once; later calls return the same handle). When another recorder was
/// installed first, the handle renders only what was described to it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed before Prometheus's");
            }
            handle
        })
        .clone()
}

/// A create ended (`ok` or not) after `took`.
pub(crate) fn created(template: &str, ok: bool, took: Duration) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!("sandbar_sandbox_creates_total", "result" => result).increment(1);
    if ok {
        metrics::histogram!("sandbar_sandbox_create_seconds", "template" => template.to_string())
            .record(took.as_secs_f64());
    }
}

/// A create waited for a place to start past the queue's bound (503).
pub(crate) fn start_refused() {
    metrics::counter!("sandbar_sandbox_start_queue_refusals_total").increment(1);
}

/// A resume through the API ended after `took`.
pub(crate) fn resumed(ok: bool, took: Duration) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!("sandbar_sandbox_resumes_total", "result" => result).increment(1);
    if ok {
        metrics::histogram!("sandbar_sandbox_resume_seconds").record(took.as_secs_f64());
    }
}

/// A metrics sampling round covered `n` sandboxes in `took`.
pub(crate) fn sampled(n: usize, took: Duration) {
    metrics::gauge!("sandbar_metrics_sampled_sandboxes").set(n as f64);
    metrics::gauge!("sandbar_metrics_sampling_seconds").set(took.as_secs_f64());
    if let Some(h) = HANDLE.get() {
        // Without the exporter's own HTTP listener, histograms are drained
        // here.
        h.run_upkeep();
    }
}

/// What this node has, as gauges set at scrape time: memory, CPUs, the
/// data directory's filesystem, and the sandboxes it runs. The node has no
/// configured maximum of sandboxes (its subnet bounds them), so none is
/// shown.
fn node_capacity(state: &AppState) {
    if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
        for (field, name) in [
            ("MemTotal:", "sandbar_node_memory_total_bytes"),
            ("MemAvailable:", "sandbar_node_memory_available_bytes"),
        ] {
            let kib = text
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
            if let Some(kib) = kib {
                metrics::gauge!(name).set(kib * 1024.0);
            }
        }
    }
    if let Ok(n) = std::thread::available_parallelism() {
        metrics::gauge!("sandbar_node_cpus").set(n.get() as f64);
    }
    if let Some(dir) = &state.config.data_dir {
        match nix::sys::statvfs::statvfs(dir) {
            Ok(fs) => {
                let block = fs.fragment_size() as f64;
                metrics::gauge!("sandbar_node_disk_total_bytes").set(fs.blocks() as f64 * block);
                metrics::gauge!("sandbar_node_disk_available_bytes")
                    .set(fs.blocks_available() as f64 * block);
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "statvfs of the data directory")
            }
        }
    }
    // What the node itself runs (build sandboxes too), not the store's
    // records (`sandbar_sandboxes`).
    let running = state
        .backend
        .held()
        .iter()
        .filter(|(_, s)| {
            matches!(
                s,
                sandbar_runtime::State::Running | sandbar_runtime::State::Snapshotting
            )
        })
        .count();
    metrics::gauge!("sandbar_node_sandboxes_running").set(running as f64);
}

/// `GET /metrics`: the Prometheus text format. Only the operator's team
/// may read it (it spans every team).
pub(crate) async fn scrape(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<impl IntoResponse, ApiError> {
    if caller.team.name != sandbar_store::DEFAULT_TEAM {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the metrics endpoint spans every team: use a key of the operator's team (default)",
        ));
    }
    let Some(handle) = HANDLE.get() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this server was started without the Prometheus exporter",
        ));
    };
    let counts = state.store.count_by_state(&state.config.node).await?;
    {
        // A (state, template) with none left reads 0, not its last value.
        let mut seen = SEEN.lock().unwrap();
        for (s, t) in seen.iter() {
            metrics::gauge!("sandbar_sandboxes", "state" => s.clone(), "template" => t.clone())
                .set(0.0);
        }
        for (s, t, n) in counts {
            metrics::gauge!("sandbar_sandboxes", "state" => s.clone(), "template" => t.clone())
                .set(n as f64);
            seen.insert((s, t));
        }
    }
    {
        // A template whose pool went (its demand did) reads 0, not its
        // last depth.
        let mut seen = SEEN_POOLS.lock().unwrap();
        for t in seen.iter() {
            metrics::gauge!("sandbar_warm_pool_ready", "template" => t.clone()).set(0.0);
            metrics::gauge!("sandbar_warm_pool_target", "template" => t.clone()).set(0.0);
        }
        for pool in state.backend.warm_pools() {
            metrics::gauge!("sandbar_warm_pool_ready", "template" => pool.template.clone())
                .set(pool.ready as f64);
            metrics::gauge!("sandbar_warm_pool_target", "template" => pool.template.clone())
                .set(pool.target as f64);
            seen.insert(pool.template);
        }
    }
    node_capacity(&state);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    ))
}
