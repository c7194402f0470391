//! The CLI's client of the REST API (the plain local listener `serve`
//! announces), so that the CLI behaves exactly as the SDKs see the server.

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct ApiClient {
    base: String,
    key: String,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    pub fn new(base: &str, key: &str) -> Result<Self> {
        if !base.starts_with("http://") {
            // The CLI talks to the plain local listener that `serve` announces;
            // TLS would need the proxy's CA wired in here.
            bail!("the sandbar CLI needs an http:// API URL, got {base}");
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let (status, _, value) = self.send(method, path, body).await?;
        Ok((status, value))
    }

    /// A call whose answer's headers matter (paging).
    pub async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(hyper::HeaderMap, Value)> {
        let (_, headers, value) = self.send(method, path, body).await?;
        Ok((headers, value))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Value)> {
        let uri = format!("{}{}", self.base, path);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header("x-api-key", &self.key);
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self
            .http
            .request(req.body(body)?)
            .await
            .with_context(|| format!("{method} {uri} (is `sandbar serve` running?)"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        if !status.is_success() {
            let msg = value["message"].as_str().unwrap_or("(no message)");
            bail!("{method} {path}: {} {msg}", status.as_u16());
        }
        Ok((status, headers, value))
    }

    /// PUTs `bytes` to `url` (an upload link the API handed out, no key).
    pub async fn put(&self, url: &str, bytes: Vec<u8>) -> Result<StatusCode> {
        let len = bytes.len();
        let req = Request::builder()
            .method(Method::PUT)
            .uri(url)
            .header("content-length", len)
            .body(Full::new(Bytes::from(bytes)))?;
        let resp = self
            .http
            .request(req)
            .await
            .with_context(|| format!("PUT {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.into_body().collect().await?.to_bytes();
            bail!(
                "PUT {url}: {} {}",
                status.as_u16(),
                String::from_utf8_lossy(&body)
            );
        }
        Ok(status)
    }
}
