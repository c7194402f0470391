//! Sandboxes that last: pause, resume and connect, snapshots (create, list,
//! delete, start from), and fork.

use std::collections::HashSet;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::Utc;
use sandbar_runtime::{PauseMode, State as RunState};
use sandbar_store::{SandboxRecord, SnapshotRecord};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::body::OptionalJsonBody;
use crate::error::ApiError;
use crate::model::{
    ErrorShape, ForkBody, ForkResult, PauseBody, ResumeBody, SnapshotBody, SnapshotInfo,
};
use crate::quota::{Admission, Claim};
use crate::routes::sandboxes::{
    lifetime_until, live, make_sandbox, new_sandbox_id, runtime_error, sandbox_json, NewSandboxPlan,
};
use crate::{timeouts, AppState};

/// Most forks one call makes (E2B's bound).
const MAX_FORKS: u32 = 100;
/// What a fork lives when the call names no timeout (E2B's default).
const FORK_DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
const MAX_LIST: usize = 100;

fn mode_of(memory: Option<bool>) -> PauseMode {
    if memory.unwrap_or(true) {
        PauseMode::Full
    } else {
        PauseMode::Filesystem
    }
}

/// Pauses a sandbox of the caller's team and records it: 204, 409 when it
/// is paused already.
pub(crate) async fn pause_sandbox(
    state: &AppState,
    rec: &SandboxRecord,
    mode: PauseMode,
) -> Result<(), ApiError> {
    if rec.state == sandbar_store::SandboxState::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox '{}' is already paused", rec.id),
        ));
    }
    state
        .backend
        .pause(&rec.id, mode)
        .await
        .map_err(runtime_error)?;
    state.store.set_paused(&rec.id, mode.as_str()).await?;
    Ok(())
}

pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<PauseBody>,
) -> Result<StatusCode, ApiError> {
    let body = body.unwrap_or_default();
    let rec = live(&state, &caller, &id).await?;
    let mode = mode_of(body.memory);
    pause_sandbox(&state, &rec, mode).await?;
    tracing::info!(sandbox = %id, mode = mode.as_str(), "sandbox paused");
    Ok(StatusCode::NO_CONTENT)
}

/// Resumes a paused sandbox (booting it afresh on its files when the
/// caller wants no memory kept) and records it running until `timeout`
/// from now.
async fn resume_sandbox(
    state: &AppState,
    caller: &Caller,
    rec: &SandboxRecord,
    timeout: std::time::Duration,
    memory: Option<bool>,
) -> Result<(), ApiError> {
    let started = std::time::Instant::now();
    let resumed = resume_sandbox_untimed(state, caller, rec, timeout, memory).await;
    crate::telemetry::resumed(resumed.is_ok(), started.elapsed());
    resumed
}

async fn resume_sandbox_untimed(
    state: &AppState,
    caller: &Caller,
    rec: &SandboxRecord,
    timeout: std::time::Duration,
    memory: Option<bool>,
) -> Result<(), ApiError> {
    // Held until the record says running (then the store counts it).
    let _reservation = state
        .quotas
        .admit(
            &state.store,
            &caller.team,
            Claim::of(rec.memory_mb, rec.cpu_count),
            timeout,
            Admission::Resume,
        )
        .await?;
    if memory == Some(false)
        && state.backend.state(&rec.id) == Some(RunState::Paused(PauseMode::Full))
    {
        // "Reboot on resume": the processes go, the files stay.
        state.backend.resume(&rec.id).await.map_err(runtime_error)?;
        state
            .backend
            .pause(&rec.id, PauseMode::Filesystem)
            .await
            .map_err(runtime_error)?;
    }
    match state.backend.resume(&rec.id).await {
        Ok(_) => {}
        // Resumed meanwhile (by a request to it): fine.
        Err(sandbar_runtime::RuntimeError::Lifecycle(
            sandbar_runtime::LifecycleError::AlreadyRunning(_),
        )) => {}
        Err(e) => return Err(runtime_error(e)),
    }
    crate::routes::sandboxes::restore_egress(state, rec).await;
    state
        .store
        .set_running(&rec.id, timeouts::end_at(Utc::now(), timeout))
        .await?;
    state.evictor_wake.notify_one();
    tracing::info!(sandbox = %rec.id, "sandbox resumed");
    Ok(())
}

