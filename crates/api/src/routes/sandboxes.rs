//! One sandbox: create, get, kill, timeouts, connect, metrics, logs, network.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::Utc;
use sandbar_runtime::{EgressPolicy, Route, RuntimeError, SandboxSpec};
use sandbar_store::{SandboxRecord, SandboxState};

use crate::auth::Caller;
use crate::body::{JsonBody, OptionalJsonBody};
use crate::error::ApiError;
use crate::model::{
    rfc3339, NetworkUpdate, NewSandbox, RefreshBody, Sandbox, SandboxDetail, SandboxIdentity,
    SandboxLogs, TimeoutBody,
};
use crate::quota::{Admission, Claim};
use crate::timeouts;
use crate::AppState;

/// E2B uses 20 characters of `[a-z0-9]`; the proxy relies on that alphabet.
const ID_LEN: usize = 20;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Longest keep-alive a refresh may ask for (E2B's bound).
const MAX_REFRESH_SECS: u64 = 3600;

pub(crate) fn new_sandbox_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..ID_LEN)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

pub(crate) fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// What the runtime's typed errors are to a client: its own mistakes are
/// 4xx with the reason; capacity is 503; only real faults are 500.
pub(crate) fn runtime_error(e: RuntimeError) -> ApiError {
    use sandbar_runtime::NetError;
    match e {
        RuntimeError::TemplateNotFound(t) => {
            ApiError::not_found(format!("template '{t}' not found"))
        }
        RuntimeError::NotFound(id) => ApiError::sandbox_not_found(&id),
        RuntimeError::AlreadyExists(id) => ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox '{id}' already exists"),
        ),
        RuntimeError::Net(NetError::Policy(why)) => {
            ApiError::bad_request(format!("invalid network policy: {why}"))
        }
        RuntimeError::Net(e @ (NetError::Exhausted(_) | NetError::Closed)) => {
            ApiError::unavailable(e.to_string())
        }
        RuntimeError::Lifecycle(e) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        RuntimeError::Layers(sandbar_runtime::LayerError::NotFound(l)) => {
            ApiError::not_found(format!("layer '{l}' not found"))
        }
        RuntimeError::Invalid(why) => ApiError::bad_request(why),
        other => ApiError::internal(other.to_string()),
    }
}

fn identity(state: &AppState, r: &SandboxRecord) -> SandboxIdentity {
    SandboxIdentity {
        template_id: r.template.clone(),
        sandbox_id: r.id.clone(),
        alias: r.alias.clone(),
        client_id: r.client_id.clone(),
        envd_version: state.config.envd_version.clone(),
        envd_access_token: r.envd_access_token.clone(),
        domain: Some(state.config.public_domain.clone()),
    }
}

pub(crate) fn sandbox_json(state: &AppState, r: &SandboxRecord) -> Sandbox {
    Sandbox {
        identity: identity(state, r),
        traffic_access_token: r.traffic_access_token.clone(),
    }
}

pub(crate) fn detail_json(state: &AppState, r: &SandboxRecord) -> SandboxDetail {
    SandboxDetail {
        identity: identity(state, r),
        started_at: rfc3339(r.started_at),
        end_at: rfc3339(r.end_at),
        cpu_count: r.cpu_count,
        memory_mb: r.memory_mb,
        disk_size_mb: r.disk_mb,
        state: r.state.as_str().to_string(),
        metadata: r.metadata.clone(),
        allow_internet_access: r.allow_internet,
        network: r.network.as_ref().map(crate::model::NetworkConfig::public),
        lifecycle: crate::model::LifecycleInfo {
            auto_resume: r.lifecycle.auto_resume,
            on_timeout: if r.lifecycle.auto_pause {
                "pause"
            } else {
                "kill"
            },
        },
        pause_mode: r.pause_mode.clone(),
    }
}

pub(crate) fn listed_json(state: &AppState, r: &SandboxRecord) -> crate::model::ListedSandbox {
    crate::model::ListedSandbox {
        template_id: r.template.clone(),
        sandbox_id: r.id.clone(),
        alias: r.alias.clone(),
        client_id: r.client_id.clone(),
        envd_version: state.config.envd_version.clone(),
        started_at: rfc3339(r.started_at),
        end_at: rfc3339(r.end_at),
        cpu_count: r.cpu_count,
        memory_mb: r.memory_mb,
        disk_size_mb: r.disk_mb,
        state: r.state.as_str().to_string(),
        metadata: r.metadata.clone(),
    }
}

