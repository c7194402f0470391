//! The HTTP API the code-interpreter SDKs call (E2B protocol, section 5).
//! Errors are plain text, which the SDKs show as the message.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::contexts::{ContextError, Contexts};
use crate::envvars;
use crate::kernelspec::normalize_language;

/// Lines buffered per run before the kernel's output waits for the client.
const RUN_BUFFER: usize = 256;

impl IntoResponse for ContextError {
    fn into_response(self) -> Response {
        let status = match &self {
            ContextError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ContextError::NotFound(_) => StatusCode::NOT_FOUND,
            ContextError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ContextError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (status, self.to_string()).into_response()
    }
}

pub fn router(contexts: Arc<Contexts>) -> Router {
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(ready))
        .route("/execute", post(execute))
        .route("/contexts", post(create_context).get(list_contexts))
        .route("/contexts/{id}", delete(remove_context))
        .route("/contexts/{id}/restart", post(restart_context))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint") })
        // Notebook front ends call from browsers, as E2B's server allows.
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(contexts)
}

/// Parses a JSON body, answering 400 with serde's reason when it is not.
fn parse<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, ContextError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ContextError::BadRequest(format!("invalid JSON body: {e}")))
}

/// 200 once the default kernels answer, 503 before: what a warm sandbox
/// waits for before it counts as ready (`/health` is up from the start).
async fn ready(State(contexts): State<Arc<Contexts>>) -> Response {
    if contexts.default_ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the default kernels are starting",
        )
            .into_response()
    }
}

#[derive(Debug, Default, Deserialize)]
struct ExecuteBody {
    code: Option<String>,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<BTreeMap<String, Value>>,
}

async fn execute(
    State(contexts): State<Arc<Contexts>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ContextError> {
    // Running code needs the sandbox's access token when it has one: envd
    // is asked, as it alone knows the token (a warm sandbox gets it only at
    // hand-over). The SDKs send it with /execute; their context calls carry
    // none, and running no code, need none.
    let token = headers
        .get("x-access-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    crate::sandbox_env::authorize(token.as_deref()).await?;
    let body: ExecuteBody = parse(&body)?;
    let code = body
        .code
        .ok_or_else(|| ContextError::BadRequest("`code` is required".into()))?;
    let context_id = body.context_id.filter(|c| !c.is_empty());
    let language = body.language.filter(|l| !l.trim().is_empty());
    if context_id.is_some() && language.is_some() {
        return Err(ContextError::BadRequest(
            "give either context_id or language, not both".into(),
        ));
    }
    let env = env_vars(body.env_vars.unwrap_or_default())?;
    let ctx = match (context_id, language) {
        (Some(id), _) => contexts
            .get(&id)
            .ok_or_else(|| ContextError::NotFound(format!("context {id} not found")))?,
        (None, language) => {
            contexts
                .default_for(&normalize_language(language.as_deref()))
                .await?
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(RUN_BUFFER);
    // The token also reads the sandbox's env vars from envd.
    tokio::spawn(ctx.run(code, env, contexts.globals.clone(), token, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::io::Error>(line), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Env var values must be strings with POSIX names.
fn env_vars(raw: BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, ContextError> {
    raw.into_iter()
        .map(|(k, v)| {
            if !envvars::valid_name(&k) {
                return Err(ContextError::BadRequest(format!(
                    "env var name '{k}' is not valid (letters, digits and _, not starting with a digit)"
                )));
            }
            match v {
                Value::String(s) => Ok((k, s)),
                other => Err(ContextError::BadRequest(format!(
                    "env var '{k}' must be a string, not {other}"
                ))),
            }
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
struct CreateBody {
    language: Option<String>,
    cwd: Option<String>,
}

async fn create_context(
    State(contexts): State<Arc<Contexts>>,
    body: Bytes,
) -> Result<Response, ContextError> {
    let body: CreateBody = parse(&body)?;
    let language = normalize_language(body.language.as_deref());
    let ctx = contexts
        .create(&language, body.cwd.as_deref(), true)
        .await?;
    Ok(Json(ctx.info.clone()).into_response())
}

async fn list_contexts(State(contexts): State<Arc<Contexts>>) -> Response {
    Json(contexts.list()).into_response()
}

async fn restart_context(
    State(contexts): State<Arc<Contexts>>,
    Path(id): Path<String>,
) -> Result<Response, ContextError> {
    let ctx = contexts
        .get(&id)
        .ok_or_else(|| ContextError::NotFound(format!("context {id} not found")))?;
    ctx.restart().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_context(
    State(contexts): State<Arc<Contexts>>,
    Path(id): Path<String>,
) -> Result<Response, ContextError> {
    if contexts.remove(&id).await {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ContextError::NotFound(format!("context {id} not found")))
    }
}
