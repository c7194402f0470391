//! Feeds an HTTP request (see `sandbar_fuzz::TextRequest`; `{live}` in the
//! target is the live sandbox's id; the right API key is added unless
//! `X-Fuzz-Key: none` or `wrong`) to the
//! control-plane API's real axum router (`sandbar_api::Api::router`, the
//! service the CLI serves) over a real store (SQLite on tmpfs), so bodies go
//! through the handlers' own path: `body.rs` (`JsonBody`/`OptionalJsonBody`),
//! the `model` shapes (`NewSandbox`, `NetworkUpdate`, `TimeoutBody`,
//! `RefreshBody`, `PauseBody`, `ResumeBody`, `SnapshotBody`, `ForkBody`, the
//! template build requests), `timeouts::checked`, the unsupported-field
//! checks, the list query parsers and paging tokens, API-key auth. The node
//! is a stand-in that checks each egress policy the API hands it with the
//! network's own `policy::compile` (what `Network::acquire` and `set_policy`
//! do first) and then makes no sandbox; it pauses, resumes and snapshots
//! what it holds by the runtime's lifecycle rules and answers for unknown
//! ids as the runtime does. One sandbox is kept live (made again when a
//! request kills it or times it out, resumed when one pauses it) so that
//! per-sandbox routes reach their bodies.
//!
//! Beyond "no panic": the API never answers 500 (a handler panic is caught
//! into a 500 and would be missed otherwise) and every error is the
//! `{"code","message"}` JSON with the status as its code.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use sandbar_api::{Api, ApiConfig, SandboxBackend};
use sandbar_fuzz::TextRequest;
use sandbar_net::{EgressEvent, Logged, NetError, Verdict};
use sandbar_runtime::lifecycle::Op;
use sandbar_runtime::{
    BoxFuture, EgressPolicy, LayerError, Metrics, PauseMode, RuntimeError, SandboxInfo,
    SandboxSpec, SnapshotInfo, State,
};
use sandbar_store::{SandboxState, Store};
use tower::ServiceExt;

/// A node that checks policies and makes sandboxes only while the harness
/// asks it to. What it holds moves through the runtime's own lifecycle
/// (`State::next`), and it answers as the runtime does: unknown ids are
/// not found, metrics and egress only for running sandboxes, snapshot
/// layers that sandboxes can start on.
#[derive(Default)]
struct Node {
    accept: AtomicBool,
    held: Mutex<HashMap<String, (SandboxSpec, State)>>,
    layers: Mutex<HashSet<String>>,
    next_layer: AtomicU64,
}

fn check_policy(policy: &EgressPolicy) -> Result<(), RuntimeError> {
    let open = ["10.20.0.0/16".parse().unwrap()];
    let public = ["192.0.2.0/24".parse().unwrap()];
    let (allow_internet, allow, deny) =
        sandbar_net::fuzzing::compile_policy(policy, &open, &public)?;
    assert_eq!(allow_internet, policy.allow_internet);
    assert!(allow.len() <= policy.allow_out.len());
    if policy.allow_internet {
        assert!(deny.len() <= policy.deny_out.len());
    } else {
        // No internet denies everything, whatever denyOut says.
        assert_eq!(deny, [ipnet::Ipv4Net::default()]);
    }
    assert!(
        allow.windows(2).all(|w| w[0] < w[1]),
        "allow not sorted/deduped"
    );
    Ok(())
}

fn info(spec: &SandboxSpec, state: State) -> SandboxInfo {
    SandboxInfo {
        id: spec.id.clone(),
        template: spec.template.clone(),
        cpu_count: spec.cpu_count,
        memory_mb: spec.memory_mb,
        disk_mb: spec.disk_mb,
        started_at: chrono::Utc::now(),
        addr: Some(std::net::Ipv4Addr::new(10, 11, 0, 2)),
        state,
        boot_id: "fuzz".into(),
        restored: false,
    }
}

impl Node {
    fn is_running(&self, id: &str) -> bool {
        matches!(self.state(id), Some(State::Running | State::Snapshotting))
    }

    /// Moves `id` by `op` as the runtime would (the operation in between
    /// takes no time here): the state before it.
    fn step(&self, id: &str, op: Op, done: Op) -> Result<State, RuntimeError> {
        let mut held = self.held.lock().unwrap();
        let (_, state) = held
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let before = *state;
        let during = before.next(id, op, before)?;
        *state = during.next(id, done, before)?;
        Ok(before)
    }
}

