//! Test harness: runs the envd binary on a free port and speaks Connect
//! (JSON and binary) to it over HTTP/1.1 with a hyper client.

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Whether tests that start processes as `user` can run here; prints why not.
pub fn can_run_as_user() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: envd must run as root to start processes as `user`");
        return false;
    }
    if nix::unistd::User::from_name("user")
        .ok()
        .flatten()
        .is_none()
    {
        let uid_free = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(1000))
            .ok()
            .flatten()
            .is_none();
        let mut cmd = Command::new("useradd");
        cmd.args(["-m", "-s", "/bin/bash"]);
        if uid_free {
            cmd.args(["-u", "1000"]);
        }
        let status = cmd.arg("user").status();
        // Another test may have created it concurrently: look again.
        if nix::unistd::User::from_name("user")
            .ok()
            .flatten()
            .is_none()
        {
            eprintln!("skipping: no `user` account and useradd failed: {status:?}");
            return false;
        }
    }
    true
}

/// A running envd, killed (with everything it started) on drop.
pub struct Envd {
    child: Child,
    pub port: u16,
    pub client: HttpClient,
    as_pid1: bool,
    _init: Option<tempfile::NamedTempFile>,
}

impl Envd {
    pub fn start() -> Self {
        Self::start_with_init(None)
    }

    pub fn start_with_init(init: Option<Value>) -> Self {
        Self::launch(init, false)
    }

    /// Runs envd as PID 1 of a new PID namespace, as in a sandbox (the
    /// namespace, and all in it, dies with it).
    pub fn start_as_pid1() -> Self {
        Self::launch(None, true)
    }

