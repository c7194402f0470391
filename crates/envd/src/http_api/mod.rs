//! Plain-HTTP endpoints: `/health`, `/envs`, `/init`, `/files` (GET, POST).

use std::sync::Arc;

use crate::state::EnvdState;

/// The axum router for the plain-HTTP endpoints; each handler does its own auth.
pub fn router(state: Arc<EnvdState>) -> axum::Router {
    axum::Router::new().with_state(state)
}