/// `POST /sandboxes/{id}/resume` (SDKs before connect): 201; 409 when it
/// runs.
pub async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ResumeBody>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.unwrap_or_default();
    let rec = live(&state, &caller, &id).await?;
    if rec.state != sandbar_store::SandboxState::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox '{id}' is already running"),
        ));
    }
    let timeout = match body.timeout {
        Some(s) => timeouts::checked(s, state.config.max_timeout, "timeout")?,
        None => state.config.default_timeout,
    };
    resume_sandbox(&state, &caller, &rec, timeout, body.memory).await?;
    let rec = live(&state, &caller, &id).await?;
    Ok((StatusCode::CREATED, Json(sandbox_json(&state, &rec))))
}

/// `POST /sandboxes/{id}/connect` and `/v2/...`: 200 with the sandbox when
/// it runs (a given timeout only extends it), 201 when it had to be resumed.
pub async fn connect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ResumeBody>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.unwrap_or_default();
    let timeout = body
        .timeout
        .map(|s| timeouts::checked(s, state.config.max_timeout, "timeout"))
        .transpose()?;
    let rec = live(&state, &caller, &id).await?;
    if rec.state == sandbar_store::SandboxState::Paused {
        let timeout = timeout.unwrap_or(state.config.default_timeout);
        resume_sandbox(&state, &caller, &rec, timeout, body.memory).await?;
        let rec = live(&state, &caller, &id).await?;
        return Ok((StatusCode::CREATED, Json(sandbox_json(&state, &rec))));
    }
    if let Some(t) = timeout {
        crate::quota::check_lifetime(&caller.team, lifetime_until(&rec, t))?;
        state
            .store
            .extend_end_at(&id, timeouts::end_at(Utc::now(), t))
            .await?;
    }
    Ok((StatusCode::OK, Json(sandbox_json(&state, &rec))))
}

/// Splits what a client names a snapshot by into `(name, tag)`, checked:
/// `name`, `name:tag`, `team/name[:tag]`.
fn parse_name(raw: &str, team: &str) -> Result<(String, String), ApiError> {
    let (path, tag) = raw.rsplit_once(':').unwrap_or((raw, "default"));
    let name = match path.split_once('/') {
        Some((ns, name)) if ns == team => name,
        Some((ns, _)) => {
            return Err(ApiError::bad_request(format!(
                "snapshot name '{raw}': namespace '{ns}' is not your team's ('{team}')"
            )))
        }
        None => path,
    };
    let ok = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'_'
                    || extra.contains(&b)
            })
    };
    if !ok(name, b"") || !ok(tag, b".") {
        return Err(ApiError::bad_request(format!(
            "snapshot name '{raw}': names are [a-z0-9_-], tags [a-z0-9_.-]"
        )));
    }
    Ok((name.to_string(), tag.to_string()))
}

/// The snapshot a client names (as `templateID` or in a path), of its team.
pub(crate) async fn resolve_snapshot(
    state: &AppState,
    caller: &Caller,
    asked: &str,
) -> Result<Option<SnapshotRecord>, ApiError> {
    let team = &caller.team.name;
    let mut candidates = vec![asked.to_string()];
    if !asked.contains(':') {
        candidates.push(format!("{asked}:default"));
    }
    if !asked.contains('/') {
        candidates.extend(
            candidates
                .clone()
                .into_iter()
                .map(|c| format!("{team}/{c}")),
        );
    }
    for c in candidates {
        if let Some(s) = state.store.snapshot(&c).await? {
            if s.team_id == caller.team.id {
                return Ok(Some(s));
            }
        }
    }
    Ok(None)
}

