//! The request handler: decides where a request goes, applies the sandbox's
//! rules (control routes, traffic token), and forwards it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{EXPECT, HOST};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sandbar_runtime::{Catalog, DialError, Found, Route};
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::body::{boxed, BoxError, ProxyBody};
use crate::envd_routes::{is_control_path, ENVD_PORT};
use crate::headers;
use crate::refusal::Refusal;
use crate::target::{Hosts, Target};
use crate::traffic_token::{self, Verdict};
use crate::upstream::{UpstreamError, Upstreams};

/// The control-plane service `api.{domain}` is handed to (an axum `Router`
/// fits through [`api_service`]).
pub type ApiService = BoxCloneSyncService<Request<Incoming>, Response<ProxyBody>, Infallible>;

/// Wraps any infallible HTTP service, such as an axum `Router`, for
/// [`Proxy::with_api`].
pub fn api_service<S, B>(service: S) -> ApiService
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(service.map_response(|r: Response<B>| r.map(boxed)))
}

/// What the proxy knows of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub tls: bool,
}

/// The edge proxy. Cheap to clone; all clones share one upstream pool.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    hosts: Hosts,
    catalog: Arc<dyn Catalog>,
    upstreams: Upstreams,
    api: Option<ApiService>,
    /// Serves the bare `{domain}` (the web dashboard), when given.
    dashboard: Option<ApiService>,
    /// Peers whose `X-Forwarded-For` is believed (a load balancer in front).
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Ends upgraded (WebSocket) tunnels, which outlive their HTTP exchange
    /// and so are not covered by the server's graceful shutdown.
    tunnels: CancellationToken,
}

impl Proxy {
    /// `domain` is the sandbox domain (`sandbar.localhost`; a `:port` in it
    /// is ignored); `api`, when given, serves `api.{domain}`. Call inside a
    /// Tokio runtime: the upstream pool starts its idle sweeper.
    pub fn new(domain: &str, catalog: Arc<dyn Catalog>, api: Option<ApiService>) -> Self {
        Self {
            inner: Arc::new(Inner {
                hosts: Hosts::new(crate::certs::bare_domain(domain)),
                upstreams: Upstreams::new(catalog.clone()),
                catalog,
                api,
                dashboard: None,
                trusted_proxies: Vec::new(),
                tunnels: CancellationToken::new(),
            }),
        }
    }

    /// Believes `X-Forwarded-For` from these peers (a load balancer or
    /// proxy in front of this one); from anyone else it is replaced. Call
    /// before cloning the proxy.
    pub fn trusting(mut self, proxies: Vec<ipnet::IpNet>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("trusting() is called before the proxy is shared")
            .trusted_proxies = proxies;
        self
    }

