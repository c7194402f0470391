//! `sandbar sandbox shell ID`: an interactive login shell in a sandbox, on a
//! PTY envd makes (`process.Process/Start` with `pty`), reached through the
//! edge proxy like `exec`. The local terminal is put in raw mode, so every
//! key (Ctrl-C included) goes to the sandbox's shell as typed; keys go up
//! with `SendInput`, a window resize with `Update`; the shell's exit code is
//! this command's.

use std::io::{Read, Write};
use std::os::fd::AsFd;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nix::sys::termios::{self, SetArg, Termios};
use serde_json::{json, Value};

use crate::exec_cmd::{envelope, take_envelopes, ENVD_PORT};
use sandbar_sandbox_client::process::{events_of, Event};

type Http = Client<HttpConnector, Full<Bytes>>;

/// The terminal in raw mode until dropped (also on error or panic).
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context(
            "`sandbox shell` needs a terminal on stdin (for a command, use `sandbox exec`)",
        )?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("raw mode")?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

nix::ioctl_read_bad!(window_size, nix::libc::TIOCGWINSZ, nix::pty::Winsize);

/// `(cols, rows)` of the local terminal (80x24 when it does not say).
fn terminal_size() -> (u16, u16) {
    let mut ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one Winsize into the pointer given.
    let ok = unsafe { window_size(nix::libc::STDOUT_FILENO, &mut ws) }.is_ok();
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col, ws.ws_row)
    } else {
        (80, 24)
    }
}

/// How to reach one sandbox's envd through the proxy.
struct Envd {
    http: Http,
    base: String,
    host: String,
    token: Option<String>,
}

impl Envd {
    fn request(&self, method: &str) -> hyper::http::request::Builder {
        let mut req = Request::post(format!("{}/process.Process/{method}", self.base))
            .header("host", &self.host)
            .header("connect-protocol-version", "1");
        if let Some(t) = &self.token {
            req = req.header("x-access-token", t);
        }
        req
    }

    /// A unary call (JSON codec); its error message if it failed.
    async fn unary(&self, method: &str, body: Value) -> Result<()> {
        let req = self
            .request(method)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self.http.request(req).await?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.into_body().collect().await?.to_bytes();
            bail!("{method}: {status} {}", String::from_utf8_lossy(&text));
        }
        Ok(())
    }
}

/// Runs an interactive shell in sandbox `id`; returns its exit code.
pub async fn shell(
    proxy_http: &str,
    domain: &str,
    id: &str,
    envd_token: Option<&str>,
) -> Result<i32> {
    let bare_domain = domain.rsplit_once(':').map_or(domain, |(d, _)| d);
    let envd = std::sync::Arc::new(Envd {
        http: Client::builder(TokioExecutor::new()).build_http(),
        base: proxy_http.trim_end_matches('/').to_string(),
        host: format!("{ENVD_PORT}-{id}.{bare_domain}"),
        token: envd_token.map(str::to_string),
    });
    let raw = RawMode::enter()?;
    let (cols, rows) = terminal_size();
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let start = json!({
        "process": {"cmd": "/bin/bash", "args": ["-l", "-i"], "envs": {"TERM": term}},
        "pty": {"size": {"cols": cols, "rows": rows}},
    });
    let req = envd
        .request("Start")
        .header("content-type", "application/connect+json")
        .body(Full::new(Bytes::from(envelope(&start))))?;
    let resp = envd
        .http
        .request(req)
        .await
        .with_context(|| format!("connecting to the proxy at {proxy_http}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        drop(raw);
        bail!(
            "envd answered {status}: {}",
            sandbar_sandbox_client::process::answer_text(body).await
        );
    }

    // Keys: read on a thread (stdin is blocking), sent in order.
    let (keys_tx, mut keys_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || keys_tx.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut pid: Option<u64> = None;
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("listening for window resizes")?;
    let mut stdout = std::io::stdout();
    let mut buf = Vec::new();
    let mut sending: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            frame = body.frame() => {
                let Some(frame) = frame else { break };
                let Ok(data) = frame.context("reading the shell's output")?.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                for (flags, msg) in take_envelopes(&mut buf).map_err(|e| anyhow!(e))? {
                    let events = match events_of(flags, &msg) {
                        Ok(events) => events,
                        Err(e) => {
                            drop(raw);
                            bail!(e);
                        }
                    };
                    for event in events {
                        match event {
                            Event::Started { pid: p } => pid = Some(p),
                            Event::Pty(b) | Event::Stdout(b) | Event::Stderr(b) => {
                                stdout.write_all(&b)?;
                                stdout.flush()?;
                            }
                            Event::Exited { code, .. } => {
                                drop(raw);
                                return Ok(code);
                            }
                        }
                    }
                }
            }
            Some(keys) = keys_rx.recv(), if pid.is_some() => {
                let pid = pid.expect("guarded");
                let envd = envd.clone();
                let before = sending.take();
                // One call at a time, in order: a key never overtakes another.
                sending = Some(tokio::spawn(async move {
                    if let Some(b) = before {
                        let _ = b.await;
                    }
                    let body = json!({"process": {"pid": pid}, "input": {"pty": STANDARD.encode(&keys)}});
                    if let Err(e) = envd.unary("SendInput", body).await {
                        tracing::debug!(error = %e, "sending keys failed");
                    }
                }));
            }
            _ = winch.recv(), if pid.is_some() => {
                let (cols, rows) = terminal_size();
                let body = json!({"process": {"pid": pid}, "pty": {"size": {"cols": cols, "rows": rows}}});
                if let Err(e) = envd.unary("Update", body).await {
                    tracing::debug!(error = %e, "resizing the sandbox's terminal failed");
                }
            }
        }
    }
    drop(raw);
    Err(anyhow!(
        "the shell's stream ended without an exit status (was the sandbox killed?)"
    ))
}
