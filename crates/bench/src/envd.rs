//! Starting a long-running process in a sandbox with envd's Connect
//! `process.Process/Start` (server streaming, JSON codec), through the edge
//! proxy as the SDKs do. The process stays up while its stream is read.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinHandle;

use crate::http::{request, Client, Endpoint};

pub const ENVD_PORT: u16 = 49983;
const END_STREAM: u8 = 0x02;

/// How a sandbox's ports are reached through the proxy.
#[derive(Debug, Clone)]
pub struct SandboxAddr {
    pub id: String,
    pub envd_token: Option<String>,
    /// E2B_DOMAIN, possibly with a port (`sandbar.localhost:3443`).
    pub domain: String,
}

impl SandboxAddr {
    /// `{port}-{id}.{domain}`, as the Host header carries it.
    pub fn host(&self, port: u16) -> String {
        format!("{port}-{}.{}", self.id, self.domain)
    }

    /// The same without the domain's port: a DNS name for TLS.
    pub fn tls_name(&self, port: u16) -> String {
        let domain = self
            .domain
            .rsplit_once(':')
            .map_or(self.domain.as_str(), |(d, _)| d);
        format!("{port}-{}.{domain}", self.id)
    }

    /// The endpoint for `port` on a proxy listener (TLS when `tls`).
    pub fn endpoint(&self, listener: SocketAddr, port: u16, tls: bool) -> Endpoint {
        Endpoint {
            addr: listener,
            tls_name: tls.then(|| self.tls_name(port)),
            authority: self.host(port),
        }
    }
}

/// A process started in a sandbox; its stream is drained until dropped.
pub struct Background {
    pub pid: u32,
    drain: JoinHandle<()>,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// Starts `bash -l -c cmd` as the default user, with `envs`, and returns once
/// envd reported the process started. No `Connect-Timeout-Ms`: the process
/// lives until the sandbox dies.
pub async fn start(
    client: &Client,
    proxy_tls: SocketAddr,
    sandbox: &SandboxAddr,
    cmd: &str,
    envs: &BTreeMap<String, String>,
) -> Result<Background> {
    let ep = sandbox.endpoint(proxy_tls, ENVD_PORT, true);
    let mut conn = client
        .connect(&ep)
        .await
        .context("connecting to envd through the proxy")?;
    let msg = serde_json::json!({
        "process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd], "envs": envs},
        "stdin": false,
    });
    let req = start_request(&ep, sandbox, envelope(0, msg.to_string().as_bytes()))?;
    conn.ready().await?;
    let resp = conn
        .send_request(req)
        .await
        .context("process.Process/Start")?;
    let status = resp.status();
    let mut body = resp.into_body();
    if status != http::StatusCode::OK {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "process.Process/Start answered {status}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    let mut buf = BytesMut::new();
    let pid = loop {
        if let Some((flags, payload)) = next_envelope(&mut buf)? {
            let v: serde_json::Value =
                serde_json::from_slice(&payload).context("parsing a Start event")?;
            if flags & END_STREAM != 0 {
                bail!("the process stream ended before the process started: {v}");
            }
            if let Some(pid) = v.pointer("/event/start/pid").and_then(|p| p.as_u64()) {
                break pid as u32;
            }
            continue;
        }
        match body.frame().await {
            Some(frame) => {
                if let Ok(data) = frame.context("reading the Start stream")?.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            None => bail!("the Start stream closed before a start event"),
        }
    };
    let drain = tokio::spawn(async move {
        let _conn = conn;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                tracing::trace!("process output: {}", String::from_utf8_lossy(&data));
            }
        }
        tracing::debug!("background process stream ended");
    });
    Ok(Background { pid, drain })
}

/// `commands.run('true')` without the SDK: `Start` of `bash -l -c true` on
/// one keep-alive HTTP/1.1 connection through the proxy (TLS), read to the
/// end of its stream; each round trip timed, after a few untimed ones.
pub async fn exec_round_trips(
    client: &Client,
    proxy_tls: SocketAddr,
    sandbox: &SandboxAddr,
    n: usize,
) -> Result<Vec<f64>> {
    const WARMUP: usize = 3;
    let ep = sandbox.endpoint(proxy_tls, ENVD_PORT, true);
    let mut conn = client
        .connect(&ep)
        .await
        .context("connecting to envd through the proxy")?;
    let msg = serde_json::json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "true"]}});
    let body = envelope(0, msg.to_string().as_bytes());
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + WARMUP {
        let req = start_request(&ep, sandbox, body.clone())?;
        let start = std::time::Instant::now();
        let code = run_on(&mut conn, req).await?;
        let took = start.elapsed();
        match code {
            0 => {}
            code => bail!("`true` exited with {code}"),
        }
        if i >= WARMUP {
            samples.push(took.as_secs_f64() * 1000.0);
        }
    }
    Ok(samples)
}

