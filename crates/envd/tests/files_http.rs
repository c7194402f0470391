//! envd's plain-HTTP endpoints (`/health`, `/envs`, `/init`, `/files`)
//! against the built binary. Needs root (envd hands files to `user`).

mod envd_fs_support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use envd_fs_support::{mounted_under, send, test_user, Envd, HomeScratch, Tmpfs};
use http::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn token(envd: &Envd) -> Vec<(String, String)> {
    vec![("x-access-token".into(), envd.token.clone().unwrap())]
}

fn with(mut headers: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    headers.push((name.into(), value.into()));
    headers
}

fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "sandbarBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (filename, data) in files {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn json_body(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn signature(path: &str, op: &str, user: &str, token: &str, expiration: Option<i64>) -> String {
    use base64::Engine;
    let raw = match expiration {
        Some(exp) => format!("{path}:{op}:{user}:{token}:{exp}"),
        None => format!("{path}:{op}:{user}:{token}"),
    };
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes()))
    )
}

#[tokio::test]
async fn health_envs_and_init() {
    let Some(_user) = test_user() else { return };
    let envd = Envd::start(Some("http-token"), "user");

    let (status, _, body) = send(Method::GET, &envd.url("/health"), &[], vec![]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());

    let (status, _, body) = send(Method::GET, &envd.url("/envs"), &[], vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(&body)["code"], 401);
    let (status, _, body) = send(Method::GET, &envd.url("/envs"), &token(&envd), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_body(&body)["SANDBAR_TEST"], "1");

    let takeover = json!({"accessToken": "stolen"}).to_string().into_bytes();
    let (status, _, _) = send(Method::POST, &envd.url("/init"), &[], takeover).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "once a token is set, /init needs it"
    );

    let update = json!({"envVars": {"ADDED": "yes"}})
        .to_string()
        .into_bytes();
    let (status, _, _) = send(Method::POST, &envd.url("/init"), &token(&envd), update).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, _, body) = send(Method::GET, &envd.url("/envs"), &token(&envd), vec![]).await;
    assert_eq!(json_body(&body)["ADDED"], "yes");
}

#[tokio::test]
async fn upload_and_download_as_user() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(Some("files-token"), "user");
    let scratch = HomeScratch::new(&user, "files");
    let rel = scratch.rel();

    // Several files in one request, each part's filename its full path,
    // relative names taken from the home.
    let (ct, body) = multipart(&[
        (&format!("{rel}/deep/er/a.txt"), b"first file"),
        (&format!("{}/b.json", scratch.path.display()), br#"{"b":1}"#),
    ]);
    let (status, _, resp) = send(
        Method::POST,
        &envd.url("/files"),
        &with(token(&envd), "content-type", &ct),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    let a = scratch.path.join("deep/er/a.txt");
    assert_eq!(
        json_body(&resp),
        json!([
            {"path": a.to_str().unwrap(), "name": "a.txt", "type": "file"},
            {"path": scratch.path.join("b.json").to_str().unwrap(), "name": "b.json", "type": "file"},
        ])
    );
    for owned in [
        scratch.path.clone(),
        scratch.path.join("deep"),
        scratch.path.join("deep/er"),
        a.clone(),
    ] {
        let meta = std::fs::metadata(&owned).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (user.uid, user.gid),
            "{} owned by user",
            owned.display()
        );
    }
    assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o777, 0o644);

    let uri = envd.url(&format!(
        "/files?path={}",
        enc(&format!("{rel}/deep/er/a.txt"))
    ));
    let (status, headers, body) = send(Method::GET, &uri, &token(&envd), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"first file");
    assert_eq!(headers["content-disposition"], "inline; filename=a.txt");
    assert_eq!(headers["content-type"], "text/plain");

    // A raw body to an existing, root-owned file: truncated and handed to user.
    std::fs::write(&a, b"a much longer previous content").unwrap();
    std::os::unix::fs::chown(&a, Some(0), Some(0)).unwrap();
    let uri = envd.url(&format!("/files?path={}", enc(a.to_str().unwrap())));
    let headers = with(token(&envd), "content-type", "application/octet-stream");
    let (status, _, resp) = send(Method::POST, &uri, &headers, b"short".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(std::fs::read(&a).unwrap(), b"short");
    assert_eq!(std::fs::metadata(&a).unwrap().uid(), user.uid);

    // gzip-encoded raw body.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b"zipped ".repeat(10_000)).unwrap();
    let headers = with(headers, "content-encoding", "gzip");
    let (status, _, resp) = send(Method::POST, &uri, &headers, gz.finish().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(std::fs::read(&a).unwrap(), b"zipped ".repeat(10_000));

    // Acting as root through the username parameter.
    let root_file = scratch.path.join("as-root.txt");
    let uri = envd.url(&format!(
        "/files?path={}&username=root",
        enc(root_file.to_str().unwrap())
    ));
    let headers = with(token(&envd), "content-type", "application/octet-stream");
    let (status, _, _) = send(Method::POST, &uri, &headers, b"r".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(std::fs::metadata(&root_file).unwrap().uid(), 0);
}

#[tokio::test]
async fn file_errors_are_json() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(Some("err-token"), "user");
    let missing = user.home.join("sandbar-definitely-missing.txt");

    let uri = envd.url(&format!("/files?path={}", enc(missing.to_str().unwrap())));
    let (status, _, body) = send(Method::GET, &uri, &token(&envd), vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        json_body(&body),
        json!({"code": 404, "message": format!("path '{}' does not exist", missing.display())})
    );

    let uri = envd.url(&format!("/files?path={}", enc(user.home.to_str().unwrap())));
    let (status, _, body) = send(Method::GET, &uri, &token(&envd), vec![]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&body)["code"], 400);

    let (status, _, body) = send(Method::GET, &uri, &[], vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(&body)["code"], 401);

    let wrong = vec![("x-access-token".to_string(), "nope".to_string())];
    let (status, _, _) = send(Method::GET, &uri, &wrong, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let headers = with(token(&envd), "content-type", "application/json");
    let (status, _, body) = send(
        Method::POST,
        &envd.url("/files?path=x"),
        &headers,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&body)["code"], 400);
}

