//! `X-API-KEY` checks. `Authorization: Bearer <key>` is accepted as well
//! (the E2B CLI sends its access token that way to `/teams`); old SDKs send
//! `E2B_ACCESS_TOKEN` as a bearer next to the key, which is then ignored.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sandbar_store::Team;

use crate::error::ApiError;
use crate::AppState;

/// Who is asking: the key, and the team it belongs to (all a key sees and
/// acts on is its team's).
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    /// The key itself, for `GET /teams` (the CLI expects a key there).
    pub key: String,
    pub team: Team,
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = match req.headers().get("x-api-key") {
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::unauthorized("invalid API key"))?
            .trim()
            .to_string(),
        None => bearer(&req)
            .filter(|b| b.starts_with("e2b_"))
            .map(str::to_string)
            .ok_or_else(|| ApiError::unauthorized("missing X-API-KEY header"))?,
    };
    let Some((info, team)) = state.store.verify_api_key_team(&key).await? else {
        return Err(ApiError::unauthorized("invalid API key"));
    };
    req.extensions_mut().insert(Caller {
        key_id: info.id,
        key,
        team,
    });
    Ok(next.run(req).await)
}
