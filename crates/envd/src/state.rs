//! Sandbox-wide settings that `/init` (or `--init-file`) sets and every
//! service reads: the access token, env vars, default user and workdir.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use serde::Deserialize;

/// Body of `POST /init`, and the content of `--init-file`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub default_user: Option<String>,
    #[serde(default)]
    pub default_workdir: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Only honoured from `--init-file`: what the template runs at start.
    #[serde(default)]
    pub start_cmd: Option<StartCommand>,
}

/// A template's start command (e.g. the code-interpreter server), run once
/// when envd is up.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartCommand {
    pub cmd: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Defaults to root, as E2B runs template start commands.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
}

/// Shared, mutable sandbox-wide configuration.
#[derive(Debug)]
pub struct EnvdState {
    access_token: RwLock<Option<String>>,
    env_vars: RwLock<BTreeMap<String, String>>,
    default_user: RwLock<String>,
    default_workdir: RwLock<Option<String>>,
    /// The newest `timestamp` of an applied `/init`, to refuse replays.
    last_init: Mutex<Option<chrono::DateTime<chrono::FixedOffset>>>,
}

impl Default for EnvdState {
    fn default() -> Self {
        Self {
            access_token: RwLock::new(None),
            env_vars: RwLock::new(BTreeMap::new()),
            default_user: RwLock::new("user".to_string()),
            default_workdir: RwLock::new(None),
            last_init: Mutex::new(None),
        }
    }
}

impl EnvdState {
    /// Applies an init request; absent fields keep their current value.
    pub fn apply_init(&self, init: InitRequest) {
        if let Some(token) = init.access_token {
            *self.access_token.write().unwrap() = (!token.is_empty()).then_some(token);
        }
        if let Some(vars) = init.env_vars {
            self.env_vars.write().unwrap().extend(vars);
        }
        if let Some(user) = init.default_user.filter(|u| !u.is_empty()) {
            *self.default_user.write().unwrap() = user;
        }
        if let Some(dir) = init.default_workdir.filter(|d| !d.is_empty()) {
            *self.default_workdir.write().unwrap() = Some(dir);
        }
    }

    /// Applies `init` unless its `timestamp` (RFC 3339) is older than that of
    /// an `/init` already applied, so a replayed or reordered request cannot
    /// roll the token back. Returns whether it was applied.
    pub fn apply_init_if_newer(&self, init: InitRequest) -> Result<bool, chrono::ParseError> {
        let stamp = init
            .timestamp
            .as_deref()
            .map(chrono::DateTime::parse_from_rfc3339)
            .transpose()?;
        {
            let mut last = self.last_init.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(stamp) = stamp {
                if last.is_some_and(|prev| stamp < prev) {
                    return Ok(false);
                }
                *last = Some(stamp);
            }
        }
        self.apply_init(init);
        Ok(true)
    }

    pub fn access_token(&self) -> Option<String> {
        self.access_token.read().unwrap().clone()
    }

    pub fn env_vars(&self) -> BTreeMap<String, String> {
        self.env_vars.read().unwrap().clone()
    }

    pub fn default_user(&self) -> String {
        self.default_user.read().unwrap().clone()
    }

    pub fn default_workdir(&self) -> Option<String> {
        self.default_workdir.read().unwrap().clone()
    }

    /// True when no token is set or `given` matches it (constant-time compare).
    pub fn token_ok(&self, given: Option<&str>) -> bool {
        match self.access_token.read().unwrap().as_deref() {
            None => true,
            Some(expected) => {
                given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
