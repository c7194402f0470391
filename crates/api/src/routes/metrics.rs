//! Metrics over time: a sandbox's samples in a range, the latest of many,
//! and a team's concurrency and start rate (from its sandbox records).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use sandbar_store::{Lifespan, MetricSample, SandboxState};
use serde::{Deserialize, Serialize};

use super::sandboxes::{live, runtime_error};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::model::{rfc3339, SandboxMetric, SandboxesWithMetrics};
use crate::AppState;

/// `start`/`end` in unix seconds, as the SDKs send them.
#[derive(Debug, Default, Deserialize)]
pub struct Range {
    start: Option<i64>,
    end: Option<i64>,
}

fn instant(what: &str, secs: i64) -> Result<DateTime<Utc>, ApiError> {
    if secs < 0 {
        return Err(ApiError::bad_request(format!(
            "{what} must be a unix time in seconds, not negative"
        )));
    }
    DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| ApiError::bad_request(format!("{what} {secs} is out of range")))
}

impl Range {
    /// The range asked for, with `default_start` and now filling the gaps.
    fn resolve(
        &self,
        default_start: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let from = self
            .start
            .map(|s| instant("start", s))
            .transpose()?
            .unwrap_or(default_start);
        let to = self
            .end
            .map(|s| instant("end", s))
            .transpose()?
            .unwrap_or_else(Utc::now);
        if from > to {
            return Err(ApiError::bad_request("start must not be after end"));
        }
        Ok((from, to))
    }
}

fn shape(s: &MetricSample) -> SandboxMetric {
    SandboxMetric {
        timestamp: rfc3339(s.at),
        timestamp_unix: s.at.timestamp(),
        cpu_count: s.cpu_count,
        cpu_used_pct: s.cpu_used_pct,
        mem_used: s.mem_used,
        mem_total: s.mem_total,
        mem_cache: s.mem_cache,
        disk_used: s.disk_used,
        disk_total: s.disk_total,
    }
}

/// A sample taken now, straight from the runtime.
fn sample_now(state: &AppState, id: &str) -> Result<SandboxMetric, ApiError> {
    let m = state.backend.metrics(id).map_err(runtime_error)?;
    let now = Utc::now();
    Ok(SandboxMetric {
        timestamp: rfc3339(now),
        timestamp_unix: now.timestamp(),
        cpu_count: m.cpu_count,
        cpu_used_pct: m.cpu_used_pct,
        mem_used: m.mem_used,
        mem_total: m.mem_total,
        mem_cache: m.mem_cache,
        disk_used: m.disk_used,
        disk_total: m.disk_total,
    })
}

/// `GET /sandboxes/{id}/metrics?start=&end=`: the samples taken in the
/// range (from the sandbox's start to now by default), oldest first; none
/// for a range before it existed. A running sandbox not sampled yet in a
/// range that reaches now answers one sample taken now. Samples outlive the
/// sandbox for the retention period.
pub async fn of_sandbox(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(range): Query<Range>,
) -> Result<Json<Vec<SandboxMetric>>, ApiError> {
    let rec = state
        .store
        .get_sandbox(&id)
        .await?
        .filter(|r| r.team_id == caller.team.id)
        .ok_or_else(|| ApiError::sandbox_not_found(&id))?;
    let (from, to) = range.resolve(rec.started_at)?;
    let mut out: Vec<SandboxMetric> = state
        .store
        .metrics(&id, from, to)
        .await?
        .iter()
        .map(shape)
        .collect();
    let reaches_now = to >= Utc::now() - chrono::Duration::seconds(1);
    if out.is_empty() && reaches_now && rec.state == SandboxState::Running {
        if let Ok(m) = sample_now(&state, &id) {
            out.push(m);
        }
    }
    Ok(Json(out))
}

/// At most this many ids in one `GET /sandboxes/metrics` (the spec's).
const MAX_IDS: usize = 100;

