//! The team's API keys over the API (`/api-keys`, E2B's shapes), in-process
//! (tower `oneshot`) against a real store in a temp dir. The node is a small
//! in-memory fake: these tests need only that a key's sandboxes calls are
//! let in or refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use sandbar_api::{Api, ApiConfig, SandboxBackend};
use sandbar_runtime::{
    BoxFuture, EgressPolicy, Metrics, PauseMode, RuntimeError, SandboxInfo, SandboxSpec,
    SnapshotInfo, State,
};
use sandbar_store::Store;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Sandboxes that only exist in a map: created, listed, killed.
#[derive(Default)]
struct FakeNode {
    live: Mutex<HashMap<String, SandboxSpec>>,
}

impl SandboxBackend for FakeNode {
    fn has_template(&self, name: &str) -> bool {
        name == "base"
    }

    fn has_layer(&self, _id: &str) -> bool {
        false
    }

    fn create(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>> {
        Box::pin(async move {
            let info = SandboxInfo {
                id: spec.id.clone(),
                template: spec.template.clone(),
                cpu_count: spec.cpu_count,
                memory_mb: spec.memory_mb,
                disk_mb: spec.disk_mb,
                started_at: chrono::Utc::now(),
                addr: Some(std::net::Ipv4Addr::new(10, 0, 0, 2)),
                state: State::Running,
                boot_id: "b".into(),
                restored: false,
            };
            self.live.lock().unwrap().insert(spec.id.clone(), spec);
            Ok(info)
        })
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(async move { Ok(self.live.lock().unwrap().remove(id).is_some()) })
    }

    fn state(&self, id: &str) -> Option<State> {
        self.live
            .lock()
            .unwrap()
            .contains_key(id)
            .then_some(State::Running)
    }

    fn held(&self) -> Vec<(String, State)> {
        let live = self.live.lock().unwrap();
        live.keys().map(|id| (id.clone(), State::Running)).collect()
    }

    fn spec(&self, id: &str) -> Option<SandboxSpec> {
        self.live.lock().unwrap().get(id).cloned()
    }

    fn pause<'a>(
        &'a self,
        id: &'a str,
        _mode: PauseMode,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move { Err(RuntimeError::Invalid(format!("no pause here ({id})"))) })
    }

    fn resume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SandboxInfo, RuntimeError>> {
        Box::pin(async move { Err(RuntimeError::NotFound(id.to_string())) })
    }

    fn snapshot<'a>(
        &'a self,
        id: &'a str,
        _memory: bool,
    ) -> BoxFuture<'a, Result<SnapshotInfo, RuntimeError>> {
        Box::pin(async move { Err(RuntimeError::Invalid(format!("no snapshot here ({id})"))) })
    }

    fn collect_layers(
        &self,
        _kept: std::collections::HashSet<String>,
    ) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async { Vec::new() })
    }

    fn metrics(&self, id: &str) -> Result<Metrics, RuntimeError> {
        match self.state(id) {
            Some(_) => Ok(Metrics::default()),
            None => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    fn set_egress<'a>(
        &'a self,
        id: &'a str,
        _policy: EgressPolicy,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move { Err(RuntimeError::NotFound(id.to_string())) })
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<sandbar_runtime::RuntimeEvent>> {
        None
    }
}

#[derive(Clone)]
struct Harness {
    _dir: Arc<tempfile::TempDir>,
    store: Store,
    router: Router,
    /// The key this harness speaks with, and its id.
    key: String,
    key_id: String,
    _api: Arc<Api>,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::default_url(dir.path())).await.unwrap();
    let made = store.create_api_key("first").await.unwrap();
    let api = Api::start(
        ApiConfig::new("sandbar.localhost:8443"),
        store.clone(),
        Arc::new(FakeNode::default()),
    )
    .await
    .unwrap();
    Harness {
        router: api.router(),
        _dir: Arc::new(dir),
        store,
        key: made.key,
        key_id: made.info.id,
        _api: Arc::new(api),
    }
}

struct Reply {
    status: StatusCode,
    body: Value,
    /// The answer as sent, to look for what must not be in it.
    text: String,
}

impl Harness {
    fn with_key(&self, key: &str, key_id: &str) -> Harness {
        Harness {
            key: key.to_string(),
            key_id: key_id.to_string(),
            ..self.clone()
        }
    }

    /// The same server, as the first key of a new team `name`.
    async fn other_team(&self, name: &str) -> Harness {
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
        self.with_key(&made.key, &made.info.id)
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
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
            assert_eq!(content_type.as_deref(), Some("application/json"));
        }
        Reply { status, body, text }
    }

    /// `method uri` with this harness's key and, when given, a raw body.
    async fn raw(&self, method: &str, uri: &str, body: Option<&str>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", &self.key)
            .header("content-type", "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(req.body(body).unwrap()).await
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> Reply {
        self.raw(method, uri, body.map(|b| b.to_string()).as_deref())
            .await
    }

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
    let other = h.other_team("other").await;
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
        ["first", "ours"]
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
