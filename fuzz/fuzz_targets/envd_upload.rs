//! Feeds a `POST /files` request (see `sandbar_fuzz::TextRequest`: query
//! string, headers, multipart or raw body in `X-Fuzz-Chunk`-byte pieces;
//! `X-Fuzz-Sign` puts the right URL signature in, `X-Fuzz-Workdir` sets the
//! sandbox's default workdir) through the parsing steps of envd's upload
//! handler (`http_api/upload.rs`), in its order: the query through axum's
//! `Query<FilesQuery>` and `FilesQuery::from_extractor`, the access check
//! (`auth::authorize_file`: token header or URL signature), the
//! `X-Metadata-*` headers (`metadata::from_headers`), the media type, then
//! `multer` over the body as `write_parts` drives it (fields named `file`,
//! the filename or `path` parameter resolved with `resolve_path`, the part
//! read to its end). Only the file writes are left out: the fuzzer would
//! choose what gets written where.
//!
//! Beyond "no panic": the access check passes exactly for the right token or
//! an unexpired right signature; metadata keys are lowercase and came from
//! `X-Metadata-<key>` headers, values printable ASCII; every target path is
//! absolute and normalized; parts never yield more bytes than the body had.

#![no_main]

use std::convert::Infallible;
use std::path::{Component, PathBuf};
use std::time::Duration;

use axum::extract::Query;
use envd::fuzzing::{
    authorize_file, metadata_from_headers, resolve_path, signature, FileAuth, FilesQuery,
    Operation, UserInfo,
};
use envd::state::{EnvdState, InitRequest};
use http::Uri;
use libfuzzer_sys::fuzz_target;
use sandbar_fuzz::TextRequest;

const TOKEN: &str = "fuzz-access-token";
fn check_path(p: &std::path::Path) {
    let mut parts = p.components();
    assert_eq!(parts.next(), Some(Component::RootDir), "{p:?}");
    assert!(parts.all(|c| matches!(c, Component::Normal(_))), "{p:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = TextRequest::parse(data);
    let state = EnvdState::default();
    state.apply_init(InitRequest {
        access_token: Some(TOKEN.into()),
        default_workdir: text.knob_str("workdir").map(str::to_string),
        ..Default::default()
    });
    let user = UserInfo {
        name: "user".into(),
        uid: 1000,
        gid: 1000,
        home: PathBuf::from("/home/user"),
        shell: PathBuf::from("/bin/bash"),
    };

    let Ok(uri) = Uri::try_from(text.target) else {
        return;
    };
    let Ok(mut query) = FilesQuery::from_extractor(Query::<FilesQuery>::try_from_uri(&uri)) else {
        return;
    };
    if text.flag("sign") {
        query.signature = Some(signature(
            query.path.as_deref().unwrap_or(""),
            Operation::Write,
            query.username.as_deref().unwrap_or(""),
            TOKEN,
            query.signature_expiration,
        ));
    }

    let headers = text.header_map();

    // Who may write.
    let auth = FileAuth {
        path: query.path.as_deref().unwrap_or(""),
        username: query.username.as_deref(),
        signature: query.signature.as_deref(),
        expiration: query.signature_expiration,
    };
    let allowed = authorize_file(&state, &headers, &auth, Operation::Write).is_ok();
    let header_token = headers
        .get("x-access-token")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let expected = match header_token {
        Some(t) => t == TOKEN,
        None => query.signature.as_deref().is_some_and(|given| {
            given
                == signature(
                    auth.path,
                    Operation::Write,
                    auth.username.unwrap_or(""),
                    TOKEN,
                    auth.expiration,
                )
                && auth
                    .expiration
                    .is_none_or(|exp| exp >= chrono::Utc::now().timestamp())
        }),
    };
    assert_eq!(allowed, expected, "access check disagrees for {auth:?}");

    // Metadata headers.
    if let Ok(metadata) = metadata_from_headers(&headers) {
        for (k, v) in &metadata {
            assert!(!k.is_empty() && *k == k.to_ascii_lowercase(), "{k:?}");
            assert!(
                headers.contains_key(format!("x-metadata-{k}").as_str()),
                "{k:?}"
            );
            assert!(v.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{v:?}");
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
    let body_len = text.body.len();

    if media_type == "application/octet-stream" {
        if let Some(path) = query.path.as_deref() {
            if let Ok(target) = resolve_path(&state, path, &user) {
                check_path(&target);
            }
        }
        return;
    }
    if !media_type.starts_with("multipart/") {
        return;
    }
    let Ok(boundary) = multer::parse_boundary(content_type) else {
        return;
    };
    let stream = futures::stream::iter(
        text.body_chunks()
            .into_iter()
            .map(Ok::<_, Infallible>)
            .collect::<Vec<_>>(),
    );
    let mut multipart = multer::Multipart::new(stream, boundary);
    let path_param = query.path.clone();
    sandbar_fuzz::runtime().block_on(async {
        let parse = async {
            let mut written: Vec<PathBuf> = Vec::new();
            let mut read = 0usize;
            loop {
                let Ok(Some(mut field)) = multipart.next_field().await else {
                    break;
                };
                if field.name() != Some("file") {
                    continue;
                }
                let requested = match &path_param {
                    Some(path) => path.clone(),
                    None => match field.file_name() {
                        Some(name) => name.to_string(),
                        None => break,
                    },
                };
                let Ok(target) = resolve_path(&state, &requested, &user) else {
                    break;
                };
                check_path(&target);
                if written.contains(&target) {
                    break;
                }
                // As write_file reads the part: to its end or to an error.
                while let Ok(Some(bytes)) = field.chunk().await {
                    read += bytes.len();
                }
                assert!(read <= body_len, "parts yielded more than the body had");
                written.push(target);
            }
        };
        tokio::time::timeout(Duration::from_secs(3), parse)
            .await
            .expect("multipart parsing did not finish within 3 s");
    });
});
