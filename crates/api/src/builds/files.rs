//! The files `COPY` steps copy: uploaded by the SDK as a tar (gzipped or
//! not) under the hash it computed, kept per team, and the one-time upload
//! links that let an SDK PUT them without its API key.
//!
//! The hash is the SDK's (paths, modes, sizes and contents of the files
//! the step copies); the server cannot recompute it from the tar, so a
//! team's files are only ever used by that team's builds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;

/// Largest upload one `COPY` may send.
pub const MAX_UPLOAD: u64 = 1 << 30;
/// How long an upload link stays valid.
const LINK_LIFETIME: Duration = Duration::from_secs(3600);

struct Link {
    team_id: String,
    hash: String,
    expires: Instant,
}

pub struct BuildFiles {
    dir: PathBuf,
    links: Mutex<HashMap<String, Link>>,
}

impl BuildFiles {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            links: Mutex::new(HashMap::new()),
        }
    }

    /// A team's directory: a digest of its id, so any id is one safe
    /// path component.
    fn team_dir(&self, team_id: &str) -> PathBuf {
        let d = Sha256::digest(team_id.as_bytes());
        self.dir.join(hex::encode(&d[..12]))
    }

    /// Where the files of `hash` (64 hex digits, checked by the caller) are.
    pub fn path(&self, team_id: &str, hash: &str) -> PathBuf {
        self.team_dir(team_id).join(format!("{hash}.tar"))
    }

    pub fn present(&self, team_id: &str, hash: &str) -> bool {
        self.path(team_id, hash).is_file()
    }

    /// Reads the files of `hash` for a build, marking them used now (what
    /// the sweep goes by).
    pub async fn read_for_build(&self, team_id: &str, hash: &str) -> std::io::Result<Vec<u8>> {
        let path = self.path(team_id, hash);
        let bytes = tokio::fs::read(&path).await?;
        if let Ok(f) = std::fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Ok(bytes)
    }

    /// Removes uploads no build used (or that were not uploaded) since
    /// `before`; how many.
    pub fn remove_unused_since(&self, before: std::time::SystemTime) -> usize {
        let mut removed = 0;
        let Ok(teams) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        for team in teams.flatten() {
            let Ok(files) = std::fs::read_dir(team.path()) else {
                continue;
            };
            for f in files.flatten() {
                let old = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before);
                if old && std::fs::remove_file(f.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// A one-time token for uploading `hash`.
    pub fn grant(&self, team_id: &str, hash: &str) -> String {
        let token = crate::routes::sandboxes::new_token();
        let mut links = self.links.lock().unwrap();
        let now = Instant::now();
        links.retain(|_, l| l.expires > now);
        links.insert(
            token.clone(),
            Link {
                team_id: team_id.to_string(),
                hash: hash.to_string(),
                expires: now + LINK_LIFETIME,
            },
        );
        token
    }

    /// Stores the body of an upload with `token`: exactly `Content-Length`
    /// bytes, written to a temporary file and renamed into place.
    pub async fn receive(
        &self,
        token: &str,
        content_length: Option<u64>,
        body: Body,
    ) -> Result<u64, ApiError> {
        let (team_id, hash) = {
            let links = self.links.lock().unwrap();
            match links.get(token) {
                Some(l) if l.expires > Instant::now() => (l.team_id.clone(), l.hash.clone()),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "this upload link is unknown or expired: ask for a new one (GET /templates/{id}/files/{hash})",
                    ))
                }
            }
        };
        let expected = content_length.ok_or_else(|| {
            ApiError::new(
                StatusCode::LENGTH_REQUIRED,
                "an upload needs its Content-Length",
            )
        })?;
        if expected > MAX_UPLOAD {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("uploads are limited to {} MiB", MAX_UPLOAD >> 20),
            ));
        }
        let dest = self.path(&team_id, &hash);
        let dir = dest.parent().expect("a file in a dir").to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ApiError::internal(format!("making {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".{hash}.{}.part", rand::random::<u32>()));
        let written = write_body(&tmp, expected, body).await;
        match written {
            Ok(n) => {
                tokio::fs::rename(&tmp, &dest)
                    .await
                    .map_err(|e| ApiError::internal(format!("storing the upload: {e}")))?;
                self.links.lock().unwrap().remove(token);
                tracing::info!(files_hash = %hash, bytes = n, "build files uploaded");
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}

async fn write_body(tmp: &std::path::Path, expected: u64, body: Body) -> Result<u64, ApiError> {
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", tmp.display())))?;
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        n += chunk.len() as u64;
        if n > expected {
            return Err(ApiError::bad_request(format!(
                "the upload is longer than its Content-Length ({expected} bytes)"
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("writing the upload: {e}")))?;
    }
    if n != expected {
        return Err(ApiError::bad_request(format!(
            "the upload ended after {n} of its {expected} bytes"
        )));
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::internal(format!("writing the upload: {e}")))?;
    Ok(n)
}