/// Removes layers that nothing uses any more on this node: none that a
/// sandbox stands on, a snapshot names, or a template build or the step
/// cache holds.
async fn collect_layers(state: &AppState) -> Result<(), ApiError> {
    let _collecting = state.leases.collecting().await;
    let node = &state.config.node;
    let mut kept: HashSet<String> = state
        .store
        .snapshot_layers(node)
        .await?
        .into_iter()
        .collect();
    kept.extend(state.store.template_layers(node).await?);
    kept.extend(state.leases.held());
    let removed = state.backend.collect_layers(kept).await;
    if !removed.is_empty() {
        tracing::debug!(layers = ?removed, "removed unused layers");
    }
    Ok(())
}

fn snapshot_info(s: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        snapshot_id: s.id.clone(),
        names: s.name.iter().cloned().collect(),
    }
}

/// A snapshot layer of sandbox `id`: with its processes when `memory`
/// asks for them; by default (`None`) whenever the node can (CRIU) and the
/// sandbox has processes, falling back to its files alone where criu cannot
/// take this tree (the best the node can do). Asked for and impossible: a
/// clear 409 that says why.
async fn take_snapshot(
    state: &AppState,
    id: &str,
    memory: Option<bool>,
) -> Result<(sandbar_runtime::SnapshotInfo, crate::leases::Lease), ApiError> {
    // Leased until the caller's record or forks stand on it.
    let _making = state.leases.making().await;
    let snap = snapshot_now(state, id, memory).await?;
    let lease = state.leases.hold(&snap.layer);
    Ok((snap, lease))
}

async fn snapshot_now(
    state: &AppState,
    id: &str,
    memory: Option<bool>,
) -> Result<sandbar_runtime::SnapshotInfo, ApiError> {
    let paused_to_files = state.backend.state(id) == Some(RunState::Paused(PauseMode::Filesystem));
    let with_memory =
        memory.unwrap_or_else(|| state.backend.memory_snapshots() && !paused_to_files);
    match state.backend.snapshot(id, with_memory).await {
        Ok(layer) => Ok(layer),
        Err(sandbar_runtime::RuntimeError::Checkpoint(why)) if memory.is_none() => {
            tracing::warn!(sandbox = %id, reason = %why, "the sandbox's processes cannot be checkpointed; the snapshot keeps its files only");
            state
                .backend
                .snapshot(id, false)
                .await
                .map_err(runtime_error)
        }
        Err(sandbar_runtime::RuntimeError::Checkpoint(why)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "the sandbox's processes cannot be checkpointed ({why}); snapshot with `memory: false` to keep its files only"
            ),
        )),
        Err(e) => Err(runtime_error(e)),
    }
}

/// How a snapshot's source ran, for the sandboxes started from it: a
/// custom template's user, workdir, start command and env vars (with the
/// source's own env vars) stay those of the sandbox the snapshot was taken
/// of, whether the copy is restored or boots on the files.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotSettings {
    #[serde(default)]
    pub start: sandbar_runtime::StartSettings,
    #[serde(default)]
    pub env_vars: std::collections::BTreeMap<String, String>,
}

