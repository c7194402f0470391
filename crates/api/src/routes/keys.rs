//! The caller's team's API keys, in the shapes of E2B's `/api-keys` routes:
//! `GET /api-keys` (the team's keys in use), `POST /api-keys` (a new key,
//! its clear text answered this once), `PATCH /api-keys/{apiKeyID}` (a new
//! name) and `DELETE /api-keys/{apiKeyID}` (revoked).
//!
//! Every call is scoped to the team of the key it is made with: another
//! team's key id is "not found" (404), as an id that names no key. The store
//! keeps only each key's hash and its first characters, so a listed key
//! shows its mask (`e2b_` and the next 6 characters) and never the key.
//!
//! E2B authenticates these routes with a user's access token; sandbar has
//! no users, so any key of the team manages the team's keys, as it manages
//! the team's sandboxes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use sandbar_store::ApiKey;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::model::rfc3339;
use crate::AppState;

/// Longest name a key may have, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 100;
/// The type prefix of every key (`sandbar_store::generate_key`).
const KEY_PREFIX: &str = "e2b_";
/// Hex characters after the prefix in every key sandbar makes.
const KEY_VALUE_LEN: usize = 40;

/// E2B's `IdentifierMaskingDetails`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyMask {
    pub prefix: String,
    pub value_length: usize,
    pub masked_value_prefix: String,
    /// Always empty: the store keeps only a key's first characters.
    pub masked_value_suffix: String,
}

/// E2B's `TeamAPIKey`. sandbar has no users and does not record when a key
/// was last used: `createdBy` and `lastUsed` are null.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamApiKey {
    pub id: String,
    pub name: String,
    pub mask: KeyMask,
    pub created_at: String,
    pub created_by: Option<serde_json::Value>,
    pub last_used: Option<String>,
}

/// E2B's `CreatedTeamAPIKey`: a `TeamAPIKey` and the key itself, which no
/// other answer ever shows again.
#[derive(Debug, Serialize)]
pub struct CreatedTeamApiKey {
    #[serde(flatten)]
    pub info: TeamApiKey,
    pub key: String,
}

/// E2B's `NewTeamAPIKey` and `UpdateTeamAPIKey`.
#[derive(Debug, Deserialize)]
pub struct KeyName {
    pub name: String,
}

fn mask(prefix: &str) -> KeyMask {
    let (type_prefix, shown) = match prefix.strip_prefix(KEY_PREFIX) {
        Some(rest) => (KEY_PREFIX, rest),
        None => ("", prefix),
    };
    KeyMask {
        prefix: type_prefix.to_string(),
        value_length: KEY_VALUE_LEN,
        masked_value_prefix: shown.to_string(),
        masked_value_suffix: String::new(),
    }
}

fn shown(k: &ApiKey) -> TeamApiKey {
    TeamApiKey {
        id: k.id.clone(),
        name: k.name.clone(),
        mask: mask(&k.prefix),
        created_at: rfc3339(k.created_at),
        created_by: None,
        last_used: None,
    }
}

/// The name without surrounding white space; 400 when nothing is left, when
/// it is longer than [`MAX_NAME_CHARS`] or has control characters.
pub(crate) fn valid_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request("an API key's name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "an API key's name must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "an API key's name must not contain control characters",
        ));
    }
    Ok(name)
}

fn key_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("API key '{id}' not found"))
}

/// `GET /api-keys`: the team's keys in use, oldest first (revoked keys are
/// gone, as E2B deletes them). Masks only, never a key.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<TeamApiKey>>, ApiError> {
    let keys = state.store.list_team_api_keys(&caller.team.id).await?;
    Ok(Json(keys.iter().map(shown).collect()))
}

/// `POST /api-keys` `{name}`: a new key of the caller's team, 201 with the
/// key in clear; only its hash is kept, so this answer is the only place it
/// is ever shown.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<KeyName>,
) -> Result<(StatusCode, Json<CreatedTeamApiKey>), ApiError> {
    let name = valid_name(&body.name)?;
    let made = state
        .store
        .create_team_api_key(name, &caller.team.id)
        .await?;
    tracing::info!(team = %caller.team.id, key = %made.info.id, by = %caller.key_id, "api key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedTeamApiKey {
            info: shown(&made.info),
            key: made.key,
        }),
    ))
}

/// `PATCH /api-keys/{apiKeyID}` `{name}`: renames a key of the team; 200
/// with the key as listed (E2B's spec answers 200 with no body; clients
/// that expect none ignore it).
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<KeyName>,
) -> Result<Json<TeamApiKey>, ApiError> {
    let name = valid_name(&body.name)?;
    let renamed = state
        .store
        .rename_team_api_key(&caller.team.id, &id, name)
        .await?
        .ok_or_else(|| key_not_found(&id))?;
    Ok(Json(shown(&renamed)))
}

/// `DELETE /api-keys/{apiKeyID}`: revokes a key of the team, 204. Every
/// request with it is refused from then on (401), so a dashboard session
/// signed in with it ends at its next call.
///
/// The key this request is made with may be revoked too: this request was
/// let in before, so it completes (204), and the next one made with that
/// key gets 401. The team keeps its other keys; with none left, the
/// operator makes one (`sandbar keys create NAME --team T`).
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state
        .store
        .revoke_team_api_key(&caller.team.id, &id)
        .await?
    {
        return Err(key_not_found(&id));
    }
    tracing::info!(
        team = %caller.team.id,
        key = %id,
        by = %caller.key_id,
        own = id == caller.key_id,
        "api key revoked"
    );
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(valid_name("  ci  ").unwrap(), "ci");
        assert_eq!(
            valid_name(&"é".repeat(MAX_NAME_CHARS))
                .unwrap()
                .chars()
                .count(),
            MAX_NAME_CHARS
        );
        for bad in ["", "   ", "a\nb", "tab\there"] {
            assert_eq!(
                valid_name(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
        assert!(valid_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn the_mask_splits_the_type_prefix_from_the_shown_characters() {
        let key = sandbar_store::generate_key();
        let m = mask(&key[..10]);
        assert_eq!(m.prefix, "e2b_");
        assert_eq!(m.masked_value_prefix, &key[4..10]);
        assert_eq!(m.value_length, key.len() - 4);
        assert_eq!(m.masked_value_suffix, "");
    }
}
