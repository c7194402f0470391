//! Plain-HTTP endpoints: `/health`, `/envs`, `/init`, `/files` (GET, POST).
//!
//! Each handler does its own auth (the Connect services are guarded by the
//! server layer instead). CORS is added by the server around everything.

pub mod auth;
pub mod download;
pub mod error;
pub mod upload;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tower_http::decompression::RequestDecompressionLayer;

use self::auth::{FileAuth, Operation};
use self::error::ApiError;
use crate::filesystem::paths;
use crate::state::{EnvdState, InitRequest};
use crate::users::{self, UserInfo};

/// The axum router for the plain-HTTP endpoints; each handler does its own auth.
pub fn router(state: Arc<EnvdState>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/envs", get(envs))
        .route("/init", post(init))
        .route(
            "/files",
            get(download::download)
                .post(upload::upload)
                // Unknown encodings pass through so the handler can refuse
                // them with a JSON error instead of a bare 415.
                .layer(RequestDecompressionLayer::new().pass_through_unaccepted(true)),
        )
        .with_state(state)
}

async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn envs(
    State(state): State<Arc<EnvdState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth::require_token(&state, &headers)?;
    Ok((
        [(http::header::CACHE_CONTROL, "no-store")],
        axum::Json(state.env_vars()),
    )
        .into_response())
}

/// Applies an `InitRequest`. Before any token is set anyone may call it (the
/// control plane's first call); afterwards only a holder of the current token.
async fn init(
    State(state): State<Arc<EnvdState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth::require_token(&state, &headers)?;
    let request: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid init body: {e}")))?
    };
    let applied = state
        .apply_init_if_newer(request)
        .map_err(|e| ApiError::bad_request(format!("invalid init timestamp: {e}")))?;
    if applied {
        tracing::info!("init applied");
    } else {
        // As E2B does: an older /init than the last one is acknowledged but
        // ignored, so a delayed or replayed request changes nothing.
        tracing::info!("stale init ignored");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Query parameters of `GET /files` and `POST /files`.
#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    pub path: Option<String>,
    pub username: Option<String>,
    pub signature: Option<String>,
    pub signature_expiration: Option<i64>,
}

impl FilesQuery {
    pub fn from_extractor(
        query: Result<Query<FilesQuery>, QueryRejection>,
    ) -> Result<Self, ApiError> {
        query
            .map(|Query(q)| q)
            .map_err(|e| ApiError::bad_request(format!("invalid query parameters: {e}")))
    }
}

/// Checks the caller may do `op` and finds the user the request acts as.
pub fn authorize_and_identify(
    state: &EnvdState,
    headers: &HeaderMap,
    query: &FilesQuery,
    op: Operation,
) -> Result<UserInfo, ApiError> {
    let file_auth = FileAuth {
        path: query.path.as_deref().unwrap_or(""),
        username: query.username.as_deref(),
        signature: query.signature.as_deref(),
        expiration: query.signature_expiration,
    };
    auth::authorize_file(state, headers, &file_auth, op)?;
    let name = query
        .username
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| state.default_user());
    users::lookup(&name).map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// Resolves a `/files` path for `user`, as the Connect service does.
pub fn resolve_path(
    state: &EnvdState,
    path: &str,
    user: &UserInfo,
) -> Result<std::path::PathBuf, ApiError> {
    let workdir = state.default_workdir();
    paths::resolve(path, user, workdir.as_deref()).map_err(ApiError::from)
}

#[cfg(test)]
mod tests;
