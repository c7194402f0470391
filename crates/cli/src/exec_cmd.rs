//! `sandbar sandbox exec`: runs one command in a sandbox through envd's
//! `process.Process/Start` (Connect protocol, JSON codec, server stream),
//! reached through the edge proxy's plain-HTTP listener with the sandbox's
//! host name, exactly as an SDK would reach it over TLS.
//!
//! The Connect framing is `sandbar_sandbox_client::process`'s.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sandbar_sandbox_client::process::{events_of, Event};
use serde_json::json;

pub(crate) const ENVD_PORT: u16 = 49983;
pub(crate) use sandbar_sandbox_client::process::{envelope, take_envelopes};

/// Runs `command` with bash in sandbox `id`; returns its exit code.
pub async fn exec(
    proxy_http: &str,
    domain: &str,
    id: &str,
    envd_token: Option<&str>,
    command: &[String],
) -> Result<i32> {
    if command.is_empty() {
        bail!("no command given");
    }
    let bare_domain = domain.rsplit_once(':').map_or(domain, |(d, _)| d);
    let host = format!("{ENVD_PORT}-{id}.{bare_domain}");
    let body = json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", command.join(" ")]}});
    let mut req = Request::post(format!(
        "{}/process.Process/Start",
        proxy_http.trim_end_matches('/')
    ))
    .header("host", &host)
    .header("content-type", "application/connect+json")
    .header("connect-protocol-version", "1");
    if let Some(t) = envd_token {
        req = req.header("x-access-token", t);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .request(req.body(Full::new(Bytes::from(envelope(&body))))?)
        .await
        .with_context(|| format!("connecting to the proxy at {proxy_http}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        bail!(
            "envd answered {status}: {}",
            sandbar_sandbox_client::process::answer_text(body).await
        );
    }

    let mut buf = Vec::new();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let mut exit = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the command's output")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        for (flags, msg) in take_envelopes(&mut buf).map_err(|e| anyhow!(e))? {
            for event in events_of(flags, &msg).map_err(|e| anyhow!(e))? {
                match event {
                    Event::Stdout(b) | Event::Pty(b) => {
                        stdout.write_all(&b)?;
                        stdout.flush()?;
                    }
                    Event::Stderr(b) => {
                        stderr.write_all(&b)?;
                        stderr.flush()?;
                    }
                    Event::Exited { code, .. } => exit = Some(code),
                    Event::Started { .. } => {}
                }
            }
        }
    }
    exit.ok_or_else(|| anyhow!("the command's stream ended without an exit status"))
}
