//! Shared pieces of the runtime's integration tests: a runtime on the cached
//! `base` template, and a minimal envd client (Connect JSON over a socket
//! from `Catalog::dial`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sandbar_runtime::{
    Catalog, EgressPolicy, Route, Runtime, RuntimeConfig, RuntimeOptions, SandboxSpec,
};

pub const UID_BASE: u32 = 1_000_000;
pub const TEMPLATES: &str = "/var/lib/sandbar/templates";

pub fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sandbar-sandbox-init"))
}

/// envd from the same target dir (`cargo build -p envd`).
pub fn envd() -> PathBuf {
    let p = helper().with_file_name("envd");
    assert!(
        p.is_file(),
        "{} is missing: build it first with `cargo build -p envd`",
        p.display()
    );
    p
}

/// A unique instance name for one test.
pub fn instance(tag: &str) -> String {
    format!("t{tag}{}", std::process::id() % 100_000)
}

pub struct TestRuntime {
    pub rt: Arc<Runtime>,
    pub instance: String,
    pub data: tempfile::TempDir,
    pub net: Option<Arc<sandbar_net::Network>>,
    net_config: Option<sandbar_net::NetConfig>,
}

impl TestRuntime {
    /// Cleanup for a runtime a test started itself (off the node network).
    pub fn adopt(rt: Arc<Runtime>, instance: String, data: tempfile::TempDir) -> Self {
        Self {
            rt,
            instance,
            data,
            net: None,
            net_config: None,
        }
    }
}

impl Drop for TestRuntime {
    /// A failed test leaves no sandbox behind: kill and remove what the
    /// runtime would have at shutdown (its processes die with their cgroup;
    /// mounts die with their mount namespaces).
    fn drop(&mut self) {
        if let Ok(h) = sandbar_runtime::cgroup::Hierarchy::detect() {
            h.remove_instance(&self.instance);
        }
        // The layer store of a runtime that was not shut down (its loop
        // device goes with the mount).
        let _ = nix::mount::umount2(
            &self.data.path().join("store"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        if let Some(cfg) = self.net_config.take() {
            // Network removal is async; run it on a runtime of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(sandbar_net::Network::remove_instance(&cfg))
            })
            .join();
        }
    }
}

/// A node network no other test shares: random instance and a free /24.
pub fn net_config() -> sandbar_net::NetConfig {
    let mut config = sandbar_net::NetConfig::unique('r', 4).expect("a free test subnet");
    // Where this host reaches the registries through special-purpose
    // addresses, they are this network's internet.
    config.public_ranges =
        sandbar_net::special::blocked_addresses_of(sandbar_net::special::WELL_KNOWN_NAMES);
    config
}

/// A runtime on a real node network (internet through NAT, DNS forwarder).
pub async fn runtime_on_network() -> TestRuntime {
    runtime_on_network_with(options()).await
}

pub async fn runtime_on_network_with(options: RuntimeOptions) -> TestRuntime {
    let cfg = net_config();
    let net = sandbar_net::Network::new(cfg.clone())
        .await
        .expect("node network");
    let data = tempfile::Builder::new()
        .prefix("sandbar-rt-")
        .tempdir()
        .unwrap();
    let rt = Runtime::start_with(
        config(&cfg.instance, data.path()),
        Some(net.clone()),
        options,
    )
    .await
    .expect("runtime starts");
    TestRuntime {
        rt,
        instance: cfg.instance.clone(),
        data,
        net: Some(net),
        net_config: Some(cfg),
    }
}

pub fn config(instance: &str, data: &Path) -> RuntimeConfig {
    RuntimeConfig {
        instance: instance.to_string(),
        data_dir: data.to_path_buf(),
        templates_dir: PathBuf::from(TEMPLATES),
        envd_bin: envd(),
        interpreter_bin: None,
        uid_base: UID_BASE,
    }
}

pub fn options() -> RuntimeOptions {
    RuntimeOptions {
        helper_exe: Some(helper()),
        sandbox_client: Some(sandbox_client()),
        ..RuntimeOptions::default()
    }
}

/// What `sandbar serve` wires in: HTTP to envd and the interpreter.
pub fn sandbox_client() -> sandbar_runtime::SandboxClient {
    sandbar_runtime::SandboxClient::new(|stream, r| {
        Box::pin(async move {
            sandbar_sandbox_client::send(stream, r.method, &r.path, r.body, r.token.as_deref())
                .await
                .map(|a| sandbar_runtime::InnerAnswer {
                    status: a.status,
                    body: a.body,
                })
        })
    })
}