/// `GET /teams`: the caller's team, with the key it asked with (the E2B
/// CLI stores that key for the team; sandbar keeps only hashes, so it can
/// hand back no other).
pub async fn teams(Extension(caller): Extension<Caller>) -> Json<Vec<crate::model::TeamInfo>> {
    Json(vec![crate::model::TeamInfo {
        team_id: caller.team.id.clone(),
        name: caller.team.name.clone(),
        api_key: caller.key.clone(),
        is_default: true,
    }])
}

/// The live record of a sandbox of the caller's team that the runtime still
/// holds (another team's is "not found", as one that does not exist). A
/// record whose sandbox died behind our back (crash, OOM of envd) is marked
/// gone here.
pub(crate) async fn live(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<SandboxRecord, ApiError> {
    let rec = state
        .store
        .get_live_sandbox(id)
        .await?
        .filter(|r| r.team_id == caller.team.id)
        .ok_or_else(|| ApiError::sandbox_not_found(id))?;
    if rec.node == state.config.node && state.backend.state(id).is_none() {
        state.store.mark_killed(id).await?;
        return Err(ApiError::sandbox_not_found(id));
    }
    Ok(rec)
}

/// How long a sandbox would have lived from its start were it to end
/// `timeout` from now.
pub(crate) fn lifetime_until(
    rec: &SandboxRecord,
    timeout: std::time::Duration,
) -> std::time::Duration {
    (Utc::now() - rec.started_at)
        .to_std()
        .unwrap_or_default()
        .saturating_add(timeout)
}

pub(crate) fn egress_of(
    allow_internet: bool,
    allow_out: Option<Vec<String>>,
    deny_out: Option<Vec<String>>,
    proxy: Option<&crate::model::EgressProxyConfig>,
) -> EgressPolicy {
    EgressPolicy {
        allow_internet,
        allow_out: allow_out.unwrap_or_default(),
        deny_out: deny_out.unwrap_or_default(),
        egress_proxy: proxy.map(crate::model::EgressProxyConfig::policy),
    }
}

/// The egress policy a sandbox's record says it has.
pub(crate) fn record_egress(rec: &SandboxRecord) -> EgressPolicy {
    let network = rec
        .network
        .clone()
        .and_then(|n| serde_json::from_value::<crate::model::NetworkConfig>(n).ok())
        .unwrap_or_default();
    egress_of(
        rec.allow_internet,
        network.allow_out,
        network.deny_out,
        network.egress_proxy.as_ref(),
    )
}

/// After a resume: a sandbox that booted afresh on its files got the
/// policy it was made with; one changed since (`PUT .../network`) gets
/// the recorded one back.
pub(crate) async fn restore_egress(state: &AppState, rec: &SandboxRecord) {
    let wanted = record_egress(rec);
    let made_with = state.backend.spec(&rec.id).map(|s| s.egress);
    if made_with.as_ref() == Some(&wanted) {
        return;
    }
    if let Err(e) = state.backend.set_egress(&rec.id, wanted).await {
        tracing::warn!(sandbox = %rec.id, error = %e, "restoring the egress policy after a resume");
    }
}

/// Whether an optional JSON value asks for something (not null, empty list or
/// empty object).
fn is_set(v: &Option<serde_json::Value>) -> bool {
    match v {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(serde_json::Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

fn refuse_unsupported(req: &NewSandbox) -> Result<(), ApiError> {
    let network = req.network.as_ref();
    let asked = [
        ("mcp", is_set(&req.mcp)),
        ("iam (workload identity)", is_set(&req.iam)),
        ("volumeMounts", is_set(&req.volume_mounts)),
        ("network.rules", network.is_some_and(|n| is_set(&n.rules))),
        (
            "network.egressProxy.tls (TLS to the proxy)",
            network
                .and_then(|n| n.egress_proxy.as_ref())
                .is_some_and(|p| proxy_tls(&p.tls)),
        ),
        (
            "network.httpsPorts",
            network.is_some_and(|n| is_set(&n.https_ports)),
        ),
        (
            "network.dnsServers",
            network.is_some_and(|n| is_set(&n.dns_servers)),
        ),
    ];
    match asked.iter().find(|(_, set)| *set) {
        Some((what, _)) => Err(ApiError::not_implemented(format!(
            "{what} is not supported yet by sandbar"
        ))),
        None => Ok(()),
    }
}

/// Whether an egressProxy `tls` asks for TLS (`true` or `{enabled: true}`).
fn proxy_tls(tls: &Option<serde_json::Value>) -> bool {
    match tls {
        Some(serde_json::Value::Bool(on)) => *on,
        Some(serde_json::Value::Object(o)) => {
            o.get("enabled") == Some(&serde_json::Value::Bool(true))
        }
        _ => false,
    }
}

/// What a new sandbox is made of, however it was asked for (create, fork).
pub(crate) struct NewSandboxPlan {
    pub template: String,
    /// The snapshot layer to start on.
    pub base_layer: Option<String>,
    /// The snapshot (or template) id the caller named, shown as `alias`.
    pub alias: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub timeout: std::time::Duration,
    pub env_vars: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub secure: bool,
    pub allow_internet: bool,
    pub network: Option<crate::model::NetworkConfig>,
    pub lifecycle: sandbar_store::Lifecycle,
    /// A custom template's user, workdir and start command.
    pub start: sandbar_runtime::StartSettings,
    /// A custom template's ready command: the create returns once it
    /// passes (unless the sandbox was restored with its processes running,
    /// taken after it passed).
    pub ready_cmd: Option<String>,
    /// The templateID clients see when it is not `template` (the root
    /// filesystem): a custom template's.
    pub shown_template: Option<String>,
}

/// Makes the sandbox of `plan` for `caller` and records it: team limits,
/// tokens, the runtime's create, the store's record.
pub(crate) async fn make_sandbox(
    state: &AppState,
    caller: &Caller,
    plan: NewSandboxPlan,
) -> Result<SandboxRecord, ApiError> {
    let started = std::time::Instant::now();
    let template = plan.template.clone();
    let made = make_sandbox_untimed(state, caller, plan).await;
    crate::telemetry::created(&template, made.is_ok(), started.elapsed());
    made
}

async fn make_sandbox_untimed(
    state: &AppState,
    caller: &Caller,
    plan: NewSandboxPlan,
) -> Result<SandboxRecord, ApiError> {
    let network = plan.network.clone().unwrap_or_default();
    let envd_access_token = plan.secure.then(new_token);
    let traffic_access_token = (network.allow_public_traffic == Some(false)).then(new_token);
    let reservation = state
        .quotas
        .admit(
            &state.store,
            &caller.team,
            Claim::of(plan.memory_mb, plan.cpu_count),
            plan.timeout,
            Admission::Create,
        )
        .await?;
    let id = new_sandbox_id();
    let spec = SandboxSpec {
        id: id.clone(),
        template: plan.template.clone(),
        cpu_count: plan.cpu_count,
        memory_mb: plan.memory_mb,
        disk_mb: plan.disk_mb,
        env_vars: plan.env_vars.clone(),
        envd_access_token: envd_access_token.clone(),
        egress: egress_of(
            plan.allow_internet,
            network.allow_out.clone(),
            network.deny_out.clone(),
            network.egress_proxy.as_ref(),
        ),
        route: Route {
            traffic_access_token: traffic_access_token.clone(),
            mask_request_host: network.mask_request_host.clone(),
        },
        base_layer: plan.base_layer.clone(),
        auto_resume: plan.lifecycle.auto_resume,
        start: plan.start.clone(),
    };
    let runtime_started = std::time::Instant::now();
    let starting = state.starts.enter().await?;
    let info = state.backend.create(spec).await.map_err(runtime_error)?;
    drop(starting);
    let runtime_ms = runtime_started.elapsed().as_secs_f64() * 1000.0;
    if let (Some(ready), false) = (&plan.ready_cmd, info.restored) {
        if let Err(why) =
            wait_for_start(state, &id, envd_access_token.as_deref(), &plan, ready).await
        {
            if let Err(e) = state.backend.kill(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "removing a sandbox that never got ready");
            }
            return Err(ApiError::internal(format!(
                "the template's start command did not get ready: {why}"
            )));
        }
    }

    let started_at = Utc::now();
    let record = SandboxRecord {
        id: id.clone(),
        template: plan
            .shown_template
            .clone()
            .unwrap_or_else(|| plan.template.clone()),
        alias: Some(plan.alias),
        client_id: state.config.client_id.clone(),
        metadata: plan.metadata,
        envd_access_token,
        traffic_access_token,
        started_at,
        end_at: timeouts::end_at(started_at, plan.timeout),
        cpu_count: info.cpu_count,
        memory_mb: info.memory_mb,
        disk_mb: info.disk_mb,
        state: SandboxState::Running,
        allow_internet: plan.allow_internet,
        network: plan
            .network
            .map(|n| serde_json::to_value(n).expect("network config serializes")),
        node: state.config.node.clone(),
        api_key_id: Some(caller.key_id.clone()),
        team_id: caller.team.id.clone(),
        lifecycle: plan.lifecycle,
        pause_mode: None,
        base_layer: plan.base_layer,
    };
    if let Err(e) = state.store.insert_sandbox(&record).await {
        // Without a record nobody could see or time out this sandbox.
        if let Err(kill_err) = state.backend.kill(&id).await {
            tracing::warn!(sandbox = %id, error = %kill_err, "killing an unrecorded sandbox failed");
        }
        return Err(e.into());
    }
    // Stored: the record counts against the team's limits from now on.
    drop(reservation);
    state.evictor_wake.notify_one();
    tracing::info!(
        sandbox = %id,
        template = %record.template,
        base_layer = record.base_layer.as_deref().unwrap_or(""),
        timeout_s = plan.timeout.as_secs(),
        runtime_ms = format!("{runtime_ms:.1}"),
        "sandbox created"
    );
    Ok(record)
}

/// Waits for a custom template's ready command in a sandbox that booted
/// (and so runs its start command afresh).
async fn wait_for_start(
    state: &AppState,
    id: &str,
    token: Option<&str>,
    plan: &NewSandboxPlan,
    ready: &str,
) -> Result<(), String> {
    let settings = crate::builds::plan::Settings {
        envs: plan.env_vars.clone(),
        user: plan.start.user.clone().unwrap_or_else(|| "user".into()),
        workdir: plan
            .start
            .workdir
            .clone()
            .unwrap_or_else(|| "/home/user".into()),
        start_cmd: plan.start.start_cmd.clone(),
        ready_cmd: Some(ready.to_string()),
    };
    let started = std::time::Instant::now();
    let tries = crate::builds::wait_ready(
        state,
        id,
        token,
        &settings,
        ready,
        crate::builds::READY_TIMEOUT,
    )
    .await?;
    tracing::debug!(sandbox = %id, tries, ms = started.elapsed().as_millis() as u64, "start command ready");
    Ok(())
}

/// Env vars become a process environment: a name with `=` or NUL, an empty
/// one, or a value with NUL cannot be one (and would fail every command).
fn check_env_vars(vars: Option<&BTreeMap<String, String>>) -> Result<(), ApiError> {
    for (k, v) in vars.into_iter().flatten() {
        if k.is_empty() || k.contains(['=', '\0']) {
            return Err(ApiError::bad_request(format!(
                "envVars: {k:?} is not a variable name (it must be non-empty, without '=' or NUL)"
            )));
        }
        if v.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "envVars: the value of {k:?} holds a NUL byte"
            )));
        }
    }
    Ok(())
}

