//! What template builds leave on a node, kept bounded: step-cache entries
//! no build found within the retention are forgotten, then the layers
//! nothing stands on any more are collected, image root filesystems no
//! build, cache entry, running build or sandbox uses are removed, and
//! uploaded files no build used within the retention go. Runs at start and
//! every hour.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use chrono::Utc;

use crate::AppState;

const EVERY: Duration = Duration::from_secs(3600);

pub async fn run(state: AppState) {
    loop {
        sweep(&state).await;
        tokio::time::sleep(EVERY).await;
    }
}

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub cached_steps: u64,
    pub images: usize,
    pub files: usize,
}

pub async fn sweep(state: &AppState) -> Swept {
    let mut swept = Swept::default();
    let node = &state.config.node;
    let retention = state.config.build_cache_retention;
    let before = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
    match state.store.prune_step_cache(node, before).await {
        Ok(n) => swept.cached_steps = n,
        Err(e) => tracing::warn!(error = %e, "pruning the step cache"),
    }
    crate::routes::persistence::collect_unused_layers(state).await;
    let mut used: HashSet<String> = match state.store.template_roots(node).await {
        Ok(roots) => roots.into_iter().collect(),
        Err(e) => {
            // Without the list nothing may go.
            tracing::warn!(error = %e, "listing the roots builds stand on");
            return swept;
        }
    };
    used.extend(state.leases.held());
    for name in state.backend.images() {
        if used.contains(&name) {
            continue;
        }
        match state.backend.remove_image(&name).await {
            Ok(true) => {
                swept.images += 1;
                tracing::info!(template = %name, "removed an image no template uses any more");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(template = %name, error = %e, "removing an unused image"),
        }
    }
    if let Some(files) = state.builds.files() {
        swept.files = files.remove_unused_since(SystemTime::now() - retention);
    }
    if swept != Swept::default() {
        tracing::info!(?swept, "template build leftovers removed");
    }
    swept
}
