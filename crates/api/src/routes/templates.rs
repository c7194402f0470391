//! Custom templates through E2B's build API: request a build, upload the
//! files of its `COPY` steps, start it with its steps, poll its status and
//! logs; list, get and delete templates; aliases and tags. The builds
//! themselves run in [`crate::builds`].

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use sandbar_store::{BuildLog, BuildRecord, BuildStatus, NewBuild, TemplateRecord};
use serde::Deserialize;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::builds::plan::{self, From};
use crate::error::ApiError;
use crate::model::rfc3339;
use crate::model::templates::{
    AliasInfo, AssignTags, AssignedTags, BuildInfo, BuildItem, BuildLogs, BuildRequest,
    BuildRequested, BuildStart, FileUpload, LogEntry, RemoveTags, StatusReason, TagItem,
    TemplateItem, TemplateWithBuilds,
};
use crate::AppState;

/// Most log entries one status poll returns.
const MAX_LOGS: u64 = 500;

pub(crate) fn log_entry(l: &BuildLog) -> LogEntry {
    LogEntry {
        timestamp: rfc3339(l.at),
        level: l.level.clone(),
        message: l.message.clone(),
        step: l.step.clone(),
    }
}

fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    match tags.iter().find(|t| !plan::part_ok(t)) {
        Some(t) => Err(ApiError::bad_request(format!(
            "tag '{t}': tags are lowercase letters, digits, '-', '_' and '.'"
        ))),
        None => Ok(()),
    }
}

/// The caller's template named by `id`: its templateID or its name.
async fn team_template(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Option<TemplateRecord>, ApiError> {
    if let Some(t) = state.store.template(id).await? {
        if t.team_id == caller.team.id {
            return Ok(Some(t));
        }
        return Ok(None);
    }
    let Ok((name, _)) = plan::name_and_tag(id, &caller.team.name) else {
        return Ok(None);
    };
    Ok(state.store.template_by_name(&caller.team.id, &name).await?)
}

async fn required_template(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<TemplateRecord, ApiError> {
    team_template(state, caller, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("template '{id}' not found")))
}

async fn build_of(
    state: &AppState,
    template: &TemplateRecord,
    build_id: &str,
) -> Result<BuildRecord, ApiError> {
    state
        .store
        .build(build_id)
        .await?
        .filter(|b| b.template_id == template.id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "build '{build_id}' of template '{}' not found",
                template.name
            ))
        })
}

/// `POST /v3/templates` (and `/v2/templates`): a new build of the team's
/// template `name` (made when new), waiting for its steps. 202.
pub async fn request_build(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<BuildRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if state.builds.files().is_none() {
        return Err(ApiError::not_implemented(
            "this server was started without a data directory for build files",
        ));
    }
    let raw = req
        .name
        .as_deref()
        .or(req.alias.as_deref())
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    let (name, tag) = plan::name_and_tag(raw, &caller.team.name).map_err(ApiError::bad_request)?;
    if crate::builds::is_builtin(&state, &name) {
        return Err(ApiError::bad_request(format!(
            "'{name}' is a built-in template: build yours under another name (fromTemplate('{name}') starts from it)"
        )));
    }
    let mut tags = req.tags.clone().unwrap_or_default();
    tags.extend(tag);
    if tags.is_empty() {
        tags.push("default".into());
    }
    tags.sort();
    tags.dedup();
    check_tags(&tags)?;
    let cpu_count = match req.cpu_count {
        None => state.config.default_cpu_count,
        Some(c) if (1..=16).contains(&c) => c as u32,
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "cpuCount {c}: a build takes 1 to 16 CPUs"
            )))
        }
    };
    let memory_mb = match req.memory_mb {
        None => state.config.default_memory_mb,
        Some(m) if (128..=65536).contains(&m) => m as u64,
        Some(m) => {
            return Err(ApiError::bad_request(format!(
                "memoryMB {m}: a build takes 128 to 65536 MiB"
            )))
        }
    };
    let disk_mb = match req.min_free_disk_mb {
        None => state.config.default_disk_mb,
        Some(d) if d >= 0 => state.config.default_disk_mb.max(d as u64),
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "minFreeDiskMb {d} is negative"
            )))
        }
    };
    let (template, build) = state
        .store
        .request_build(&NewBuild {
            team_id: &caller.team.id,
            name: &name,
            tags: &tags,
            node: &state.config.node,
            cpu_count,
            memory_mb,
            disk_mb,
        })
        .await?;
    tracing::info!(template = %template.id, name = %name, build = %build.id, "template build requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(BuildRequested {
            template_id: template.id,
            build_id: build.id,
            names: vec![name.clone()],
            aliases: vec![name],
            tags,
            public: template.public,
        }),
    ))
}