/// The lifecycle a create asks for, checked as E2B checks it.
fn lifecycle_of(
    req: &NewSandbox,
    timeout: std::time::Duration,
) -> Result<sandbar_store::Lifecycle, ApiError> {
    let auto_pause = req.auto_pause.unwrap_or(false);
    let auto_pause_memory = req.auto_pause_memory.unwrap_or(true);
    let auto_resume = req.auto_resume.is_some_and(|a| a.enabled);
    if req.auto_pause_memory == Some(false) && !auto_pause {
        return Err(ApiError::bad_request(
            "autoPauseMemory: false needs autoPause: true (it says how the sandbox pauses at its timeout)",
        ));
    }
    if auto_resume && !auto_pause {
        return Err(ApiError::bad_request(
            "autoResume needs autoPause: a sandbox killed at its timeout cannot be resumed",
        ));
    }
    Ok(sandbar_store::Lifecycle {
        auto_pause,
        auto_pause_memory,
        auto_resume,
        timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
    })
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<NewSandbox>,
) -> Result<impl IntoResponse, ApiError> {
    let (plan, custom) = match plan_create(&state, &caller, req).await {
        Ok(p) => p,
        Err(e) => {
            // Refused before the node was asked: a failed create all the
            // same (`make_sandbox` counts the rest).
            crate::telemetry::created("", false, std::time::Duration::ZERO);
            return Err(e);
        }
    };
    let record = make_sandbox(&state, &caller, plan).await?;
    if let Some(t) = &custom {
        if let Err(e) = state.store.template_spawned(&t.id).await {
            tracing::warn!(template = %t.id, error = %e, "counting a spawn");
        }
    }
    Ok((StatusCode::CREATED, Json(sandbox_json(&state, &record))))
}

