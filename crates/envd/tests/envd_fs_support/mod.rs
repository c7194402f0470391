//! Shared by `tests/filesystem.rs` and `tests/files_http.rs`: starts the
//! built `envd` on a free port, speaks plain HTTP and Connect (JSON codec)
//! to it, and provides the `user` account the SDKs act as by default.

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A running envd, killed and reaped on drop.
pub struct Envd {
    child: Child,
    pub port: u16,
    pub token: Option<String>,
    _init_dir: tempfile::TempDir,
}

impl Envd {
    /// Starts envd with an init file carrying `token` and `default_user`, and
    /// returns once envd reports (on `--ready-fd`) that it listens.
    pub fn start(token: Option<&str>, default_user: &str) -> Envd {
        let init_dir = tempfile::tempdir().unwrap();
        let init_file = init_dir.path().join("init.json");
        let mut init =
            serde_json::json!({ "defaultUser": default_user, "envVars": {"SANDBAR_TEST": "1"} });
        if let Some(token) = token {
            init["accessToken"] = token.into();
        }
        std::fs::write(&init_file, init.to_string()).unwrap();

        let port = free_port();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(
            &read_end,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_envd"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--init-file")
            .arg(&init_file)
            .arg("--ready-fd")
            .arg(write_end.as_raw_fd().to_string())
            .env("ENVD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting envd");
        drop(write_end);
        let envd = Envd {
            child,
            port,
            token: token.map(str::to_string),
            _init_dir: init_dir,
        };
        wait_ready(read_end);
        envd
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path_and_query)
    }

    fn auth_headers(&self, user: Option<&str>) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        if let Some(token) = &self.token {
            headers.push(("x-access-token".to_string(), token.clone()));
        }
        if let Some(user) = user {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
            headers.push(("authorization".to_string(), format!("Basic {basic}")));
        }
        headers
    }

    /// A unary Connect call with the JSON codec, as the SDKs make it.
    pub async fn rpc(
        &self,
        method: &str,
        body: serde_json::Value,
        user: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut headers = self.auth_headers(user);
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("connect-protocol-version".into(), "1".into()));
        let (status, _, body) = send(
            Method::POST,
            &self.url(&format!("/filesystem.Filesystem/{method}")),
            &headers,
            body.to_string().into_bytes(),
        )
        .await;
        let value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{method}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, value)
    }

    /// Opens a server-streaming Connect call; read it with [`Envelopes`].
    pub async fn open_stream(
        &self,
        method: &str,
        body: serde_json::Value,
        extra: &[(&str, &str)],
    ) -> Envelopes {
        let payload = body.to_string().into_bytes();
        let mut framed = Vec::with_capacity(payload.len() + 5);
        framed.push(0u8);
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(&payload);
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.url(&format!("/filesystem.Filesystem/{method}")))
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1");
        for (k, v) in self.auth_headers(None) {
            builder = builder.header(k, v);
        }
        for (k, v) in extra {
            builder = builder.header(*k, *v);
        }
        let response = client()
            .request(builder.body(Full::new(Bytes::from(framed))).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method} stream status");
        Envelopes {
            body: response.into_body(),
            buffer: BytesMut::new(),
        }
    }
}

impl Drop for Envd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The frames of a Connect server stream.
pub struct Envelopes {
    body: Incoming,
    buffer: BytesMut,
}

impl Envelopes {
    /// The next envelope's flags and JSON payload, `None` at the end of the body.
    pub async fn next(&mut self) -> Option<(u8, serde_json::Value)> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + len {
                    let flags = self.buffer[0];
                    self.buffer.advance(5);
                    let payload = self.buffer.split_to(len);
                    return Some((flags, serde_json::from_slice(&payload).unwrap()));
                }
            }
            let frame = self.body.frame().await?.ok()?;
            if let Some(data) = frame.data_ref() {
                self.buffer.extend_from_slice(data);
            }
        }
    }

    /// Like `next`, failing the test after `secs` seconds of silence.
    pub async fn next_within(&mut self, secs: u64) -> Option<(u8, serde_json::Value)> {
        tokio::time::timeout(Duration::from_secs(secs), self.next())
            .await
            .expect("stream stayed silent")
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One plain HTTP request; the whole response body is collected.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let response = client()
        .request(builder.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

fn free_port() -> u16 {
    // Bound on all addresses like envd, so the port is free for both.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn wait_ready(read_end: OwnedFd) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut pipe = std::fs::File::from(read_end);
        let mut byte = [0u8; 1];
        let _ = tx.send(pipe.read(&mut byte).map(|n| n == 1).unwrap_or(false));
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("envd did not signal readiness in 20 s");
    assert!(ready, "envd exited before it was ready");
}

/// The `user` account the SDKs act as by default.
pub struct TestUser {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Creates `user` (as the sandbox templates have it) when missing. `None`,
/// with the reason printed, when the tests do not run as root.
pub fn test_user() -> Option<TestUser> {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipping: needs root (to run envd as root and create the 'user' account)");
        return None;
    }
    for _ in 0..50 {
        if let Ok(Some(u)) = nix::unistd::User::from_name("user") {
            return Some(TestUser {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                home: u.dir,
            });
        }
        // Another test binary may be adding it at the same time; the passwd
        // lock then makes this attempt fail and the loop looks again.
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", "user"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("could not create the 'user' account");
}

/// A directory in `user`'s home with a unique name, removed on drop.
pub struct HomeScratch {
    pub path: PathBuf,
}

impl HomeScratch {
    pub fn new(user: &TestUser, tag: &str) -> Self {
        let name = format!(
            "sandbar-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            path: user.home.join(name),
        }
    }

    /// The name relative to the home, as an SDK user would write it.
    pub fn rel(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for HomeScratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A small tmpfs mounted under `under`, unmounted (and its mount point
/// removed) on drop, even when the test fails.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(under: &std::path::Path, size: &str) -> Tmpfs {
        let dir = under.join("tmpfs");
        std::fs::create_dir_all(&dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0777").as_str()),
        )
        .expect("mounting a test tmpfs");
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH)
            .expect("unmounting the test tmpfs");
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Whether anything is still mounted under `path`.
pub fn mounted_under(path: &std::path::Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = path.to_string_lossy();
    mounts.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| m.starts_with(prefix.as_ref()))
    })
}
