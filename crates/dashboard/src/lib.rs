//! The web dashboard: the built front-end (`web/`, embedded at compile
//! time; no CDN at run time), sign-in sessions, and a relay from the page to
//! the E2B API.
//!
//! The browser never holds an API key. `POST /session` takes one, checks it
//! by asking the API (`GET /teams` with it), and answers with an HttpOnly,
//! Secure, SameSite=Strict cookie holding a random session id; the key stays
//! in this process, in a bounded map whose sessions expire. `/api/*` is
//! relayed to the API with the session's key in `X-API-KEY` (whatever key
//! the page sent is dropped), so the official JS SDK runs in the page with
//! `apiUrl` = this relay and a placeholder key, and talks to envd directly
//! with each sandbox's envd token. Every answer is scrubbed of the key (the
//! API's `GET /teams` echoes it). State-changing requests must come from the
//! dashboard's own origin (see [`guard`]).
//!
//! Owns: the dashboard's routes and sessions. Must not touch: the runtime,
//! the store or the network (it links none of them): it is handed the API's
//! `Router` and goes through it, with the caller's key, like any client.
//!
//! ```no_run
//! # fn wire(api: axum::Router) {
//! use sandbar_dashboard::{Dashboard, DashboardConfig};
//! let dashboard = Dashboard::new(api.clone(), DashboardConfig::new("sandbar.localhost"));
//! let on_bare_domain = dashboard.router();        // the proxy serves it at https://{domain}/
//! let api_listener = dashboard.beside(api);        // the API, plus the dashboard at /dashboard/
//! # }
//! ```

mod assets;
mod error;
pub mod guard;
pub mod session;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE,
};
use http::{HeaderValue, Method, StatusCode, Uri};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::time::Instant;
use tower::ServiceExt;

pub use error::DashboardError;
pub use session::{Limits, COOKIE as SESSION_COOKIE};
use session::{Sessions, Signed};

/// Where [`Dashboard::beside`] mounts the dashboard next to the API.
pub const PREFIX: &str = "/dashboard";
/// The largest sign-in body read.
const SIGN_IN_BODY_MAX: usize = 4 * 1024;
/// The largest API answer relayed (they are all small JSON documents; each
/// is read whole to scrub the key out of it).
const RELAYED_BODY_MAX: usize = 16 * 1024 * 1024;
const API_KEY_HEADER: &str = "x-api-key";

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The public sandbox domain, with `:port` when not 443: the page's
    /// content security policy lets it reach envd at `https://*.{domain}`.
    pub public_domain: String,
    pub sessions: Limits,
}

impl DashboardConfig {
    pub fn new(public_domain: impl Into<String>) -> Self {
        Self {
            public_domain: public_domain.into(),
            sessions: Limits::default(),
        }
    }
}

/// The dashboard service. Cheap to clone; clones share the sessions.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    api: Router,
    sessions: Mutex<Sessions>,
    config: DashboardConfig,
}

impl Dashboard {
    /// `api` is the API's router; the dashboard calls it in-process.
    pub fn new(api: Router, config: DashboardConfig) -> Self {
        if !assets::built() {
            tracing::warn!(
                "this binary was built without the dashboard's front-end (web/dist was missing): \
                 the dashboard shows how to build it (scripts/build-web.sh, then rebuild sandbar)"
            );
        }
        Self {
            inner: Arc::new(Inner {
                api,
                sessions: Mutex::new(Sessions::new(config.sessions)),
                config,
            }),
        }
    }

    /// Whether the real front-end is embedded (else a "not built" page).
    pub fn front_end_built() -> bool {
        assets::built()
    }

