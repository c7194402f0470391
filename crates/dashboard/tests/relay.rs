//! Sessions and the relay against a stand-in API (a router that knows two
//! keys of two teams and tells which key each request carried).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::{any, get};
use axum::{Json, Router};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use sandbar_dashboard::{Dashboard, DashboardConfig, Limits, SESSION_COOKIE};
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY_A: &str = "e2b_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "e2b_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const HOST: &str = "sbx.example:8443";
const ORIGIN: &str = "https://sbx.example:8443";

fn team_of(headers: &HeaderMap) -> Option<&'static str> {
    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(KEY_A) => Some("team-a"),
        Some(KEY_B) => Some("team-b"),
        _ => None,
    }
}

fn unauthorized() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"code": 401, "message": "invalid API key"})),
    )
        .into_response()
}

/// The API's shapes where they matter: `/teams` echoes the key, as the real
/// one does; `/whoami` says which team a request acted as and what else
/// reached it; `/revoke-me` answers 401 as a revoked key gets.
fn fake_api() -> Router {
    Router::new()
        .route(
            "/teams",
            get(|req: Request| async move {
                match team_of(req.headers()) {
                    Some(t) => {
                        let key = req.headers()["x-api-key"].to_str().unwrap().to_string();
                        Json(json!([{"teamID": t, "name": t, "apiKey": key, "isDefault": true}]))
                            .into_response()
                    }
                    None => unauthorized(),
                }
            }),
        )
        .route(
            "/whoami",
            any(|req: Request| async move {
                let Some(t) = team_of(req.headers()) else {
                    return unauthorized();
                };
                Json(json!({
                    "team": t,
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "query": req.uri().query(),
                    "cookie": req.headers().contains_key("cookie"),
                    "authorization": req.headers().contains_key("authorization"),
                }))
                .into_response()
            }),
        )
        .route("/revoke-me", get(|| async { unauthorized() }))
        .route(
            "/sandboxes/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    Json(json!({ "id": id }))
                },
            ),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "api fallback") })
}

use axum::response::IntoResponse;

fn dashboard(limits: Limits) -> Dashboard {
    let mut config = DashboardConfig::new(HOST);
    config.sessions = limits;
    Dashboard::new(fake_api(), config)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The session id the answer sets, if any.
    fn session(&self) -> Option<String> {
        self.headers.get_all("set-cookie").iter().find_map(|v| {
            let v = v.to_str().unwrap();
            let rest = v.strip_prefix(&format!("{SESSION_COOKIE}="))?;
            let value = rest.split(';').next().unwrap();
            (!value.is_empty()).then(|| value.to_string())
        })
    }

    fn clears_cookie(&self) -> bool {
        self.headers.get_all("set-cookie").iter().any(|v| {
            v.to_str()
                .unwrap()
                .starts_with(&format!("{SESSION_COOKIE}=;"))
                && v.to_str().unwrap().contains("Max-Age=0")
        })
    }
}

