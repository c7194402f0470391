//! Runs the proxy in front of one fixed server, for load tests with `wrk`:
//! every `{port}-bench.{domain}` host goes to `BACKEND`.
//!
//! `cargo run --release -p sandbar-proxy --example bench_proxy -- BACKEND HTTP_ADDR HTTPS_ADDR CERT_DIR [DOMAIN]`

use std::net::SocketAddr;
use std::sync::Arc;

use sandbar_proxy::{bind, certs, serve, Listener, Proxy};
use sandbar_runtime::{BoxFuture, Catalog, DialError, Found, Route, RuntimeError};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct OneServer(SocketAddr);

impl Catalog for OneServer {
    fn find(&self, id: &str) -> Option<Found> {
        (id == "bench").then(|| Found::Running(Route::default()))
    }

    fn wake<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move { Err(RuntimeError::NotFound(id.to_string())) })
    }

    fn dial<'a>(&'a self, id: &'a str, port: u16) -> BoxFuture<'a, Result<TcpStream, DialError>> {
        Box::pin(async move {
            if id != "bench" {
                return Err(DialError::NotFound);
            }
            TcpStream::connect(self.0)
                .await
                .map_err(|_| DialError::PortClosed(port))
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend, http, https, dir, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: bench_proxy BACKEND HTTP_ADDR HTTPS_ADDR CERT_DIR [DOMAIN]");
    };
    let domain = rest.first().map_or("sbx.test", String::as_str);
    let tls = certs::ServerCert::local(&certs::LocalCaFiles::new(dir), domain)?.server_config()?;
    let proxy = Proxy::new(domain, Arc::new(OneServer(backend.parse()?)), None);
    let listeners = vec![
        Listener::Plain(bind(http.parse()?).await?),
        Listener::Tls(bind(https.parse()?).await?, tls),
    ];
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    eprintln!("ready");
    serve(proxy, listeners, shutdown).await;
    Ok(())
}
