//! Parts of the E2B API that sandbar does not implement yet. They answer a
//! JSON error that says so, instead of a bare 404 the SDKs would misreport.

use axum::routing::{any, MethodRouter};
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

pub async fn pause() -> ApiError {
    ApiError::not_implemented("pause is not supported yet: sandboxes can only run or be killed")
}

pub async fn resume() -> ApiError {
    ApiError::not_implemented("resume is not supported yet: sandboxes cannot be paused")
}

async fn templates() -> ApiError {
    ApiError::not_implemented(
        "building templates through the API is not built yet; build them on the server with `sandbar template build`",
    )
}

pub fn template_routes() -> Router<AppState> {
    let t = || -> MethodRouter<AppState> { any(templates) };
    Router::new()
        .route("/templates", t())
        .route("/templates/{*rest}", t())
        .route("/v2/templates", t())
        .route("/v2/templates/{*rest}", t())
        .route("/v3/templates", t())
        .route("/v3/templates/{*rest}", t())
}
