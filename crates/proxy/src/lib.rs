//! The edge proxy: terminates TLS for `*.{domain}` (a local CA and wildcard
//! certificate made on first start, or the operator's own), and routes
//! `{port}-{id}.{domain}` to that port inside the sandbox through the
//! runtime's [`Catalog`](sandbar_runtime::Catalog); `api.{domain}` goes to
//! the control-plane service given at construction, and the bare `{domain}`
//! to the dashboard service given with [`Proxy::with_dashboard`].
//!
//! HTTP/1.1 and HTTP/2 clients are proxied to the sandbox's HTTP/1.1 server
//! over pooled connections; bodies stream both ways unbuffered; `Upgrade`
//! (WebSocket) requests become a byte tunnel. Errors are the E2B bodies
//! (e2b-protocol section 4). Owns no state but its certificate files: the
//! proxy never creates or kills sandboxes.
//!
//! ```no_run
//! # async fn run(catalog: std::sync::Arc<dyn sandbar_runtime::Catalog>) -> Result<(), Box<dyn std::error::Error>> {
//! use sandbar_proxy::{certs, serve, Listener, Proxy};
//! let files = certs::LocalCaFiles::new("/var/lib/sandbar/tls");
//! let tls = certs::ServerCert::local(&files, "sandbar.localhost")?.server_config()?;
//! let proxy = Proxy::new("sandbar.localhost", catalog, None);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let listeners = vec![
//!     Listener::Tls(sandbar_proxy::bind("127.0.0.1:443".parse()?).await?, tls),
//!     Listener::Plain(sandbar_proxy::bind("127.0.0.1:80".parse()?).await?),
//! ];
//! serve(proxy, listeners, shutdown).await;
//! # Ok(()) }
//! ```

pub mod body;
pub mod certs;
mod envd_routes;
mod headers;
mod proxy;
mod refusal;
mod server;
pub mod target;
mod telemetry;
mod traffic_token;
mod upstream;

pub use body::ProxyBody;
pub use envd_routes::ENVD_PORT;
pub use proxy::{api_service, ApiService, ConnInfo, Proxy};
pub use server::{bind, serve, Listener};
pub use traffic_token::{TOKEN_HEADER, TOKEN_QUERY};

/// What the fuzz targets under `fuzz/` feed (not an API: it may change).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::envd_routes::is_control_path;
    pub use crate::headers::{
        add_forwarded, join_cookies, set_host, strip_hop_by_hop, wants_upgrade,
    };
    pub use crate::refusal::{wants_html, Refusal};
    pub use crate::traffic_token::{check as check_traffic_token, Verdict};
}