/// E2B's file metadata (envd 0.6.2): `X-Metadata-*` upload headers become
/// `user.e2b.*` xattrs, echoed by the upload and reported by Stat/ListDir.
#[tokio::test]
async fn upload_metadata_is_stored_echoed_and_replaced() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(Some("meta-token"), "user");
    let scratch = HomeScratch::new(&user, "meta");
    let target = scratch.path.join("tagged.txt");
    let uri = envd.url(&format!("/files?path={}", enc(target.to_str().unwrap())));
    let raw = with(token(&envd), "content-type", "application/octet-stream");

    // Header names arrive in any case; keys come back lowercase.
    let headers = with(
        with(raw.clone(), "X-Metadata-Author", "Mish"),
        "x-metadata-Purpose",
        "a test, with spaces & symbols!",
    );
    let (status, _, resp) = send(Method::POST, &uri, &headers, b"one".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    let both = json!({"author": "Mish", "purpose": "a test, with spaces & symbols!"});
    assert_eq!(
        json_body(&resp),
        json!([{"path": target.to_str().unwrap(), "name": "tagged.txt", "type": "file", "metadata": both}])
    );
    assert_eq!(
        xattr::get(&target, "user.e2b.author").unwrap().as_deref(),
        Some(&b"Mish"[..]),
        "stored as a user.e2b.* extended attribute"
    );
    assert_eq!(std::fs::metadata(&target).unwrap().uid(), user.uid);

    let (status, stat) = envd
        .rpc("Stat", json!({"path": target.to_str().unwrap()}), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stat}");
    assert_eq!(stat["entry"]["metadata"], both);
    let (status, listed) = envd
        .rpc("ListDir", json!({"path": scratch.rel()}), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["entries"][0]["name"], "tagged.txt");
    assert_eq!(listed["entries"][0]["metadata"], both);

    // An upload replaces the whole set: absent keys go.
    let headers = with(raw.clone(), "X-Metadata-Author", "Someone Else");
    let (status, _, resp) = send(Method::POST, &uri, &headers, b"two".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(
        json_body(&resp)[0]["metadata"],
        json!({"author": "Someone Else"})
    );
    let (_, stat) = envd
        .rpc("Stat", json!({"path": target.to_str().unwrap()}), None)
        .await;
    assert_eq!(stat["entry"]["metadata"], json!({"author": "Someone Else"}));

    // An upload without metadata clears it; the field is then left out.
    let (status, _, resp) = send(Method::POST, &uri, &raw, b"three".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        json_body(&resp)[0].get("metadata").is_none(),
        "{}",
        json_body(&resp)
    );
    let (_, stat) = envd
        .rpc("Stat", json!({"path": target.to_str().unwrap()}), None)
        .await;
    assert!(stat["entry"].get("metadata").is_none(), "{stat}");
    assert_eq!(std::fs::read(&target).unwrap(), b"three");

    // Multipart: every file of the request gets the same metadata.
    let (ct, body) = multipart(&[
        (&format!("{}/m1.txt", scratch.rel()), b"1"),
        (&format!("{}/m2.txt", scratch.rel()), b"2"),
    ]);
    let headers = with(
        with(token(&envd), "content-type", &ct),
        "X-Metadata-Batch",
        "7",
    );
    let (status, _, resp) = send(Method::POST, &envd.url("/files"), &headers, body).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    let resp = json_body(&resp);
    assert_eq!(resp[0]["metadata"], json!({"batch": "7"}));
    assert_eq!(resp[1]["metadata"], json!({"batch": "7"}));
    for name in ["m1.txt", "m2.txt"] {
        let (_, stat) = envd
            .rpc(
                "Stat",
                json!({"path": format!("{}/{name}", scratch.rel())}),
                None,
            )
            .await;
        assert_eq!(stat["entry"]["metadata"], json!({"batch": "7"}), "{name}");
    }
}

#[tokio::test]
async fn invalid_upload_metadata_is_a_json_400_and_writes_nothing() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(Some("badmeta-token"), "user");
    let scratch = HomeScratch::new(&user, "badmeta");
    std::fs::create_dir_all(&scratch.path).unwrap();
    let existing = scratch.path.join("keep.txt");
    std::fs::write(&existing, b"original").unwrap();
    xattr::set(&existing, "user.e2b.note", b"original").unwrap();
    let raw = with(token(&envd), "content-type", "application/octet-stream");

    let long_key = format!("x-metadata-{}", "k".repeat(247));
    let big_value = "v".repeat(4096);
    let cases: [(&str, &[u8], &str); 3] = [
        ("x-metadata-note", b"caf\xc3\xa9", "printable US-ASCII"),
        (&long_key, b"v", "limit is 246"),
        ("x-metadata-note", big_value.as_bytes(), "limit is 4096"),
    ];
    for (name, value, expected) in cases {
        for target in [existing.clone(), scratch.path.join("new.txt")] {
            let uri = envd.url(&format!("/files?path={}", enc(target.to_str().unwrap())));
            // Built by hand: `send` takes only UTF-8 header values.
            let request = http::Request::builder()
                .method(Method::POST)
                .uri(&uri)
                .header(name, http::HeaderValue::from_bytes(value).unwrap());
            let request = raw
                .iter()
                .fold(request, |r, (k, v)| r.header(k.as_str(), v.as_str()))
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"replaced",
                )))
                .unwrap();
            let response = envd_fs_support::client().request(request).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
            let body = json_body(&body);
            assert_eq!(body["code"], 400);
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(expected), "{name}: {message}");
        }
        assert_eq!(std::fs::read(&existing).unwrap(), b"original", "{name}");
        assert_eq!(
            xattr::get(&existing, "user.e2b.note").unwrap().as_deref(),
            Some(&b"original"[..])
        );
        assert!(!scratch.path.join("new.txt").exists(), "{name}");
    }
}

