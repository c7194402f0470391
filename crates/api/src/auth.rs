//! `X-API-KEY` checks. `Authorization: Bearer` (old SDKs send it with
//! `E2B_ACCESS_TOKEN`) is accepted and ignored.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::AppState;

/// The key that authorised a request, for handlers that record it.
#[derive(Debug, Clone)]
pub struct KeyId(pub String);

pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = req
        .headers()
        .get("x-api-key")
        .ok_or_else(|| ApiError::unauthorized("missing X-API-KEY header"))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("invalid API key"))?
        .trim()
        .to_string();
    let Some(info) = state.store.verify_api_key(&key).await? else {
        return Err(ApiError::unauthorized("invalid API key"));
    };
    req.extensions_mut().insert(KeyId(info.id));
    Ok(next.run(req).await)
}
