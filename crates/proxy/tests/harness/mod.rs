//! A proxy on loopback with an in-test catalog of sandboxes that are plain
//! local servers, and clients that speak HTTP/1.1, HTTP/2 and TLS to it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use sandbar_proxy::{certs, serve, ApiService, Listener, Proxy};
use sandbar_runtime::{BoxFuture, Catalog, DialError, Found, Route, RuntimeError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const DOMAIN: &str = "sbx.test";

type TestSandbox = (Route, HashMap<u16, SocketAddr>);

/// Sandboxes are ids mapped to local servers by port.
#[derive(Default)]
pub struct TestCatalog {
    sandboxes: Mutex<HashMap<String, TestSandbox>>,
    pub dials: AtomicUsize,
}

impl TestCatalog {
    pub fn add(&self, id: &str, route: Route, ports: &[(u16, SocketAddr)]) {
        self.sandboxes
            .lock()
            .unwrap()
            .insert(id.to_string(), (route, ports.iter().copied().collect()));
    }
}

impl TestCatalog {
    pub fn remove(&self, id: &str) {
        self.sandboxes.lock().unwrap().remove(id);
    }
}

impl Catalog for TestCatalog {
    fn find(&self, id: &str) -> Option<Found> {
        self.sandboxes
            .lock()
            .unwrap()
            .get(id)
            .map(|(r, _)| Found::Running(r.clone()))
    }

    fn wake<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move { Err(RuntimeError::NotFound(id.to_string())) })
    }

    fn dial<'a>(&'a self, id: &'a str, port: u16) -> BoxFuture<'a, Result<TcpStream, DialError>> {
        Box::pin(async move {
            self.dials.fetch_add(1, Ordering::SeqCst);
            let addr = {
                let map = self.sandboxes.lock().unwrap();
                let (_, ports) = map.get(id).ok_or(DialError::NotFound)?;
                *ports.get(&port).ok_or(DialError::PortClosed(port))?
            };
            TcpStream::connect(addr)
                .await
                .map_err(|_| DialError::PortClosed(port))
        })
    }
}

/// What a test backend shares with the test.
#[derive(Default)]
pub struct Backend {
    /// Releases the second SSE event.
    pub sse_gate: Notify,
}

/// An HTTP/1.1 app server: `/echo` describes the request as JSON, `/sse`
/// streams two events with a gate between them, `/count` returns the
/// request body's length.
pub async fn start_backend(state: Arc<Backend>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| backend_route(req, state.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

async fn backend_route(
    req: Request<Incoming>,
    state: Arc<Backend>,
) -> Result<Response<TestBody>, Infallible> {
    match req.uri().path() {
        "/sse" => {
            let (mut tx, rx) =
                futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from("data: one\n\n")))).await;
                if tokio::time::timeout(Duration::from_secs(10), state.sse_gate.notified())
                    .await
                    .is_ok()
                {
                    let _ = tx.send(Ok(Frame::data(Bytes::from("data: two\n\n")))).await;
                }
            });
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(rx).boxed_unsync())
                .unwrap())
        }
        "/count" => {
            let mut n = 0usize;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    n += data.len();
                }
            }
            Ok(Response::new(
                Full::new(Bytes::from(n.to_string())).boxed_unsync(),
            ))
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let body = serde_json::json!({
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            Ok(Response::builder()
                .header("content-type", "application/json")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "must not pass")
                .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
                .unwrap())
        }
    }
}

/// A WebSocket echo server.
pub async fn start_ws_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

pub struct Harness {
    pub catalog: Arc<TestCatalog>,
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub ca: CertificateDer<'static>,
    pub shutdown: CancellationToken,
    pub served: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(api: Option<ApiService>) -> Self {
        Self::start_trusting(api, Vec::new()).await
    }

    pub async fn start_trusting(api: Option<ApiService>, trusted: Vec<ipnet::IpNet>) -> Self {
        Self::start_with(api, None, trusted).await
    }

    pub async fn start_with(
        api: Option<ApiService>,
        dashboard: Option<ApiService>,
        trusted: Vec<ipnet::IpNet>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = certs::LocalCaFiles::new(dir.path());
        let cert = certs::ServerCert::local(&files, DOMAIN).unwrap();
        let ca = cert.chain[1].clone();
        let tls_config = cert.server_config().unwrap();

        let catalog = Arc::new(TestCatalog::default());
        let mut proxy = Proxy::new(DOMAIN, catalog.clone(), api).trusting(trusted);
        if let Some(dashboard) = dashboard {
            proxy = proxy.with_dashboard(dashboard);
        }
        let plain_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (plain, tls) = (plain_l.local_addr().unwrap(), tls_l.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(serve(
            proxy,
            vec![Listener::Plain(plain_l), Listener::Tls(tls_l, tls_config)],
            shutdown.clone(),
        ));
        Self {
            catalog,
            plain,
            tls,
            ca,
            shutdown,
            served,
            _dir: dir,
        }
    }

    pub fn tls_connector(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A TLS stream to the proxy for `host` (SNI), verified against the CA.
    pub async fn tls_stream(
        &self,
        host: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.tls).await.unwrap();
        let name = ServerName::try_from(host.to_string()).unwrap();
        self.tls_connector(alpn).connect(name, tcp).await.unwrap()
    }
}

/// Which way a test client talks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain1,
    Tls1,
    Tls2,
}

pub struct Client {
    sender: Sender,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<TestReqBody>),
    H2(hyper::client::conn::http2::SendRequest<TestReqBody>),
}

pub type TestReqBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

pub fn empty() -> TestReqBody {
    Empty::new().boxed_unsync()
}

impl Client {
    pub async fn connect(h: &Harness, mode: Mode, sni: &str) -> Self {
        let sender = match mode {
            Mode::Plain1 => {
                let tcp = TcpStream::connect(h.plain).await.unwrap();
                Sender::H1(h1(TokioIo::new(tcp)).await)
            }
            Mode::Tls1 => {
                let tls = h.tls_stream(sni, &[b"http/1.1"]).await;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
                Sender::H1(h1(TokioIo::new(tls)).await)
            }
            Mode::Tls2 => {
                let tls = h.tls_stream(sni, &[b"h2", b"http/1.1"]).await;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        };
        Self { sender }
    }

    /// Sends `req`; for HTTP/2 the Host header becomes the authority.
    pub async fn send(&mut self, req: Request<TestReqBody>) -> Response<Incoming> {
        match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.unwrap();
                s.send_request(req).await.unwrap()
            }
            Sender::H2(s) => {
                let (mut parts, body) = req.into_parts();
                let host = parts.headers.remove("host").unwrap();
                parts.uri = format!(
                    "https://{}{}",
                    host.to_str().unwrap(),
                    parts.uri.path_and_query().unwrap()
                )
                .parse()
                .unwrap();
                parts.version = http::Version::HTTP_2;
                s.ready().await.unwrap();
                s.send_request(Request::from_parts(parts, body))
                    .await
                    .unwrap()
            }
        }
    }

    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response<Incoming> {
        let mut b = Request::get(path).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(empty()).unwrap()).await
    }
}

async fn h1<T>(io: TokioIo<T>) -> hyper::client::conn::http1::SendRequest<TestReqBody>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

pub async fn body_string(resp: Response<Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub async fn body_json(resp: Response<Incoming>) -> serde_json::Value {
    serde_json::from_str(&body_string(resp).await).unwrap()
}

pub fn assert_status(resp: &Response<Incoming>, status: StatusCode) {
    assert_eq!(resp.status(), status, "headers: {:?}", resp.headers());
}
