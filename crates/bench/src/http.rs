//! A small HTTP/1.1 client over hyper: one connection per use, to a chosen
//! socket address with a chosen Host and TLS name. The bench must reach
//! `{port}-{id}.{domain}` on the loopback listener it started, whatever the
//! resolver says about that name, so it dials addresses itself instead of
//! using a pooled client that resolves hosts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where to connect and what to call the server there.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// TLS server name (certificate check and SNI); `None` for plain HTTP.
    pub tls_name: Option<String>,
    /// The Host header.
    pub authority: String,
}

impl Endpoint {
    /// From a base URL such as `https://api.sandbar.localhost:3443`.
    pub async fn from_url(url: &str) -> Result<Self> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("parsing URL {url:?}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => bail!("unsupported scheme {other:?} in {url:?}"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("no host in {url:?}"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addr = resolve(&host, port).await?;
        Ok(Self {
            addr,
            tls_name: tls.then(|| host.clone()),
            authority: authority.as_str().to_string(),
        })
    }
}

/// Resolves through the system, preferring IPv4; names under `localhost`
/// are loopback by definition (RFC 6761), also where glibc is not set up to
/// say so.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("{host} resolved to no address"))
}

#[derive(Clone)]
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    /// Trusts the certificates in the given PEM files (sandbar's CA); files
    /// that do not exist are skipped.
    pub fn new(ca_files: &[&Path]) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for file in ca_files {
            let Ok(pem) = std::fs::read(file) else {
                continue;
            };
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.with_context(|| format!("reading certificates in {}", file.display()))?;
                // Bundles may hold certificates rustls cannot use; they are not ours.
                let _ = roots.add(cert);
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { tls: Arc::new(tls) })
    }

    /// A TCP (and TLS, when the endpoint says so) stream to the endpoint.
    pub async fn stream(&self, ep: &Endpoint) -> Result<Box<dyn Io>> {
        let tcp = TcpStream::connect(ep.addr)
            .await
            .with_context(|| format!("connecting to {}", ep.addr))?;
        tcp.set_nodelay(true)?;
        let Some(name) = &ep.tls_name else {
            return Ok(Box::new(tcp));
        };
        let server_name =
            ServerName::try_from(name.clone()).with_context(|| format!("TLS name {name:?}"))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {name} at {}", ep.addr))?;
        Ok(Box::new(tls))
    }

    /// An HTTP/1.1 connection, driven by a background task until dropped.
    pub async fn connect(&self, ep: &Endpoint) -> Result<SendRequest<Full<Bytes>>> {
        let io = self.stream(ep).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection closed: {e}");
            }
        });
        Ok(sender)
    }
}

/// A request to `ep` with its Host header set.
pub fn request(ep: &Endpoint, method: http::Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, &ep.authority)
}

/// Sends one request and reads the whole response body.
pub async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(http::StatusCode, Bytes)> {
    sender.ready().await.context("connection not ready")?;
    let resp: Response<hyper::body::Incoming> =
        sender.send_request(req).await.context("sending request")?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading response body")?
        .to_bytes();
    Ok((status, body))
}
