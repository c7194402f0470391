//! Connections to servers inside sandboxes: dialed through the runtime's
//! [`Catalog`] and kept alive in hyper-util's pool per (sandbox, port), so a
//! stream of requests does not pay a dial (a namespace switch) each time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sandbar_runtime::{Catalog, DialError};
use tokio::net::TcpStream;

/// How long an unused kept-alive connection to a sandbox stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_IDLE_PER_PORT: usize = 64;

/// Dials `http://{id}:{port}/` through the catalog: the pool keys on the URI
/// authority, so the sandbox id stands in for a host name.
#[derive(Clone)]
pub struct CatalogConnector {
    catalog: Arc<dyn Catalog>,
}

impl tower::Service<Uri> for CatalogConnector {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let catalog = self.catalog.clone();
        Box::pin(async move {
            // Only URIs made by `upstream_uri` reach here.
            let (Some(id), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(DialError::NotFound);
            };
            let stream = catalog.dial(id, port).await?;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(stream))
        })
    }
}

pub type UpstreamClient = Client<CatalogConnector, Incoming>;

pub fn client(catalog: Arc<dyn Catalog>) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE_PER_PORT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        // The Host header is set by the proxy (original or masked).
        .set_host(false)
        .build(CatalogConnector { catalog })
}

/// The absolute URI that selects the pool and dial target; hyper sends only
/// the path and query on the wire.
pub fn upstream_uri(id: &str, port: u16, path_and_query: &str) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme("http")
        .authority(format!("{id}:{port}"))
        .path_and_query(path_and_query)
        .build()
}

/// The dial error behind a client error, if the failure was the dial.
pub fn dial_error(err: &hyper_util::client::legacy::Error) -> Option<&DialError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(d) = e.downcast_ref::<DialError>() {
            return Some(d);
        }
        source = e.source();
    }
    None
}