impl SnapshotSettings {
    /// A record's settings (the defaults for snapshots taken before they
    /// were recorded, or unreadable ones).
    pub(crate) fn of(rec: &SnapshotRecord) -> Self {
        rec.settings
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
}

/// `POST /sandboxes/{id}/snapshots`: the sandbox now, as a snapshot
/// sandboxes can start from (with its processes where the node can, see
/// [`take_snapshot`]); the sandbox runs on.
pub async fn create_snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<SnapshotBody>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.unwrap_or_default();
    let rec = live(&state, &caller, &id).await?;
    if body.memory == Some(true) && !state.backend.memory_snapshots() {
        return Err(ApiError::bad_request(
            "snapshots keep files only on this node: memory snapshots need CRIU, which is not set up (scripts/install-criu.sh, `sandbar serve --criu`); leave `memory` out or set it false",
        ));
    }
    let named = body
        .name
        .as_deref()
        .map(|n| parse_name(n.trim(), &caller.team.name))
        .transpose()?;
    let settings = state.backend.spec(&id).map(|spec| {
        serde_json::to_value(SnapshotSettings {
            start: spec.start.clone(),
            env_vars: spec.env_vars.clone(),
        })
        .expect("serializable")
    });
    let (layer, _lease) = take_snapshot(&state, &id, body.memory).await?;
    let team = &caller.team.name;
    let (snapshot_id, name) = match named {
        Some((name, tag)) => (
            format!("{team}/{name}:{tag}"),
            Some(format!("{team}/{name}")),
        ),
        None => (format!("{}:default", new_sandbox_id()), None),
    };
    let record = SnapshotRecord {
        id: snapshot_id,
        team_id: caller.team.id.clone(),
        name,
        layer: layer.layer,
        template: layer.template,
        source_sandbox: Some(rec.id.clone()),
        node: state.config.node.clone(),
        cpu_count: layer.cpu_count,
        memory_mb: layer.memory_mb,
        disk_mb: layer.disk_mb,
        created_at: Utc::now(),
        settings,
    };
    if let Some(old) = state.store.put_snapshot(&record).await? {
        tracing::info!(snapshot = %old.id, layer = %old.layer, "snapshot name taken again; its old layer goes when unused");
        collect_layers(&state).await?;
    }
    tracing::info!(sandbox = %id, snapshot = %record.id, layer = %record.layer, memory = layer.memory, "snapshot made");
    Ok((StatusCode::CREATED, Json(snapshot_info(&record))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotQuery {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

/// `GET /snapshots`: the team's snapshots, paged by `X-Next-Token`.
pub async fn list_snapshots(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SnapshotQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = q.limit.unwrap_or(MAX_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIST}"
        )));
    }
    let after = match q.next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => {
            let bad = || ApiError::bad_request("invalid nextToken");
            let (ms, id) = t.split_once('.').ok_or_else(bad)?;
            Some((ms.parse::<i64>().map_err(|_| bad())?, id.to_string()))
        }
        None => None,
    };
    let name = match q.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) if n.contains(':') => {
            let (name, tag) = parse_name(n, &caller.team.name)?;
            Some(format!("{}/{name}:{tag}", caller.team.name))
        }
        Some(n) => Some(match n.split_once('/') {
            Some(_) => n.to_string(),
            None => format!("{}/{n}", caller.team.name),
        }),
        None => None,
    };
    let mut rows = state
        .store
        .list_snapshots(
            &caller.team.id,
            q.sandbox_id.as_deref().filter(|s| !s.is_empty()),
            name.as_deref(),
            after,
            limit + 1,
        )
        .await?;
    let mut headers = HeaderMap::new();
    if rows.len() > limit {
        rows.truncate(limit);
        let last = rows.last().expect("limit >= 1");
        let token = format!("{}.{}", last.created_at.timestamp_millis(), last.id);
        headers.insert(
            "x-next-token",
            HeaderValue::from_str(&token).map_err(|_| ApiError::internal("bad page token"))?,
        );
    }
    Ok((
        headers,
        Json(rows.iter().map(snapshot_info).collect::<Vec<_>>()),
    ))
}

/// [`collect_layers`] where a failure only goes to the log.
pub(crate) async fn collect_unused_layers(state: &AppState) {
    if let Err(e) = collect_layers(state).await {
        tracing::warn!(error = %e, "collecting unused layers");
    }
}