#[tokio::test]
async fn signed_urls_as_the_sdk_makes_them() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(Some("sign-token"), "user");
    let scratch = HomeScratch::new(&user, "signed");
    let path = format!("{}/signed.txt", scratch.rel());

    // uploadUrl(path) with no user: signed with "" and no username parameter.
    let sig = signature(&path, "write", "", "sign-token", None);
    let (ct, body) = multipart(&[(&path, b"via signed url")]);
    let uri = envd.url(&format!(
        "/files?path={}&signature={}",
        enc(&path),
        enc(&sig)
    ));
    let (status, _, resp) = send(Method::POST, &uri, &[("content-type".into(), ct)], body).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(
        std::fs::metadata(scratch.path.join("signed.txt"))
            .unwrap()
            .uid(),
        user.uid
    );

    // downloadUrl with an expiration.
    let exp = chrono::Utc::now().timestamp() + 120;
    let sig = signature(&path, "read", "", "sign-token", Some(exp));
    let uri = envd.url(&format!(
        "/files?path={}&signature={}&signature_expiration={exp}",
        enc(&path),
        enc(&sig)
    ));
    let (status, _, body) = send(Method::GET, &uri, &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"via signed url");

    // The same signature does not write, and does not read another path.
    let (status, _, _) = send(
        Method::POST,
        &uri,
        &[("content-type".into(), "application/octet-stream".into())],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = envd.url(&format!(
        "/files?path={}&signature={}&signature_expiration={exp}",
        enc("/etc/shadow"),
        enc(&sig)
    ));
    assert_eq!(
        send(Method::GET, &other, &[], vec![]).await.0,
        StatusCode::UNAUTHORIZED
    );

    let past = chrono::Utc::now().timestamp() - 5;
    let sig = signature(&path, "read", "", "sign-token", Some(past));
    let uri = envd.url(&format!(
        "/files?path={}&signature={}&signature_expiration={past}",
        enc(&path),
        enc(&sig)
    ));
    let (status, _, body) = send(Method::GET, &uri, &[], vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(&body),
        json!({"code": 401, "message": "signature is already expired"})
    );
}