/// The scheme and host the client reached us by (through the edge proxy
/// or directly), for links it will follow.
fn base_url(headers: &HeaderMap) -> String {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let proto = get("x-forwarded-proto").unwrap_or("http");
    let host = get("x-forwarded-host")
        .or_else(|| get("host"))
        .unwrap_or("localhost");
    format!("{proto}://{host}")
}

/// `GET /templates/{id}/files/{hash}`: whether the files of a `COPY` step
/// are here already, and where to PUT them when not.
pub async fn file_link(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, hash)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let template = required_template(&state, &caller, &id).await?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "files hash '{hash}': a hash is 64 hex digits"
        )));
    }
    let files = state
        .builds
        .files()
        .ok_or_else(|| ApiError::not_implemented("this server keeps no build files"))?;
    let hash = hash.to_ascii_lowercase();
    if files.present(&caller.team.id, &hash) {
        return Ok((
            StatusCode::CREATED,
            Json(FileUpload {
                present: true,
                url: None,
            }),
        ));
    }
    let token = files.grant(&caller.team.id, &hash);
    tracing::debug!(template = %template.id, files_hash = %hash, "upload link granted");
    Ok((
        StatusCode::CREATED,
        Json(FileUpload {
            present: false,
            url: Some(format!("{}/template-files/{token}", base_url(&headers))),
        }),
    ))
}

/// `PUT /template-files/{token}`: the files of an upload link (no API
/// key: the link is the permission, as a presigned URL would be).
pub async fn upload(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let files = state
        .builds
        .files()
        .ok_or_else(|| ApiError::not_implemented("this server keeps no build files"))?;
    let length = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    files.receive(&token, length, body).await?;
    Ok(StatusCode::CREATED)
}

/// `POST /v2/templates/{id}/builds/{buildID}`: the build's base and steps;
/// checked here (a bad step, a base that does not exist, files not
/// uploaded: 400), then built in the background. 202.
pub async fn start_build(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, build_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<BuildStart>,
) -> Result<StatusCode, ApiError> {
    let template = required_template(&state, &caller, &id).await?;
    let build = build_of(&state, &template, &build_id).await?;
    if build.status != BuildStatus::Waiting {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "build '{build_id}' was started already ({})",
                build.status.as_str()
            ),
        ));
    }
    let plan = plan::plan(&body).map_err(ApiError::bad_request)?;
    if let From::Template(base) = &plan.from {
        if !crate::builds::is_builtin(&state, base) {
            let (name, _) =
                plan::name_and_tag(base, &caller.team.name).map_err(ApiError::bad_request)?;
            if name == template.name {
                return Err(ApiError::bad_request(format!(
                    "fromTemplate '{base}': a template cannot be built from itself"
                )));
            }
            if state
                .store
                .template_by_name(&caller.team.id, &name)
                .await?
                .is_none()
            {
                return Err(ApiError::bad_request(format!(
                    "fromTemplate '{base}': no such template (built-in: {})",
                    sandbar_runtime::templates::TemplateStore::builtin_names().join(", ")
                )));
            }
        }
    }
    let files = state
        .builds
        .files()
        .ok_or_else(|| ApiError::not_implemented("this server keeps no build files"))?;
    for (number, hash) in crate::builds::copy_hashes(&plan) {
        if !files.present(&caller.team.id, &hash) {
            return Err(ApiError::bad_request(format!(
                "step {number} (COPY): its files (hash {hash}) were not uploaded; GET /templates/{}/files/{hash} says where to PUT them",
                template.id
            )));
        }
    }
    let admission = state.builds.admit(&caller.team.id).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "your team runs {} template builds already; start this one when one has finished",
                state.builds.per_team()
            ),
        )
        .with_header("retry-after", axum::http::HeaderValue::from_static("10"))
    })?;
    if !state.store.start_build(&build.id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("build '{build_id}' was started already"),
        ));
    }
    crate::builds::spawn(state.clone(), template, build, plan, admission);
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusQuery {
    logs_offset: Option<u64>,
    limit: Option<u64>,
}