pub async fn runtime(tag: &str) -> TestRuntime {
    runtime_with(tag, options()).await
}

pub async fn runtime_with(tag: &str, options: RuntimeOptions) -> TestRuntime {
    let instance = instance(tag);
    let data = tempfile::Builder::new()
        .prefix("sandbar-rt-")
        .tempdir()
        .unwrap();
    let rt = Runtime::start_with(config(&instance, data.path()), None, options)
        .await
        .expect("runtime starts");
    assert!(rt.has_template("base"), "the base template is missing: build it with `cargo run -p sandbar-runtime --example template -- build base`");
    TestRuntime {
        rt,
        instance,
        data,
        net: None,
        net_config: None,
    }
}

pub fn spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        id: id.to_string(),
        template: "base".into(),
        cpu_count: 1,
        memory_mb: 256,
        disk_mb: 256,
        env_vars: BTreeMap::from([("SANDBAR_TEST".to_string(), "yes".to_string())]),
        envd_access_token: None,
        egress: EgressPolicy::default(),
        route: Route::default(),
        base_layer: None,
        auto_resume: false,
        start: Default::default(),
    }
}

#[derive(Debug, Default)]
pub struct Output {
    pub exit_code: i64,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Runs `bash -l -c cmd` through envd's `process.Process/Start` as `user`.
pub async fn exec(rt: &Runtime, id: &str, user: &str, cmd: &str, timeout_ms: u64) -> Output {
    exec_with_token(rt, id, user, cmd, timeout_ms, None).await
}

/// [`exec`] with envd's access token (a sandbox made with one).
pub async fn exec_with_token(
    rt: &Runtime,
    id: &str,
    user: &str,
    cmd: &str,
    timeout_ms: u64,
    token: Option<&str>,
) -> Output {
    let stream = rt.dial(id, 49983).await.expect("dial envd");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let body = serde_json::json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}});
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
    let req = hyper::Request::post("/process.Process/Start")
        .header("host", "localhost")
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .header("connect-timeout-ms", timeout_ms.to_string())
        .header("authorization", format!("Basic {auth}"))
        .header("x-access-token", token.unwrap_or_default())
        .body(Full::new(Bytes::from(envelope(
            0,
            body.to_string().as_bytes(),
        ))))
        .unwrap();
    let resp = sender.send_request(req).await.expect("send");
    assert_eq!(resp.status(), 200, "envd answered {}", resp.status());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let mut out = Output {
        exit_code: i64::MIN,
        ..Default::default()
    };
    let mut rest = &bytes[..];
    let b64 = base64::engine::general_purpose::STANDARD;
    while rest.len() >= 5 {
        let flags = rest[0];
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let msg: serde_json::Value = serde_json::from_slice(&rest[5..5 + len]).unwrap();
        rest = &rest[5 + len..];
        if flags & 2 != 0 {
            assert!(msg.get("error").is_none(), "stream error: {msg}");
            break;
        }
        let ev = &msg["event"];
        if let Some(d) = ev.get("data") {
            if let Some(s) = d.get("stdout").and_then(|v| v.as_str()) {
                out.stdout
                    .push_str(&String::from_utf8_lossy(&b64.decode(s).unwrap()));
            }
            if let Some(s) = d.get("stderr").and_then(|v| v.as_str()) {
                out.stderr
                    .push_str(&String::from_utf8_lossy(&b64.decode(s).unwrap()));
            }
        }
        if let Some(e) = ev.get("end") {
            out.exit_code = e.get("exitCode").and_then(|v| v.as_i64()).unwrap_or(0);
            out.status = e
                .get("status")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
        }
    }
    out
}

/// Directories below the instance's cgroup in every v1 controller / v2.
pub fn cgroup_children(instance: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for ctrl in ["cpu", "cpuacct", "memory", "pids", ""] {
        let dir = Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join(format!("sandbar-{instance}"));
        if let Ok(rd) = std::fs::read_dir(&dir) {
            out.extend(
                rd.flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Host processes whose real uid is `uid`.
pub fn processes_of_uid(uid: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        if uid_line.split_whitespace().nth(1) == Some(&uid.to_string()) {
            pids.push(pid);
        }
    }
    pids
}

/// Host mounts whose line in mountinfo mentions `text` (a path).
pub fn mounts_mentioning(text: &str) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// Host network interfaces whose name starts with `prefix`.
pub fn links_with_prefix(prefix: &str) -> usize {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .count()
}
