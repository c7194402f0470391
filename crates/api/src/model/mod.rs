//! The wire shapes of E2B's control-plane API (field names as the SDKs send
//! and parse them; see the protocol notes, section 2).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub mod templates;

/// `POST /sandboxes` and `POST /v2/sandboxes`. Unknown fields are ignored
/// (newer SDKs send more than we use).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: Option<String>,
    /// Seconds; fractional values round up.
    pub timeout: Option<f64>,
    pub auto_pause: Option<bool>,
    /// With `autoPause`: keep memory (default) or only files.
    pub auto_pause_memory: Option<bool>,
    /// Absent means secured: current SDKs no longer send it and E2B always
    /// secures envd; only an explicit `false` (old SDKs) turns the token off.
    pub secure: Option<bool>,
    /// snake_case on the wire, unlike its neighbours.
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub network: Option<NetworkConfig>,
    /// Features sandbar does not have; refused when set rather than ignored.
    pub mcp: Option<serde_json::Value>,
    pub iam: Option<serde_json::Value>,
    pub volume_mounts: Option<serde_json::Value>,
    /// `{enabled: bool}`.
    pub auto_resume: Option<AutoResume>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct AutoResume {
    #[serde(default)]
    pub enabled: bool,
}

/// `POST /sandboxes/{id}/pause`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseBody {
    /// `true` (default): keep processes and memory; `false`: only files.
    /// (`requireHealthyGuest` needs no handling: a pause here never depends
    /// on envd answering.)
    pub memory: Option<bool>,
}

/// `POST /sandboxes/{id}/resume` (old SDKs) and `connect`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeBody {
    pub timeout: Option<f64>,
    /// `false`: boot afresh on the files even after a full pause.
    pub memory: Option<bool>,
}

/// `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotBody {
    pub name: Option<String>,
    pub memory: Option<bool>,
}

/// What snapshot calls answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

/// `POST /sandboxes/{id}/fork`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForkBody {
    pub count: Option<u32>,
    pub timeout: Option<f64>,
}

/// One fork's outcome: a sandbox or an error, never both.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForkResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorShape>,
}

#[derive(Debug, Serialize)]
pub struct ErrorShape {
    pub code: u16,
    pub message: String,
}

/// `lifecycle` in a sandbox's detail.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleInfo {
    pub auto_resume: bool,
    pub on_timeout: &'static str,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
    /// Kept in the record with its password (a filesystem resume and a
    /// fork need it again); [`NetworkConfig::public`] leaves that out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxyConfig>,
    /// Not supported; refused when set.
    #[serde(skip_serializing)]
    pub rules: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub https_ports: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub dns_servers: Option<serde_json::Value>,
}

/// `network.egressProxy`: a SOCKS5 proxy the sandbox's TCP leaves through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressProxyConfig {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// TLS to the proxy (newer Python SDKs); refused when enabled.
    #[serde(default, skip_serializing)]
    pub tls: Option<serde_json::Value>,
}

impl EgressProxyConfig {
    pub fn policy(&self) -> sandbar_net::EgressProxy {
        sandbar_net::EgressProxy {
            address: self.address.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }
}

impl NetworkConfig {
    /// What clients are shown of a stored network config: the proxy's
    /// password never leaves the server (E2B answers the same way).
    pub fn public(stored: &serde_json::Value) -> serde_json::Value {
        let mut shown = stored.clone();
        if let Some(proxy) = shown
            .get_mut("egressProxy")
            .and_then(serde_json::Value::as_object_mut)
        {
            proxy.remove("password");
        }
        shown
    }
}

/// `PUT /sandboxes/{id}/network`: replaces every egress setting; what is
/// left out is cleared (E2B's rule).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkUpdate {
    pub allow_out: Option<Vec<String>>,
    pub deny_out: Option<Vec<String>>,
    pub egress_proxy: Option<EgressProxyConfig>,
    #[serde(alias = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// Not supported; refused when set.
    pub rules: Option<serde_json::Value>,
    pub dns_servers: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct TimeoutBody {
    pub timeout: f64,
}

#[derive(Debug, Deserialize)]
pub struct RefreshBody {
    pub duration: Option<f64>,
}

/// The fields every sandbox answer starts with (create, connect, get, list).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxIdentity {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub envd_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// What create and connect answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    #[serde(flatten)]
    pub identity: SandboxIdentity,
    pub traffic_access_token: Option<String>,
}

/// `GET /sandboxes/{id}` and the list entries (a superset of both shapes).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(flatten)]
    pub identity: SandboxIdentity,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub state: String,
    pub metadata: BTreeMap<String, String>,
    pub allow_internet_access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<serde_json::Value>,
    pub lifecycle: LifecycleInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_mode: Option<String>,
}

/// A list entry (`ListedSandbox`): the detail fields without the access
/// token, the domain and the network, as E2B lists them. Tokens are handed
/// out by create, connect and get, to the owner only.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub envd_version: String,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub state: String,
    pub metadata: BTreeMap<String, String>,
}

/// `GET /teams`, as the E2B CLI reads it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamInfo {
    #[serde(rename = "teamID")]
    pub team_id: String,
    pub name: String,
    pub api_key: String,
    pub is_default: bool,
}

/// `GET /sandboxes/metrics`.
#[derive(Debug, Serialize)]
pub struct SandboxesWithMetrics {
    pub sandboxes: BTreeMap<String, SandboxMetric>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// `GET /sandboxes/{id}/logs` query.
#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    /// Unix milliseconds.
    pub start: Option<i64>,
    pub limit: Option<usize>,
}

/// `GET /v2/sandboxes/{id}/logs` query.
#[derive(Debug, Default, Deserialize)]
pub struct LogsQueryV2 {
    /// Unix milliseconds.
    pub cursor: Option<i64>,
    pub limit: Option<usize>,
    pub direction: Option<String>,
    pub level: Option<String>,
    pub search: Option<String>,
}

/// `GET /sandboxes/{id}/logs`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxLogs {
    pub logs: Vec<serde_json::Value>,
    pub log_entries: Vec<serde_json::Value>,
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