/// `GET /templates/{id}/builds/{buildID}/status`: the status, the log
/// entries from `logsOffset` on, and why it failed.
pub async fn build_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, build_id)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<BuildInfo>, ApiError> {
    let template = required_template(&state, &caller, &id).await?;
    let build = build_of(&state, &template, &build_id).await?;
    let limit = q.limit.unwrap_or(MAX_LOGS).clamp(1, MAX_LOGS);
    let logs = state
        .store
        .build_logs(&build.id, q.logs_offset.unwrap_or(0), limit)
        .await?;
    let reason = build.reason.as_ref().map(|r| StatusReason {
        message: r["message"]
            .as_str()
            .unwrap_or("the build failed")
            .to_string(),
        step: r["step"].as_str().map(str::to_string),
        log_entries: serde_json::from_value(r["logEntries"].clone()).unwrap_or_default(),
    });
    Ok(Json(BuildInfo {
        template_id: template.id,
        build_id: build.id,
        status: build.status.as_str().to_string(),
        // Every entry from the offset on: the SDKs advance their offset by
        // how many they got, so a filter here would make them skip lines.
        log_entries: logs.iter().map(log_entry).collect(),
        logs: Vec::new(),
        reason,
    }))
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    cursor: Option<u64>,
    limit: Option<u64>,
}

/// `GET /templates/{id}/builds/{buildID}/logs`: the build's log entries
/// (`cursor`: how many to skip).
pub async fn build_logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, build_id)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<BuildLogs>, ApiError> {
    let template = required_template(&state, &caller, &id).await?;
    let build = build_of(&state, &template, &build_id).await?;
    let logs = state
        .store
        .build_logs(
            &build.id,
            q.cursor.unwrap_or(0),
            q.limit.unwrap_or(MAX_LOGS).clamp(1, MAX_LOGS),
        )
        .await?;
    Ok(Json(BuildLogs {
        logs: logs.iter().map(log_entry).collect(),
    }))
}

/// The build a template serves: its newest ready one (what `default` or
/// the latest tag names), else its newest.
fn current_build(builds: &[BuildRecord]) -> Option<&BuildRecord> {
    builds
        .iter()
        .find(|b| b.status == BuildStatus::Ready)
        .or_else(|| builds.first())
}

fn build_item(state: &AppState, b: &BuildRecord) -> BuildItem {
    BuildItem {
        build_id: b.id.clone(),
        status: b.status.as_str().to_string(),
        cpu_count: b.cpu_count,
        memory_mb: b.memory_mb,
        disk_size_mb: b.disk_mb,
        envd_version: state.config.envd_version.clone(),
        created_at: rfc3339(b.created_at),
        updated_at: rfc3339(b.updated_at),
        finished_at: b.finished_at.map(rfc3339),
    }
}

/// `GET /templates`: the team's templates.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<TemplateItem>>, ApiError> {
    let mut out = Vec::new();
    for t in state.store.list_templates(&caller.team.id).await? {
        let builds = state.store.builds_of(&t.id).await?;
        let Some(b) = current_build(&builds) else {
            continue;
        };
        out.push(TemplateItem {
            template_id: t.id.clone(),
            build_id: b.id.clone(),
            build_status: b.status.as_str().to_string(),
            build_count: builds.len() as u64,
            aliases: vec![t.name.clone()],
            names: vec![t.name.clone()],
            public: t.public,
            cpu_count: b.cpu_count,
            memory_mb: b.memory_mb,
            disk_size_mb: b.disk_mb,
            envd_version: state.config.envd_version.clone(),
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
            last_spawned_at: t.last_spawned_at.map(rfc3339),
            spawn_count: t.spawn_count,
            created_by: None,
        });
    }
    Ok(Json(out))
}

/// `GET /templates/{id}`: a template with its builds, newest first.
pub async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TemplateWithBuilds>, ApiError> {
    let t = required_template(&state, &caller, &id).await?;
    let builds = state.store.builds_of(&t.id).await?;
    Ok(Json(TemplateWithBuilds {
        template_id: t.id.clone(),
        aliases: vec![t.name.clone()],
        names: vec![t.name.clone()],
        public: t.public,
        builds: builds.iter().map(|b| build_item(&state, b)).collect(),
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
        last_spawned_at: t.last_spawned_at.map(rfc3339),
        spawn_count: t.spawn_count,
    }))
}