/// What a create asks of the node, from its request: checked, the template
/// resolved (built-in, the team's own, or a snapshot); with the team's
/// template it came from.
async fn plan_create(
    state: &AppState,
    caller: &Caller,
    req: NewSandbox,
) -> Result<(NewSandboxPlan, Option<sandbar_store::TemplateRecord>), ApiError> {
    let asked = match req.template_id.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => return Err(ApiError::bad_request("templateID is required")),
    };
    let timeout = match req.timeout {
        Some(s) => timeouts::checked(s, state.config.max_timeout, "timeout")?,
        None => state.config.default_timeout,
    };
    refuse_unsupported(&req)?;
    check_env_vars(req.env_vars.as_ref())?;
    let lifecycle = lifecycle_of(&req, timeout)?;
    let mut custom = None;
    let mut from_snapshot = None;
    let (template, base_layer, resources) = if crate::builds::is_builtin(state, &asked) {
        (
            asked.clone(),
            None,
            (
                state.config.default_cpu_count,
                state.config.default_memory_mb,
                state.config.default_disk_mb,
            ),
        )
    } else if let Some((t, build)) =
        crate::routes::templates::resolve_for_create(state, caller, &asked).await?
    {
        let base = build.base_template.clone().unwrap_or_default();
        let layer = build.layer.clone();
        let resources = (
            build.cpu_count,
            build.memory_mb,
            state.config.default_disk_mb,
        );
        custom = Some((t, crate::builds::settings_of(&build)));
        (base, layer, resources)
    } else {
        let snap = crate::routes::persistence::resolve_snapshot(state, caller, &asked)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("template '{asked}' not found")))?;
        from_snapshot = Some(crate::routes::persistence::SnapshotSettings::of(&snap));
        (
            snap.template.clone(),
            Some(snap.layer.clone()),
            (snap.cpu_count, snap.memory_mb, snap.disk_mb),
        )
    };
    // A custom template's env vars, under the caller's own.
    let (mut env_vars, start, ready_cmd) = match &custom {
        Some((_, settings)) => (
            settings.envs.clone(),
            sandbar_runtime::StartSettings {
                user: Some(settings.user.clone()),
                workdir: Some(settings.workdir.clone()),
                start_cmd: settings.start_cmd.clone(),
            },
            settings.ready_cmd.clone(),
        ),
        // As its source ran (a start command runs again where the copy
        // boots on the files; a restored copy's processes go on).
        None => match from_snapshot {
            Some(s) => (s.env_vars, s.start, None),
            None => Default::default(),
        },
    };
    env_vars.extend(req.env_vars.unwrap_or_default());
    Ok((
        NewSandboxPlan {
            template,
            base_layer,
            alias: asked,
            cpu_count: resources.0,
            memory_mb: resources.1,
            disk_mb: resources.2,
            timeout,
            env_vars,
            metadata: req.metadata.unwrap_or_default(),
            secure: req.secure.unwrap_or(true),
            allow_internet: req.allow_internet_access.unwrap_or(true),
            network: req.network,
            lifecycle,
            start,
            ready_cmd,
            shown_template: custom.as_ref().map(|(t, _)| t.id.clone()),
        },
        custom.map(|(t, _)| t),
    ))
}

