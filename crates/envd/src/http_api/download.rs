//! `GET /files`: a file's raw bytes, streamed from disk (Range and
//! conditional requests are honoured by tower-http's `ServeFile`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{HeaderValue, CONTENT_DISPOSITION};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::auth::Operation;
use super::error::ApiError;
use super::{authorize_and_identify, resolve_path, FilesQuery};
use crate::filesystem::error::FsError;
use crate::state::EnvdState;

pub async fn download(
    State(state): State<Arc<EnvdState>>,
    query: Result<Query<FilesQuery>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let query = FilesQuery::from_extractor(query)?;
    let user = authorize_and_identify(&state, request.headers(), &query, Operation::Read)?;
    let path = resolve_path(&state, query.path.as_deref().unwrap_or(""), &user)?;

    let checked = path.clone();
    tokio::task::spawn_blocking(move || check_readable_file(&checked))
        .await
        .map_err(|e| ApiError::internal(format!("file check failed: {e}")))??;

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let response = ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::internal(format!("reading '{}': {e}", path.display())))?;
    let mut response = response.map(Body::new).into_response();
    if response.status().is_success() {
        if let Ok(value) = HeaderValue::from_str(&content_disposition(&name)) {
            response.headers_mut().insert(CONTENT_DISPOSITION, value);
        }
    }
    tracing::debug!(path = %path.display(), user = %user.name, status = response.status().as_u16(), "file read");
    Ok(response)
}

fn check_readable_file(path: &Path) -> Result<PathBuf, ApiError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(ApiError::bad_request(format!(
            "path '{}' is a directory",
            path.display()
        ))),
        Ok(_) => Ok(path.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
            http::StatusCode::NOT_FOUND,
            format!("path '{}' does not exist", path.display()),
        )),
        Err(e) => Err(FsError::io(format!("checking '{}'", path.display()), e).into()),
    }
}

/// Characters that may stand unquoted in a header parameter (RFC 2045 token).
fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c)
}

/// Beyond alphanumerics, RFC 5987 lets these stand unescaped in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `inline; filename=<name>`, quoted when needed and in RFC 5987 form for
/// non-ASCII names (as Go's `mime.FormatMediaType`, which E2B uses).
pub fn content_disposition(name: &str) -> String {
    if !name.is_empty() && name.chars().all(is_token_char) {
        format!("inline; filename={name}")
    } else if name.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("inline; filename=\"{escaped}\"")
    } else {
        format!(
            "inline; filename*=utf-8''{}",
            utf8_percent_encode(name, ATTR_CHAR)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_forms() {
        assert_eq!(content_disposition("a.txt"), "inline; filename=a.txt");
        assert_eq!(
            content_disposition("my file.txt"),
            "inline; filename=\"my file.txt\""
        );
        assert_eq!(
            content_disposition("q\"uote"),
            "inline; filename=\"q\\\"uote\""
        );
        assert_eq!(
            content_disposition("résumé.pdf"),
            "inline; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"
        );
    }
}