/// `DELETE /templates/{id}`: custom templates, and the SDKs delete
/// snapshots this way too. Its layer
/// goes once no sandbox stands on it (deferred, never breaking one).
pub async fn delete_template(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if crate::routes::templates::delete_custom(&state, &caller, &id).await? {
        collect_layers(&state).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    if let Some(snap) = resolve_snapshot(&state, &caller, &id).await? {
        state.store.delete_snapshot(&snap.id).await?;
        collect_layers(&state).await?;
        tracing::info!(snapshot = %snap.id, "snapshot deleted");
        return Ok(StatusCode::NO_CONTENT);
    }
    if crate::builds::is_builtin(&state, &id) {
        return Err(ApiError::bad_request(format!(
            "template '{id}' is a server-side template: remove it on the server"
        )));
    }
    Err(ApiError::not_found(format!(
        "template or snapshot '{id}' not found"
    )))
}

/// `POST /sandboxes/{id}/fork`: snapshots the sandbox once (with its
/// processes where the node can, see [`take_snapshot`]) and starts `count`
/// sandboxes on it (new ids and tokens, the source's env vars and
/// settings). 201 with one result per fork even when some failed.
pub async fn fork(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ForkBody>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.unwrap_or_default();
    let count = body.count.unwrap_or(1);
    if !(1..=MAX_FORKS).contains(&count) {
        return Err(ApiError::bad_request(format!(
            "count must be between 1 and {MAX_FORKS}"
        )));
    }
    let timeout = match body.timeout {
        Some(s) => timeouts::checked(s, state.config.max_timeout, "timeout")?,
        None => FORK_DEFAULT_TIMEOUT,
    };
    let rec = live(&state, &caller, &id).await?;
    if rec.state == sandbar_store::SandboxState::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox '{id}' is paused and cannot be forked; resume it first"),
        ));
    }
    let spec = state
        .backend
        .spec(&id)
        .ok_or_else(|| ApiError::sandbox_not_found(&id))?;
    let (layer, _lease) = take_snapshot(&state, &id, None).await?;
    let network = rec
        .network
        .clone()
        .and_then(|n| serde_json::from_value::<crate::model::NetworkConfig>(n).ok());
    let plans = (0..count).map(|_| NewSandboxPlan {
        template: layer.template.clone(),
        base_layer: Some(layer.layer.clone()),
        alias: rec.alias.clone().unwrap_or_else(|| rec.template.clone()),
        cpu_count: layer.cpu_count,
        memory_mb: layer.memory_mb,
        disk_mb: layer.disk_mb,
        timeout,
        env_vars: spec.env_vars.clone(),
        metadata: rec.metadata.clone(),
        secure: rec.envd_access_token.is_some(),
        allow_internet: rec.allow_internet,
        network: network.clone(),
        lifecycle: sandbar_store::Lifecycle {
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
            ..rec.lifecycle
        },
        start: spec.start.clone(),
        ready_cmd: None,
        shown_template: Some(rec.template.clone()),
    });
    let made =
        futures::future::join_all(plans.map(|plan| make_sandbox(&state, &caller, plan))).await;
    let results: Vec<ForkResult> = made
        .into_iter()
        .map(|r| match r {
            Ok(rec) => ForkResult {
                sandbox: Some(sandbox_json(&state, &rec)),
                error: None,
            },
            Err(e) => ForkResult {
                sandbox: None,
                error: Some(ErrorShape {
                    code: e.status.as_u16(),
                    message: e.message,
                }),
            },
        })
        .collect();
    // Layers of forks that all failed are not kept.
    collect_layers(&state).await?;
    tracing::info!(sandbox = %id, count, layer = %layer.layer, "sandbox forked");
    Ok((StatusCode::CREATED, Json(results)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_have_a_team_a_name_and_a_tag() {
        assert_eq!(
            parse_name("web", "t").unwrap(),
            ("web".into(), "default".into())
        );
        assert_eq!(
            parse_name("web:v1.2", "t").unwrap(),
            ("web".into(), "v1.2".into())
        );
        assert_eq!(
            parse_name("t/web:v1", "t").unwrap(),
            ("web".into(), "v1".into())
        );
        assert!(parse_name("other/web", "t").is_err());
        assert!(parse_name("Web", "t").is_err());
        assert!(parse_name("we b", "t").is_err());
        assert!(parse_name("", "t").is_err());
        assert!(parse_name("web:", "t").is_err());
    }
}