    /// The dashboard at `/`: static files, `/session`, `/session/logout`,
    /// `/api/*`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/session", get(whoami).post(sign_in))
            .route("/session/logout", post(logout))
            .route("/api/{*rest}", any(relay))
            .fallback(static_file)
            .with_state(self.clone())
    }

    /// `api` with the dashboard mounted at [`PREFIX`] (`/dashboard/`), for
    /// the API listener. The API's own routes and layers are untouched; the
    /// dashboard is outside them (its CORS layer included).
    pub fn beside(&self, api: Router) -> Router {
        Router::new()
            .nest_service(PREFIX, self.router())
            .fallback_service(api)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic while holding it leaves a map that is still consistent.
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The live session among the request's cookies.
    fn signed(&self, headers: &http::HeaderMap) -> Option<Signed> {
        let tokens = session::tokens_in(headers);
        let now = Instant::now();
        let mut sessions = self.sessions();
        tokens.iter().find_map(|t| sessions.lookup(t, now))
    }

    /// Asks the API who `key` is.
    async fn verify(&self, key: &str) -> Result<Signed, DashboardError> {
        let value = HeaderValue::from_str(key).map_err(|_| DashboardError::BadKey)?;
        let req = Request::builder()
            .method(Method::GET)
            .uri("/teams")
            .header(API_KEY_HEADER, value)
            .body(Body::empty())
            .expect("a static request is valid");
        let resp = call(&self.inner.api, req).await;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(DashboardError::BadKey),
            s => return Err(DashboardError::Api(format!("GET /teams answered {s}"))),
        }
        let body = read(resp.into_body(), RELAYED_BODY_MAX).await?;
        #[derive(Deserialize)]
        struct Team {
            #[serde(rename = "teamID")]
            team_id: String,
            name: String,
        }
        let teams: Vec<Team> = serde_json::from_slice(&body)
            .map_err(|e| DashboardError::Api(format!("GET /teams: {e}")))?;
        let team = teams
            .into_iter()
            .next()
            .ok_or_else(|| DashboardError::Api("GET /teams named no team".into()))?;
        Ok(Signed {
            key: key.to_string(),
            team_id: team.team_id,
            team_name: team.name,
        })
    }
}

async fn call(api: &Router, req: Request) -> Response {
    match api.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

async fn read(body: Body, max: usize) -> Result<Bytes, DashboardError> {
    http_body_util::Limited::new(body, max)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| DashboardError::Api(format!("reading the answer: {e}")))
}

fn who(s: &Signed) -> serde_json::Value {
    // The key's first 10 characters, as `sandbar keys list` shows them.
    let prefix: String = s.key.chars().take(10).collect();
    serde_json::json!({ "teamID": s.team_id, "name": s.team_name, "keyPrefix": prefix })
}

/// A 401 that also drops a session cookie the browser still holds.
fn signed_out(headers: &http::HeaderMap) -> Response {
    let mut resp = DashboardError::NoSession.into_response();
    if !session::tokens_in(headers).is_empty() {
        append_cookie(&mut resp, &session::clear_cookie());
    }
    resp
}

fn append_cookie(resp: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}

async fn whoami(State(d): State<Dashboard>, req: Request) -> Response {
    if let Err(e) = guard::same_origin(req.headers(), req.uri(), req.method()) {
        return e.into_response();
    }
    match d.signed(req.headers()) {
        Some(s) => ([(CACHE_CONTROL, "no-store")], Json(who(&s))).into_response(),
        None => signed_out(req.headers()),
    }
}

async fn sign_in(State(d): State<Dashboard>, req: Request) -> Response {
    match sign_in_inner(&d, req).await {
        Ok(resp) => resp,
        Err(e) => {
            if matches!(e, DashboardError::BadKey) {
                tracing::info!("dashboard sign-in refused: invalid API key");
            }
            e.into_response()
        }
    }
}

