//! `POST /files`: writes uploaded files, as `multipart/form-data` (parts
//! named `file`, each part's filename being its full target path unless the
//! `path` parameter names one) or as a raw `application/octet-stream` body.
//! Bodies are streamed to disk; a gzip `Content-Encoding` is undone by the
//! router's decompression layer before the handler sees the body.
//!
//! `X-Metadata-<key>: <value>` request headers become the written files'
//! metadata (see `filesystem::metadata`): every file of the request gets the
//! same set, replacing whatever it had, and it is echoed in the response.

use std::fmt::Display;
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::HeaderMap;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::auth::Operation;
use super::error::ApiError;
use super::{authorize_and_identify, resolve_path, FilesQuery};
use crate::filesystem::error::FsError;
use crate::filesystem::metadata::{self, Metadata};
use crate::filesystem::paths::ensure_dirs;
use crate::state::EnvdState;
use crate::users::UserInfo;

/// One written file, as the SDKs expect it back.
#[derive(Debug, Serialize)]
pub struct WrittenFile {
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The metadata the file now carries; left out when there is none, as
    /// E2B does (the SDKs map a missing map to `undefined`/`None`).
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

impl WrittenFile {
    fn new(path: &Path, metadata: &Metadata) -> Self {
        Self {
            path: path.to_string_lossy().into_owned(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind: "file",
            metadata: metadata.clone(),
        }
    }
}

pub async fn upload(
    State(state): State<Arc<EnvdState>>,
    query: Result<Query<FilesQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<WrittenFile>>, ApiError> {
    let query = FilesQuery::from_extractor(query)?;
    let user = authorize_and_identify(&state, &headers, &query, Operation::Write)?;
    // Checked before any byte is written, so bad metadata changes nothing.
    let metadata = metadata::from_headers(&headers)?;

    // gzip was already decoded (and its header removed) by the router's layer.
    if let Some(encoding) = headers.get(http::header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("").trim();
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(ApiError::bad_request(format!(
                "unsupported Content-Encoding: {encoding}, supported: gzip"
            )));
        }
    }

    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();

    let written = if media_type == "application/octet-stream" {
        let Some(path) = query.path.as_deref() else {
            return Err(ApiError::bad_request(
                "path query parameter is required for raw body upload",
            ));
        };
        let target = resolve_path(&state, path, &user)?;
        write_file(&target, &user, &metadata, body.into_data_stream()).await?;
        vec![WrittenFile::new(&target, &metadata)]
    } else if media_type.starts_with("multipart/") {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| ApiError::bad_request(format!("invalid multipart Content-Type: {e}")))?;
        let multipart = multer::Multipart::new(body.into_data_stream(), boundary);
        write_parts(&state, &user, query.path.as_deref(), &metadata, multipart).await?
    } else {
        return Err(ApiError::bad_request(format!(
            "unsupported content type: '{content_type}', expected multipart/form-data or application/octet-stream"
        )));
    };
    tracing::debug!(user = %user.name, files = written.len(), "files written");
    Ok(Json(written))
}

async fn write_parts(
    state: &EnvdState,
    user: &UserInfo,
    path_param: Option<&str>,
    metadata: &Metadata,
    mut multipart: multer::Multipart<'static>,
) -> Result<Vec<WrittenFile>, ApiError> {
    let mut written: Vec<WrittenFile> = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("error reading multipart form: {e}")))?;
        let Some(field) = field else { break };
        if field.name() != Some("file") {
            continue;
        }
        // The filename is the whole target path: the SDKs put it there.
        let requested = match path_param {
            Some(path) => path.to_string(),
            None => field.file_name().map(str::to_string).ok_or_else(|| {
                ApiError::bad_request("filename not found in the part's Content-Disposition header")
            })?,
        };
        let target = resolve_path(state, &requested, user)?;
        let target_str = target.to_string_lossy();
        if written.iter().any(|w| w.path == target_str) {
            return Err(ApiError::bad_request(format!(
                "you cannot upload multiple files to the same path '{target_str}' in one upload request"
            )));
        }
        write_file(&target, user, metadata, field).await?;
        written.push(WrittenFile::new(&target, metadata));
    }
    Ok(written)
}

/// Creates (or truncates) `target` owned by `user`, creating missing parent
/// directories owned by `user`, gives it exactly `metadata`, and streams
/// `chunks` into it. A file left incomplete by an error is removed so it does
/// not hold disk space.
async fn write_file<S, E>(
    target: &Path,
    user: &UserInfo,
    metadata: &Metadata,
    mut chunks: S,
) -> Result<(), ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let path = target.to_path_buf();
    let (uid, gid) = (user.uid, user.gid);
    let metadata = metadata.clone();
    let file = tokio::task::spawn_blocking(move || {
        let file = open_for_write(&path, uid, gid)?;
        // Metadata goes on before the body: a failure then costs no upload,
        // and watchers reporting entries see it from the first write event.
        if let Err(e) = metadata::replace(&file, &path, &metadata) {
            drop(file);
            // Like a failed write: the truncated file is not left behind.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a file whose metadata failed");
            }
            return Err(ApiError::from(e));
        }
        Ok(file)
    })
    .await
    .map_err(|e| ApiError::internal(format!("opening file failed: {e}")))??;
    let mut file = tokio::fs::File::from_std(file);

    let result = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("error reading request body: {e}")))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| write_error(target, e))?;
        }
        file.flush().await.map_err(|e| write_error(target, e))
    }
    .await;

    if result.is_err() {
        drop(file);
        if let Err(e) = tokio::fs::remove_file(target).await {
            tracing::warn!(path = %target.display(), error = %e, "could not remove a partly written file");
        }
    }
    result
}

fn write_error(target: &Path, e: std::io::Error) -> ApiError {
    match FsError::io(format!("writing '{}'", target.display()), e) {
        FsError::NoSpace { context, source } => ApiError::new(
            http::StatusCode::INSUFFICIENT_STORAGE,
            format!("not enough disk space available: {context}: {source}"),
        ),
        other => other.into(),
    }
}

fn open_for_write(path: &Path, uid: u32, gid: u32) -> Result<std::fs::File, ApiError> {
    if let Some(parent) = path.parent() {
        ensure_dirs(parent, uid, gid)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(ApiError::bad_request(format!(
            "path '{}' is a directory",
            path.display()
        )));
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(
            |e| match FsError::io(format!("opening '{}'", path.display()), e) {
                FsError::NoSpace { context, source } => ApiError::new(
                    http::StatusCode::INSUFFICIENT_STORAGE,
                    format!("not enough disk space or inodes available: {context}: {source}"),
                ),
                other => other.into(),
            },
        )?;
    let meta = file
        .metadata()
        .map_err(|e| FsError::io(format!("checking '{}'", path.display()), e))?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .map_err(|e| FsError::io(format!("changing owner of '{}'", path.display()), e))?;
    }
    Ok(file)
}