impl SandboxBackend for Node {
    fn has_template(&self, name: &str) -> bool {
        name == "base" || name == "code-interpreter-v1"
    }

    fn has_layer(&self, id: &str) -> bool {
        self.layers.lock().unwrap().contains(id)
    }

    fn create(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>> {
        Box::pin(async move {
            check_policy(&spec.egress)?;
            if !self.has_template(&spec.template) {
                return Err(RuntimeError::TemplateNotFound(spec.template));
            }
            if let Some(layer) = spec.base_layer.as_ref().filter(|l| !self.has_layer(l)) {
                return Err(RuntimeError::Layers(LayerError::NotFound(layer.clone())));
            }
            if !self.accept.load(Ordering::SeqCst) {
                return Err(RuntimeError::Net(NetError::Exhausted(
                    "10.11.0.0/16".parse().unwrap(),
                )));
            }
            let mut held = self.held.lock().unwrap();
            if held.contains_key(&spec.id) {
                return Err(RuntimeError::AlreadyExists(spec.id));
            }
            let made = info(&spec, State::Running);
            held.insert(spec.id.clone(), (spec, State::Running));
            Ok(made)
        })
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(async move { Ok(self.held.lock().unwrap().remove(id).is_some()) })
    }

    fn state(&self, id: &str) -> Option<State> {
        self.held.lock().unwrap().get(id).map(|(_, s)| *s)
    }

    fn held(&self) -> Vec<(String, State)> {
        let held = self.held.lock().unwrap();
        held.iter().map(|(id, (_, s))| (id.clone(), *s)).collect()
    }

    fn spec(&self, id: &str) -> Option<SandboxSpec> {
        self.held
            .lock()
            .unwrap()
            .get(id)
            .map(|(spec, _)| spec.clone())
    }

    fn pause<'a>(
        &'a self,
        id: &'a str,
        mode: PauseMode,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.step(id, Op::Pause(mode), Op::Paused(mode))?;
            Ok(())
        })
    }

    fn resume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SandboxInfo, RuntimeError>> {
        Box::pin(async move {
            self.step(id, Op::Resume, Op::Resumed)?;
            let spec = self
                .spec(id)
                .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
            Ok(info(&spec, State::Running))
        })
    }

    fn snapshot<'a>(
        &'a self,
        id: &'a str,
        memory: bool,
    ) -> BoxFuture<'a, Result<SnapshotInfo, RuntimeError>> {
        Box::pin(async move {
            let spec = self
                .spec(id)
                .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
            self.step(id, Op::Snapshot, Op::Snapshotted)?;
            if memory {
                // As a node without CRIU (`memory_snapshots` is false).
                return Err(RuntimeError::Checkpoint("criu is not set up".into()));
            }
            let layer = format!("layer{}", self.next_layer.fetch_add(1, Ordering::SeqCst));
            self.layers.lock().unwrap().insert(layer.clone());
            Ok(SnapshotInfo {
                layer,
                template: spec.template,
                memory,
                cpu_count: spec.cpu_count,
                memory_mb: spec.memory_mb,
                disk_mb: spec.disk_mb,
            })
        })
    }

    fn collect_layers(&self, kept: HashSet<String>) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let used: HashSet<String> = {
                let held = self.held.lock().unwrap();
                held.values()
                    .filter_map(|(spec, _)| spec.base_layer.clone())
                    .collect()
            };
            let mut layers = self.layers.lock().unwrap();
            let gone: Vec<String> = layers
                .iter()
                .filter(|l| !kept.contains(*l) && !used.contains(*l))
                .cloned()
                .collect();
            for l in &gone {
                layers.remove(l);
            }
            gone
        })
    }

    fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError> {
        if !self.is_running(id) {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        Ok(Metrics::default())
    }

    fn set_egress<'a>(
        &'a self,
        id: &'a str,
        policy: EgressPolicy,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            if !self.is_running(id) {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
            check_policy(&policy)
        })
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<sandbar_runtime::RuntimeEvent>> {
        None
    }

    /// A sandbox with the node's network (running, or paused with its
    /// processes) has looked a name up and connected.
    fn egress_log<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<Vec<Logged>>> {
        Box::pin(async move {
            if self.state(id)? == State::Paused(PauseMode::Filesystem) {
                return None;
            }
            let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            Some(vec![
                Logged {
                    at: t0,
                    event: EgressEvent::Dns {
                        name: "allowed.test".into(),
                        qtype: "A".into(),
                        verdict: Verdict::Allowed,
                        answers: vec![std::net::Ipv4Addr::new(192, 0, 2, 7)],
                    },
                },
                Logged {
                    at: t0 + Duration::from_secs(1),
                    event: EgressEvent::Connect {
                        to: "192.0.2.7:443".parse().unwrap(),
                        name: Some("denied.test".into()),
                        verdict: Verdict::Denied,
                        via_proxy: false,
                        detail: None,
                    },
                },
            ])
        })
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    store: Store,
    node: Arc<Node>,
    router: axum::Router,
    key: String,
    live_id: Mutex<String>,
    _api: Api,
}

