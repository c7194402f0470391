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

    /// `POST /v2/sandboxes` until 201; the time excludes connecting, so that
    /// it is the API's own create-to-ready.
    pub async fn create(&self) -> Result<(Created, Duration)> {
        let mut conn = self
            .client
            .connect(&self.ep)
            .await
            .context("connecting to the API")?;
        let body = serde_json::json!({
            "templateID": self.template,
            "timeout": SANDBOX_TIMEOUT_S,
            "secure": true,
            "metadata": {"purpose": "sandbar-bench"},
        });
        let req = request(&self.ep, http::Method::POST, "/v2/sandboxes")
            .header("X-API-KEY", &self.key)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let start = Instant::now();
        let (status, body) = send(&mut conn, req).await.context("POST /v2/sandboxes")?;
        let took = start.elapsed();
        if status != http::StatusCode::CREATED {
            bail!(
                "POST /v2/sandboxes answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let created: Created = serde_json::from_slice(&body).with_context(|| {
            format!(
                "parsing the create response {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        Ok((created, took))
    }

    /// `DELETE /sandboxes/{id}` until 204.
    pub async fn kill(&self, id: &str) -> Result<Duration> {
        let mut conn = self
            .client
            .connect(&self.ep)
            .await
            .context("connecting to the API")?;
        let req = request(&self.ep, http::Method::DELETE, &format!("/sandboxes/{id}"))
            .header("X-API-KEY", &self.key)
            .body(Full::new(Bytes::new()))?;
        let start = Instant::now();
        let (status, body) = send(&mut conn, req)
            .await
            .with_context(|| format!("DELETE /sandboxes/{id}"))?;
        let took = start.elapsed();
        if status != http::StatusCode::NO_CONTENT {
            bail!(
                "DELETE /sandboxes/{id} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
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
