//! Listing sandboxes: `GET /v2/sandboxes` (filters and paging) and the old
//! `GET /sandboxes` (everything running, one response).

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::Extension;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sandbar_store::{Cursor, ListFilter, SandboxState};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::model::ListedSandbox;
use crate::routes::sandboxes::listed_json;
use crate::AppState;

const MAX_LIMIT: usize = 100;

/// What a list request asks for.
#[derive(Debug, PartialEq)]
struct ListQuery {
    metadata: BTreeMap<String, String>,
    states: Vec<SandboxState>,
    template: Option<String>,
    started_after: Option<chrono::DateTime<chrono::Utc>>,
    oldest_first: bool,
    limit: usize,
    after: Option<Cursor>,
}

impl ListQuery {
    fn filter(self, team: &str) -> ListFilter {
        ListFilter {
            team: Some(team.to_string()),
            states: self.states,
            metadata: self.metadata,
            template: self.template,
            started_after: self.started_after,
            oldest_first: self.oldest_first,
            limit: self.limit,
            after: self.after,
        }
    }
}

/// Parses the query by hand because its parts come in several spellings:
/// `state` repeated or comma-separated, and `metadata` is itself a
/// url-encoded `k=v&k2=v2` string inside one parameter.
fn parse_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        metadata: BTreeMap::new(),
        states: Vec::new(),
        template: None,
        started_after: None,
        oldest_first: false,
        limit: MAX_LIMIT,
        after: None,
    };
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "metadata" => {
                for (k, v) in url::form_urlencoded::parse(value.as_bytes()) {
                    q.metadata.insert(k.into_owned(), v.into_owned());
                }
            }
            "state" => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match SandboxState::parse(s) {
                        Some(st) if st.is_live() => {
                            if !q.states.contains(&st) {
                                q.states.push(st)
                            }
                        }
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "unknown state '{s}': use running or paused"
                            )))
                        }
                    }
                }
            }
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}"))
                    })?;
            }
            "template" if !value.is_empty() => q.template = Some(value.into_owned()),
            "startedAfter" if !value.is_empty() => {
                let t = chrono::DateTime::parse_from_rfc3339(&value).map_err(|e| {
                    ApiError::bad_request(format!("startedAfter must be an RFC 3339 time: {e}"))
                })?;
                q.started_after = Some(t.with_timezone(&chrono::Utc));
            }
            "order" => {
                q.oldest_first = match value.as_ref() {
                    "asc" => true,
                    "desc" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "order must be asc or desc, got '{other}'"
                        )))
                    }
                }
            }
            "nextToken" if !value.is_empty() => q.after = Some(decode_token(&value)?),
            _ => {}
        }
    }
    if q.states.is_empty() {
        q.states = vec![SandboxState::Running, SandboxState::Paused];
    }
    Ok(q)
}

fn encode_token(c: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", c.started_at_ms, c.id))
}

fn decode_token(token: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::bad_request("invalid nextToken");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (ms, id) = raw.split_once('.').ok_or_else(bad)?;
    Ok(Cursor {
        started_at_ms: ms.parse().map_err(|_| bad())?,
        id: id.to_string(),
    })
}

pub async fn list_v2(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<(HeaderMap, Json<Vec<ListedSandbox>>), ApiError> {
    let q = parse_query(raw.as_deref())?;
    let filter = q.filter(&caller.team.id);
    let (records, next) = state.store.list_sandboxes(&filter).await?;
    let mut headers = HeaderMap::new();
    if let Some(next) = next {
        headers.insert(
            "x-next-token",
            HeaderValue::from_str(&encode_token(&next)).expect("base64 is a valid header"),
        );
    }
    Ok((
        headers,
        Json(records.iter().map(|r| listed_json(&state, r)).collect()),
    ))
}

pub async fn list_v1(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<ListedSandbox>>, ApiError> {
    let q = parse_query(raw.as_deref())?;
    let mut filter = ListFilter {
        limit: MAX_LIMIT,
        after: None,
        ..q.filter(&caller.team.id)
    };
    let mut out = Vec::new();
    loop {
        let (records, next) = state.store.list_sandboxes(&filter).await?;
        out.extend(records.iter().map(|r| listed_json(&state, r)));
        match next {
            Some(c) => filter.after = Some(c),
            None => return Ok(Json(out)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metadata_states_and_tokens() {
        // What the JS SDK sends for metadata {user: "a b", "k&": "v="}.
        let inner = "user=a%20b&k%26=v%3D";
        let raw = format!(
            "metadata={}&state=running&state=paused&limit=5",
            urlencode(inner)
        );
        let q = parse_query(Some(&raw)).unwrap();
        assert_eq!(q.metadata.get("user").map(String::as_str), Some("a b"));
        assert_eq!(q.metadata.get("k&").map(String::as_str), Some("v="));
        assert_eq!(q.states, vec![SandboxState::Running, SandboxState::Paused]);
        assert_eq!(q.limit, 5);

        let q = parse_query(Some("state=paused,running")).unwrap();
        assert_eq!(q.states, vec![SandboxState::Paused, SandboxState::Running]);
        assert_eq!(parse_query(None).unwrap().limit, 100);

        assert!(parse_query(Some("limit=101")).is_err());
        assert!(parse_query(Some("limit=0")).is_err());
        assert!(parse_query(Some("state=killed")).is_err());
        assert!(parse_query(Some("nextToken=%%%")).is_err());
        assert!(parse_query(Some("order=sideways")).is_err());
        assert!(parse_query(Some("startedAfter=yesterday")).is_err());
        let q = parse_query(Some(
            "order=asc&template=base&startedAfter=2024-01-01T00%3A00%3A00.000Z",
        ))
        .unwrap();
        assert!(q.oldest_first);
        assert_eq!(q.template.as_deref(), Some("base"));
        assert_eq!(q.started_after.unwrap().timestamp(), 1_704_067_200);

        let c = Cursor {
            started_at_ms: 1_700_000_000_123,
            id: "abc".into(),
        };
        assert_eq!(decode_token(&encode_token(&c)).unwrap(), c);
    }

    fn urlencode(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }
}
