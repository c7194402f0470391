//! The API in-process (tower `oneshot`) against a real store in a temp dir.
//! The node runtime is replaced by `FakeNode`, an in-memory backend that
//! records what the API asked of it, so these tests check the API's own
//! behaviour: auth, validation, errors, paging, timeouts, the evictor.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use sandbar_api::{Api, ApiConfig, SandboxBackend};
use sandbar_runtime::{
    BoxFuture, EgressPolicy, LifecycleError, Metrics, PauseMode, RuntimeError, SandboxInfo,
    SandboxSpec, SnapshotInfo, State,
};
use sandbar_store::Store;
use serde_json::{json, Value};
use tower::ServiceExt;

#[derive(Default)]
struct FakeNode {
    live: Mutex<HashMap<String, SandboxSpec>>,
    paused: Mutex<HashMap<String, PauseMode>>,
    layers: Mutex<Vec<String>>,
    egress: Mutex<Vec<(String, EgressPolicy)>>,
    kills: Mutex<Vec<String>>,
    /// The node can snapshot processes (CRIU), and whether criu fails on
    /// every tree; the `memory` of each snapshot asked for.
    can_memory: std::sync::atomic::AtomicBool,
    memory_fails: std::sync::atomic::AtomicBool,
    snapshots: Mutex<Vec<bool>>,
    /// How long a create takes on this node, ms.
    create_ms: std::sync::atomic::AtomicU64,
    /// Its warm pools as the node reports them.
    pools: Mutex<Vec<sandbar_runtime::WarmDepth>>,
}

impl FakeNode {
    fn is_alive(&self, id: &str) -> bool {
        self.live.lock().unwrap().contains_key(id)
    }

    fn info(spec: &SandboxSpec, state: State) -> SandboxInfo {
        SandboxInfo {
            id: spec.id.clone(),
            template: spec.template.clone(),
            cpu_count: spec.cpu_count,
            memory_mb: spec.memory_mb,
            disk_mb: spec.disk_mb,
            started_at: chrono::Utc::now(),
            addr: Some(std::net::Ipv4Addr::new(10, 0, 0, 2)),
            state,
            boot_id: "b".into(),
            restored: false,
        }
    }
}

impl SandboxBackend for FakeNode {
    fn has_template(&self, name: &str) -> bool {
        if name == "explode" {
            panic!("template lookup exploded");
        }
        name == "base" || name == "code-interpreter-v1"
    }

    fn has_layer(&self, id: &str) -> bool {
        self.layers.lock().unwrap().iter().any(|l| l == id)
    }

