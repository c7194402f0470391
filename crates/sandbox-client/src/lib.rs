//! HTTP/1 requests to servers inside a sandbox: envd's `/init` (the
//! hand-over of a warm or restored sandbox to its caller: token and env
//! vars) and `/health`, the code interpreter's readiness.
//!
//! Owns: speaking HTTP on a stream it is given. Must not touch: namespaces,
//! sockets of its own, the runtime. The runtime, which must not speak HTTP,
//! dials the port inside the sandbox's network and hands the stream to the
//! function [`send`] that whoever starts the runtime wires in
//! (`RuntimeOptions::sandbox_client`); this crate depends on no sandbar
//! crate, so the runtime's own tests can wire it too. [`process`] runs
//! commands through envd (template builds, ready checks, the CLI).

pub mod process;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

/// What a server inside the sandbox answered: status and body (lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends one request on `stream` and reads the whole answer. `token`:
/// envd's access token, sent as `X-Access-Token`; a non-empty `body` goes
/// as JSON. Errors are said in words (the runtime wraps them in its own).
pub async fn send(
    stream: TcpStream,
    method: &str,
    path: &str,
    body: String,
    token: Option<&str>,
) -> Result<Answer, String> {
    let content_type = if body.is_empty() {
        ""
    } else {
        "application/json"
    };
    send_body(stream, method, path, content_type, Bytes::from(body), token).await
}

/// [`send`] with a body of any type (`content_type` empty: none said).
pub async fn send_body(
    stream: TcpStream,
    method: &str,
    path: &str,
    content_type: &str,
    body: Bytes,
    token: Option<&str>,
) -> Result<Answer, String> {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "sandbox");
    if !content_type.is_empty() {
        request = request.header(hyper::header::CONTENT_TYPE, content_type);
    }
    if let Some(token) = token {
        request = request.header("X-Access-Token", token);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("building the request: {e}"))?;
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
    .await;
    conn.abort();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn sends_the_request_and_reads_the_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("{\"a\":1}") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let answer = send(stream, "POST", "/init", "{\"a\":1}".into(), Some("tok"))
            .await
            .unwrap();
        assert_eq!(answer.status, 204);
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /init http/1.1\r\n"), "{request}");
        assert!(request.contains("x-access-token: tok\r\n"), "{request}");
        assert!(
            request.contains("content-type: application/json\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_server_that_closes_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        assert!(send(stream, "GET", "/health", String::new(), None)
            .await
            .is_err());
    }
}
