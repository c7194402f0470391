//! `sandbar sandbox exec`: runs one command in a sandbox through envd's
//! `process.Process/Start` (Connect protocol, JSON codec, server stream),
//! reached through the edge proxy's plain-HTTP listener with the sandbox's
//! host name, exactly as an SDK would reach it over TLS.
//!
//! Written by hand because the stream is small and fixed: envelopes of one
//! flags byte and a 4-byte big-endian length, then the JSON message; flags
//! `0x02` marks the final end-of-stream message.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

pub(crate) const ENVD_PORT: u16 = 49983;
pub(crate) const END_STREAM: u8 = 0x02;

pub(crate) fn envelope(msg: &Value) -> Vec<u8> {
    let payload = msg.to_string().into_bytes();
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(0);
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend(payload);
    out
}

/// Splits complete envelopes off the front of `buf`.
pub(crate) fn take_envelopes(buf: &mut Vec<u8>) -> Result<Vec<(u8, Value)>> {
    let mut out = Vec::new();
    loop {
        if buf.len() < 5 {
            return Ok(out);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            return Ok(out);
        }
        let flags = buf[0];
        let msg: Value =
            serde_json::from_slice(&buf[5..5 + len]).context("a stream message is not JSON")?;
        buf.drain(..5 + len);
        out.push((flags, msg));
    }
}

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
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!("envd answered {status}: {}", String::from_utf8_lossy(&text));
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
        for (flags, msg) in take_envelopes(&mut buf)? {
            if flags & END_STREAM != 0 {
                if let Some(err) = msg.get("error") {
                    bail!(
                        "envd: {}",
                        err["message"].as_str().unwrap_or("stream failed")
                    );
                }
                continue;
            }
            let event = &msg["event"];
            if let Some(data) = event.get("data") {
                for (key, out) in [
                    ("stdout", &mut stdout as &mut dyn Write),
                    ("stderr", &mut stderr),
                ] {
                    if let Some(b64) = data.get(key).and_then(Value::as_str) {
                        out.write_all(&STANDARD.decode(b64).context("output is not base64")?)?;
                        out.flush()?;
                    }
                }
            } else if let Some(end) = event.get("end") {
                exit = Some(end.get("exitCode").and_then(Value::as_i64).unwrap_or(0) as i32);
            }
        }
    }
    exit.ok_or_else(|| anyhow!("the command's stream ended without an exit status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_across_chunks() {
        let a = envelope(&json!({"event": {"start": {"pid": 7}}}));
        let mut b = envelope(&json!({}));
        b[0] = END_STREAM;
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut buf = all[..3].to_vec();
        assert!(take_envelopes(&mut buf).unwrap().is_empty());
        buf.extend_from_slice(&all[3..a.len() + 2]);
        let got = take_envelopes(&mut buf).unwrap();
        assert_eq!(got, vec![(0, json!({"event": {"start": {"pid": 7}}}))]);
        buf.extend_from_slice(&all[a.len() + 2..]);
        assert_eq!(
            take_envelopes(&mut buf).unwrap(),
            vec![(END_STREAM, json!({}))]
        );
        assert!(buf.is_empty());
    }
}
