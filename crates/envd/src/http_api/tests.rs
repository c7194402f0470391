//! The router in-process (tower `oneshot`), acting as `root` so no extra
//! account is needed; ownership by other users is covered by the
//! integration tests in `tests/files_http.rs`.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::auth::{signature, Operation};
use super::router;
use crate::state::{EnvdState, InitRequest};

fn state(token: Option<&str>) -> Arc<EnvdState> {
    let state = Arc::new(EnvdState::default());
    state.apply_init(InitRequest {
        access_token: token.map(str::to_string),
        default_user: Some("root".into()),
        env_vars: Some([("FOO".to_string(), "bar".to_string())].into()),
        ..Default::default()
    });
    state
}

async fn send(
    state: &Arc<EnvdState>,
    request: Request<Body>,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn multipart(parts: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----sandbar-test-boundary";
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn health_is_204_without_auth() {
    let st = state(Some("tok"));
    let (status, _, body) = send(&st, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
}

#[tokio::test]
async fn envs_need_the_token() {
    let st = state(Some("tok"));
    let (status, _, body) = send(&st, Request::get("/envs").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["code"], 401);

    let request = Request::get("/envs")
        .header("X-Access-Token", "tok")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!({"FOO": "bar"}));
}

#[tokio::test]
async fn init_is_open_until_a_token_is_set_then_needs_it() {
    let st = Arc::new(EnvdState::default());
    let request = Request::post("/init")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"accessToken":"t1","envVars":{"A":"1"},"defaultUser":"root"}"#,
        ))
        .unwrap();
    let (status, _, _) = send(&st, request).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(st.access_token().as_deref(), Some("t1"));
    assert_eq!(st.env_vars().get("A").map(String::as_str), Some("1"));

    let hijack = Request::post("/init")
        .body(Body::from(r#"{"accessToken":"evil"}"#))
        .unwrap();
    let (status, _, body) = send(&st, hijack).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["code"], 401);
    assert_eq!(st.access_token().as_deref(), Some("t1"));

    let rotate = Request::post("/init")
        .header("X-Access-Token", "t1")
        .body(Body::from(r#"{"accessToken":"t2"}"#))
        .unwrap();
    assert_eq!(send(&st, rotate).await.0, StatusCode::NO_CONTENT);
    assert_eq!(st.access_token().as_deref(), Some("t2"));

    let newer = Request::post("/init")
        .header("X-Access-Token", "t2")
        .body(Body::from(
            r#"{"envVars":{"B":"new"},"timestamp":"2026-01-02T00:00:00Z"}"#,
        ))
        .unwrap();
    assert_eq!(send(&st, newer).await.0, StatusCode::NO_CONTENT);
    let stale = Request::post("/init")
        .header("X-Access-Token", "t2")
        .body(Body::from(
            r#"{"envVars":{"B":"old"},"timestamp":"2026-01-01T00:00:00.5+00:00"}"#,
        ))
        .unwrap();
    assert_eq!(send(&st, stale).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        st.env_vars().get("B").map(String::as_str),
        Some("new"),
        "a stale init is ignored"
    );

    let garbage = Request::post("/init")
        .header("X-Access-Token", "t2")
        .body(Body::from("{not json"))
        .unwrap();
    let (status, _, body) = send(&st, garbage).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["code"], 400);
}

#[tokio::test]
async fn write_then_read_with_the_token() {
    let st = state(Some("tok"));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("nested/deeper/a.txt");
    let uri = format!("/files?path={}", enc(target.to_str().unwrap()));

    let (ct, body) = multipart(&[("file", target.to_str().unwrap(), b"hello")]);
    let request = Request::post(&uri)
        .header("content-type", ct)
        .header("X-Access-Token", "tok")
        .body(Body::from(body))
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json(&body),
        serde_json::json!([{"path": target.to_str().unwrap(), "name": "a.txt", "type": "file"}])
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"hello");

    let request = Request::get(&uri)
        .header("X-Access-Token", "tok")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"hello");
    assert_eq!(headers["content-disposition"], "inline; filename=a.txt");
    assert_eq!(headers["content-type"], "text/plain");

    // Overwrite truncates.
    let request = Request::post(&uri)
        .header("content-type", "application/octet-stream")
        .header("X-Access-Token", "tok")
        .body(Body::from("hi"))
        .unwrap();
    assert_eq!(send(&st, request).await.0, StatusCode::OK);
    assert_eq!(std::fs::read(&target).unwrap(), b"hi");
}

#[tokio::test]
async fn multipart_filenames_are_full_paths_and_many_files_fit_one_request() {
    let st = state(None);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("one/a.bin");
    let b = dir.path().join("two/three/b.bin");
    let (ct, body) = multipart(&[
        ("file", a.to_str().unwrap(), b"AAA"),
        ("other", "ignored", b"zzz"),
        ("file", b.to_str().unwrap(), &[0u8, 1, 2, 255]),
    ]);
    let request = Request::post("/files")
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let listed = json(&body);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["path"], b.to_str().unwrap());
    assert_eq!(listed[1]["name"], "b.bin");
    assert_eq!(std::fs::read(&a).unwrap(), b"AAA");
    assert_eq!(std::fs::read(&b).unwrap(), [0u8, 1, 2, 255]);

    // The same path twice in one request is refused.
    let (ct, body) = multipart(&[
        ("file", a.to_str().unwrap(), b"1"),
        ("file", a.to_str().unwrap(), b"2"),
    ]);
    let request = Request::post("/files")
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["code"], 400);
}