    /// Serves the bare `{domain}` with `dashboard` (without one it answers
    /// 404). Call before cloning the proxy.
    pub fn with_dashboard(mut self, dashboard: ApiService) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_dashboard() is called before the proxy is shared")
            .dashboard = Some(dashboard);
        self
    }

    fn trusts(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.inner.trusted_proxies.iter().any(|n| n.contains(&peer))
    }

    /// Closes every upgraded connection (at shutdown).
    pub fn close_tunnels(&self) {
        self.inner.tunnels.cancel();
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let started = std::time::Instant::now();
        // At debug: every request as it comes and as it is answered (the
        // answer's head; a streamed body goes on after it). Nothing is
        // copied for it unless debug is on: this is every request's path.
        let seen = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (req.method().clone(), req.uri().clone()));
        if let Some((method, uri)) = &seen {
            let host = req.headers().get(HOST);
            debug!(remote = %conn.remote, %method, %uri, ?host, version = ?req.version(), "request");
        }
        let resp = self.route(req, conn).await;
        let elapsed = started.elapsed();
        if let Some((method, uri)) = &seen {
            debug!(remote = %conn.remote, %method, %uri, status = resp.status().as_u16(), ms = elapsed.as_secs_f64() * 1000.0, "answered");
        }
        crate::telemetry::answered(resp.status(), elapsed);
        resp
    }

    async fn route(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        // HTTP/2 carries the host in `:authority`, HTTP/1.1 in `Host`.
        let host = req
            .headers()
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));

        if req.method() == http::Method::CONNECT {
            return Refusal::Connect.response(req.headers(), host.as_deref());
        }
        let target = match self.inner.hosts.resolve(host.as_deref(), req.headers()) {
            Ok(t) => t,
            Err(e) => return Refusal::BadTarget(e).response(req.headers(), host.as_deref()),
        };
        match target {
            Target::Api => {
                let api = self.inner.api.clone();
                self.to_service(api, req, conn, host.as_deref()).await
            }
            Target::Dashboard => {
                let dashboard = self.inner.dashboard.clone();
                self.to_service(dashboard, req, conn, host.as_deref()).await
            }
            Target::Sandbox { id, port } => self.to_sandbox(req, conn, host, id, port).await,
        }
    }

    /// `api.{domain}` and the bare `{domain}`: services of this process.
    async fn to_service(
        &self,
        service: Option<ApiService>,
        mut req: Request<Incoming>,
        conn: ConnInfo,
        host: Option<&str>,
    ) -> Response<ProxyBody> {
        let Some(api) = service else {
            return Refusal::NoApi.response(req.headers(), host);
        };
        let trusted = self.trusts(conn.remote.ip());
        headers::add_forwarded(req.headers_mut(), conn.remote.ip(), trusted, conn.tls, host);
        match api.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    async fn to_sandbox(
        &self,
        mut req: Request<Incoming>,
        conn: ConnInfo,
        host: Option<String>,
        id: String,
        port: u16,
    ) -> Response<ProxyBody> {
        let refuse =
            |r: Refusal, req: &Request<Incoming>| r.response(req.headers(), host.as_deref());

        // Before the lookup, so the answer says nothing about the sandbox.
        if port == ENVD_PORT && is_control_path(req.uri().path()) {
            warn!(%id, path = req.uri().path(), "envd control route requested through the proxy");
            let path = req.uri().path().to_string();
            return refuse(Refusal::ControlRoute { path }, &req);
        }
        let route = match self.inner.catalog.find(&id) {
            Some(Found::Running(route)) => route,
            // Auto-resume: the request that finds it paused wakes it, and is
            // served once it runs (after a filesystem pause, once envd is up:
            // the start command's server may take longer, which the dial's
            // retry covers).
            Some(Found::Paused {
                route,
                auto_resume: true,
            }) => match self.inner.catalog.wake(&id).await {
                Ok(()) => route,
                Err(e) => {
                    warn!(%id, error = %e, "auto-resume failed");
                    return refuse(Refusal::Paused { id }, &req);
                }
            },
            Some(Found::Paused { .. }) => return refuse(Refusal::Paused { id }, &req),
            None => return refuse(Refusal::SandboxNotFound { id }, &req),
        };
        // envd checks its own access token.
        if let (Some(token), false) = (route.traffic_access_token.as_deref(), port == ENVD_PORT) {
            match traffic_token::check(&mut req, &id, token, conn.tls) {
                Verdict::Pass => {}
                Verdict::Redirect(resp) => return resp,
                Verdict::Refuse(r) => return refuse(r, &req),
            }
        }
        self.forward(req, conn, host, id, port, &route).await
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        conn: ConnInfo,
        host: Option<String>,
        id: String,
        port: u16,
        route: &Route,
    ) -> Response<ProxyBody> {
        let upgrade = req.version() <= Version::HTTP_11 && headers::wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        // Decided now: the headers go on with the request.
        let html = crate::refusal::wants_html(req.headers());

        let (mut parts, body) = req.into_parts();
        let h = &mut parts.headers;
        headers::strip_hop_by_hop(h, upgrade);
        // hyper already answered the client's `Expect: 100-continue`.
        h.remove(EXPECT);
        headers::join_cookies(h);
        let trusted = self.trusts(conn.remote.ip());
        headers::add_forwarded(h, conn.remote.ip(), trusted, conn.tls, host.as_deref());
        let app_host = match &route.mask_request_host {
            Some(mask) => Some(mask.replace("${PORT}", &port.to_string())),
            None => host.clone(),
        };
        if let Some(app_host) = &app_host {
            headers::set_host(h, app_host);
        }
        if let Some(pq) = parts.uri.path_and_query().cloned() {
            parts.uri = pq.into();
        }
        // The sandbox's servers speak HTTP/1.1 whatever the client spoke.
        parts.version = Version::HTTP_11;

        let request = Request::from_parts(parts, crate::telemetry::counted(body, "in"));
        let mut resp = match self.inner.upstreams.send(&id, port, request, upgrade).await {
            Ok(resp) => resp,
            Err(e) => {
                let refusal = match e {
                    UpstreamError::Dial(DialError::NotFound) => Refusal::SandboxNotFound { id },
                    UpstreamError::Dial(DialError::PortClosed(_)) => {
                        Refusal::PortClosed { id, port }
                    }
                    UpstreamError::Http(e) => {
                        debug!(%id, port, error = %e, "upstream request failed");
                        Refusal::Upstream {
                            id,
                            port,
                            detail: e.to_string(),
                        }
                    }
                };
                return refusal.response_as(html, host.as_deref());
            }
        };

        if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
            (client_upgrade, resp.status())
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let tunnels = self.inner.tunnels.clone();
            tokio::spawn(async move {
                tokio::select! {
                    r = splice(client_upgrade, upstream_upgrade) => {
                        if let Err(e) = r {
                            debug!(%id, port, error = %e, "upgraded connection ended");
                        }
                    }
                    () = tunnels.cancelled() => {}
                }
            });
            return resp.map(boxed);
        }
        headers::strip_hop_by_hop(resp.headers_mut(), false);
        resp.map(|b| boxed(crate::telemetry::counted(b, "out")))
    }
}

/// Copies both ways between the client's and the sandbox's upgraded
/// connections until either side closes.
async fn splice(client: OnUpgrade, upstream: OnUpgrade) -> Result<(), BoxError> {
    let (client, upstream) = tokio::try_join!(client, upstream)?;
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let (to_sandbox, to_client) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    crate::telemetry::tunnelled(to_sandbox, to_client);
    Ok(())
}