#[derive(Debug, Deserialize)]
pub struct ManyQuery {
    sandbox_ids: Option<String>,
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: a sample taken now of each of
/// the caller's running sandboxes among them; others are left out.
pub async fn of_many(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ManyQuery>,
) -> Result<Json<SandboxesWithMetrics>, ApiError> {
    let ids: std::collections::BTreeSet<&str> = q
        .sandbox_ids
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "sandbox_ids is required: a comma-separated list of sandbox ids",
        ));
    }
    if ids.len() > MAX_IDS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_IDS} sandbox ids at once ({} given)",
            ids.len()
        )));
    }
    let mut sandboxes = BTreeMap::new();
    for id in ids {
        let Ok(rec) = live(&state, &caller, id).await else {
            continue;
        };
        if rec.state != SandboxState::Running {
            continue;
        }
        if let Ok(m) = sample_now(&state, id) {
            sandboxes.insert(id.to_string(), m);
        }
    }
    Ok(Json(SandboxesWithMetrics { sandboxes }))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamMetric {
    timestamp: String,
    timestamp_unix: i64,
    concurrent_sandboxes: u32,
    sandbox_start_rate: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MaxTeamMetric {
    timestamp: String,
    timestamp_unix: i64,
    value: f64,
}

/// Points of a team series: never finer than 5 s, never more than this.
const MAX_POINTS: i64 = 1000;
const MIN_STEP_S: i64 = 5;
/// Without a `start`, the last hour.
const DEFAULT_SPAN_S: i64 = 3600;

/// The team's concurrency and start rate at evenly spaced points of the
/// range. A sandbox counts from its start until it ended (paused ones
/// count: they hold their place).
fn team_series(spans: &[Lifespan], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<TeamMetric> {
    let span_s = (to - from).num_seconds().max(0);
    let step = ((span_s + MAX_POINTS - 1) / MAX_POINTS).max(MIN_STEP_S);
    let mut out = Vec::new();
    let mut points = Vec::new();
    let mut t = from;
    while t <= to {
        points.push(t);
        t += chrono::Duration::seconds(step);
    }
    // The range's end is always a point: what holds now is what is asked.
    if points.last() != Some(&to) {
        points.push(to);
    }
    for t in points {
        let concurrent = spans
            .iter()
            .filter(|s| s.started_at <= t && s.ended_at.is_none_or(|e| e > t))
            .count();
        let window_start = t - chrono::Duration::seconds(step);
        let started = spans
            .iter()
            .filter(|s| s.started_at > window_start && s.started_at <= t)
            .count();
        out.push(TeamMetric {
            timestamp: rfc3339(t),
            timestamp_unix: t.timestamp(),
            concurrent_sandboxes: u32::try_from(concurrent).unwrap_or(u32::MAX),
            sandbox_start_rate: started as f64 / step as f64,
        });
    }
    out
}

async fn series_for(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    range: &Range,
) -> Result<Vec<TeamMetric>, ApiError> {
    if team_id != caller.team.id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("team '{team_id}' is not the team of this API key"),
        ));
    }
    let default_start = range
        .end
        .and_then(|e| DateTime::from_timestamp(e, 0))
        .unwrap_or_else(Utc::now)
        - chrono::Duration::seconds(DEFAULT_SPAN_S);
    let (from, to) = range.resolve(default_start)?;
    let spans = state.store.team_lifespans(team_id, from, to).await?;
    Ok(team_series(&spans, from, to))
}

/// `GET /teams/{teamID}/metrics?start=&end=`.
pub async fn of_team(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(team_id): Path<String>,
    Query(range): Query<Range>,
) -> Result<Json<Vec<TeamMetric>>, ApiError> {
    Ok(Json(series_for(&state, &caller, &team_id, &range).await?))
}

#[derive(Debug, Deserialize)]
pub struct MaxQuery {
    start: Option<i64>,
    end: Option<i64>,
    metric: Option<String>,
}

/// `GET /teams/{teamID}/metrics/max?metric=concurrent_sandboxes|sandbox_start_rate`.
pub async fn max_of_team(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(team_id): Path<String>,
    Query(q): Query<MaxQuery>,
) -> Result<Json<MaxTeamMetric>, ApiError> {
    let pick: fn(&TeamMetric) -> f64 = match q.metric.as_deref() {
        Some("concurrent_sandboxes") => |m| f64::from(m.concurrent_sandboxes),
        Some("sandbox_start_rate") => |m| m.sandbox_start_rate,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown metric '{other}': use concurrent_sandboxes or sandbox_start_rate"
            )))
        }
        None => {
            return Err(ApiError::bad_request(
                "metric is required: concurrent_sandboxes or sandbox_start_rate",
            ))
        }
    };
    let range = Range {
        start: q.start,
        end: q.end,
    };
    let series = series_for(&state, &caller, &team_id, &range).await?;
    let best = series
        .iter()
        .max_by(|a, b| pick(a).total_cmp(&pick(b)))
        .ok_or_else(|| ApiError::bad_request("the range holds no point"))?;
    Ok(Json(MaxTeamMetric {
        timestamp: best.timestamp.clone(),
        timestamp_unix: best.timestamp_unix,
        value: pick(best),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn team_series_counts_concurrency_and_starts() {
        let spans = [
            Lifespan {
                started_at: at(0),
                ended_at: Some(at(12)),
            },
            Lifespan {
                started_at: at(3),
                ended_at: None,
            },
            Lifespan {
                started_at: at(11),
                ended_at: None,
            },
        ];
        let s = team_series(&spans, at(0), at(15));
        let got: Vec<(i64, u32, f64)> = s
            .iter()
            .map(|m| {
                (
                    m.timestamp_unix - at(0).timestamp(),
                    m.concurrent_sandboxes,
                    m.sandbox_start_rate,
                )
            })
            .collect();
        // Points every 5 s: at 0 one runs (started at 0), at 5 two (one
        // started in (0, 5]), at 10 two, at 15 two (the first ended at 12,
        // the third started at 11).
        assert_eq!(
            got,
            vec![(0, 1, 0.2), (5, 2, 0.2), (10, 2, 0.0), (15, 2, 0.2)]
        );
    }

    #[test]
    fn long_ranges_have_at_most_a_thousand_points() {
        let s = team_series(&[], at(0), at(86_400 * 7));
        assert!(s.len() <= 1002, "{}", s.len());
        assert!(s.iter().all(|m| m.concurrent_sandboxes == 0));
    }
}
