//! What the dashboard's own routes refuse with, as the API's `{"code",
//! "message"}` bodies (the SDK in the page reads them the same way).

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("invalid API key")]
    BadKey,
    #[error("not signed in (or the session expired): sign in again")]
    NoSession,
    #[error("cross-origin request refused ({0})")]
    CrossOrigin(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("not found")]
    NotFound,
    #[error("the API could not be asked: {0}")]
    Api(String),
}

impl DashboardError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadKey | Self::NoSession => StatusCode::UNAUTHORIZED,
            Self::CrossOrigin(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Api(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "code": status.as_u16(), "message": self.to_string() });
        (
            status,
            [(http::header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response()
    }
}
