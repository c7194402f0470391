//! The sandbox-wide env vars, as envd (on the same machine) knows them now.
//! Kernels start with the environment of this server, but `/init` can set
//! variables later (after the kernel started), so each kernel is brought up
//! to date before the first code it runs, as E2B's server does.

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

/// envd's plain-HTTP port inside every sandbox.
const ENVD_ADDR: &str = "127.0.0.1:49983";
const TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /envs` from envd, with the caller's access token (envd requires it
/// once the sandbox is secured).
pub async fn fetch(access_token: Option<&str>) -> Result<BTreeMap<String, String>, String> {
    let (status, body) = get_envs(access_token).await?;
    if !status.is_success() {
        return Err(format!(
            "envd answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("envd's /envs is not a string map: {e}"))
}

/// Whether `access_token` is the sandbox's (or the sandbox has none): envd
/// answers `/envs` only then.
pub async fn authorize(access_token: Option<&str>) -> Result<(), crate::contexts::ContextError> {
    use crate::contexts::ContextError;
    match get_envs(access_token).await {
        Ok((status, _)) if status.is_success() => Ok(()),
        Ok((hyper::StatusCode::UNAUTHORIZED, _)) => Err(ContextError::Unauthorized(
            match access_token {
                None => "this sandbox is secured: header X-Access-Token with its access token is required",
                Some(_) => "the X-Access-Token header does not hold this sandbox's access token",
            }
            .into(),
        )),
        Ok((status, body)) => Err(ContextError::Internal(format!(
            "checking the access token with envd: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ))),
        Err(e) => Err(ContextError::Internal(format!(
            "checking the access token with envd: {e}"
        ))),
    }
}

async fn get_envs(access_token: Option<&str>) -> Result<(hyper::StatusCode, Bytes), String> {
    tokio::time::timeout(TIMEOUT, get_envs_inner(access_token))
        .await
        .map_err(|_| format!("envd did not answer within {TIMEOUT:?}"))?
}

async fn get_envs_inner(access_token: Option<&str>) -> Result<(hyper::StatusCode, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(ENVD_ADDR)
        .await
        .map_err(|e| format!("connecting to envd: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("talking to envd: {e}"))?;
    let conn = tokio::spawn(conn);
    let mut request = hyper::Request::get("/envs").header(hyper::header::HOST, ENVD_ADDR);
    if let Some(token) = access_token {
        request = request.header("X-Access-Token", token);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("asking envd: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading envd's answer: {e}"))?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}
