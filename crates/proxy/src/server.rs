//! Accepting connections: plain HTTP and TLS (ALPN h2 / http/1.1) listeners,
//! each connection served by hyper-util's auto (HTTP/1.1 + HTTP/2) server,
//! with graceful shutdown on a token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::proxy::{ConnInfo, Proxy};

/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests still running at shutdown get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Slow-loris guard for HTTP/1.1 request heads.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One socket the proxy accepts on.
pub enum Listener {
    Plain(TcpListener),
    Tls(TcpListener, Arc<rustls::ServerConfig>),
}

impl Listener {
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Self::Plain(l) | Self::Tls(l, _) => l.local_addr().ok(),
        }
    }
}

/// Serves `proxy` on every listener until `shutdown` fires, then stops
/// accepting, lets running requests finish (up to a bound) and closes
/// upgraded tunnels.
pub async fn serve(proxy: Proxy, listeners: Vec<Listener>, shutdown: CancellationToken) {
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accept_loops = tokio::task::JoinSet::new();
    for listener in listeners {
        info!(addr = ?listener.local_addr(), tls = matches!(listener, Listener::Tls(..)), "proxy listening");
        accept_loops.spawn(accept_loop(
            listener,
            proxy.clone(),
            graceful.clone(),
            shutdown.clone(),
        ));
    }
    while accept_loops.join_next().await.is_some() {}

    let graceful = Arc::into_inner(graceful).expect("accept loops have ended");
    proxy.close_tunnels();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("some proxied requests were still running at shutdown; dropped");
    }
}

async fn accept_loop(
    listener: Listener,
    proxy: Proxy,
    graceful: Arc<GracefulShutdown>,
    shutdown: CancellationToken,
) {
    let (tcp, tls) = match listener {
        Listener::Plain(l) => (l, None),
        Listener::Tls(l, config) => (l, Some(TlsAcceptor::from(config))),
    };
    let builder = connection_builder();
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            remote,
            tls: tls.is_some(),
        };
        let (proxy, watcher, builder, tls) = (
            proxy.clone(),
            graceful.watcher(),
            builder.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, conn, proxy, watcher, builder).await,
                Some(acceptor) => {
                    let tls_stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                return debug!(%remote, error = %e, "TLS handshake failed")
                            }
                            Err(_) => return debug!(%remote, "TLS handshake timed out"),
                        };
                    // ALPN already decided the protocol; skip the preface sniffing.
                    let builder = match tls_stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => builder.http2_only(),
                        Some(b"http/1.1") => builder.http1_only(),
                        _ => builder,
                    };
                    serve_connection(tls_stream, conn, proxy, watcher, builder).await
                }
            }
        });
    }
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

async fn serve_connection<S>(
    io: S,
    conn: ConnInfo,
    proxy: Proxy,
    watcher: Watcher,
    builder: auto::Builder<TokioExecutor>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, conn).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        debug!(remote = %conn.remote, error = %e, "connection ended with an error");
    }
}

/// Binds a listener, saying which address failed.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {addr}: {e}")))
}