async fn send(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

async fn sign_in(router: &Router, key: &str) -> Answer {
    send(
        router,
        Method::POST,
        "/session",
        &[("origin", ORIGIN), ("content-type", "application/json")],
        &json!({ "apiKey": key }).to_string(),
    )
    .await
}

fn cookie(session: &str) -> String {
    format!("{SESSION_COOKIE}={session}")
}

#[tokio::test]
async fn a_bad_key_is_refused_and_sets_no_cookie() {
    let r = dashboard(Limits::default()).router();
    for key in [
        "e2b_cccccccccccccccccccccccccccccccccccccccc",
        "",
        "not a key",
        "e2b_a\u{7f}",
    ] {
        let a = sign_in(&r, key).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{key:?}: {}", a.body);
        assert_eq!(a.json()["code"], 401);
        assert!(a.session().is_none(), "no session for a refused key");
    }
    let a = send(
        &r,
        Method::POST,
        "/session",
        &[("origin", ORIGIN)],
        "{not json",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_good_key_gets_a_cookie_and_the_relay_acts_with_it_only() {
    let r = dashboard(Limits::default()).router();
    let a = sign_in(&r, KEY_A).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["teamID"], "team-a");
    assert_eq!(a.json()["keyPrefix"], &KEY_A[..10]);
    assert!(!a.body.contains(KEY_A), "the key does not come back");
    let set = a.headers["set-cookie"].to_str().unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}: {flag}");
    }
    let sa = a.session().unwrap();

    let me = send(&r, Method::GET, "/session", &[("cookie", &cookie(&sa))], "").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["name"], "team-a");

    // The relay puts the session's key in; the page's own credentials
    // (another team's key, a bearer token, the cookie) never reach the API.
    let w = send(
        &r,
        Method::POST,
        "/api/whoami?x=1&y=2",
        &[
            ("cookie", &cookie(&sa)),
            ("origin", ORIGIN),
            ("x-api-key", KEY_B),
            ("authorization", &format!("Bearer {KEY_B}")),
        ],
        "{}",
    )
    .await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    let j = w.json();
    assert_eq!(j["team"], "team-a");
    assert_eq!(j["path"], "/whoami");
    assert_eq!(j["query"], "x=1&y=2");
    assert_eq!(j["method"], "POST");
    assert_eq!(j["cookie"], false);
    assert_eq!(j["authorization"], false);
    assert_eq!(w.headers["cache-control"], "no-store");

    // Path parameters reach the API's extractors as the API matched them.
    let p = send(
        &r,
        Method::GET,
        "/api/sandboxes/abc123",
        &[("cookie", &cookie(&sa))],
        "",
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.json()["id"], "abc123");

    // A second session, of another key, acts as its own team.
    let sb = sign_in(&r, KEY_B).await.session().unwrap();
    assert_ne!(sa, sb);
    let w = send(
        &r,
        Method::GET,
        "/api/whoami",
        &[("cookie", &cookie(&sb))],
        "",
    )
    .await;
    assert_eq!(w.json()["team"], "team-b");
    let w = send(
        &r,
        Method::GET,
        "/api/whoami",
        &[("cookie", &cookie(&sa))],
        "",
    )
    .await;
    assert_eq!(w.json()["team"], "team-a");

    // GET /teams echoes the key: the relay scrubs it.
    let t = send(
        &r,
        Method::GET,
        "/api/teams",
        &[("cookie", &cookie(&sa))],
        "",
    )
    .await;
    assert_eq!(t.status, StatusCode::OK);
    assert!(!t.body.contains(KEY_A), "{}", t.body);
    assert_eq!(t.json()[0]["teamID"], "team-a");
}

