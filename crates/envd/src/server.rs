//! One listener for everything envd serves: the Connect services (process,
//! filesystem) and the plain-HTTP endpoints, over HTTP/1.1 and h2c, on
//! 0.0.0.0 and :: alike.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use connectrpc::{ConnectError, ConnectRpcService};
use http_body::Body as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use sandbar_proto::filesystem::FilesystemExt;
use sandbar_proto::process::ProcessExt;
use tokio::net::{TcpListener, TcpSocket};
use tower_http::cors::{Any, CorsLayer};

use crate::filesystem::FilesystemService;
use crate::http_api;
use crate::process::ProcessService;
use crate::state::EnvdState;

/// The header that carries the sandbox's access token.
const ACCESS_TOKEN_HEADER: &str = "x-access-token";
/// How much of a request body a handler left unread is read before the
/// response goes out, and for how long at most.
const UNREAD_BODY_LIMIT: usize = 1 << 20;
const UNREAD_BODY_WAIT: Duration = Duration::from_secs(1);

/// Builds the whole HTTP application.
pub fn app(state: Arc<EnvdState>, process: Arc<ProcessService>) -> axum::Router {
    let rpc = connectrpc::Router::new();
    let rpc = process.register(rpc);
    let rpc = Arc::new(FilesystemService::new(state.clone())).register(rpc);
    let rpc = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .service(ConnectRpcService::new(rpc));
    http_api::router(state)
        .fallback_service(rpc)
        .layer(axum::middleware::from_fn(drain_unread_body))
        // Outermost, so that preflights are answered before auth and that
        // error responses carry the CORS headers too (browser SDK).
        .layer(cors())
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(Duration::from_secs(2 * 60 * 60))
}

/// Once a token is set, every Connect call must present it.
async fn require_token(
    State(state): State<Arc<EnvdState>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    if state.token_ok(given) {
        return next.run(request).await;
    }
    let error = ConnectError::unauthenticated(if given.is_some() {
        "invalid access token"
    } else {
        "missing access token: send it in the X-Access-Token header"
    });
    (
        http::StatusCode::UNAUTHORIZED,
        [(http::header::CONTENT_TYPE, "application/json")],
        error.to_json(),
    )
        .into_response()
}

/// Reads what a handler left of the request body before its response goes
/// out. A handler that answers early (401, 404, ...) while the client is still
/// uploading makes hyper close the connection under the client, which then
/// sees a broken pipe instead of the answer; Go's net/http drains the same way.
async fn drain_unread_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let (tracked, mut unread) = TrackedBody::new(body);
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::new(tracked)))
        .await;
    // Only a body the handler already dropped: one still held (by a streaming
    // response, say) is the handler's business.
    if let Ok(rest) = unread.try_recv() {
        let _ = tokio::time::timeout(
            UNREAD_BODY_WAIT,
            axum::body::to_bytes(rest, UNREAD_BODY_LIMIT),
        )
        .await;
    }
    response
}

/// A request body that, when dropped before its end, hands itself back.
struct TrackedBody {
    inner: Option<axum::body::Body>,
    unread: Option<tokio::sync::oneshot::Sender<axum::body::Body>>,
}

impl TrackedBody {
    fn new(body: axum::body::Body) -> (Self, tokio::sync::oneshot::Receiver<axum::body::Body>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Self {
                inner: Some(body),
                unread: Some(tx),
            },
            rx,
        )
    }
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let Some(body) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let frame = std::pin::Pin::new(body).poll_frame(cx);
        if let std::task::Poll::Ready(None) = frame {
            // Read to the end: nothing to hand back.
            self.inner = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| http_body::SizeHint::with_exact(0))
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let (Some(body), Some(tx)) = (self.inner.take(), self.unread.take()) {
            if !body.is_end_stream() {
                let _ = tx.send(body);
            }
        }
    }
}

/// Binds `port` on 0.0.0.0 and, when the machine has IPv6, on :: (v6 only,
/// so both sockets can share the port whatever `bindv6only` says).
pub fn bind(port: u16) -> io::Result<Vec<TcpListener>> {
    let v4 = TcpSocket::new_v4()?;
    v4.set_reuseaddr(true)?;
    v4.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    let v4 = v4.listen(1024)?;
    let port = v4.local_addr()?.port();
    let mut listeners = vec![v4];
    match bind_v6(port) {
        Ok(v6) => listeners.push(v6),
        Err(e) => tracing::warn!(error = %e, "not listening on IPv6"),
    }
    Ok(listeners)
}

fn bind_v6(port: u16) -> io::Result<TcpListener> {
    let v6 = TcpSocket::new_v6()?;
    nix::sys::socket::setsockopt(&v6, nix::sys::socket::sockopt::Ipv6V6Only, &true)?;
    v6.set_reuseaddr(true)?;
    v6.bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
    v6.listen(1024)
}

/// Serves `app` on every listener until the future is dropped.
pub async fn serve(listeners: Vec<TcpListener>, app: axum::Router) {
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|listener| tokio::spawn(accept_loop(listener, app.clone())))
        .collect();
    for handle in loops {
        let _ = handle.await;
    }
}

async fn accept_loop(listener: TcpListener, app: axum::Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Events are small writes that must reach the client at once.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = connection
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
