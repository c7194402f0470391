//! The control-plane calls the bench makes itself (REST, e2b-protocol
//! section 2): create and kill, timed from the request to its answer.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;

use crate::http::{request, send, Client, Endpoint};

/// How long a bench sandbox may live: longer than any row keeps one.
const SANDBOX_TIMEOUT_S: u64 = 600;

#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    #[serde(rename = "sandboxID")]
    pub id: String,
    #[serde(rename = "envdAccessToken")]
    pub envd_token: Option<String>,
}

#[derive(Clone)]
pub struct Api {
    pub client: Client,
    pub ep: Endpoint,
    key: String,
    template: String,
}

impl Api {
    pub fn new(client: Client, ep: Endpoint, key: String, template: String) -> Self {
        Self {
            client,
            ep,
            key,
            template,
        }
    }

    /// One call: `method path` with a JSON body, answered `want`; the time
    /// excludes connecting, so that it is the API's own.
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
        want: http::StatusCode,
    ) -> Result<(Bytes, Duration)> {
        let mut conn = self
            .client
            .connect(&self.ep)
            .await
            .context("connecting to the API")?;
        let mut req = request(&self.ep, method.clone(), path).header("X-API-KEY", &self.key);
        let body = match body {
            Some(b) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body))?;
        let start = Instant::now();
        let (status, body) = send(&mut conn, req)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let took = start.elapsed();
        if status != want {
            bail!(
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok((body, took))
    }

    /// `POST /v2/sandboxes` with `extra` fields on the bench's defaults,
    /// until 201.
    pub async fn create_with(&self, extra: serde_json::Value) -> Result<(Created, Duration)> {
        let mut body = serde_json::json!({
            "templateID": self.template,
            "timeout": SANDBOX_TIMEOUT_S,
            "secure": true,
            "metadata": {"purpose": "sandbar-bench"},
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let (body, took) = self
            .call(
                http::Method::POST,
                "/v2/sandboxes",
                Some(body),
                http::StatusCode::CREATED,
            )
            .await?;
        let created: Created = serde_json::from_slice(&body).with_context(|| {
            format!(
                "parsing the create response {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        Ok((created, took))
    }

    /// The bench template's warm pool as `/metrics` shows it: (ready,
    /// target); `None` where the server keeps none for it.
    pub async fn warm_pool(&self) -> Result<Option<(usize, usize)>> {
        let (body, _) = self
            .call(http::Method::GET, "/metrics", None, http::StatusCode::OK)
            .await?;
        let text = String::from_utf8_lossy(&body);
        let gauge = |name: &str| {
            let prefix = format!("{name}{{template=\"{}\"}} ", self.template);
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
                .map(|v| v as usize)
        };
        Ok(gauge("sandbar_warm_pool_ready").zip(gauge("sandbar_warm_pool_target")))
    }

    /// `POST /v2/sandboxes` of the bench's template until 201.
    pub async fn create(&self) -> Result<(Created, Duration)> {
        self.create_with(serde_json::json!({})).await
    }

    /// `DELETE /sandboxes/{id}` until 204.
    pub async fn kill(&self, id: &str) -> Result<Duration> {
        let path = format!("/sandboxes/{id}");
        let (_, took) = self
            .call(
                http::Method::DELETE,
                &path,
                None,
                http::StatusCode::NO_CONTENT,
            )
            .await?;
        Ok(took)
    }

    /// Kills every sandbox in `ids`, a few at a time; the first error wins
    /// but all are attempted.
    pub async fn kill_all(&self, ids: &[String]) -> Result<()> {
        use futures::StreamExt;
        let results: Vec<Result<Duration>> =
            futures::stream::iter(ids.iter().map(|id| self.kill(id)))
                .buffer_unordered(8)
                .collect()
                .await;
        results
            .into_iter()
            .find(|r| r.is_err())
            .unwrap_or(Ok(Duration::ZERO))
            .map(|_| ())
    }
}
