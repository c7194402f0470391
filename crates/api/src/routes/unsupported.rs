//! Parts of the E2B API that sandbar does not implement yet. They answer a
//! JSON error that says so, instead of a bare 404 the SDKs would misreport.

use axum::routing::{any, MethodRouter};
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

pub async fn templates() -> ApiError {
    ApiError::not_implemented(
        "this template call is not supported by sandbar (it builds with POST /v3/templates and POST /v2/templates/{id}/builds/{buildID})",
    )
}

async fn publishing() -> ApiError {
    ApiError::not_implemented(
        "public templates are not supported by sandbar yet: a template is its team's own",
    )
}

async fn volumes() -> ApiError {
    ApiError::not_implemented("volumes are not supported yet")
}

async fn secrets() -> ApiError {
    ApiError::not_implemented("secrets are not supported yet")
}

/// E2B routes of features sandbar lacks, so that SDK calls to them fail with
/// a message instead of a 404 the SDKs would read as "sandbox not found".
pub fn missing_feature_routes() -> Router<AppState> {
    Router::new()
        .route("/volumes", any(volumes))
        .route("/volumes/{*rest}", any(volumes))
        .route("/volumecontent/{*rest}", any(volumes))
        .route("/secrets", any(secrets))
        .route("/secrets/{*rest}", any(secrets))
}

/// Template calls of the E2B API that sandbar does not serve (the v1
/// build flow, updating a template's visibility), so that they fail with a
/// message instead of a 404 the SDKs would misread.
pub fn template_routes() -> Router<AppState> {
    let t = || -> MethodRouter<AppState> { any(templates) };
    Router::new()
        .route("/v2/templates/{id}", any(publishing))
        .route("/templates/{id}/builds/{build}", t())
}
