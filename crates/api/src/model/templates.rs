//! The wire shapes of template builds (E2B's `spec/openapi.yml`: the v3
//! build request, file uploads, the v2 build start, build status and logs,
//! templates, aliases and tags).

use serde::{Deserialize, Serialize};

/// `POST /v3/templates` (and `/v2/templates`, which older SDKs use with
/// the same fields).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequest {
    pub name: Option<String>,
    /// Deprecated spelling of `name`.
    pub alias: Option<String>,
    pub tags: Option<Vec<String>>,
    pub cpu_count: Option<i64>,
    #[serde(rename = "memoryMB")]
    pub memory_mb: Option<i64>,
    pub min_free_disk_mb: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequested {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub names: Vec<String>,
    pub aliases: Vec<String>,
    pub tags: Vec<String>,
    pub public: bool,
}

/// `GET /templates/{id}/files/{hash}`.
#[derive(Debug, Serialize)]
pub struct FileUpload {
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `POST /v2/templates/{id}/builds/{buildID}`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStart {
    pub force: Option<bool>,
    pub from_image: Option<String>,
    pub from_image_registry: Option<RegistryAuth>,
    pub from_template: Option<String>,
    pub ready_cmd: Option<String>,
    pub start_cmd: Option<String>,
    pub steps: Option<Vec<StepIn>>,
}

/// `fromImageRegistry`: credentials for the image's registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryAuth {
    #[serde(rename = "type")]
    pub kind: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepIn {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub args: Vec<String>,
    pub files_hash: Option<String>,
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub timestamp: String,
    pub level: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReason {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub log_entries: Vec<LogEntry>,
}

/// `GET /templates/{id}/builds/{buildID}/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub status: String,
    pub log_entries: Vec<LogEntry>,
    /// Deprecated plain lines (E2B leaves it empty too).
    pub logs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<StatusReason>,
}

/// `GET /templates/{id}/builds/{buildID}/logs`.
#[derive(Debug, Serialize)]
pub struct BuildLogs {
    pub logs: Vec<LogEntry>,
}

/// An item of `GET /templates`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateItem {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub build_status: String,
    pub build_count: u64,
    pub aliases: Vec<String>,
    pub names: Vec<String>,
    pub public: bool,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub envd_version: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_spawned_at: Option<String>,
    pub spawn_count: u64,
    pub created_by: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildItem {
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub status: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub envd_version: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// `GET /templates/{id}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateWithBuilds {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub aliases: Vec<String>,
    pub names: Vec<String>,
    pub public: bool,
    pub builds: Vec<BuildItem>,
    pub created_at: String,
    pub updated_at: String,
    pub last_spawned_at: Option<String>,
    pub spawn_count: u64,
}

/// `GET /templates/aliases/{alias}`.
#[derive(Debug, Serialize)]
pub struct AliasInfo {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub public: bool,
}

/// `POST /templates/tags`.
#[derive(Debug, Deserialize)]
pub struct AssignTags {
    pub target: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct AssignedTags {
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub tags: Vec<String>,
}

/// `DELETE /templates/tags`.
#[derive(Debug, Deserialize)]
pub struct RemoveTags {
    pub name: String,
    pub tags: Vec<String>,
}

/// An item of `GET /templates/{id}/tags`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagItem {
    pub tag: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub created_at: String,
}
