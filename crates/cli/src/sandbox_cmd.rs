//! `sandbar sandbox create|ls|exec|kill|logs`: a thin client of the REST API, so
//! it behaves exactly as the SDKs see the server.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

pub use crate::api_client::ApiClient;

/// What `sandbox create` asks for.
pub struct NewSandbox<'a> {
    pub template: &'a str,
    pub timeout: Option<u64>,
    pub metadata: &'a [(String, String)],
    pub envs: &'a [(String, String)],
}

pub async fn create(api: &ApiClient, new: &NewSandbox<'_>, json: bool) -> Result<()> {
    let mut body = json!({"templateID": new.template});
    if let Some(t) = new.timeout {
        body["timeout"] = json!(t);
    }
    if !new.metadata.is_empty() {
        body["metadata"] = json!(new.metadata.iter().cloned().collect::<BTreeMap<_, _>>());
    }
    if !new.envs.is_empty() {
        body["envVars"] = json!(new.envs.iter().cloned().collect::<BTreeMap<_, _>>());
    }
    let (_, sb) = api.call(Method::POST, "/sandboxes", Some(body)).await?;
    if json {
        println!("{sb}");
    } else {
        println!("{}", sb["sandboxID"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// Colours for a terminal only (and never with `NO_COLOR` set).
fn paint(text: &str, state: &str) -> String {
    use std::io::IsTerminal;
    let code = match state {
        "running" => "32",
        "paused" => "33",
        _ => return text.to_string(),
    };
    if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Every page of `GET /v2/sandboxes` (running and paused by default).
async fn all_sandboxes(api: &ApiClient, states: &[String]) -> Result<Vec<Value>> {
    let states = if states.is_empty() {
        vec!["running".to_string(), "paused".to_string()]
    } else {
        states.to_vec()
    };
    let query: String = states
        .iter()
        .map(|s| format!("state={}", percent_encode(s)))
        .collect::<Vec<_>>()
        .join("&");
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/v2/sandboxes?{query}&limit=100");
        if let Some(t) = &token {
            path.push_str(&format!("&nextToken={}", percent_encode(t)));
        }
        let (headers, page) = api.call_with_headers(Method::GET, &path, None).await?;
        out.extend(page.as_array().cloned().unwrap_or_default());
        token = headers
            .get("x-next-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

pub async fn list(api: &ApiClient, states: &[String], json: bool) -> Result<()> {
    let list = all_sandboxes(api, states).await?;
    if json {
        for s in &list {
            println!("{s}");
        }
        return Ok(());
    }
    println!(
        "{:<22} {:<22} {:<10} {:<26} METADATA",
        "SANDBOX ID", "TEMPLATE", "STATE", "ENDS AT"
    );
    for s in &list {
        let meta = s["metadata"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .join(",");
        let state = s["state"].as_str().unwrap_or_default();
        println!(
            "{:<22} {:<22} {} {:<26} {meta}",
            s["sandboxID"].as_str().unwrap_or_default(),
            s["templateID"].as_str().unwrap_or_default(),
            paint(&format!("{state:<10}"), state),
            s["endAt"].as_str().unwrap_or_default(),
        );
    }
    Ok(())
}

pub async fn pause(api: &ApiClient, id: &str, memory: bool) -> Result<()> {
    api.call(
        Method::POST,
        &format!("/sandboxes/{id}/pause"),
        Some(json!({ "memory": memory })),
    )
    .await?;
    let how = if memory {
        "frozen in place"
    } else {
        "its files kept"
    };
    println!("paused {id} ({how})");
    Ok(())
}

pub async fn resume(api: &ApiClient, id: &str, timeout: Option<u64>) -> Result<()> {
    let body = timeout.map_or_else(|| json!({}), |t| json!({ "timeout": t }));
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/connect"),
            Some(body),
        )
        .await?;
    if status == StatusCode::CREATED {
        println!("resumed {id}");
    } else {
        println!("{id} was running");
    }
    Ok(())
}

fn mib(v: &Value) -> String {
    format!("{:.1}", v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0))
}

pub async fn metrics(api: &ApiClient, id: &str, since: Option<u64>, json: bool) -> Result<()> {
    let mut path = format!("/sandboxes/{id}/metrics");
    if let Some(s) = since {
        let start = chrono::Utc::now().timestamp() - i64::try_from(s).unwrap_or(i64::MAX / 2);
        path.push_str(&format!("?start={}", start.max(0)));
    }
    let (_, samples) = api.call(Method::GET, &path, None).await?;
    let samples = samples.as_array().cloned().unwrap_or_default();
    if json {
        for m in &samples {
            println!("{m}");
        }
        return Ok(());
    }
    println!(
        "{:<26} {:>6} {:>12} {:>12} {:>12} {:>12}",
        "TIME", "CPU %", "MEM MiB", "OF MiB", "DISK MiB", "OF MiB"
    );
    for m in &samples {
        println!(
            "{:<26} {:>6.1} {:>12} {:>12} {:>12} {:>12}",
            m["timestamp"].as_str().unwrap_or_default(),
            m["cpuUsedPct"].as_f64().unwrap_or(0.0),
            mib(&m["memUsed"]),
            mib(&m["memTotal"]),
            mib(&m["diskUsed"]),
            mib(&m["diskTotal"]),
        );
    }
    Ok(())
}

pub async fn kill(api: &ApiClient, id: &str) -> Result<()> {
    api.call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await?;
    println!("killed {id}");
    Ok(())
}

/// Prints the sandbox's egress log, oldest first.
pub async fn logs(api: &ApiClient, id: &str, level: Option<&str>, json: bool) -> Result<()> {
    let mut path = format!("/v2/sandboxes/{id}/logs?direction=forward");
    if let Some(level) = level {
        path.push_str(&format!("&level={}", percent_encode(level)));
    }
    let (_, body) = api.call(Method::GET, &path, None).await?;
    for entry in body["logs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if json {
            println!("{entry}");
        } else {
            println!(
                "{} {:<5} {}",
                entry["timestamp"].as_str().unwrap_or_default(),
                entry["level"].as_str().unwrap_or_default().to_uppercase(),
                entry["message"].as_str().unwrap_or_default(),
            );
        }
    }
    Ok(())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Looks the sandbox up (for its envd token), then opens a shell in it.
pub async fn shell(api: &ApiClient, proxy_http: &str, id: &str) -> Result<i32> {
    let (_, sb) = api
        .call(Method::GET, &format!("/sandboxes/{id}"), None)
        .await?;
    let domain = sb["domain"].as_str().context("the API gave no domain")?;
    crate::shell_cmd::shell(proxy_http, domain, id, sb["envdAccessToken"].as_str()).await
}

/// Looks the sandbox up (for its envd token), then runs the command.
pub async fn exec(api: &ApiClient, proxy_http: &str, id: &str, command: &[String]) -> Result<i32> {
    let (_, sb) = api
        .call(Method::GET, &format!("/sandboxes/{id}"), None)
        .await?;
    let domain = sb["domain"].as_str().context("the API gave no domain")?;
    crate::exec_cmd::exec(
        proxy_http,
        domain,
        id,
        sb["envdAccessToken"].as_str(),
        command,
    )
    .await
}

/// Parses `k=v` arguments.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}