async fn sign_in_inner(d: &Dashboard, req: Request) -> Result<Response, DashboardError> {
    guard::same_origin(req.headers(), req.uri(), req.method())?;
    #[derive(Deserialize)]
    struct SignIn {
        #[serde(rename = "apiKey")]
        api_key: String,
    }
    let body = http_body_util::Limited::new(req.into_body(), SIGN_IN_BODY_MAX)
        .collect()
        .await
        .map_err(|_| {
            DashboardError::BadRequest(format!("the body must be at most {SIGN_IN_BODY_MAX} bytes"))
        })?
        .to_bytes();
    let form: SignIn = serde_json::from_slice(&body).map_err(|e| {
        DashboardError::BadRequest(format!("expected {{\"apiKey\": \"...\"}}: {e}"))
    })?;
    let key = form.api_key.trim();
    // Keys are `e2b_` + hex; anything else cannot be one (nor a header value).
    if key.is_empty() || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DashboardError::BadKey);
    }
    let signed = d.verify(key).await?;
    let token = d.sessions().insert(signed.clone(), Instant::now());
    tracing::info!(team = %signed.team_id, "dashboard: signed in");
    let mut resp = ([(CACHE_CONTROL, "no-store")], Json(who(&signed))).into_response();
    append_cookie(
        &mut resp,
        &session::set_cookie(&token, d.inner.config.sessions.lifetime),
    );
    Ok(resp)
}

async fn logout(State(d): State<Dashboard>, req: Request) -> Response {
    if let Err(e) = guard::same_origin(req.headers(), req.uri(), req.method()) {
        return e.into_response();
    }
    {
        let mut sessions = d.sessions();
        for t in session::tokens_in(req.headers()) {
            sessions.remove(&t);
        }
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    append_cookie(&mut resp, &session::clear_cookie());
    resp
}

async fn relay(State(d): State<Dashboard>, req: Request) -> Response {
    if let Err(e) = guard::same_origin(req.headers(), req.uri(), req.method()) {
        return e.into_response();
    }
    let Some(signed) = d.signed(req.headers()) else {
        return signed_out(req.headers());
    };
    let (mut parts, body) = req.into_parts();
    // Inside the router the path is `/api/...` (any mount prefix is gone).
    let path = parts.uri.path().strip_prefix("/api").unwrap_or("/");
    let target = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    parts.uri = match target.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return DashboardError::BadRequest("bad path".into()).into_response(),
    };
    // A fresh request for the API: this router's extensions (its matched
    // path parameters among them) would confuse the API's extractors.
    parts.extensions = http::Extensions::new();
    let h = &mut parts.headers;
    // The page's own credentials never reach the API: only the session's key.
    for name in [COOKIE, AUTHORIZATION, PROXY_AUTHORIZATION] {
        h.remove(name);
    }
    h.remove(API_KEY_HEADER);
    h.insert(
        API_KEY_HEADER,
        HeaderValue::from_str(&signed.key).expect("checked at sign-in"),
    );
    let resp = call(&d.inner.api, Request::from_parts(parts, body)).await;

    if resp.status() == StatusCode::UNAUTHORIZED {
        // The key was revoked (or its team removed): its sessions end.
        let ended = d.sessions().remove_key(&signed.key);
        tracing::info!(team = %signed.team_id, ended, "dashboard: the API refused a session's key");
        let mut resp = DashboardError::NoSession.into_response();
        append_cookie(&mut resp, &session::clear_cookie());
        return resp;
    }
    scrubbed(resp, &signed.key).await
}

/// The API's answer without the key in it (`GET /teams` echoes the caller's
/// key; nothing of the key may reach the page), and without the API's CORS
/// headers (the relay is same-origin only).
async fn scrubbed(resp: Response, key: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    let body = match read(body, RELAYED_BODY_MAX).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let body = if contains(&body, key.as_bytes()) {
        Bytes::from(replace(&body, key.as_bytes(), b"(kept by the dashboard)"))
    } else {
        body
    };
    let cors: Vec<_> = parts
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for k in cors {
        parts.headers.remove(k);
    }
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Response::from_parts(parts, Body::from(body))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

async fn static_file(
    State(d): State<Dashboard>,
    original: OriginalUri,
    req: Request,
) -> Result<Response, Infallible> {
    Ok(assets::serve(&d.inner.config.public_domain, original, req).await)
}