pub async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SandboxDetail>, ApiError> {
    let rec = live(&state, &caller, &id).await?;
    Ok(Json(detail_json(&state, &rec)))
}

/// Kills a sandbox and marks it gone; `false` when neither the runtime nor
/// the store knew it as live.
pub(crate) async fn kill_sandbox(state: &AppState, id: &str) -> Result<bool, ApiError> {
    let killed = state.backend.kill(id).await.map_err(runtime_error)?;
    let marked = state.store.mark_killed(id).await?;
    Ok(killed || marked)
}

pub async fn kill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // Only the caller's team's sandboxes; another team's is not found.
    let owned = state
        .store
        .get_live_sandbox(&id)
        .await?
        .is_some_and(|r| r.team_id == caller.team.id);
    if !owned {
        return Err(ApiError::sandbox_not_found(&id));
    }
    if kill_sandbox(&state, &id).await? {
        tracing::info!(sandbox = %id, "sandbox killed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::sandbox_not_found(&id))
    }
}

pub async fn set_timeout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TimeoutBody>,
) -> Result<StatusCode, ApiError> {
    let timeout = timeouts::checked(body.timeout, state.config.max_timeout, "timeout")?;
    let rec = live(&state, &caller, &id).await?;
    crate::quota::check_lifetime(&caller.team, lifetime_until(&rec, timeout))?;
    if !state
        .store
        .set_end_at(&id, timeouts::end_at(Utc::now(), timeout))
        .await?
    {
        return Err(ApiError::sandbox_not_found(&id));
    }
    state.evictor_wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn refresh(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<RefreshBody>,
) -> Result<StatusCode, ApiError> {
    let max = std::time::Duration::from_secs(MAX_REFRESH_SECS).min(state.config.max_timeout);
    let duration = match body.and_then(|b| b.duration) {
        Some(s) => timeouts::checked(s, max, "duration")?,
        None => state.config.default_timeout.min(max),
    };
    let rec = live(&state, &caller, &id).await?;
    crate::quota::check_lifetime(&caller.team, lifetime_until(&rec, duration))?;
    if !state
        .store
        .extend_end_at(&id, timeouts::end_at(Utc::now(), duration))
        .await?
    {
        return Err(ApiError::sandbox_not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /sandboxes/{id}/logs?start=<unix ms>&limit=<n>`: the sandbox's
/// egress log, each event a JSON line with a `level` and a `logger` (what
/// the E2B CLI reads), and the same as structured entries.
pub async fn logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<crate::model::LogsQuery>,
) -> Result<Json<SandboxLogs>, ApiError> {
    live(&state, &caller, &id).await?;
    let entries = crate::egress_log::entries(&state, &id).await;
    let entries = crate::egress_log::since(entries, query.start, query.limit);
    Ok(Json(SandboxLogs {
        logs: entries.iter().map(crate::egress_log::line).collect(),
        log_entries: entries
            .iter()
            .map(|e| serde_json::to_value(e).expect("a log entry serializes"))
            .collect(),
    }))
}

/// `GET /v2/sandboxes/{id}/logs?cursor&limit&direction&level&search`.
pub async fn logs_v2(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<crate::model::LogsQueryV2>,
) -> Result<Json<serde_json::Value>, ApiError> {
    live(&state, &caller, &id).await?;
    let entries = crate::egress_log::entries(&state, &id).await;
    let entries = crate::egress_log::page(entries, &query)?;
    Ok(Json(serde_json::json!({ "logs": entries })))
}

pub async fn set_network(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NetworkUpdate>,
) -> Result<StatusCode, ApiError> {
    let rec = live(&state, &caller, &id).await?;
    if is_set(&body.rules) || is_set(&body.dns_servers) {
        let what = if is_set(&body.rules) {
            "network.rules"
        } else {
            "network.dnsServers"
        };
        return Err(ApiError::not_implemented(format!(
            "{what} is not supported yet by sandbar"
        )));
    }
    if body
        .egress_proxy
        .as_ref()
        .is_some_and(|p| proxy_tls(&p.tls))
    {
        return Err(ApiError::not_implemented(
            "network.egressProxy.tls (TLS to the proxy) is not supported yet by sandbar",
        ));
    }
    // A full replace, as E2B does it: what the body leaves out is cleared,
    // `allow_internet_access` included (left out: no denial from it).
    let allow_internet = body.allow_internet_access.unwrap_or(true);
    let policy = egress_of(
        allow_internet,
        body.allow_out.clone(),
        body.deny_out.clone(),
        body.egress_proxy.as_ref(),
    );
    state
        .backend
        .set_egress(&id, policy)
        .await
        .map_err(runtime_error)?;

    // Keep the create-time options (public traffic, host masking) and
    // replace the egress settings.
    let mut network: BTreeMap<String, serde_json::Value> = match rec.network {
        Some(serde_json::Value::Object(map)) => map.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    let proxy = body
        .egress_proxy
        .map(|p| serde_json::to_value(p).expect("a proxy config serializes"));
    for (k, v) in [
        ("allowOut", body.allow_out.map(|l| serde_json::json!(l))),
        ("denyOut", body.deny_out.map(|l| serde_json::json!(l))),
        ("egressProxy", proxy),
    ] {
        match v {
            Some(value) => network.insert(k.to_string(), value),
            None => network.remove(k),
        };
    }
    let network = serde_json::to_value(network).expect("json map serializes");
    state
        .store
        .set_network(&id, allow_internet, Some(&network))
        .await?;
    tracing::info!(sandbox = %id, "network policy replaced");
    Ok(StatusCode::NO_CONTENT)
}