    fn create(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>> {
        Box::pin(async move {
            let ms = self.create_ms.load(std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let info = Self::info(&spec, State::Running);
            self.live.lock().unwrap().insert(spec.id.clone(), spec);
            Ok(info)
        })
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(async move {
            self.kills.lock().unwrap().push(id.to_string());
            self.paused.lock().unwrap().remove(id);
            Ok(self.live.lock().unwrap().remove(id).is_some())
        })
    }

    fn state(&self, id: &str) -> Option<State> {
        if !self.is_alive(id) {
            return None;
        }
        Some(match self.paused.lock().unwrap().get(id) {
            Some(mode) => State::Paused(*mode),
            None => State::Running,
        })
    }

    fn held(&self) -> Vec<(String, State)> {
        let ids: Vec<String> = self.live.lock().unwrap().keys().cloned().collect();
        ids.into_iter()
            .filter_map(|id| self.state(&id).map(|s| (id, s)))
            .collect()
    }

    fn spec(&self, id: &str) -> Option<SandboxSpec> {
        self.live.lock().unwrap().get(id).cloned()
    }

    fn pause<'a>(
        &'a self,
        id: &'a str,
        mode: PauseMode,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            match self.state(id) {
                None => Err(RuntimeError::NotFound(id.to_string())),
                Some(State::Paused(_)) => Err(LifecycleError::AlreadyPaused(id.to_string()).into()),
                Some(_) => {
                    self.paused.lock().unwrap().insert(id.to_string(), mode);
                    Ok(())
                }
            }
        })
    }

    fn resume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SandboxInfo, RuntimeError>> {
        Box::pin(async move {
            match self.state(id) {
                None => Err(RuntimeError::NotFound(id.to_string())),
                Some(State::Running) => Err(LifecycleError::AlreadyRunning(id.to_string()).into()),
                Some(_) => {
                    self.paused.lock().unwrap().remove(id);
                    let spec = self.spec(id).unwrap();
                    Ok(Self::info(&spec, State::Running))
                }
            }
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
            self.snapshots.lock().unwrap().push(memory);
            if memory && self.memory_fails.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(RuntimeError::Checkpoint(
                    "Can't dump ghost file /tmp/x of 73400320 size, increase limit".into(),
                ));
            }
            let layer = format!("layer{}", self.layers.lock().unwrap().len());
            self.layers.lock().unwrap().push(layer.clone());
            Ok(SnapshotInfo {
                layer,
                template: spec.template,
                cpu_count: spec.cpu_count,
                memory_mb: spec.memory_mb,
                disk_mb: spec.disk_mb,
                memory,
            })
        })
    }

    fn memory_snapshots(&self) -> bool {
        self.can_memory.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn collect_layers(
        &self,
        kept: std::collections::HashSet<String>,
    ) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let bases: Vec<String> = self
                .live
                .lock()
                .unwrap()
                .values()
                .filter_map(|s| s.base_layer.clone())
                .collect();
            let mut layers = self.layers.lock().unwrap();
            let (keep, gone): (Vec<String>, Vec<String>) = layers
                .drain(..)
                .partition(|l| kept.contains(l) || bases.contains(l));
            *layers = keep;
            gone
        })
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<sandbar_runtime::RuntimeEvent>> {
        None
    }

    fn warm_pools(&self) -> Vec<sandbar_runtime::WarmDepth> {
        self.pools.lock().unwrap().clone()
    }

    fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError> {
        if !self.is_alive(id) {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        Ok(Metrics {
            cpu_count: 2,
            cpu_used_pct: 12.5,
            mem_used: 10 << 20,
            mem_total: 512 << 20,
            ..Default::default()
        })
    }

    fn set_egress<'a>(
        &'a self,
        id: &'a str,
        policy: EgressPolicy,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            if !self.is_alive(id) {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
            self.egress.lock().unwrap().push((id.to_string(), policy));
            Ok(())
        })
    }

    fn egress_log<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<Vec<sandbar_net::Logged>>> {
        use sandbar_net::{EgressEvent, Logged, Verdict};
        Box::pin(async move {
            if !self.is_alive(id) {
                return None;
            }
            let t0 =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
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
                    at: t0 + std::time::Duration::from_secs(1),
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

#[derive(Clone)]
struct Harness {
    _dir: Arc<tempfile::TempDir>,
    store: Store,
    node: Arc<FakeNode>,
    router: Router,
    /// The key this harness speaks with, and its id.
    key: String,
    key_id: String,
    _api: Arc<Api>,
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

/// A harness whose API config `adjust` changes first.
async fn harness_with(adjust: impl FnOnce(&mut ApiConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::default_url(dir.path())).await.unwrap();
    let made = store.create_api_key("test").await.unwrap();
    let node = Arc::new(FakeNode::default());
    let mut config = ApiConfig::new("sandbar.localhost:8443");
    config.max_timeout = Duration::from_secs(3600);
    config.metrics_interval = Duration::from_millis(100);
    config.build_files_dir = Some(dir.path().join("build-files"));
    config.data_dir = Some(dir.path().to_path_buf());
    adjust(&mut config);
    let api = Api::start(config, store.clone(), node.clone())
        .await
        .unwrap();
    Harness {
        router: api.router(),
        _dir: Arc::new(dir),
        store,
        node,
        key: made.key,
        key_id: made.info.id,
        _api: Arc::new(api),
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    /// The answer as sent, to look for what must not be in it.
    text: String,
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body ({e}): {text}"))
        };
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(body["code"], json!(status.as_u16()), "error body {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "error body {body}"
            );
            assert_eq!(headers["content-type"], "application/json");
        }
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// `method uri` with this harness's key and, when given, a raw JSON
    /// body (which may be malformed or empty).
    async fn raw(&self, method: &str, uri: &str, body: Option<&str>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", &self.key);
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> Reply {
        self.raw(method, uri, body.map(|b| b.to_string()).as_deref())
            .await
    }

    async fn create(&self, body: Value) -> Value {
        let r = self.call("POST", "/v2/sandboxes", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }
}

#[tokio::test]
async fn auth_is_required_and_checked() {
    let h = harness().await;
    let anon = |method: &str, uri: &str| Request::builder().method(method).uri(uri);

    let r = h
        .send(anon("GET", "/v2/sandboxes").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = h
        .send(
            anon("GET", "/v2/sandboxes")
                .header("x-api-key", "e2b_0123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = h
        .send(
            anon("GET", "/v2/sandboxes")
                .header("authorization", "Bearer whatever")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a bearer token alone is not a key"
    );

    let r = h
        .send(
            anon("GET", "/v2/sandboxes")
                .header("x-api-key", &h.key)
                .header("authorization", "Bearer whatever")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a bearer token next to a key is ignored"
    );

    let r = h
        .send(anon("GET", "/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let keys = h.store.list_api_keys().await.unwrap();
    assert!(h.store.revoke_api_key(&keys[0].id).await.unwrap());
    let r = h.call("GET", "/v2/sandboxes", None).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "revoked keys stop working at once"
    );
}

#[tokio::test]
async fn every_error_is_json() {
    let h = harness().await;
    assert_eq!(
        h.call("GET", "/no/such/route", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call("PATCH", "/v2/sandboxes", None).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let malformed = Request::builder()
        .method("POST")
        .uri("/v2/sandboxes")
        .header("x-api-key", &h.key)
        .header("content-type", "application/json")
        .body(Body::from("{\"templateID\": "))
        .unwrap();
    assert_eq!(h.send(malformed).await.status, StatusCode::BAD_REQUEST);

    let r = h
        .call("POST", "/v2/sandboxes", Some(json!({"timeout": 10})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["message"].as_str().unwrap().contains("templateID"));

    let r = h
        .call("POST", "/v2/sandboxes", Some(json!({"templateID": "nope"})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = h
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "timeout": 3601})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "timeout": -1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "metadata": {"a": 1}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "envVars": ["x"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = h
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "explode"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "a panic becomes a JSON 500"
    );

    for path in ["pause", "resume", "connect", "snapshots", "fork"] {
        let r = h
            .call("POST", &format!("/sandboxes/abc/{path}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
    }
    let r = h
        .call("POST", "/v3/templates", Some(json!({"name": "Not a name"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.call("GET", "/templates/x/builds/y/status", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h.call("PATCH", "/v2/templates/x", Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(
        h.call("GET", "/snapshots", None).await.status,
        StatusCode::OK
    );
    for (method, path) in [
        ("GET", "/volumes"),
        ("PUT", "/volumecontent/v/file"),
        ("GET", "/secrets"),
    ] {
        assert_eq!(
            h.call(method, path, None).await.status,
            StatusCode::NOT_IMPLEMENTED,
            "{method} {path}"
        );
    }
    // Env vars that cannot be a process environment are 400s, not a
    // sandbox whose every command fails.
    for vars in [
        json!({"A=B": "x"}),
        json!({"": "x"}),
        json!({"A": "x\u{0}y"}),
    ] {
        let r = h
            .call(
                "POST",
                "/v2/sandboxes",
                Some(json!({"templateID": "base", "envVars": vars})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{vars}: {}", r.body);
        assert!(r.body["message"].as_str().unwrap().contains("envVars"));
    }
    // Metrics of many: ids are required and bounded.
    let r = h.call("GET", "/sandboxes/metrics", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let many = (0..101)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let r = h
        .call(
            "GET",
            &format!("/sandboxes/metrics?sandbox_ids={many}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // Lifecycle settings E2B refuses are 400s.
    for body in [
        json!({"templateID": "base", "autoPauseMemory": false}),
        json!({"templateID": "base", "autoResume": {"enabled": true}}),
    ] {
        let r = h.call("POST", "/v2/sandboxes", Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
    }
    assert!(
        h.node.live.lock().unwrap().is_empty(),
        "failed creates leave nothing behind"
    );

    for path in [
        "/sandboxes/zzz",
        "/sandboxes/zzz/metrics",
        "/sandboxes/zzz/logs",
    ] {
        assert_eq!(
            h.call("GET", path, None).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        h.call("DELETE", "/sandboxes/zzz", None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = h
        .call(
            "POST",
            "/sandboxes/zzz/timeout",
            Some(json!({"timeout": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        h.call("POST", "/sandboxes/zzz/connect", Some(json!({})))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn chunked_create_with_every_option() {
    let h = harness().await;
    // The JS SDK streams its body: no Content-Length.
    let body = json!({
        "templateID": "base",
        "timeout": 120,
        "secure": true,
        "allow_internet_access": false,
        "metadata": {"user": "ann", "team": "x"},
        "envVars": {"FOO": "bar"},
        "network": {"allowPublicTraffic": false, "maskRequestHost": "localhost:${PORT}", "allowOut": ["1.1.1.1"], "denyOut": ["0.0.0.0/0"]},
        "someFutureField": {"ignored": true}
    })
    .to_string();
    let chunks: Vec<Result<String, std::io::Error>> = body
        .as_bytes()
        .chunks(7)
        .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
        .collect();
    let req = Request::builder()
        .method("POST")
        .uri("/sandboxes")
        .header("x-api-key", &h.key)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let sb = r.body;
    let id = sb["sandboxID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 20);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    assert_eq!(sb["templateID"], "base");
    assert_eq!(sb["domain"], "sandbar.localhost:8443");
    assert!(sb["clientID"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(sb["envdVersion"], "0.6.4");
    let envd_token = sb["envdAccessToken"].as_str().unwrap();
    let traffic_token = sb["trafficAccessToken"].as_str().unwrap();

    let spec = h.node.live.lock().unwrap()[&id].clone();
    assert_eq!(spec.envd_access_token.as_deref(), Some(envd_token));
    assert_eq!(
        spec.route.traffic_access_token.as_deref(),
        Some(traffic_token)
    );
    assert_eq!(
        spec.route.mask_request_host.as_deref(),
        Some("localhost:${PORT}")
    );
    assert_eq!(
        spec.env_vars,
        BTreeMap::from([("FOO".to_string(), "bar".to_string())])
    );
    assert_eq!(
        spec.egress,
        EgressPolicy {
            allow_internet: false,
            allow_out: vec!["1.1.1.1".into()],
            deny_out: vec!["0.0.0.0/0".into()],
            egress_proxy: None,
        }
    );

    let d = h.call("GET", &format!("/sandboxes/{id}"), None).await.body;
    assert_eq!(d["sandboxID"], id.as_str());
    assert_eq!(d["state"], "running");
    assert_eq!(d["metadata"], json!({"user": "ann", "team": "x"}));
    assert_eq!(d["allowInternetAccess"], false);
    assert_eq!(d["envdAccessToken"], envd_token);
    assert_eq!(d["cpuCount"], 2);
    assert_eq!(d["memoryMB"], 512);
    assert!(d["diskSizeMB"].as_u64().is_some());
    let started = chrono::DateTime::parse_from_rfc3339(d["startedAt"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(d["endAt"].as_str().unwrap()).unwrap();
    assert_eq!((end - started).num_seconds(), 120);
    assert!(d.get("envVars").is_none(), "env vars are never echoed");

    // A plain create is secured (as E2B does) but public, with the default timeout.
    let plain = h.create(json!({"templateID": "base"})).await;
    assert!(plain["envdAccessToken"]
        .as_str()
        .is_some_and(|t| t.len() >= 32));
    assert_eq!(plain["trafficAccessToken"], Value::Null);
    let insecure = h
        .create(json!({"templateID": "base", "secure": false}))
        .await;
    assert!(
        insecure.get("envdAccessToken").is_none(),
        "an explicit secure:false (old SDKs) has no token"
    );
    let pid = plain["sandboxID"].as_str().unwrap();
    let spec = h.node.live.lock().unwrap()[pid].clone();
    assert_eq!(spec.egress, EgressPolicy::default());
    let d = h.call("GET", &format!("/sandboxes/{pid}"), None).await.body;
    let started = chrono::DateTime::parse_from_rfc3339(d["startedAt"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(d["endAt"].as_str().unwrap()).unwrap();
    assert_eq!((end - started).num_seconds(), 300);
}

#[tokio::test]
async fn list_filters_and_pages() {
    let h = harness().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let group = if i % 2 == 0 { "even" } else { "odd" };
        let sb = h
            .create(json!({"templateID": "base", "metadata": {"group": group, "i": i.to_string(), "sp ace": "a&b"}}))
            .await;
        ids.push(sb["sandboxID"].as_str().unwrap().to_string());
    }

    let all = h.call("GET", "/sandboxes", None).await;
    assert_eq!(all.body.as_array().unwrap().len(), 7);

    // Paging: 3 + 3 + 1, no X-Next-Token on the last page.
    let mut seen = Vec::new();
    let mut uri = "/v2/sandboxes?limit=3".to_string();
    let mut pages = 0;
    loop {
        let r = h.call("GET", &uri, None).await;
        assert_eq!(r.status, StatusCode::OK);
        pages += 1;
        for s in r.body.as_array().unwrap() {
            assert_eq!(s["state"], "running");
            seen.push(s["sandboxID"].as_str().unwrap().to_string());
        }
        match r.headers.get("x-next-token") {
            Some(t) => uri = format!("/v2/sandboxes?limit=3&nextToken={}", t.to_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "each sandbox exactly once: {seen:?}");

    // Metadata filter as the SDK encodes it: url-encoded "k=v&k2=v2".
    let inner: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("group", "even")
        .append_pair("sp ace", "a&b")
        .finish();
    let q: String = url::form_urlencoded::byte_serialize(inner.as_bytes()).collect();
    let r = h
        .call(
            "GET",
            &format!("/v2/sandboxes?metadata={q}&state=running"),
            None,
        )
        .await;
    let got: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandboxID"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), 4);
    assert!(r.headers.get("x-next-token").is_none());
    for s in r.body.as_array().unwrap() {
        assert_eq!(s["metadata"]["group"], "even");
    }
    let r = h
        .call("GET", "/v2/sandboxes?metadata=group%3Dnone", None)
        .await;
    assert_eq!(r.body, json!([]));
    let r = h.call("GET", "/v2/sandboxes?state=paused", None).await;
    assert_eq!(r.body, json!([]), "nothing is ever paused");

    assert_eq!(
        h.call("GET", "/v2/sandboxes?limit=101", None).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.call("GET", "/v2/sandboxes?nextToken=garbage!", None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // Killed sandboxes leave the list.
    assert_eq!(
        h.call("DELETE", &format!("/sandboxes/{}", ids[0]), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.call("DELETE", &format!("/sandboxes/{}", ids[0]), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call("GET", &format!("/sandboxes/{}", ids[0]), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call("GET", "/v2/sandboxes", None)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert!(!h.node.is_alive(&ids[0]));
}

#[tokio::test]
async fn timeouts_connect_and_the_evictor() {
    let h = harness().await;
    let id = h
        .create(json!({"templateID": "base", "timeout": 300}))
        .await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let end_at =
        |d: &Value| chrono::DateTime::parse_from_rfc3339(d["endAt"].as_str().unwrap()).unwrap();
    let path = format!("/sandboxes/{id}");
    let get = || h.call("GET", &path, None);

    // setTimeout replaces the end time (it may shorten it).
    let r = h
        .call(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 100})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let left = (end_at(&get().await.body) - chrono::Utc::now().fixed_offset()).num_seconds();
    assert!((95..=100).contains(&left), "{left}");
    let r = h
        .call(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 7200})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Refresh and connect only extend.
    let r = h
        .call(
            "POST",
            &format!("/sandboxes/{id}/refreshes"),
            Some(json!({"duration": 10})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let left = (end_at(&get().await.body) - chrono::Utc::now().fixed_offset()).num_seconds();
    assert!(
        (95..=100).contains(&left),
        "refresh must not shorten: {left}"
    );
    let r = h
        .call(
            "POST",
            &format!("/sandboxes/{id}/connect"),
            Some(json!({"timeout": 600})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["sandboxID"], id.as_str());
    assert_eq!(r.body["domain"], "sandbar.localhost:8443");
    let left = (end_at(&get().await.body) - chrono::Utc::now().fixed_offset()).num_seconds();
    assert!((595..=600).contains(&left), "{left}");
    let r = h
        .call("POST", &format!("/v2/sandboxes/{id}/connect"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Metrics and logs of a live sandbox.
    let m = h
        .call("GET", &format!("/sandboxes/{id}/metrics"), None)
        .await
        .body;
    assert_eq!(m[0]["cpuCount"], 2);
    assert_eq!(m[0]["cpuUsedPct"], 12.5);
    assert_eq!(m[0]["memUsed"], 10 << 20);
    assert!(m[0]["timestampUnix"].as_i64().unwrap() > 1_700_000_000);
    let l = h
        .call("GET", &format!("/sandboxes/{id}/logs"), None)
        .await
        .body;
    // The shape the E2B CLI reads (the contents: see egress_proxies_full_replaces_and_egress_logs).
    assert_eq!(l["logs"].as_array().unwrap().len(), 2);
    assert_eq!(l["logEntries"].as_array().unwrap().len(), 2);

    // The evictor kills at the end time, without a request to prompt it.
    let r = h
        .call(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let t0 = std::time::Instant::now();
    while h.node.is_alive(&id) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "evictor did not kill within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "killed too early: {waited:?}"
    );
    assert_eq!(get().await.status, StatusCode::NOT_FOUND);
    assert_eq!(*h.node.kills.lock().unwrap(), vec![id.clone()]);
}

#[tokio::test]
async fn network_updates_and_vanished_sandboxes() {
    let h = harness().await;
    let id = h
        .create(json!({"templateID": "base", "network": {"allowPublicTraffic": false, "allowOut": ["8.8.8.8"]}}))
        .await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();

    let r = h
        .call(
            "PUT",
            &format!("/sandboxes/{id}/network"),
            Some(json!({"allowOut": ["1.1.1.1/32"], "denyOut": ["0.0.0.0/0"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (got_id, policy) = h.node.egress.lock().unwrap()[0].clone();
    assert_eq!(got_id, id);
    assert_eq!(policy.allow_out, vec!["1.1.1.1/32".to_string()]);
    assert_eq!(policy.deny_out, vec!["0.0.0.0/0".to_string()]);
    assert!(policy.allow_internet);
    let d = h.call("GET", &format!("/sandboxes/{id}"), None).await.body;
    assert_eq!(
        d["network"],
        json!({"allowOut": ["1.1.1.1/32"], "denyOut": ["0.0.0.0/0"], "allowPublicTraffic": false})
    );

    // A sandbox that died behind the API's back is reported gone.
    h.node.live.lock().unwrap().remove(&id);
    assert_eq!(
        h.call("GET", &format!("/sandboxes/{id}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(h.store.get_live_sandbox(&id).await.unwrap().is_none());
    let r = h
        .call(
            "PUT",
            &format!("/sandboxes/{id}/network"),
            Some(json!({"allowOut": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn restart_marks_lost_sandboxes_gone() {
    let dir = tempfile::tempdir().unwrap();
    let url = Store::default_url(dir.path());
    let store = Store::open(&url).await.unwrap();
    let key = store.create_api_key("k").await.unwrap().key;
    let node = Arc::new(FakeNode::default());
    let api = Api::start(ApiConfig::new("d"), store.clone(), node.clone())
        .await
        .unwrap();
    let req = Request::builder()
        .method("POST")
        .uri("/v2/sandboxes")
        .header("x-api-key", &key)
        .body(Body::from(r#"{"templateID":"base"}"#))
        .unwrap();
    let resp = api.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(store.live_sandbox_ids("local").await.unwrap().len(), 1);

    // A new process whose runtime holds nothing.
    let _api2 = Api::start(
        ApiConfig::new("d"),
        store.clone(),
        Arc::new(FakeNode::default()),
    )
    .await
    .unwrap();
    assert!(store.live_sandbox_ids("local").await.unwrap().is_empty());
}

impl Harness {
    /// POSTs `body` to `path` and expects a 400 whose message has `why`.
    async fn refused_with_400(&self, path: &str, body: Value, why: &str) {
        let r = self.call("POST", path, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert!(
            r.body["message"].as_str().unwrap().contains(why),
            "{body}: {}",
            r.body
        );
    }

    /// The same server, as a key of a new team `name`; and the team's id
    /// and that key.
    async fn other_team(&self, name: &str) -> (Harness, String, String) {
        let team = self
            .store
            .create_team(name, &Default::default())
            .await
            .unwrap()
            .unwrap();
        let made = self
            .store
            .create_team_api_key(name, &team.id)
            .await
            .unwrap();
        (self.with_key(&made.key, &made.info.id), team.id, made.key)
    }

    /// The same harness speaking with another key (of id `key_id`).
    fn with_key(&self, key: &str, key_id: &str) -> Harness {
        Harness {
            key: key.to_string(),
            key_id: key_id.to_string(),
            ..self.clone()
        }
    }
}

#[tokio::test]
async fn a_team_sees_and_touches_only_its_own_sandboxes() {
    let h = harness().await;
    let (other, other_team_id, other_key) = h.other_team("other").await;

    let mine = h.create(json!({"templateID": "base"})).await;
    let id = mine["sandboxID"].as_str().unwrap();
    assert!(
        mine["envdAccessToken"].is_string(),
        "the owner gets the token"
    );

    let listed = other.call("GET", "/v2/sandboxes", None).await;
    assert_eq!(listed.body, json!([]), "another team lists nothing of mine");
    let listed = other.call("GET", "/sandboxes", None).await;
    assert_eq!(listed.body, json!([]));
    for (method, uri, body) in [
        ("GET", format!("/sandboxes/{id}"), None),
        (
            "POST",
            format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 60})),
        ),
        ("POST", format!("/sandboxes/{id}/refreshes"), None),
        (
            "POST",
            format!("/sandboxes/{id}/connect"),
            Some(json!({"timeout": 60})),
        ),
        ("POST", format!("/v2/sandboxes/{id}/connect"), None),
        ("GET", format!("/sandboxes/{id}/metrics"), None),
        ("GET", format!("/sandboxes/{id}/logs"), None),
        (
            "PUT",
            format!("/sandboxes/{id}/network"),
            Some(json!({"denyOut": ["0.0.0.0/0"]})),
        ),
        ("DELETE", format!("/sandboxes/{id}"), None),
    ] {
        let r = other.call(method, &uri, body).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {}",
            r.body
        );
    }
    assert!(h.node.is_alive(id), "the other team's calls did nothing");
    assert!(h.node.egress.lock().unwrap().is_empty());

    // Metrics of many: mine for me, nothing of mine for the other team.
    let uri = format!("/sandboxes/metrics?sandbox_ids={id},nosuchsandbox");
    let r = h.call("GET", &uri, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got = r.body["sandboxes"].as_object().unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), vec![id]);
    assert_eq!(got[id]["cpuCount"], 2);
    let r = other.call("GET", &uri, None).await;
    assert_eq!(r.body, json!({"sandboxes": {}}));

    // Mine, listed by me: no tokens in list entries (E2B's ListedSandbox).
    let listed = h.call("GET", "/v2/sandboxes", None).await;
    let entries = listed.body.as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["sandboxID"], id);
    for absent in ["envdAccessToken", "trafficAccessToken", "domain", "network"] {
        assert!(
            entries[0].get(absent).is_none(),
            "list entry has {absent}: {}",
            entries[0]
        );
    }
    let detail = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(detail.body["envdAccessToken"], mine["envdAccessToken"]);

    // GET /teams, as the E2B CLI reads it.
    let teams = other.call("GET", "/teams", None).await;
    assert_eq!(
        teams.body,
        json!([{"teamID": other_team_id, "name": "other", "apiKey": other_key, "isDefault": true}])
    );
    assert_eq!(
        h.call("DELETE", &format!("/sandboxes/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn team_limits_answer_429_and_400() {
    let h = harness().await;
    let limits = sandbar_store::TeamLimits {
        max_sandboxes: Some(1),
        max_lifetime_secs: Some(600),
        ..Default::default()
    };
    let team = h
        .store
        .create_team("small", &limits)
        .await
        .unwrap()
        .unwrap();
    let made = h.store.create_team_api_key("s", &team.id).await.unwrap();
    let small = h.with_key(&made.key, &made.info.id);
    let first = small
        .create(json!({"templateID": "base", "timeout": 60}))
        .await;
    let r = small
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "timeout": 60})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("limit of 1"));
    assert_eq!(r.headers["should-retry"], "false");
    // Other teams are not held back by it.
    h.create(json!({"templateID": "base"})).await;

    let r = small
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "timeout": 601})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let id = first["sandboxID"].as_str().unwrap();
    let r = small
        .call(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 3600})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "a timeout past the lifetime: {}",
        r.body
    );

    // A paused sandbox holds no place, and resuming it needs one: pause,
    // create another, then resume (either way) is refused, not a second
    // running sandbox.
    let pause = small
        .call("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(pause.status, StatusCode::NO_CONTENT, "{}", pause.body);
    let second = small
        .create(json!({"templateID": "base", "timeout": 60}))
        .await;
    for path in [
        format!("/sandboxes/{id}/connect"),
        format!("/sandboxes/{id}/resume"),
    ] {
        let r = small
            .call("POST", &path, Some(json!({"timeout": 60})))
            .await;
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{path}: {}",
            r.body
        );
        assert!(
            r.body["message"].as_str().unwrap().contains("limit of 1"),
            "{}",
            r.body
        );
    }
    let listed = small.call("GET", "/v2/sandboxes?state=running", None).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1, "{}", listed.body);
    let second = second["sandboxID"].as_str().unwrap();
    assert_eq!(
        small
            .call("DELETE", &format!("/sandboxes/{second}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let r = small
        .call(
            "POST",
            &format!("/sandboxes/{id}/connect"),
            Some(json!({"timeout": 60})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "with the place free: {}",
        r.body
    );

    // Killing the first frees the place.
    assert_eq!(
        small
            .call("DELETE", &format!("/sandboxes/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    small
        .create(json!({"templateID": "base", "timeout": 60}))
        .await;
}

#[tokio::test]
async fn creates_past_what_the_node_starts_at_once_queue_then_get_a_503() {
    let h = harness_with(|c| {
        c.max_starting = 2;
        c.start_queue_wait = Duration::from_millis(600);
    })
    .await;
    // Each start takes 400 ms: of five at once, two start, two more get
    // their turn after 400 ms, within the wait; the fifth's would come after
    // 800 ms, so it is refused at 600 (200 ms either way for a slow host).
    h.node
        .create_ms
        .store(400, std::sync::atomic::Ordering::Relaxed);
    let body = json!({"templateID": "base", "timeout": 60});
    let started = std::time::Instant::now();
    let replies =
        futures::future::join_all((0..5).map(|_| h.call("POST", "/sandboxes", Some(body.clone()))))
            .await;
    let took = started.elapsed();
    let made = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    let refused: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(
        (made, refused.len()),
        (4, 1),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let r = refused[0];
    assert_eq!(r.body["code"], 503, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("the node is busy: 2 sandboxes are starting"),
        "{}",
        r.body
    );
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(
        h.node.live.lock().unwrap().len(),
        4,
        "the refused one never reached the node"
    );
    assert!(took < Duration::from_secs(3), "no create hung: {took:?}");
    // With the burst over, a create starts at once.
    h.create(body).await;
}

#[tokio::test]
async fn metrics_over_time_team_metrics_and_prometheus() {
    sandbar_api::telemetry::install();
    let h = harness().await;
    let before = chrono::Utc::now().timestamp() - 5;
    let sb = h.create(json!({"templateID": "base"})).await;
    let id = sb["sandboxID"].as_str().unwrap().to_string();
    // The sampler takes one every 100 ms here.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let r = h
        .call("GET", &format!("/sandboxes/{id}/metrics"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let samples = r.body.as_array().unwrap().clone();
    assert!(samples.len() >= 2, "{}", r.body);
    assert!(samples
        .iter()
        .all(|m| m["cpuCount"] == 2 && m["memTotal"] == 512 << 20));
    let times: Vec<&str> = samples
        .iter()
        .map(|m| m["timestamp"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {times:?}"
    );

    // A range before it existed holds nothing; bad ranges are 400s.
    let r = h
        .call(
            "GET",
            &format!("/sandboxes/{id}/metrics?start=0&end={}", before - 100),
            None,
        )
        .await;
    assert_eq!(r.body, json!([]));
    for q in ["start=10&end=5", "start=-1", "start=abc"] {
        let r = h
            .call("GET", &format!("/sandboxes/{id}/metrics?{q}"), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.body);
    }

    // Team metrics: the team's concurrency over the last minute.
    let teams = h.call("GET", "/teams", None).await;
    let team_id = teams.body[0]["teamID"].as_str().unwrap().to_string();
    // Whole seconds: the end is the next one, so the sandbox started before it.
    let now = chrono::Utc::now().timestamp() + 1;
    let r = h
        .call(
            "GET",
            &format!("/teams/{team_id}/metrics?start={before}&end={now}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let points = r.body.as_array().unwrap();
    assert!(
        points.iter().any(|p| p["concurrentSandboxes"] == 1),
        "{}",
        r.body
    );
    let r = h
        .call(
            "GET",
            &format!(
                "/teams/{team_id}/metrics/max?metric=concurrent_sandboxes&start={before}&end={now}"
            ),
            None,
        )
        .await;
    assert_eq!(r.body["value"], 1.0, "{}", r.body);
    let r = h
        .call("GET", &format!("/teams/{team_id}/metrics/max"), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // Prometheus: the operator's team reads it.
    let scraping = SCRAPES.lock().await;
    *h.node.pools.lock().unwrap() = vec![sandbar_runtime::WarmDepth {
        template: "pooled-tpl".into(),
        ready: 2,
        target: 3,
    }];
    let text = h.scrape().await;
    for want in [
        "sandbar_sandbox_creates_total{result=\"ok\"}",
        "sandbar_sandboxes{state=\"running\",template=\"base\"} 1",
        "sandbar_sandbox_create_seconds_bucket",
        "sandbar_metrics_sampled_sandboxes",
        "sandbar_node_cpus",
        "sandbar_warm_pool_ready{template=\"pooled-tpl\"} 2",
        "sandbar_warm_pool_target{template=\"pooled-tpl\"} 3",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    // A pool that went (its demand did) reads 0, not its last depth.
    h.node.pools.lock().unwrap().clear();
    let text = h.scrape().await;
    for want in [
        "sandbar_warm_pool_ready{template=\"pooled-tpl\"} 0",
        "sandbar_warm_pool_target{template=\"pooled-tpl\"} 0",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    drop(scraping);

    // Samples outlive the sandbox; another team sees none of them.
    assert_eq!(
        h.call("DELETE", &format!("/sandboxes/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let r = h
        .call("GET", &format!("/sandboxes/{id}/metrics"), None)
        .await;
    assert!(r.body.as_array().unwrap().len() >= 2, "{}", r.body);
    let (other, _, _) = h.other_team("peek").await;
    let r = other
        .call("GET", &format!("/sandboxes/{id}/metrics"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = other
        .call("GET", &format!("/teams/{team_id}/metrics"), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = other.call("GET", "/metrics", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn egress_proxies_full_replaces_and_egress_logs() {
    let h = harness().await;
    let created = h
        .create(json!({"templateID": "base", "network": {
            "allowOut": ["allowed.test"], "denyOut": ["0.0.0.0/0"],
            "egressProxy": {"address": "proxy.test:1080", "username": "u", "password": "p"},
        }}))
        .await;
    let id = created["sandboxID"].as_str().unwrap().to_string();
    let spec = h.node.live.lock().unwrap()[&id].clone();
    assert_eq!(
        spec.egress.egress_proxy,
        Some(sandbar_net::EgressProxy {
            address: "proxy.test:1080".into(),
            username: Some("u".into()),
            password: Some("p".into()),
        })
    );
    // The password never comes back.
    let d = h.call("GET", &format!("/sandboxes/{id}"), None).await.body;
    assert_eq!(
        d["network"]["egressProxy"],
        json!({"address": "proxy.test:1080", "username": "u"})
    );

    // An update replaces everything: allow_internet_access and the proxy included.
    let path = format!("/sandboxes/{id}/network");
    let put = |body: Value| h.call("PUT", &path, Some(body));
    let r = put(
        json!({"allow_internet_access": false, "allowOut": ["allowed.test"],
        "egressProxy": {"address": "10.20.0.1:1080"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let policy = h.node.egress.lock().unwrap().last().unwrap().1.clone();
    assert!(!policy.allow_internet);
    assert_eq!(policy.egress_proxy.unwrap().address, "10.20.0.1:1080");
    assert_eq!(
        h.call("GET", &format!("/sandboxes/{id}"), None).await.body["allowInternetAccess"],
        false
    );
    assert_eq!(put(json!({})).await.status, StatusCode::NO_CONTENT);
    let policy = h.node.egress.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(policy, EgressPolicy::default());
    let d = h.call("GET", &format!("/sandboxes/{id}"), None).await.body;
    assert_eq!(d["allowInternetAccess"], true);
    assert!(
        d["network"].get("egressProxy").is_none() && d["network"].get("allowOut").is_none(),
        "{d}"
    );
    // What sandbar cannot do is refused, not ignored.
    let r = put(json!({"egressProxy": {"address": "p.test:1", "tls": true}})).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    let r = h
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "base",
            "network": {"egressProxy": {"address": "p.test:1", "tls": {"enabled": true}}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);

    // The egress log, in the old shape the E2B CLI reads...
    let logs = h
        .call("GET", &format!("/sandboxes/{id}/logs"), None)
        .await
        .body;
    let lines: Vec<Value> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l["line"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["level"], "info");
    assert_eq!(lines[0]["logger"], "egress");
    assert_eq!(lines[0]["name"], "allowed.test");
    assert_eq!(lines[1]["level"], "warn");
    assert_eq!(logs["logEntries"][1]["fields"]["kind"], "connect");
    assert_eq!(
        logs["logEntries"][0]["timestamp"],
        "2023-11-14T22:13:20.000Z"
    );
    let since = h
        .call(
            "GET",
            &format!("/sandboxes/{id}/logs?start=1700000000500"),
            None,
        )
        .await
        .body;
    assert_eq!(since["logs"].as_array().unwrap().len(), 1);
    // ...and the new one: newest first by default, filtered by level.
    let v2 = h
        .call("GET", &format!("/v2/sandboxes/{id}/logs"), None)
        .await
        .body;
    assert_eq!(v2["logs"][0]["fields"]["kind"], "connect");
    assert!(v2["logs"][0]["message"]
        .as_str()
        .unwrap()
        .contains("denied"));
    let warn = h
        .call(
            "GET",
            &format!("/v2/sandboxes/{id}/logs?level=warn&direction=forward"),
            None,
        )
        .await
        .body;
    assert_eq!(warn["logs"].as_array().unwrap().len(), 1);
    let bad = h
        .call(
            "GET",
            &format!("/v2/sandboxes/{id}/logs?direction=sideways"),
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["code"], 400);
}

#[tokio::test]
async fn snapshots_and_forks_carry_memory_when_the_node_can() {
    use std::sync::atomic::Ordering::SeqCst;
    let h = harness().await;
    let id = h.create(json!({"templateID": "base"})).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = |body: Value| {
        let h = &h;
        let uri = format!("/sandboxes/{id}/snapshots");
        async move { h.call("POST", &uri, Some(body)).await }
    };
    // A node without CRIU: files only, and asking for memory is a clear 400.
    let r = snap(json!({"memory": true})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("CRIU"),
        "{}",
        r.body
    );
    assert_eq!(snap(json!({})).await.status, StatusCode::CREATED);
    assert_eq!(*h.node.snapshots.lock().unwrap(), vec![false]);

    // With CRIU: memory by default, for forks too; `memory: false` is files.
    h.node.can_memory.store(true, SeqCst);
    assert_eq!(snap(json!({})).await.status, StatusCode::CREATED);
    assert_eq!(
        snap(json!({"memory": false})).await.status,
        StatusCode::CREATED
    );
    let r = h
        .call("POST", &format!("/sandboxes/{id}/fork"), Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        *h.node.snapshots.lock().unwrap(),
        vec![false, true, false, true]
    );

    // A tree criu cannot take: asked for, a 409 saying why; by default (a
    // snapshot, a fork) the files alone.
    h.node.memory_fails.store(true, SeqCst);
    h.node.snapshots.lock().unwrap().clear();
    let r = snap(json!({"memory": true})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("ghost file"),
        "{}",
        r.body
    );
    assert_eq!(snap(json!({})).await.status, StatusCode::CREATED);
    let r = h
        .call("POST", &format!("/sandboxes/{id}/fork"), Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body[0]["sandbox"].is_object(), "{}", r.body);
    assert_eq!(
        *h.node.snapshots.lock().unwrap(),
        vec![true, true, false, true, false]
    );
}

#[tokio::test]
async fn template_builds_refuse_bad_input_with_clear_400s() {
    let h = harness().await;
    for (body, why) in [
        (json!({}), "name is required"),
        (json!({"name": "UPPER"}), "lowercase"),
        (json!({"name": "base"}), "built-in"),
        (json!({"name": "ok", "tags": ["Bad Tag"]}), "tag"),
        (json!({"name": "ok", "cpuCount": 0}), "cpuCount"),
        (json!({"name": "ok", "memoryMB": 1}), "memoryMB"),
    ] {
        h.refused_with_400("/v3/templates", body, why).await;
    }
    let r = h
        .call("POST", "/v3/templates", Some(json!({"name": "web:v1"})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["tags"], json!(["v1"]));
    let (tid, bid) = (
        r.body["templateID"].as_str().unwrap().to_string(),
        r.body["buildID"].as_str().unwrap().to_string(),
    );
    let start = format!("/v2/templates/{tid}/builds/{bid}");
    for (body, why) in [
        (
            json!({"steps": []}),
            "fromImage or fromTemplate is required",
        ),
        (
            json!({"fromTemplate": "base", "fromImage": "x"}),
            "not both",
        ),
        (
            json!({"fromTemplate": "base", "steps": [{"type": "FROB"}]}),
            "unknown step type 'FROB'",
        ),
        (
            json!({"fromTemplate": "base", "steps": [{"type": "RUN", "args": []}]}),
            "step 1 (RUN): no command",
        ),
        (
            json!({"fromTemplate": "base", "steps": [{"type": "COPY", "args": ["a", "/b"]}]}),
            "filesHash",
        ),
        (
            json!({"fromTemplate": "base", "steps": [{"type": "COPY", "args": ["a", "/b"], "filesHash": "a".repeat(64)}]}),
            "were not uploaded",
        ),
        (json!({"fromTemplate": "nope"}), "no such template"),
        (json!({"fromTemplate": "web"}), "from itself"),
        (
            json!({"fromTemplate": "base", "steps": [{"type": "ENV", "args": ["A"]}]}),
            "pairs",
        ),
    ] {
        h.refused_with_400(&start, body, why).await;
    }
    let r = h
        .call("GET", &format!("/templates/{tid}/files/xyz"), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // An upload link: exact length, once.
    let hash = "b".repeat(64);
    let r = h
        .call("GET", &format!("/templates/{tid}/files/{hash}"), None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["present"], json!(false));
    let url = r.body["url"].as_str().unwrap().to_string();
    let path = url
        .split_once("/template-files/")
        .map(|(_, t)| format!("/template-files/{t}"))
        .unwrap();
    let put = |len: &str, body: &'static [u8]| {
        Request::builder()
            .method("PUT")
            .uri(&path)
            .header("content-length", len)
            .body(Body::from(body))
            .unwrap()
    };
    assert_eq!(
        h.send(put("9", b"too short")).await.status,
        StatusCode::CREATED
    );
    let again = h.send(put("9", b"too short")).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN, "a link is used once");
    let r = h
        .call("GET", &format!("/templates/{tid}/files/{hash}"), None)
        .await;
    assert_eq!(r.body["present"], json!(true));
    let r = h
        .send(
            Request::builder()
                .method("PUT")
                .uri("/template-files/made-up")
                .header("content-length", "1")
                .body(Body::from("x"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Another team sees nothing of it.
    let (other, _, _) = h.other_team("other-team").await;
    let r = other
        .call(
            "GET",
            &format!("/templates/{tid}/builds/{bid}/status"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Status of a build that was never started, and the 404s.
    let r = h
        .call(
            "GET",
            &format!("/templates/{tid}/builds/{bid}/status"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], json!("waiting"));
    assert_eq!(
        h.call("GET", "/templates/aliases/web", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.call("GET", "/templates/aliases/nope", None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = h
        .call(
            "POST",
            "/templates/tags",
            Some(json!({"target": "web:v1", "tags": ["x"]})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a build that is not ready has no tags: {}",
        r.body
    );
}

/// Scrapes of `/metrics` one at a time: the gauges set at scrape time are
/// the process's, and tests run in parallel.
static SCRAPES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Harness {
    /// The same server, as a key of a new team `name` with `limits`.
    async fn team_with(&self, name: &str, limits: &sandbar_store::TeamLimits) -> Harness {
        let team = self.store.create_team(name, limits).await.unwrap().unwrap();
        let made = self
            .store
            .create_team_api_key(name, &team.id)
            .await
            .unwrap();
        self.with_key(&made.key, &made.info.id)
    }

    /// A template `name[:tag]` of this key's team with a ready build of
    /// `cpus` and `memory_mb` (marked ready in the store: the fake node
    /// runs no build); its templateID and buildID.
    async fn ready_template(&self, name: &str, cpus: u32, memory_mb: u64) -> (String, String) {
        let r = self
            .call(
                "POST",
                "/v3/templates",
                Some(json!({"name": name, "cpuCount": cpus, "memoryMB": memory_mb})),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let tid = r.body["templateID"].as_str().unwrap().to_string();
        let bid = r.body["buildID"].as_str().unwrap().to_string();
        self.store
            .finish_build(
                &bid,
                "base",
                None,
                &json!({"user": "user", "workdir": "/home/user"}),
            )
            .await
            .unwrap();
        (tid, bid)
    }

    /// A create of `body` refused by a team limit: E2B's 429 with exactly
    /// `message`, not to be retried, and nothing asked of the node.
    async fn refused_with_429(&self, body: Value, message: &str) {
        let before = self.node.live.lock().unwrap().len();
        let r = self.call("POST", "/v2/sandboxes", Some(body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{body}: {}",
            r.body
        );
        assert_eq!(r.body, json!({"code": 429, "message": message}), "{body}");
        assert_eq!(r.headers["should-retry"], "false");
        assert!(r.headers.get("retry-after").is_none(), "{:?}", r.headers);
        assert_eq!(self.node.live.lock().unwrap().len(), before, "{body}");
    }

    async fn scrape(&self) -> String {
        let resp = self
            .router
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/metrics")
                    .header("x-api-key", &self.key)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}

/// The value of the unlabelled series `name` in a Prometheus text page.
fn series(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name))
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
    line.split_once(' ').unwrap().1.trim().parse().unwrap()
}

fn sandbox_id(created: &Value) -> String {
    created["sandboxID"].as_str().unwrap().to_string()
}

/// A team held to one limit, and what it must refuse and let in.
struct LimitCase {
    /// The team's name and limits (generous in all but the one tested).
    team: &'static str,
    limits: sandbar_store::TeamLimits,
    /// A template smaller than a default sandbox: its name, CPUs and MiB.
    small: (&'static str, u32, u64),
    /// What of a sandbox the limit counts, and that of a small and of a
    /// default sandbox.
    counts: fn(&SandboxSpec) -> u64,
    small_counts: u64,
    default_counts: u64,
    /// The 429 of a second default sandbox beside the first.
    beside_first: &'static str,
    /// The 429s beside the first and a small one: (templateID, message).
    beside_both: &'static [(&'static str, &'static str)],
    /// How the first gives back what it held: a method and a path after
    /// `/sandboxes/{id}`.
    release: (&'static str, &'static str),
    /// The 429 once a new default sandbox took the first's place.
    after_release: (&'static str, &'static str),
}

/// A team held to `case`'s limit refuses a create past it (E2B's 429, the
/// node not asked) and lets one that fits in; other teams are not held back
/// by it; what the first sandbox gives back can be taken again.
async fn a_limit_refuses_a_create_past_it_and_one_that_fits_passes(case: LimitCase) {
    let h = harness().await;
    let team = h.team_with(case.team, &case.limits).await;
    let (small, cpus, memory_mb) = case.small;
    team.ready_template(small, cpus, memory_mb).await;
    let base = json!({"templateID": "base"});
    let first = sandbox_id(&team.create(base.clone()).await);
    team.refused_with_429(base.clone(), case.beside_first).await;
    let second = sandbox_id(&team.create(json!({"templateID": small})).await);
    assert_eq!(
        (case.counts)(&h.node.spec(&second).unwrap()),
        case.small_counts
    );
    for (template, message) in case.beside_both {
        team.refused_with_429(json!({"templateID": template}), message)
            .await;
    }
    // Other teams are not held back by it.
    h.create(base.clone()).await;
    let (method, path) = case.release;
    let r = team
        .call(method, &format!("/sandboxes/{first}{path}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let third = sandbox_id(&team.create(base).await);
    assert_eq!(
        (case.counts)(&h.node.spec(&third).unwrap()),
        case.default_counts
    );
    let (template, message) = case.after_release;
    team.refused_with_429(json!({"templateID": template}), message)
        .await;
}

#[tokio::test]
async fn the_memory_limit_refuses_a_create_past_it_and_one_that_fits_passes() {
    // Generous in all but memory: 1000 MiB, less than two default sandboxes
    // (512 MiB each).
    a_limit_refuses_a_create_past_it_and_one_that_fits_passes(LimitCase {
        team: "mem",
        limits: sandbar_store::TeamLimits {
            max_sandboxes: Some(10),
            max_memory_mb: Some(1000),
            max_cpus: Some(100),
            ..Default::default()
        },
        small: ("small:v1", 1, 256),
        counts: |spec| spec.memory_mb,
        small_counts: 256,
        default_counts: 512,
        beside_first:
            "team 'mem' would use 1024 MiB of memory, over its limit of 1000 MiB (512 MiB in use)",
        // 256 MiB more fits (768 of 1000).
        beside_both: &[
            (
                "base",
                "team 'mem' would use 1280 MiB of memory, over its limit of 1000 MiB (768 MiB in use)",
            ),
            (
                "small:v1",
                "team 'mem' would use 1024 MiB of memory, over its limit of 1000 MiB (768 MiB in use)",
            ),
        ],
        // A paused sandbox holds no memory against the limit: 256 in use,
        // and 512 more fits.
        release: ("POST", "/pause"),
        after_release: (
            "small:v1",
            "team 'mem' would use 1024 MiB of memory, over its limit of 1000 MiB (768 MiB in use)",
        ),
    })
    .await;
}

#[tokio::test]
async fn the_cpu_limit_refuses_a_create_past_it_and_one_that_fits_passes() {
    // Generous in all but CPUs: 3, less than two default sandboxes (2 each).
    a_limit_refuses_a_create_past_it_and_one_that_fits_passes(LimitCase {
        team: "cpu",
        limits: sandbar_store::TeamLimits {
            max_sandboxes: Some(10),
            max_memory_mb: Some(100_000),
            max_cpus: Some(3),
            ..Default::default()
        },
        small: ("one:v1", 1, 128),
        counts: |spec| spec.cpu_count.into(),
        small_counts: 1,
        default_counts: 2,
        beside_first: "team 'cpu' would use 4 CPUs, over its limit of 3 (2 in use)",
        // One CPU more fits (3 of 3).
        beside_both: &[(
            "one:v1",
            "team 'cpu' would use 4 CPUs, over its limit of 3 (3 in use)",
        )],
        // Killing the first gives its two CPUs back.
        release: ("DELETE", ""),
        after_release: (
            "one:v1",
            "team 'cpu' would use 4 CPUs, over its limit of 3 (3 in use)",
        ),
    })
    .await;
}

#[tokio::test]
async fn another_teams_snapshots_are_not_found() {
    let h = harness().await;
    let (other, _, _) = h.other_team("other").await;
    let id = sandbox_id(&h.create(json!({"templateID": "base"})).await);
    let snapshots = format!("/sandboxes/{id}/snapshots");
    let snap = |body: Value| h.call("POST", &snapshots, Some(body));
    let r = snap(json!({"name": "snap"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let named = r.body["snapshotID"].as_str().unwrap().to_string();
    assert_eq!(named, "default/snap:default");
    let r = snap(json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let unnamed = r.body["snapshotID"].as_str().unwrap().to_string();
    let layers = h.node.layers.lock().unwrap().clone();
    assert_eq!(layers.len(), 2);
    let ids = |r: &Reply| {
        let mut ids: Vec<String> = r
            .body
            .as_array()
            .unwrap_or_else(|| panic!("{}", r.body))
            .iter()
            .map(|s| s["snapshotID"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut both = vec![named.clone(), unnamed.clone()];
    both.sort();
    assert_eq!(ids(&h.call("GET", "/snapshots", None).await), both);

    // Listing: nothing of mine, however it is asked.
    for uri in [
        "/snapshots".to_string(),
        format!("/snapshots?sandboxID={id}"),
        "/snapshots?name=snap".to_string(),
        "/snapshots?name=snap:default".to_string(),
        "/snapshots?name=default/snap".to_string(),
    ] {
        let r = other.call("GET", &uri, None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        assert_eq!(r.body, json!([]), "{uri}");
    }
    // By id or name: get, delete, start from it: not found.
    for asked in [named.as_str(), "snap", "default/snap", unnamed.as_str()] {
        let path = format!("/templates/{}", asked.replace('/', "%2F"));
        for method in ["GET", "DELETE"] {
            let r = other.call(method, &path, None).await;
            assert_eq!(
                r.status,
                StatusCode::NOT_FOUND,
                "{method} {path}: {}",
                r.body
            );
        }
        let r = other
            .call("POST", "/v2/sandboxes", Some(json!({"templateID": asked})))
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "create from {asked}: {}",
            r.body
        );
        assert_eq!(
            r.body["message"],
            format!("template '{asked}' not found"),
            "{asked}"
        );
    }
    // Nor can it take one of my sandbox.
    for what in ["snapshots", "fork"] {
        let r = other
            .call("POST", &format!("/sandboxes/{id}/{what}"), Some(json!({})))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{what}: {}", r.body);
    }
    assert_eq!(h.node.live.lock().unwrap().len(), 1, "no sandbox started");
    assert_eq!(*h.node.layers.lock().unwrap(), layers, "no layer collected");
    assert_eq!(ids(&h.call("GET", "/snapshots", None).await), both);

    // Its own snapshot of the same name is its own.
    let theirs = sandbox_id(&other.create(json!({"templateID": "base"})).await);
    let r = other
        .call(
            "POST",
            &format!("/sandboxes/{theirs}/snapshots"),
            Some(json!({"name": "snap"})),
        )
        .await;
    assert_eq!(r.body["snapshotID"], "other/snap:default", "{}", r.body);
    assert_eq!(
        ids(&h.call("GET", "/snapshots?name=snap", None).await),
        vec![named.clone()]
    );

    // Mine still work for me.
    let from = sandbox_id(&h.create(json!({"templateID": named})).await);
    assert_eq!(
        h.node.spec(&from).unwrap().base_layer.as_deref(),
        Some(layers[0].as_str())
    );
    let path = format!("/templates/{}", unnamed.replace('/', "%2F"));
    assert_eq!(
        h.call("DELETE", &path, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.call("DELETE", &path, None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn another_teams_templates_are_not_found() {
    let h = harness().await;
    let (other, _, _) = h.other_team("other").await;
    let (tid, bid) = h.ready_template("web:v1", 1, 256).await;
    // A second build, waiting for its steps.
    let r = h
        .call("POST", "/v3/templates", Some(json!({"name": "web:v2"})))
        .await;
    assert_eq!(r.body["templateID"], tid.as_str(), "{}", r.body);
    let waiting = r.body["buildID"].as_str().unwrap().to_string();
    let hash = "c".repeat(64);
    let reads = [
        format!("/templates/{tid}"),
        "/templates/web".to_string(),
        format!("/templates/{tid}/builds/{bid}/status"),
        format!("/templates/{tid}/builds/{waiting}/status"),
        format!("/templates/{tid}/builds/{bid}/logs"),
        format!("/templates/{tid}/tags"),
        "/templates/web/tags".to_string(),
        format!("/templates/{tid}/files/{hash}"),
        "/templates/aliases/web".to_string(),
    ];
    // Mine, for me.
    for uri in &reads {
        let r = h.call("GET", uri, None).await;
        assert!(r.status.is_success(), "{uri}: {} {}", r.status, r.body);
    }
    let tags = h.call("GET", &format!("/templates/{tid}/tags"), None).await;
    assert_eq!(tags.body.as_array().unwrap().len(), 1, "{}", tags.body);
    assert_eq!(tags.body[0]["tag"], "v1");
    assert_eq!(tags.body[0]["buildID"], bid.as_str());

    // For the other team: a list without it, and 404 for every way to it.
    let r = other.call("GET", "/templates", None).await;
    assert_eq!(r.body, json!([]));
    for uri in &reads {
        let r = other.call("GET", uri, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "GET {uri}: {}", r.body);
    }
    for (method, uri, body) in [
        (
            "POST",
            format!("/v2/templates/{tid}/builds/{waiting}"),
            json!({"fromTemplate": "base"}),
        ),
        (
            "POST",
            "/templates/tags".to_string(),
            json!({"target": "web:v1", "tags": ["stolen"]}),
        ),
        (
            "DELETE",
            "/templates/tags".to_string(),
            json!({"name": "web", "tags": ["v1"]}),
        ),
        ("DELETE", format!("/templates/{tid}"), json!({})),
        ("DELETE", "/templates/web".to_string(), json!({})),
        (
            "POST",
            "/v2/sandboxes".to_string(),
            json!({"templateID": tid}),
        ),
        (
            "POST",
            "/v2/sandboxes".to_string(),
            json!({"templateID": "web:v1"}),
        ),
        (
            "POST",
            "/v2/sandboxes".to_string(),
            json!({"templateID": "default/web:v1"}),
        ),
    ] {
        let r = other.call(method, &uri, Some(body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {uri} {body}: {}",
            r.body
        );
    }
    assert!(h.node.live.lock().unwrap().is_empty(), "no sandbox started");
    // Nor can it build on mine.
    let r = other
        .call("POST", "/v3/templates", Some(json!({"name": "mine"})))
        .await;
    let start = format!(
        "/v2/templates/{}/builds/{}",
        r.body["templateID"].as_str().unwrap(),
        r.body["buildID"].as_str().unwrap()
    );
    for base in ["web", "web:v1", tid.as_str()] {
        other
            .refused_with_400(&start, json!({"fromTemplate": base}), "no such template")
            .await;
    }
    // A template of its own by the same name is another template.
    let r = other
        .call("POST", "/v3/templates", Some(json!({"name": "web"})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_ne!(r.body["templateID"], tid.as_str());

    // Mine are as they were.
    let r = h.call("GET", &format!("/templates/{tid}"), None).await;
    let builds: Vec<&str> = r.body["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["buildID"].as_str().unwrap())
        .collect();
    assert_eq!(builds, vec![waiting.as_str(), bid.as_str()], "{}", r.body);
    assert_eq!(r.body["builds"][0]["status"], "waiting");
    assert_eq!(
        h.call("GET", &format!("/templates/{tid}/tags"), None)
            .await
            .body,
        tags.body
    );
    let made = h.create(json!({"templateID": "web:v1"})).await;
    assert_eq!(made["templateID"], tid.as_str());
    assert_eq!(
        h.call("DELETE", &format!("/templates/{tid}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn prometheus_shows_the_nodes_disk_and_the_sandboxes_it_runs() {
    sandbar_api::telemetry::install();
    let h = harness().await;
    let dir = h._dir.path().to_path_buf();
    let ids: Vec<String> = base_sandboxes(&h, 3).await;
    let r = h
        .call("POST", &format!("/sandboxes/{}/pause", ids[0]), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let _one = SCRAPES.lock().await;
    let fs = |d: &std::path::Path| {
        let s = nix::sys::statvfs::statvfs(d).unwrap();
        let block = s.fragment_size() as f64;
        (
            s.blocks() as f64 * block,
            s.blocks_available() as f64 * block,
        )
    };
    let (total, before) = fs(&dir);
    let text = h.scrape().await;
    let (_, after) = fs(&dir);
    assert_eq!(series(&text, "sandbar_node_disk_total_bytes"), total);
    let available = series(&text, "sandbar_node_disk_available_bytes");
    // Free space moves with whatever else writes to this disk meanwhile.
    let slack = 64.0 * 1024.0 * 1024.0;
    assert!(
        before.min(after) - slack <= available && available <= before.max(after) + slack,
        "{available} against {before}..{after}"
    );
    assert!(available <= total);
    assert_eq!(series(&text, "sandbar_node_sandboxes_running"), 2.0);
    // No configured maximum of sandboxes: none is shown.
    assert!(!text.contains("sandbar_node_sandboxes_max"), "{text}");

    let r = h
        .call("DELETE", &format!("/sandboxes/{}", ids[1]), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .call("POST", &format!("/sandboxes/{}/connect", ids[0]), None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let text = h.scrape().await;
    assert_eq!(series(&text, "sandbar_node_sandboxes_running"), 2.0);
    let r = h
        .call("DELETE", &format!("/sandboxes/{}", ids[2]), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let text = h.scrape().await;
    assert_eq!(series(&text, "sandbar_node_sandboxes_running"), 1.0);
}

/// `n` sandboxes of `base`, made one after another.
async fn base_sandboxes(h: &Harness, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(sandbox_id(&h.create(json!({"templateID": "base"})).await));
    }
    ids
}

/// The team's API keys over the API (`/api-keys`, E2B's shapes): these
/// tests need of the node only that a key's sandboxes calls are let in or
/// refused.
mod api_keys {
    use super::*;

    impl Harness {
        /// A new key of this harness's team, made through the API.
        async fn create_key(&self, name: &str) -> Value {
            let r = self
                .call("POST", "/api-keys", Some(json!({"name": name})))
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            r.body
        }

        async fn list_keys(&self) -> Reply {
            let r = self.call("GET", "/api-keys", None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r
        }

        /// Whether this harness's key is let in to the sandboxes API.
        async fn sandboxes_status(&self) -> StatusCode {
            self.call("GET", "/v2/sandboxes", None).await.status
        }
    }

    fn ids(listed: &Value) -> Vec<String> {
        let mut ids: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_key_is_created_listed_used_renamed_and_revoked() {
        let h = harness().await;
        let created = h.create_key("ci").await;
        let key = created["key"].as_str().unwrap().to_string();
        let id = created["id"].as_str().unwrap().to_string();
        assert!(
            key.len() == 44
                && key.starts_with("e2b_")
                && key[4..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        assert_eq!(created["name"], "ci");
        assert_eq!(
            created["mask"],
            json!({"prefix": "e2b_", "valueLength": 40, "maskedValuePrefix": &key[4..10], "maskedValueSuffix": ""})
        );
        assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(created["createdBy"], Value::Null);
        assert_eq!(created["lastUsed"], Value::Null);

        // Listed, with its mask and never the key.
        let listed = h.list_keys().await;
        assert_eq!(
            ids(&listed.body),
            sorted(vec![id.clone(), h.key_id.clone()])
        );
        assert!(!listed.text.contains(&key[4..]), "{}", listed.text);
        assert!(!listed.text.contains(&h.key[4..]), "{}", listed.text);
        let entry = listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()
            .clone();
        assert_eq!(entry["name"], "ci");
        assert!(entry.get("key").is_none(), "{entry}");
        assert_eq!(entry["mask"], created["mask"]);
        assert_eq!(entry["createdAt"], created["createdAt"]);

        // The new key works on the sandboxes API, for the same team.
        let ci = h.with_key(&key, &id);
        assert_eq!(ci.sandboxes_status().await, StatusCode::OK);
        let made = ci
            .call("POST", "/v2/sandboxes", Some(json!({"templateID": "base"})))
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
        let listed = h.call("GET", "/v2/sandboxes", None).await;
        assert_eq!(
            listed.body[0]["sandboxID"], made.body["sandboxID"],
            "the key's sandbox is its team's"
        );

        // Renamed (surrounding spaces trimmed).
        let renamed = h
            .call(
                "PATCH",
                &format!("/api-keys/{id}"),
                Some(json!({"name": "  deploy  "})),
            )
            .await;
        assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
        assert_eq!(renamed.body["name"], "deploy");
        assert_eq!(renamed.body["id"], id.as_str());
        assert!(!renamed.text.contains(&key[4..]));
        let listed = h.list_keys().await;
        assert!(listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id && k["name"] == "deploy"));
        assert_eq!(ci.sandboxes_status().await, StatusCode::OK, "still works");

        // Revoked: refused from then on, and gone from the list.
        let gone = h.call("DELETE", &format!("/api-keys/{id}"), None).await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.body);
        assert_eq!(gone.body, Value::Null);
        assert_eq!(ci.sandboxes_status().await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            ci.call("GET", "/api-keys", None).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(ids(&h.list_keys().await.body), vec![h.key_id.clone()]);
        assert_eq!(
            h.call("DELETE", &format!("/api-keys/{id}"), None)
                .await
                .status,
            StatusCode::NOT_FOUND,
            "a revoked key is not found"
        );
        let again = h
            .call(
                "PATCH",
                &format!("/api-keys/{id}"),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(again.status, StatusCode::NOT_FOUND);
        assert_eq!(h.sandboxes_status().await, StatusCode::OK);
    }

    #[tokio::test]
    async fn another_team_neither_sees_nor_touches_our_keys() {
        let h = harness().await;
        let (other, _, _) = h.other_team("other").await;
        let ours = h.create_key("ours").await;
        let our_id = ours["id"].as_str().unwrap();
        let our_key = ours["key"].as_str().unwrap();

        let theirs = other.list_keys().await;
        assert_eq!(
            ids(&theirs.body),
            vec![other.key_id.clone()],
            "only its own"
        );
        assert!(!theirs.text.contains(our_id) && !theirs.text.contains(&h.key_id));
        let mine = h.list_keys().await;
        assert!(!mine.text.contains(&other.key_id), "{}", mine.text);

        for id in [our_id, h.key_id.as_str()] {
            let r = other
                .call(
                    "PATCH",
                    &format!("/api-keys/{id}"),
                    Some(json!({"name": "taken"})),
                )
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
            assert!(r.body["message"].as_str().unwrap().contains("not found"));
            let r = other.call("DELETE", &format!("/api-keys/{id}"), None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        }
        // Nothing changed: the keys work, under their names.
        assert_eq!(h.sandboxes_status().await, StatusCode::OK);
        assert_eq!(
            h.with_key(our_key, our_id).sandboxes_status().await,
            StatusCode::OK
        );
        let mine = h.list_keys().await;
        let names: Vec<&str> = mine
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            sorted(names.iter().map(|n| n.to_string()).collect()),
            ["ours", "test"]
        );

        // A key the other team makes is its own: we neither see nor touch it.
        let made = other.create_key("theirs").await;
        let their_id = made["id"].as_str().unwrap();
        assert!(!h.list_keys().await.text.contains(their_id));
        assert_eq!(
            h.call("DELETE", &format!("/api-keys/{their_id}"), None)
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        let created_there = h
            .with_key(made["key"].as_str().unwrap(), their_id)
            .call("GET", "/teams", None)
            .await;
        assert_eq!(created_there.body[0]["name"], "other", "made for its team");
    }

    #[tokio::test]
    async fn a_key_may_revoke_itself_and_is_refused_afterwards() {
        let h = harness().await;
        let made = h.create_key("short-lived").await;
        let id = made["id"].as_str().unwrap();
        let itself = h.with_key(made["key"].as_str().unwrap(), id);
        let r = itself
            .call("DELETE", &format!("/api-keys/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(itself.sandboxes_status().await, StatusCode::UNAUTHORIZED);
        assert_eq!(ids(&h.list_keys().await.body), vec![h.key_id.clone()]);
    }

    #[tokio::test]
    async fn bad_input_is_a_json_4xx() {
        let h = harness().await;
        let long = "k".repeat(101);
        for (body, why) in [
            (r#"{"name": ""}"#, "must not be empty"),
            (r#"{"name": "   "}"#, "must not be empty"),
            (&format!(r#"{{"name": "{long}"}}"#) as &str, "at most 100"),
            (r#"{"name": "a\nb"}"#, "control characters"),
            (r#"{}"#, "name"),
            (r#"{"name": 7}"#, "invalid JSON body"),
            (r#"{"name": "#, "invalid JSON body"),
            ("", "body is required"),
        ] {
            let r = h.raw("POST", "/api-keys", Some(body)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
            assert!(
                r.body["message"].as_str().unwrap().contains(why),
                "{body}: {}",
                r.body
            );
            let r = h
                .raw("PATCH", &format!("/api-keys/{}", h.key_id), Some(body))
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        }
        // A name of 100 characters (not bytes) is fine.
        let fits = h.create_key(&"é".repeat(100)).await;
        assert_eq!(fits["name"].as_str().unwrap().chars().count(), 100);
        assert_eq!(
            ids(&h.list_keys().await.body).len(),
            2,
            "no bad body made a key"
        );

        for id in ["0123456789abcdef", "no-such-key", "e2b_"] {
            let r = h
                .call(
                    "PATCH",
                    &format!("/api-keys/{id}"),
                    Some(json!({"name": "x"})),
                )
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}: {}", r.body);
            let r = h.call("DELETE", &format!("/api-keys/{id}"), None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}: {}", r.body);
        }
        // A key's own prefix does not name it here (ids only).
        let prefix = &h.key[..10];
        let r = h.call("DELETE", &format!("/api-keys/{prefix}"), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(h.sandboxes_status().await, StatusCode::OK);

        assert_eq!(
            h.call("PUT", "/api-keys", None).await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            h.call("GET", &format!("/api-keys/{}", h.key_id), None)
                .await
                .status,
            StatusCode::METHOD_NOT_ALLOWED
        );

        // Without a key, or with a wrong one: 401.
        let anon = h
            .send(
                Request::builder()
                    .method("GET")
                    .uri("/api-keys")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
        let wrong = h.with_key(&format!("e2b_{}", "0".repeat(40)), "none");
        for (method, uri) in [
            ("GET", "/api-keys".to_string()),
            ("POST", "/api-keys".to_string()),
            ("DELETE", format!("/api-keys/{}", h.key_id)),
        ] {
            let r = wrong.call(method, &uri, Some(json!({"name": "x"}))).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        }
        assert_eq!(h.sandboxes_status().await, StatusCode::OK);
    }
}
