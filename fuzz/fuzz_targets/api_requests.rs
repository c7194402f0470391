//! Feeds an HTTP request (see `sandbar_fuzz::TextRequest`; `{live}` in the
//! target is the live sandbox's id; the right API key is added unless
//! `X-Fuzz-Key: none` or `wrong`) to the
//! control-plane API's real axum router (`sandbar_api::Api::router`, the
//! service the CLI serves) over a real store (SQLite on tmpfs), so bodies go
//! through the handlers' own path: `body.rs` (`JsonBody`/`OptionalJsonBody`),
//! the `model.rs` shapes (`NewSandbox`, `NetworkUpdate`, `TimeoutBody`,
//! `RefreshBody`, `ConnectBody`), `timeouts::checked`, the unsupported-field
//! checks, the list query parser and paging tokens, API-key auth. The node
//! is a stand-in that checks each egress policy the API hands it with the
//! network's own `policy::compile` (what `Network::acquire` and `set_policy`
//! do first) and then makes no sandbox. One sandbox is kept live (made again
//! when a request kills it or times it out) so that per-sandbox routes reach
//! their bodies.
//!
//! Beyond "no panic": the API never answers 500 (a handler panic is caught
//! into a 500 and would be missed otherwise) and every error is the
//! `{"code","message"}` JSON with the status as its code.

#![no_main]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use sandbar_api::{Api, ApiConfig, SandboxBackend};
use sandbar_fuzz::TextRequest;
use sandbar_net::NetError;
use sandbar_runtime::{BoxFuture, EgressPolicy, Metrics, RuntimeError, SandboxInfo, SandboxSpec};
use sandbar_store::Store;
use tower::ServiceExt;

/// A node that checks policies and makes sandboxes only while the harness
/// asks it to.
#[derive(Default)]
struct Node {
    accept: AtomicBool,
    live: Mutex<HashSet<String>>,
}

fn check_policy(policy: &EgressPolicy) -> Result<(), RuntimeError> {
    let open = ["10.20.0.0/16".parse().unwrap()];
    let public = ["192.0.2.0/24".parse().unwrap()];
    let (allow_internet, allow, deny) =
        sandbar_net::fuzzing::compile_policy(policy, &open, &public)?;
    assert_eq!(allow_internet, policy.allow_internet);
    assert!(allow.len() <= policy.allow_out.len() && deny.len() <= policy.deny_out.len());
    assert!(
        allow.windows(2).all(|w| w[0] < w[1]),
        "allow not sorted/deduped"
    );
    Ok(())
}

impl SandboxBackend for Node {
    fn has_template(&self, name: &str) -> bool {
        name == "base" || name == "code-interpreter-v1"
    }

    fn create(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>> {
        Box::pin(async move {
            check_policy(&spec.egress)?;
            if !self.accept.load(Ordering::SeqCst) {
                return Err(RuntimeError::Net(NetError::Exhausted(
                    "10.11.0.0/16".parse().unwrap(),
                )));
            }
            self.live.lock().unwrap().insert(spec.id.clone());
            Ok(SandboxInfo {
                id: spec.id,
                template: spec.template,
                cpu_count: spec.cpu_count,
                memory_mb: spec.memory_mb,
                disk_mb: spec.disk_mb,
                started_at: chrono::Utc::now(),
                addr: std::net::Ipv4Addr::new(10, 11, 0, 2),
            })
        })
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(async move { Ok(self.live.lock().unwrap().remove(id)) })
    }

    fn is_alive(&self, id: &str) -> bool {
        self.live.lock().unwrap().contains(id)
    }

    fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError> {
        if !self.is_alive(id) {
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
            check_policy(&policy)?;
            if !self.is_alive(id) {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
            Ok(())
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
    /// Makes the live sandbox again if a request took it away.
    async fn ensure_live(&self) {
        let current = self.live_id.lock().unwrap().clone();
        if !current.is_empty()
            && self
                .store
                .get_live_sandbox(&current)
                .await
                .unwrap()
                .is_some()
            && self.node.is_alive(&current)
        {
            return;
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
