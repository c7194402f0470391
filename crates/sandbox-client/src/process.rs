//! Commands in a sandbox through envd's `process.Process/Start` (Connect
//! protocol, JSON codec, a server stream), on a stream the caller has
//! connected to envd's port.
//!
//! Written by hand because the stream is small and fixed: envelopes of one
//! flags byte and a 4-byte big-endian length, then the JSON message; flags
//! `0x02` marks the final end-of-stream message. (connectrpc's generated
//! clients would need envd's protos compiled into every caller.)

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Flags of the final message of a Connect stream.
pub const END_STREAM: u8 = 0x02;

/// One Connect envelope holding `msg`.
pub fn envelope(msg: &Value) -> Vec<u8> {
    let payload = msg.to_string().into_bytes();
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(0);
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend(payload);
    out
}

/// Splits complete envelopes off the front of `buf`.
pub fn take_envelopes(buf: &mut Vec<u8>) -> Result<Vec<(u8, Value)>, String> {
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
        let msg: Value = serde_json::from_slice(&buf[5..5 + len])
            .map_err(|e| format!("a stream message is not JSON: {e}"))?;
        buf.drain(..5 + len);
        out.push((flags, msg));
    }
}

/// What one stream message of a running command says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        pid: u64,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Output of a command started with a terminal.
    Pty(Vec<u8>),
    Exited {
        code: i32,
        error: Option<String>,
    },
}

/// The events in one message of `process.Start`'s stream; an error of the
/// stream itself (flags [`END_STREAM`] with `error`) is an `Err`.
pub fn events_of(flags: u8, msg: &Value) -> Result<Vec<Event>, String> {
    if flags & END_STREAM != 0 {
        return match msg.get("error") {
            Some(err) => Err(format!(
                "envd: {}",
                err["message"].as_str().unwrap_or("the stream failed")
            )),
            None => Ok(Vec::new()),
        };
    }
    let event = &msg["event"];
    let mut out = Vec::new();
    if let Some(start) = event.get("start") {
        out.push(Event::Started {
            pid: start["pid"].as_u64().unwrap_or(0),
        });
    }
    if let Some(data) = event.get("data") {
        for (key, make) in [
            ("stdout", Event::Stdout as fn(Vec<u8>) -> Event),
            ("stderr", Event::Stderr),
            ("pty", Event::Pty),
        ] {
            if let Some(b64) = data.get(key).and_then(Value::as_str) {
                let bytes = STANDARD
                    .decode(b64)
                    .map_err(|e| format!("output is not base64: {e}"))?;
                out.push(make(bytes));
            }
        }
    }
    if let Some(end) = event.get("end") {
        out.push(Event::Exited {
            code: end.get("exitCode").and_then(Value::as_i64).unwrap_or(0) as i32,
            error: end.get("error").and_then(Value::as_str).map(str::to_string),
        });
    }
    Ok(out)
}

/// The whole body of a refusal, as text (what envd says went wrong).
pub async fn answer_text(body: hyper::body::Incoming) -> String {
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A command to run: argv, environment, working directory and user.
#[derive(Debug, Clone, Default)]
pub struct Command {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// Who runs it (envd's default user when `None`).
    pub user: Option<String>,
}

impl Command {
    /// `line` run by `bash -l -c`, as E2B's SDKs run commands.
    pub fn shell(line: impl Into<String>) -> Self {
        Self {
            cmd: "/bin/bash".into(),
            args: vec!["-l".into(), "-c".into(), line.into()],
            ..Self::default()
        }
    }

    fn start_request(&self) -> Value {
        let mut process = json!({"cmd": self.cmd, "args": self.args, "envs": self.envs});
        if let Some(cwd) = &self.cwd {
            process["cwd"] = json!(cwd);
        }
        json!({ "process": process })
    }
}

/// Runs `command` in the sandbox whose envd `stream` reaches, handing each
/// event to `on_event` as it comes; returns the exit code. `token`: envd's
/// access token.
pub async fn run(
    stream: TcpStream,
    token: Option<&str>,
    command: &Command,
    mut on_event: impl FnMut(&Event) + Send,
) -> Result<i32, String> {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with envd: {e}"))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let mut request = hyper::Request::post("/process.Process/Start")
            .header(hyper::header::HOST, "sandbox")
            .header(hyper::header::CONTENT_TYPE, "application/connect+json")
            .header("connect-protocol-version", "1");
        if let Some(token) = token {
            request = request.header("X-Access-Token", token);
        }
        if let Some(user) = &command.user {
            request = request.header(
                hyper::header::AUTHORIZATION,
                format!("Basic {}", STANDARD.encode(format!("{user}:"))),
            );
        }
        let request = request
            .body(Full::new(Bytes::from(envelope(&command.start_request()))))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("envd: {e}"))?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            return Err(format!(
                "envd answered {status}: {}",
                answer_text(body).await
            ));
        }
        let mut buf = Vec::new();
        let mut exit = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the command's output: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            for (flags, msg) in take_envelopes(&mut buf)? {
                for event in events_of(flags, &msg)? {
                    if let Event::Exited { code, .. } = &event {
                        exit = Some(*code);
                    }
                    on_event(&event);
                }
            }
        }
        exit.ok_or_else(|| "the command's stream ended without an exit status".to_string())
    }
    .await;
    conn.abort();
    result
}

/// Writes `bytes` to `path` in the sandbox as `user` (envd's `/files`,
/// a raw body), making missing directories.
pub async fn upload(
    stream: TcpStream,
    token: Option<&str>,
    path: &str,
    user: &str,
    bytes: Bytes,
) -> Result<(), String> {
    let query = format!(
        "/files?path={}&username={}",
        percent_encode(path),
        percent_encode(user)
    );
    let answer = crate::send_body(
        stream,
        "POST",
        &query,
        "application/octet-stream",
        bytes,
        token,
    )
    .await?;
    if answer.status / 100 != 2 {
        return Err(format!(
            "envd refused the upload ({}): {}",
            answer.status, answer.body
        ));
    }
    Ok(())
}

/// Escapes everything but unreserved characters and `/` for a query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

    #[test]
    fn stream_messages_become_events() {
        let out = events_of(
            0,
            &json!({"event": {"data": {"stdout": STANDARD.encode("hi")}}}),
        )
        .unwrap();
        assert_eq!(out, vec![Event::Stdout(b"hi".to_vec())]);
        let end = events_of(
            0,
            &json!({"event": {"end": {"exitCode": 3, "error": "exit status 3"}}}),
        )
        .unwrap();
        assert_eq!(
            end,
            vec![Event::Exited {
                code: 3,
                error: Some("exit status 3".into())
            }]
        );
        assert!(events_of(END_STREAM, &json!({"error": {"message": "boom"}})).is_err());
        assert!(events_of(END_STREAM, &json!({})).unwrap().is_empty());
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(percent_encode("/tmp/a b&c"), "/tmp/a%20b%26c");
    }
}
