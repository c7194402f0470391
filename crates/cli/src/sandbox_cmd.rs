//! `sandbar sandbox create|ls|exec|kill`: a thin client of the REST API, so
//! it behaves exactly as the SDKs see the server.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

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

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
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
        Ok((status, value))
    }
}

pub async fn create(
    api: &ApiClient,
    template: &str,
    timeout: Option<u64>,
    metadata: &[(String, String)],
    envs: &[(String, String)],
) -> Result<()> {
    let mut body = json!({"templateID": template});
    if let Some(t) = timeout {
        body["timeout"] = json!(t);
    }
    if !metadata.is_empty() {
        body["metadata"] = json!(metadata.iter().cloned().collect::<BTreeMap<_, _>>());
    }
    if !envs.is_empty() {
        body["envVars"] = json!(envs.iter().cloned().collect::<BTreeMap<_, _>>());
    }
    let (_, sb) = api.call(Method::POST, "/sandboxes", Some(body)).await?;
    println!("{}", sb["sandboxID"].as_str().unwrap_or_default());
    Ok(())
}

pub async fn list(api: &ApiClient) -> Result<()> {
    let (_, list) = api.call(Method::GET, "/sandboxes", None).await?;
    println!(
        "{:<22} {:<22} {:<10} {:<26} METADATA",
        "SANDBOX ID", "TEMPLATE", "STATE", "ENDS AT"
    );
    for s in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let meta = s["metadata"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .join(",");
        println!(
            "{:<22} {:<22} {:<10} {:<26} {meta}",
            s["sandboxID"].as_str().unwrap_or_default(),
            s["templateID"].as_str().unwrap_or_default(),
            s["state"].as_str().unwrap_or_default(),
            s["endAt"].as_str().unwrap_or_default(),
        );
    }
    Ok(())
}

pub async fn kill(api: &ApiClient, id: &str) -> Result<()> {
    api.call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await?;
    println!("killed {id}");
    Ok(())
}

/// Looks the sandbox up (for its envd token), then runs the command.
pub async fn exec(api: &ApiClient, proxy_http: &str, id: &str, command: &[String]) -> Result<i32> {
    let (_, sb) = api
        .call(Method::GET, &format!("/sandboxes/{id}"), None)
        .await?;
    let domain = sb["domain"].as_str().context("the API gave no domain")?;
    crate::exec_cmd::exec(
        proxy_http,
        domain,
        id,
        sb["envdAccessToken"].as_str(),
        command,
    )
    .await
}

/// Parses `k=v` arguments.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}