#[tokio::test]
async fn cors_on_preflight_and_responses() {
    let Some(_user) = test_user() else { return };
    let envd = Envd::start(Some("cors-token"), "user");
    let preflight = vec![
        ("origin".to_string(), "https://example.test".to_string()),
        (
            "access-control-request-method".to_string(),
            "POST".to_string(),
        ),
        (
            "access-control-request-headers".to_string(),
            "x-access-token,content-type".to_string(),
        ),
    ];
    let (status, headers, _) = send(
        Method::OPTIONS,
        &envd.url("/files?path=a"),
        &preflight,
        vec![],
    )
    .await;
    assert!(status.is_success(), "preflight status {status}");
    assert_eq!(headers["access-control-allow-origin"], "*");

    let origin = vec![("origin".to_string(), "https://example.test".to_string())];
    let (status, headers, _) = send(Method::GET, &envd.url("/files?path=a"), &origin, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
    assert_eq!(headers["access-control-allow-origin"], "*");
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn large_files_stream_through_without_buffering() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(Some("big-token"), "user");
    let scratch = HomeScratch::new(&user, "big");
    let target = scratch.path.join("big.bin");
    const SIZE: usize = 64 * 1024 * 1024;
    let data: Vec<u8> = (0..SIZE)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let before = peak_rss_kib(envd.pid());

    let uri = envd.url(&format!("/files?path={}", enc(target.to_str().unwrap())));
    let headers = with(token(&envd), "content-type", "application/octet-stream");
    let started = std::time::Instant::now();
    let (status, _, _) = send(Method::POST, &uri, &headers, data.clone()).await;
    let upload = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), SIZE as u64);

    let started = std::time::Instant::now();
    let (status, headers, body) = send(Method::GET, &uri, &token(&envd), vec![]).await;
    let download = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], SIZE.to_string());
    assert_eq!(Sha256::digest(&body), Sha256::digest(&data));

    let grown_mib = (peak_rss_kib(envd.pid()).saturating_sub(before)) / 1024;
    eprintln!(
        "64 MiB: upload {:.0} MiB/s, download {:.0} MiB/s, envd peak RSS grew {grown_mib} MiB",
        64.0 / upload.as_secs_f64(),
        64.0 / download.as_secs_f64()
    );
    assert!(
        grown_mib < 32,
        "envd buffered the file: peak RSS grew {grown_mib} MiB"
    );
}

#[tokio::test]
async fn a_full_disk_is_507() {
    let Some(user) = test_user() else { return };
    let envd = Envd::start(Some("disk-token"), "user");
    let scratch = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(scratch.path(), "1m");
    let target = disk.dir.join("too-big.bin");

    let uri = envd.url(&format!("/files?path={}", enc(target.to_str().unwrap())));
    let headers = with(token(&envd), "content-type", "application/octet-stream");
    let (status, _, body) = send(Method::POST, &uri, &headers, vec![7u8; 4 * 1024 * 1024]).await;
    assert_eq!(
        status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let body = json_body(&body);
    assert_eq!(body["code"], 507);
    assert!(!target.exists(), "the partial file is removed");
    let _ = user;

    drop(disk);
    assert!(!mounted_under(scratch.path()), "test tmpfs left mounted");
}