#[tokio::test]
async fn relative_names_resolve_against_the_users_home() {
    let st = state(None);
    let name = format!("sandbar-upload-test-{}.txt", std::process::id());
    let (ct, body) = multipart(&[("file", &name, b"x")]);
    let request = Request::post("/files")
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let home = crate::users::lookup("root").unwrap().home;
    let expected = home.join(&name);
    assert_eq!(json(&body)[0]["path"], expected.to_str().unwrap());
    assert!(expected.exists());
    std::fs::remove_file(expected).unwrap();
}

#[tokio::test]
async fn gzip_octet_stream_is_decoded() {
    let st = state(None);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("z.txt");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&b"compressed content ".repeat(1000)).unwrap();
    let compressed = gz.finish().unwrap();
    let request = Request::post(format!("/files?path={}", enc(target.to_str().unwrap())))
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "gzip")
        .body(Body::from(compressed))
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"compressed content ".repeat(1000)
    );

    let request = Request::post(format!("/files?path={}", enc(target.to_str().unwrap())))
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "br")
        .body(Body::from("x"))
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["code"], 400);
}

#[tokio::test]
async fn read_errors_are_json() {
    let st = state(None);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let request = Request::get(format!("/files?path={}", enc(missing.to_str().unwrap())))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        json(&body),
        serde_json::json!({"code": 404, "message": format!("path '{}' does not exist", missing.display())})
    );

    let request = Request::get(format!("/files?path={}", enc(dir.path().to_str().unwrap())))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["code"], 400);

    let request = Request::get("/files?path=x&username=no-such-user-here")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["code"], 401);

    let request = Request::post("/files?path=x")
        .header("content-type", "text/plain")
        .body(Body::from("x"))
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["code"], 400);

    let request = Request::post("/files")
        .header("content-type", "application/octet-stream")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(send(&st, request).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn signed_urls() {
    let st = state(Some("secret"));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("signed.txt");
    std::fs::write(&target, b"signed content").unwrap();
    let path = target.to_str().unwrap();

    let sig = signature(path, Operation::Read, "", "secret", None);
    let uri = format!("/files?path={}&signature={}", enc(path), enc(&sig));
    let (status, _, body) = send(&st, Request::get(&uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"signed content");

    // No token, no signature.
    let uri = format!("/files?path={}", enc(path));
    let (status, _, body) = send(&st, Request::get(&uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["code"], 401);

    // A read signature does not write.
    let uri = format!("/files?path={}&signature={}", enc(path), enc(&sig));
    let request = Request::post(&uri)
        .header("content-type", "application/octet-stream")
        .body(Body::from("overwritten"))
        .unwrap();
    assert_eq!(send(&st, request).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(std::fs::read(&target).unwrap(), b"signed content");

    // A write signature with an expiration in the future, for a named user.
    let exp = chrono::Utc::now().timestamp() + 60;
    let sig = signature(path, Operation::Write, "root", "secret", Some(exp));
    let uri = format!(
        "/files?path={}&username=root&signature={}&signature_expiration={exp}",
        enc(path),
        enc(&sig)
    );
    let request = Request::post(&uri)
        .header("content-type", "application/octet-stream")
        .body(Body::from("overwritten"))
        .unwrap();
    assert_eq!(send(&st, request).await.0, StatusCode::OK);
    assert_eq!(std::fs::read(&target).unwrap(), b"overwritten");

    // Expired.
    let exp = chrono::Utc::now().timestamp() - 1;
    let sig = signature(path, Operation::Read, "", "secret", Some(exp));
    let uri = format!(
        "/files?path={}&signature={}&signature_expiration={exp}",
        enc(path),
        enc(&sig)
    );
    let (status, _, body) = send(&st, Request::get(&uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json(&body),
        serde_json::json!({"code": 401, "message": "signature is already expired"})
    );
}

#[tokio::test]
async fn large_downloads_stream_and_honour_ranges() {
    let st = state(None);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("big.bin");
    let data: Vec<u8> = (0..(3 * 1024 * 1024)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&target, &data).unwrap();
    let uri = format!("/files?path={}", enc(target.to_str().unwrap()));

    let response = router(st.clone())
        .oneshot(Request::get(&uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let mut body = response.into_body();
    let mut frames = 0;
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(chunk) = frame.data_ref() {
            frames += 1;
            received.extend_from_slice(chunk);
        }
    }
    assert_eq!(received, data);
    assert!(
        frames > 1,
        "the body arrives in several chunks, not one buffer"
    );

    let request = Request::get(&uri)
        .header("range", "bytes=10-19")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&st, request).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &data[10..20]);
}
