//! Every error of the plain-HTTP endpoints is JSON `{"code","message"}`: the
//! Python SDK parses the body of error responses and fails on anything else.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::filesystem::error::FsError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<FsError> for ApiError {
    fn from(err: FsError) -> Self {
        Self::new(err.http_status(), err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), message = %self.message, "request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), message = %self.message, "request refused");
        }
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        (
            self.status,
            [
                (
                    http::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                ),
                (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body.to_string(),
        )
            .into_response()
    }
}