/// Runs `bash -l -c cmd` as the default user to its end; its exit code.
pub async fn run(
    client: &Client,
    proxy_tls: SocketAddr,
    sandbox: &SandboxAddr,
    cmd: &str,
) -> Result<i64> {
    let ep = sandbox.endpoint(proxy_tls, ENVD_PORT, true);
    let mut conn = client
        .connect(&ep)
        .await
        .context("connecting to envd through the proxy")?;
    let msg = serde_json::json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}});
    let req = start_request(&ep, sandbox, envelope(0, msg.to_string().as_bytes()))?;
    run_on(&mut conn, req)
        .await
        .with_context(|| format!("running `{cmd}`"))
}

/// Sends one `Start` on `conn` and reads its stream to the end: the exit
/// code.
async fn run_on(
    conn: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> Result<i64> {
    conn.ready().await.context("connection to envd closed")?;
    let resp = conn
        .send_request(req)
        .await
        .context("process.Process/Start")?;
    let status = resp.status();
    let wire = resp
        .into_body()
        .collect()
        .await
        .context("reading the Start stream")?
        .to_bytes();
    exit_code(status, &wire)
}

fn start_request(
    ep: &Endpoint,
    sandbox: &SandboxAddr,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>> {
    let mut req = request(ep, http::Method::POST, "/process.Process/Start")
        .header(http::header::CONTENT_TYPE, "application/connect+json")
        .header("Connect-Protocol-Version", "1");
    if let Some(token) = &sandbox.envd_token {
        req = req.header("X-Access-Token", token);
    }
    Ok(req.body(Full::new(body))?)
}

/// The exit code a whole `Start` stream reports.
fn exit_code(status: http::StatusCode, wire: &Bytes) -> Result<i64> {
    if status != http::StatusCode::OK {
        bail!(
            "process.Process/Start answered {status}: {}",
            String::from_utf8_lossy(wire)
        );
    }
    let mut buf = BytesMut::from(&wire[..]);
    let mut code = None;
    while let Some((flags, payload)) = next_envelope(&mut buf)? {
        let v: serde_json::Value =
            serde_json::from_slice(&payload).context("parsing a Start event")?;
        if flags & END_STREAM != 0 {
            if let Some(err) = v.get("error") {
                bail!("the Start stream ended with an error: {err}");
            }
        } else if let Some(end) = v.pointer("/event/end") {
            // proto3 JSON omits a zero exit code.
            code = Some(end.get("exitCode").and_then(|c| c.as_i64()).unwrap_or(0));
        }
    }
    code.ok_or_else(|| anyhow::anyhow!("the Start stream had no end event"))
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// Takes one whole envelope off the front of `buf`, if there is one.
fn next_envelope(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > 16 << 20 {
        bail!("envelope of {len} bytes: not a Connect stream");
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let flags = buf[0];
    buf.advance(5);
    Ok(Some((flags, buf.split_to(len).freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_in_pieces() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&envelope(0, br#"{"event":{"start":{"pid":7}}}"#));
        wire.extend_from_slice(&envelope(END_STREAM, b"{}"));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.extend_from_slice(&[byte]);
            while let Some(e) = next_envelope(&mut buf).unwrap() {
                got.push(e);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].0, &got[0].1[..]),
            (0, &br#"{"event":{"start":{"pid":7}}}"#[..])
        );
        assert_eq!((got[1].0, &got[1].1[..]), (END_STREAM, &b"{}"[..]));
    }

    #[test]
    fn hosts_keep_the_domain_port_but_tls_names_do_not() {
        let s = SandboxAddr {
            id: "abc".into(),
            envd_token: None,
            domain: "sandbar.localhost:3443".into(),
        };
        assert_eq!(s.host(8080), "8080-abc.sandbar.localhost:3443");
        assert_eq!(s.tls_name(8080), "8080-abc.sandbar.localhost");
    }
}
