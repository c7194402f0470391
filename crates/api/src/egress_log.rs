//! A sandbox's egress log (names asked, connections, flows, verdicts: see
//! `sandbar_net::EgressEvent`) in the shapes of E2B's logs endpoints.

use chrono::{DateTime, Utc};
use sandbar_net::{EgressEvent, Logged, Verdict};
use serde::Serialize;

use crate::error::ApiError;
use crate::model::{rfc3339, LogsQueryV2};
use crate::AppState;

/// Entries an answer holds when the client names no limit (E2B's default).
const DEFAULT_LIMIT: usize = 1000;

/// `SandboxLogEntry`.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub timestamp: String,
    pub level: &'static str,
    pub message: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    at: DateTime<Utc>,
}

/// The sandbox's events, oldest first (none for a sandbox without a
/// network of the node's: paused to its files, or a private network).
pub async fn entries(state: &AppState, id: &str) -> Vec<LogEntry> {
    state
        .backend
        .egress_log(id)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(entry)
        .collect()
}

fn entry(logged: Logged) -> LogEntry {
    let at: DateTime<Utc> = logged.at.into();
    let mut fields = serde_json::Map::new();
    let mut field = |k: &str, v: String| {
        fields.insert(k.to_string(), serde_json::Value::String(v));
    };
    field("logger", "egress".into());
    let (verdict, message) = match &logged.event {
        EgressEvent::Dns {
            name,
            qtype,
            verdict,
            answers,
        } => {
            field("kind", "dns".into());
            field("name", name.clone());
            field("qtype", qtype.clone());
            let shown: Vec<String> = answers.iter().map(ToString::to_string).collect();
            if !shown.is_empty() {
                field("answers", shown.join(","));
            }
            let message = match verdict {
                Verdict::Allowed if shown.is_empty() => format!("dns {name} {qtype}: allowed"),
                Verdict::Allowed => format!("dns {name} {qtype}: allowed -> {}", shown.join(", ")),
                Verdict::Denied => format!("dns {name} {qtype}: denied by the egress policy (NXDOMAIN, not asked upstream)"),
                Verdict::Failed => format!("dns {name} {qtype}: no answer from upstream"),
            };
            (*verdict, message)
        }
        EgressEvent::Connect {
            to,
            name,
            verdict,
            via_proxy,
            detail,
        } => {
            field("kind", "connect".into());
            field("to", to.to_string());
            if let Some(name) = name {
                field("name", name.clone());
            }
            field("viaProxy", via_proxy.to_string());
            let named = name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
            let via = if *via_proxy {
                " through the egress proxy"
            } else {
                ""
            };
            let what = match verdict {
                Verdict::Allowed => "allowed".to_string(),
                Verdict::Denied => "denied by the egress policy".to_string(),
                Verdict::Failed => "failed".to_string(),
            };
            let detail = detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            (
                *verdict,
                format!("connect {to}{named}{via}: {what}{detail}"),
            )
        }
        EgressEvent::Flow {
            to,
            protocol,
            port,
            verdict,
        } => {
            field("kind", "flow".into());
            field("to", format!("{to}:{port}"));
            field("protocol", protocol.clone());
            let what = if *verdict == Verdict::Allowed {
                "allowed"
            } else {
                "denied by the egress policy"
            };
            (*verdict, format!("flow {protocol} {to}:{port}: {what}"))
        }
    };
    fields.insert(
        "verdict".into(),
        serde_json::to_value(verdict).expect("a verdict serializes"),
    );
    LogEntry {
        timestamp: rfc3339(at),
        level: level_of(verdict),
        message,
        fields,
        at,
    }
}

fn level_of(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Allowed => "info",
        Verdict::Denied => "warn",
        Verdict::Failed => "error",
    }
}

fn rank(level: &str) -> Option<u8> {
    match level.to_ascii_lowercase().as_str() {
        "debug" => Some(0),
        "info" => Some(1),
        "warn" | "warning" => Some(2),
        "error" => Some(3),
        _ => None,
    }
}

/// The old endpoint's `logs[]` item: the entry as one JSON line, as the
/// E2B CLI parses it (`level`, `logger`, the rest printed as fields).
pub fn line(entry: &LogEntry) -> serde_json::Value {
    let mut record = entry.fields.clone();
    record.insert("level".into(), entry.level.into());
    record.insert("message".into(), entry.message.clone().into());
    record.insert("timestamp".into(), entry.timestamp.clone().into());
    serde_json::json!({
        "timestamp": entry.timestamp,
        "line": serde_json::Value::Object(record).to_string(),
    })
}

/// Entries from `start` (unix ms) on, at most `limit`, oldest first.
pub fn since(entries: Vec<LogEntry>, start: Option<i64>, limit: Option<usize>) -> Vec<LogEntry> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    entries
        .into_iter()
        .filter(|e| start.is_none_or(|s| e.at.timestamp_millis() >= s))
        .take(limit)
        .collect()
}

/// The v2 endpoint: from `cursor` (unix ms) forward or backward (the
/// default, newest first), at or above `level`, containing `search`.
pub fn page(entries: Vec<LogEntry>, query: &LogsQueryV2) -> Result<Vec<LogEntry>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).min(DEFAULT_LIMIT);
    let min_level = match query.level.as_deref() {
        None => 0,
        Some(l) => rank(l).ok_or_else(|| {
            ApiError::bad_request(format!(
                "level must be debug, info, warn or error, not {l:?}"
            ))
        })?,
    };
    let forward = match query.direction.as_deref() {
        None | Some("backward") => false,
        Some("forward") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "direction must be forward or backward, not {other:?}"
            )))
        }
    };
    let kept = entries.into_iter().filter(|e| {
        rank(e.level).unwrap_or(0) >= min_level
            && query
                .search
                .as_deref()
                .is_none_or(|s| e.message.contains(s))
            && query.cursor.is_none_or(|c| {
                let t = e.at.timestamp_millis();
                if forward {
                    t >= c
                } else {
                    t <= c
                }
            })
    });
    let mut out: Vec<LogEntry> = kept.collect();
    if !forward {
        out.reverse();
    }
    out.truncate(limit);
    Ok(out)
}
