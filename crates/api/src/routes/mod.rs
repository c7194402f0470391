//! The route table (protocol notes, section 2) and the layers around it.

mod keys;
mod list;
mod metrics;
pub(crate) mod persistence;
pub(crate) mod sandboxes;
pub(crate) mod templates;
mod unsupported;

use axum::http::HeaderName;
use axum::http::StatusCode;
use axum::routing::{get, patch, post, put};
use axum::{middleware, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};

use crate::error::{
    ensure_json_errors, method_not_allowed_fallback, not_found_fallback, panic_response,
};
use crate::AppState;

pub(crate) use persistence::pause_sandbox;
pub(crate) use sandboxes::kill_sandbox;

pub fn router(state: AppState) -> Router {
    let authed = Router::new()
        .route("/sandboxes", post(sandboxes::create).get(list::list_v1))
        .route("/v2/sandboxes", post(sandboxes::create).get(list::list_v2))
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get_one).delete(sandboxes::kill),
        )
        .route("/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/sandboxes/{id}/refreshes", post(sandboxes::refresh))
        .route("/sandboxes/{id}/connect", post(persistence::connect))
        .route("/v2/sandboxes/{id}/connect", post(persistence::connect))
        .route(
            "/sandboxes/{id}/snapshots",
            post(persistence::create_snapshot),
        )
        .route("/snapshots", get(persistence::list_snapshots))
        .route("/sandboxes/{id}/fork", post(persistence::fork))
        .route("/v3/templates", post(templates::request_build))
        .route("/v2/templates", post(templates::request_build))
        .route(
            "/templates",
            get(templates::list).fallback(unsupported::templates),
        )
        .route(
            "/templates/{id}",
            get(templates::get_one)
                .delete(persistence::delete_template)
                .fallback(unsupported::templates),
        )
        .route("/templates/{id}/files/{hash}", get(templates::file_link))
        .route(
            "/v2/templates/{id}/builds/{build}",
            post(templates::start_build),
        )
        .route(
            "/templates/{id}/builds/{build}/status",
            get(templates::build_status),
        )
        .route(
            "/templates/{id}/builds/{build}/logs",
            get(templates::build_logs),
        )
        .route("/templates/aliases/{alias}", get(templates::alias))
        .route(
            "/templates/tags",
            post(templates::assign_tags).delete(templates::remove_tags),
        )
        .route("/templates/{id}/tags", get(templates::tags))
        .route("/sandboxes/metrics", get(metrics::of_many))
        .route("/sandboxes/{id}/metrics", get(metrics::of_sandbox))
        .route("/teams/{id}/metrics", get(metrics::of_team))
        .route("/teams/{id}/metrics/max", get(metrics::max_of_team))
        .route("/sandboxes/{id}/logs", get(sandboxes::logs))
        .route("/v2/sandboxes/{id}/logs", get(sandboxes::logs_v2))
        .route("/sandboxes/{id}/network", put(sandboxes::set_network))
        .route("/teams", get(sandboxes::teams))
        .route("/api-keys", get(keys::list).post(keys::create))
        .route("/api-keys/{id}", patch(keys::update).delete(keys::revoke))
        .route("/metrics", get(crate::telemetry::scrape))
        .route("/sandboxes/{id}/pause", post(persistence::pause))
        .route("/sandboxes/{id}/resume", post(persistence::resume))
        .merge(unsupported::template_routes())
        .merge(unsupported::missing_feature_routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_api_key,
        ));

    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        // The upload link is the permission (no API key), as a presigned
        // URL would be; its size is capped by the link's checks.
        .route(
            "/template-files/{token}",
            put(templates::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .merge(authed)
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(method_not_allowed_fallback)
        .with_state(state)
        .layer(middleware::map_response(ensure_json_errors))
        .layer(CatchPanicLayer::custom(panic_response))
        // The JS SDK also runs in browsers; paging needs X-Next-Token visible.
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods(Any)
                .allow_headers(Any)
                .expose_headers([HeaderName::from_static("x-next-token")]),
        )
}
