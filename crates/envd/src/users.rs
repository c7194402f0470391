//! Resolving the user a request acts as (Basic auth `user:`), from the
//! sandbox's own /etc/passwd.

use std::path::PathBuf;

use base64::Engine;
use http::HeaderMap;

#[derive(Debug, Clone)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid user: '{0}'")]
pub struct UnknownUser(pub String);

/// Looks a user up by name in the passwd database.
pub fn lookup(name: &str) -> Result<UserInfo, UnknownUser> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(UserInfo {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell,
        }),
        _ => Err(UnknownUser(name.to_string())),
    }
}

/// The user named by `Authorization: Basic base64("<user>:")`, if any.
pub fn from_basic_auth(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or_default();
    (!user.is_empty()).then(|| user.to_string())
}