/// `DELETE /templates/{id}` of a custom template (snapshots are deleted
/// the same way, see the persistence routes); `false` when the caller has
/// no template by that id or name.
pub(crate) async fn delete_custom(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<bool, ApiError> {
    let Some(t) = team_template(state, caller, id).await? else {
        return Ok(false);
    };
    state.store.delete_template(&t.id).await?;
    tracing::info!(template = %t.id, name = %t.name, "template deleted");
    Ok(true)
}

/// `GET /templates/aliases/{alias}`: 200 when the name is taken (the
/// team's template, or a built-in one), else 404.
pub async fn alias(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(alias): Path<String>,
) -> Result<Json<AliasInfo>, ApiError> {
    if crate::builds::is_builtin(&state, &alias) {
        return Ok(Json(AliasInfo {
            template_id: alias,
            public: true,
        }));
    }
    let t = team_template(&state, &caller, &alias)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("template '{alias}' not found")))?;
    Ok(Json(AliasInfo {
        template_id: t.id,
        public: t.public,
    }))
}

/// `POST /templates/tags`: points `tags` at the build `target`
/// (`name:tag`, `name` meaning its `default`) names.
pub async fn assign_tags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<AssignTags>,
) -> Result<impl IntoResponse, ApiError> {
    let (name, tag) =
        plan::name_and_tag(&req.target, &caller.team.name).map_err(ApiError::bad_request)?;
    if req.tags.is_empty() {
        return Err(ApiError::bad_request("tags: give at least one"));
    }
    check_tags(&req.tags)?;
    let t = state
        .store
        .template_by_name(&caller.team.id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("template '{name}' not found")))?;
    let tag = tag.unwrap_or_else(|| "default".into());
    let build = state
        .store
        .tagged_build(&t.id, &tag)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("template '{name}' has no tag '{tag}'")))?;
    state.store.assign_tags(&t.id, &build.id, &req.tags).await?;
    Ok((
        StatusCode::CREATED,
        Json(AssignedTags {
            build_id: build.id,
            tags: req.tags,
        }),
    ))
}

/// `DELETE /templates/tags`: removes tags of the template `name`.
pub async fn remove_tags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<RemoveTags>,
) -> Result<StatusCode, ApiError> {
    let (name, _) =
        plan::name_and_tag(&req.name, &caller.team.name).map_err(ApiError::bad_request)?;
    let t = state
        .store
        .template_by_name(&caller.team.id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("template '{name}' not found")))?;
    if state.store.remove_tags(&t.id, &req.tags).await? == 0 {
        return Err(ApiError::not_found(format!(
            "template '{name}' has none of the tags {:?}",
            req.tags
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /templates/{id}/tags`.
pub async fn tags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Vec<TagItem>>, ApiError> {
    let t = required_template(&state, &caller, &id).await?;
    Ok(Json(
        state
            .store
            .tags_of(&t.id)
            .await?
            .into_iter()
            .map(|tag| TagItem {
                tag: tag.tag,
                build_id: tag.build_id,
                created_at: rfc3339(tag.created_at),
            })
            .collect(),
    ))
}

/// The ready build a create names by `name[:tag]` or templateID, of the
/// caller's team.
pub(crate) async fn resolve_for_create(
    state: &AppState,
    caller: &Caller,
    asked: &str,
) -> Result<Option<(TemplateRecord, BuildRecord)>, ApiError> {
    let (t, tag) = match state.store.template(asked).await? {
        Some(t) if t.team_id == caller.team.id => (t, None),
        _ => {
            let Ok((name, tag)) = plan::name_and_tag(asked, &caller.team.name) else {
                return Ok(None);
            };
            match state.store.template_by_name(&caller.team.id, &name).await? {
                Some(t) => (t, tag),
                None => return Ok(None),
            }
        }
    };
    let tag = tag.unwrap_or_else(|| "default".into());
    let build = state
        .store
        .tagged_build(&t.id, &tag)
        .await?
        .filter(|b| b.status == BuildStatus::Ready)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "template '{}' has no ready build tagged '{tag}'",
                t.name
            ))
        })?;
    if build.node != state.config.node {
        return Err(ApiError::unavailable(format!(
            "template '{}' was built on node '{}', which this server is not",
            t.name, build.node
        )));
    }
    Ok(Some((t, build)))
}