    fn launch(init: Option<Value>, as_pid1: bool) -> Self {
        let init_file = init.map(|init| {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), serde_json::to_vec(&init).unwrap()).unwrap();
            file
        });
        let port = free_port();
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut cmd = if as_pid1 {
            let mut cmd = Command::new("unshare");
            cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .arg(env!("CARGO_BIN_EXE_envd"));
            cmd
        } else {
            Command::new(env!("CARGO_BIN_EXE_envd"))
        };
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--ready-fd")
            .arg("3")
            .env(
                "ENVD_LOG",
                std::env::var("ENVD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        if let Some(file) = &init_file {
            cmd.arg("--init-file").arg(file.path());
        }
        let write_fd = ready_write.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; it puts the pipe at fd 3
        // (without CLOEXEC) in the child only.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(write_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting envd");
        drop(ready_write);
        wait_ready(ready_read);
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            child,
            port,
            client,
            as_pid1,
            _init: init_file,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// A unary Connect call with the JSON codec: (HTTP status, body).
    pub async fn unary(&self, method: &str, body: Value) -> (u16, Value) {
        self.unary_with(method, body, &[]).await
    }

    pub async fn unary_with(
        &self,
        method: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = hyper::Request::post(self.url(&format!("/process.Process/{method}")))
            .header("content-type", "application/json")
            .header("connect-protocol-version", "1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, json)
    }

    /// Opens a server stream (`Start` or `Connect`) with the JSON codec.
    pub async fn stream(&self, method: &str, body: Value, headers: &[(&str, &str)]) -> EventStream {
        let payload = serde_json::to_vec(&body).unwrap();
        let mut req = hyper::Request::post(self.url(&format!("/process.Process/{method}")))
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(envelope(0, &payload))).unwrap();
        let resp = self.client.request(req).await.unwrap();
        EventStream {
            status: resp.status().as_u16(),
            body: resp.into_body(),
            buf: BytesMut::new(),
        }
    }

    /// Starts `bash -c script` and returns its stream, positioned after the
    /// start event, and the pid.
    pub async fn start_bash(
        &self,
        script: &str,
        extra: Value,
        headers: &[(&str, &str)],
    ) -> (EventStream, u32) {
        let mut body = serde_json::json!({
            "process": {"cmd": "/bin/bash", "args": ["-c", script]},
            "stdin": false,
        });
        merge(&mut body, extra);
        let mut stream = self.stream("Start", body, headers).await;
        assert_eq!(stream.status, 200);
        let first = stream.next_event().await.expect("start event");
        let pid = first["start"]["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("not a start event: {first}")) as u32;
        (stream, pid)
    }

    /// Runs `script` with `bash -c` to its end and collects everything it sent.
    pub async fn run_bash(
        &self,
        script: &str,
        extra: Value,
        headers: &[(&str, &str)],
    ) -> Collected {
        self.start_bash(script, extra, headers)
            .await
            .0
            .collect()
            .await
    }
}

impl Drop for Envd {
    fn drop(&mut self) {
        // In a PID namespace `unshare` waits (ignoring SIGTERM) for envd:
        // stop envd itself, and unshare follows.
        let target = if self.as_pid1 {
            first_child(self.child.id()).unwrap_or(self.child.id())
        } else {
            self.child.id()
        };
        let pid = nix::unistd::Pid::from_raw(target as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn first_child(parent: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn merge(base: &mut Value, extra: Value) {
    if let (Value::Object(base), Value::Object(extra)) = (base, extra) {
        for (k, v) in extra {
            match (base.get_mut(&k), v) {
                (Some(existing @ Value::Object(_)), v @ Value::Object(_)) => merge(existing, v),
                (_, v) => {
                    base.insert(k, v);
                }
            }
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn wait_ready(read: OwnedFd) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(read);
        let mut byte = [0u8; 1];
        let _ = tx.send(file.read(&mut byte).map(|n| n == 1));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(true)) => {}
        other => panic!("envd did not signal readiness: {other:?}"),
    }
}

pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The envelopes of a streaming response, read as they arrive.
pub struct EventStream {
    pub status: u16,
    body: Incoming,
    buf: BytesMut,
}

/// One envelope: flags and JSON payload.
#[derive(Debug)]
pub struct Frame {
    pub flags: u8,
    pub json: Value,
}

impl EventStream {
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() >= 5 + len {
                    let flags = self.buf[0];
                    self.buf.advance(5);
                    let payload = self.buf.split_to(len);
                    return Some(Frame {
                        flags,
                        json: serde_json::from_slice(&payload).unwrap(),
                    });
                }
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next process event (`{"start":..}`, `{"data":..}`, ...); None at
    /// the end-of-stream envelope.
    pub async fn next_event(&mut self) -> Option<Value> {
        let frame = self.next_frame().await?;
        if frame.flags & 0x02 != 0 {
            assert_eq!(
                frame.json,
                serde_json::json!({}),
                "stream ended with an error"
            );
            return None;
        }
        Some(frame.json["event"].clone())
    }

    /// Reads to the end: (stdout, stderr, pty, keepalives, end event, end-of-stream frame).
    pub async fn collect(mut self) -> Collected {
        let mut out = Collected::default();
        while let Some(frame) = self.next_frame().await {
            if frame.flags & 0x02 != 0 {
                out.trailer = Some(frame.json);
                break;
            }
            let event = &frame.json["event"];
            if let Some(data) = event.get("data") {
                for (key, sink) in [
                    ("stdout", &mut out.stdout),
                    ("stderr", &mut out.stderr),
                    ("pty", &mut out.pty),
                ] {
                    if let Some(b64) = data.get(key).and_then(Value::as_str) {
                        sink.extend(
                            base64::engine::general_purpose::STANDARD
                                .decode(b64)
                                .unwrap(),
                        );
                    }
                }
            } else if event.get("keepalive").is_some() {
                out.keepalives += 1;
            } else if let Some(end) = event.get("end") {
                out.end = Some(end.clone());
            } else if event.get("start").is_some() {
                out.starts += 1;
            }
        }
        out
    }
}

#[derive(Debug, Default)]
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub keepalives: usize,
    pub starts: usize,
    pub end: Option<Value>,
    pub trailer: Option<Value>,
}

impl Collected {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn pty(&self) -> String {
        String::from_utf8_lossy(&self.pty).into_owned()
    }
    pub fn end(&self) -> &Value {
        self.end.as_ref().expect("an end event")
    }
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