async fn send(router: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

impl Harness {
    /// Makes the live sandbox again if a request took it away, and resumes
    /// it if one paused it.
    async fn ensure_live(&self) {
        let current = self.live_id.lock().unwrap().clone();
        if !current.is_empty() {
            let rec = self.store.get_live_sandbox(&current).await.unwrap();
            match (rec.map(|r| r.state), self.node.state(&current)) {
                (None, None) => {}
                (Some(SandboxState::Running), Some(State::Running)) => return,
                (Some(SandboxState::Paused), Some(State::Paused(_))) => {
                    let req = Request::post(format!("/sandboxes/{current}/resume"))
                        .header("x-api-key", &self.key)
                        .body(Body::from(r#"{"timeout":3600}"#))
                        .unwrap();
                    let (status, body) = send(&self.router, req).await;
                    assert_eq!(
                        status,
                        StatusCode::CREATED,
                        "{}",
                        String::from_utf8_lossy(&body)
                    );
                    return;
                }
                (rec, node) => {
                    // The store and the node disagree: gone, so that it
                    // does not count against the team's limits.
                    let req = Request::delete(format!("/sandboxes/{current}"))
                        .header("x-api-key", &self.key)
                        .body(Body::empty())
                        .unwrap();
                    let (status, body) = send(&self.router, req).await;
                    assert_ne!(
                        status,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "store {rec:?}, node {node:?}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
        }
        self.node.accept.store(true, Ordering::SeqCst);
        let req = Request::post("/sandboxes")
            .header("x-api-key", &self.key)
            .body(Body::from(r#"{"templateID":"base","timeout":3600}"#))
            .unwrap();
        let (status, body) = send(&self.router, req).await;
        self.node.accept.store(false, Ordering::SeqCst);
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        *self.live_id.lock().unwrap() = json["sandboxID"].as_str().unwrap().to_string();
    }
}

fn harness() -> &'static Harness {
    static H: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // tmpfs when there is one: the store is written on every create.
        let dir = tempfile::Builder::new()
            .prefix("sandbar-fuzz-api")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .unwrap();
        let node = Arc::new(Node::default());
        let (store, key, api) = runtime.block_on(async {
            let store = Store::open(&Store::default_url(dir.path())).await.unwrap();
            let key = store.create_api_key("fuzz").await.unwrap().key;
            let api = Api::start(
                ApiConfig::new("sandbar.localhost"),
                store.clone(),
                node.clone(),
            )
            .await
            .unwrap();
            (store, key, api)
        });
        let h = Harness {
            router: api.router(),
            runtime,
            _dir: dir,
            store,
            node,
            key,
            live_id: Mutex::new(String::new()),
            _api: api,
        };
        h.runtime.block_on(h.ensure_live());
        h
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let text = TextRequest::parse(data);
    let Some(target) = text.target_str() else {
        return;
    };
    let live = h.live_id.lock().unwrap().clone();
    let target = target.replace("{live}", &live);
    let mut headers = text.header_map();
    let key = match text.knob_str("key") {
        Some("none") => None,
        Some("wrong") => Some("e2b_0000000000000000000000000000000000000000"),
        _ => Some(h.key.as_str()),
    };
    if let Some(key) = key.filter(|_| !headers.contains_key("x-api-key")) {
        headers.insert("x-api-key", HeaderValue::from_str(key).unwrap());
    }
    let Ok(mut req) = Request::builder()
        .method(text.method)
        .uri(target)
        .body(Body::from(text.body.to_vec()))
    else {
        return;
    };
    *req.headers_mut() = headers;

    h.runtime.block_on(async {
        let (status, body) = send(&h.router, req).await;
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "500: {}",
            String::from_utf8_lossy(&body)
        );
        if status.is_client_error() || status.is_server_error() {
            let json: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
            assert_eq!(json["code"], status.as_u16(), "{json}");
            assert!(json["message"].is_string(), "{json}");
        }
        h.ensure_live().await;
    });
});