#[tokio::test]
async fn unknown_expired_and_ended_sessions_are_401() {
    let r = dashboard(Limits::default()).router();
    let none = send(&r, Method::GET, "/api/whoami", &[], "").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(!none.clears_cookie(), "nothing to clear");
    let unknown = send(
        &r,
        Method::GET,
        "/api/whoami",
        &[("cookie", &cookie("made-up"))],
        "",
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.clears_cookie(), "a dead cookie is cleared");
    assert_eq!(
        send(
            &r,
            Method::GET,
            "/session",
            &[("cookie", &cookie("made-up"))],
            ""
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );

    // Idle past its limit.
    let r = dashboard(Limits {
        idle: Duration::from_millis(300),
        ..Limits::default()
    })
    .router();
    let s = sign_in(&r, KEY_A).await.session().unwrap();
    assert_eq!(
        send(
            &r,
            Method::GET,
            "/api/whoami",
            &[("cookie", &cookie(&s))],
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let a = send(
        &r,
        Method::GET,
        "/api/whoami",
        &[("cookie", &cookie(&s))],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "expired: {}", a.body);

    // Past its lifetime, however busy.
    let r = dashboard(Limits {
        lifetime: Duration::from_millis(400),
        ..Limits::default()
    })
    .router();
    let s = sign_in(&r, KEY_A).await.session().unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            send(
                &r,
                Method::GET,
                "/api/whoami",
                &[("cookie", &cookie(&s))],
                ""
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        send(
            &r,
            Method::GET,
            "/api/whoami",
            &[("cookie", &cookie(&s))],
            ""
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );

    // Logout ends it (and only it).
    let r = dashboard(Limits::default()).router();
    let s1 = sign_in(&r, KEY_A).await.session().unwrap();
    let s2 = sign_in(&r, KEY_A).await.session().unwrap();
    let out = send(
        &r,
        Method::POST,
        "/session/logout",
        &[("cookie", &cookie(&s1)), ("origin", ORIGIN)],
        "",
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out.clears_cookie());
    assert_eq!(
        send(
            &r,
            Method::GET,
            "/api/whoami",
            &[("cookie", &cookie(&s1))],
            ""
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            &r,
            Method::GET,
            "/api/whoami",
            &[("cookie", &cookie(&s2))],
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_key_the_api_stops_taking_ends_its_sessions() {
    let r = dashboard(Limits::default()).router();
    let s1 = sign_in(&r, KEY_A).await.session().unwrap();
    let s2 = sign_in(&r, KEY_A).await.session().unwrap();
    let other = sign_in(&r, KEY_B).await.session().unwrap();
    let a = send(
        &r,
        Method::GET,
        "/api/revoke-me",
        &[("cookie", &cookie(&s1))],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.clears_cookie());
    for s in [&s1, &s2] {
        assert_eq!(
            send(
                &r,
                Method::GET,
                "/api/whoami",
                &[("cookie", &cookie(s))],
                ""
            )
            .await
            .status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        send(
            &r,
            Method::GET,
            "/api/whoami",
            &[("cookie", &cookie(&other))],
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn other_origins_are_refused() {
    let r = dashboard(Limits::default()).router();
    let s = sign_in(&r, KEY_A).await.session().unwrap();
    let c = cookie(&s);
    // A sandbox's page is the same site: SameSite lets the cookie through,
    // the Origin check does not.
    let sandbox_page = "https://3000-abc.sbx.example:8443";
    for (method, path) in [
        (Method::POST, "/api/whoami"),
        (Method::DELETE, "/api/whoami"),
        (Method::GET, "/api/whoami"),
        (Method::POST, "/session/logout"),
    ] {
        let a = send(
            &r,
            method.clone(),
            path,
            &[("cookie", &c), ("origin", sandbox_page)],
            "",
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    let a = send(&r, Method::POST, "/api/whoami", &[("cookie", &c)], "").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "a change without Origin");
    let a = send(
        &r,
        Method::GET,
        "/api/whoami",
        &[("cookie", &c), ("sec-fetch-site", "same-site")],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(
        &r,
        Method::POST,
        "/session",
        &[
            ("origin", sandbox_page),
            ("content-type", "application/json"),
        ],
        &json!({"apiKey": KEY_A}).to_string(),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "no sign-in from another origin"
    );
    assert!(a.session().is_none());
    // Still signed in: nothing above ended the session.
    assert_eq!(
        send(&r, Method::GET, "/api/whoami", &[("cookie", &c)], "")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_page_is_served_with_its_policy_and_beside_the_api() {
    let d = dashboard(Limits::default());
    let r = d.router();
    let page = send(&r, Method::GET, "/", &[], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains(&format!("https://*.{HOST}")),
        "{csp}"
    );
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let etag = page.headers["etag"].to_str().unwrap().to_string();
    let again = send(
        &r,
        Method::GET,
        "/index.html",
        &[("if-none-match", &etag)],
        "",
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        send(&r, Method::GET, "/nope.js", &[], "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&r, Method::POST, "/", &[("origin", ORIGIN)], "")
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let both = d.beside(fake_api());
    let redirect = send(&both, Method::GET, "/dashboard", &[], "").await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers["location"], "/dashboard/");
    let page = send(&both, Method::GET, "/dashboard/", &[], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<html"));
    let s = sign_in_at(&both, "/dashboard/session").await;
    let w = send(
        &both,
        Method::GET,
        "/dashboard/api/whoami",
        &[("cookie", &cookie(&s))],
        "",
    )
    .await;
    assert_eq!(w.json()["team"], "team-a");
    assert_eq!(w.json()["path"], "/whoami");
    // Everything else is the API's, untouched.
    let api = send(&both, Method::GET, "/whoami", &[("x-api-key", KEY_B)], "").await;
    assert_eq!(api.json()["team"], "team-b");
    assert_eq!(
        send(&both, Method::GET, "/elsewhere", &[], "").await.body,
        "api fallback"
    );
}

async fn sign_in_at(router: &Router, path: &str) -> String {
    send(
        router,
        Method::POST,
        path,
        &[("origin", ORIGIN), ("content-type", "application/json")],
        &json!({ "apiKey": KEY_A }).to_string(),
    )
    .await
    .session()
    .unwrap()
}
