//! Custom templates through the build API as the SDKs drive it (request,
//! upload a COPY's files, start, poll the status): a build of
//! `fromTemplate('base')` + COPY + 2 RUN cold and again fully cached;
//! creates from that template beside creates from `base` (taken in turns,
//! so both see the same machine); and creates from a template whose start
//! command is a Python HTTP server, which return once it listens.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::api::Api;
use crate::create::ms;
use crate::envd::{self, SandboxAddr};
use crate::http::{request, send};
use crate::persist::Edge;
use crate::report::{Measure, Row, Target};
use crate::stats::Summary;

pub struct TemplateCounts {
    pub creates: usize,
}

/// The files of the COPY step: one small file, as a tar.
fn context_tar(nonce: &str) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let data = format!("bench {nonce}\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "app.txt", data.as_bytes())?;
    Ok(b.into_inner()?)
}

fn json_of(body: &Bytes) -> Result<Value> {
    serde_json::from_slice(body).context("a JSON answer")
}

/// PUTs an upload link's body (no API key: the link is the permission).
async fn put(api: &Api, url: &str, body: Vec<u8>) -> Result<()> {
    let path = url
        .find("/template-files/")
        .map(|i| &url[i..])
        .context("an upload link of this server")?;
    let mut conn = api.client.connect(&api.ep).await?;
    let len = body.len();
    let req = request(&api.ep, Method::PUT, path)
        .header(http::header::CONTENT_LENGTH, len)
        .body(Full::new(Bytes::from(body)))?;
    let (status, text) = send(&mut conn, req).await?;
    if !status.is_success() {
        bail!("PUT {path}: {status} {}", String::from_utf8_lossy(&text));
    }
    Ok(())
}

/// One build as an SDK makes it; the template id and how long it took
/// from the request to `ready`.
async fn build(
    api: &Api,
    name: &str,
    steps: Value,
    start: Option<(&str, &str)>,
    files: &[(String, Vec<u8>)],
) -> Result<(String, Duration)> {
    let started = Instant::now();
    let (made, _) = api
        .call(
            Method::POST,
            "/v3/templates",
            Some(json!({"name": name})),
            StatusCode::ACCEPTED,
        )
        .await?;
    let made = json_of(&made)?;
    let tid = made["templateID"]
        .as_str()
        .context("templateID")?
        .to_string();
    let bid = made["buildID"].as_str().context("buildID")?.to_string();
    for (hash, tar) in files {
        let (link, _) = api
            .call(
                Method::GET,
                &format!("/templates/{tid}/files/{hash}"),
                None,
                StatusCode::CREATED,
            )
            .await?;
        let link = json_of(&link)?;
        if link["present"] != json!(true) {
            put(
                api,
                link["url"].as_str().context("an upload url")?,
                tar.clone(),
            )
            .await?;
        }
    }
    let mut body = json!({"fromTemplate": "base", "steps": steps});
    if let Some((cmd, ready)) = start {
        body["startCmd"] = json!(cmd);
        body["readyCmd"] = json!(ready);
    }
    api.call(
        Method::POST,
        &format!("/v2/templates/{tid}/builds/{bid}"),
        Some(body),
        StatusCode::ACCEPTED,
    )
    .await?;
    let mut offset = 0;
    loop {
        let (st, _) = api
            .call(
                Method::GET,
                &format!("/templates/{tid}/builds/{bid}/status?logsOffset={offset}"),
                None,
                StatusCode::OK,
            )
            .await?;
        let st = json_of(&st)?;
        offset += st["logEntries"].as_array().map_or(0, Vec::len);
        match st["status"].as_str() {
            Some("ready") => return Ok((tid, started.elapsed())),
            Some("error") => bail!("the build failed: {}", st["reason"]["message"]),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn delete(api: &Api, tid: &str) {
    let _ = api
        .call(
            Method::DELETE,
            &format!("/templates/{tid}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
}

/// Creates of `template` and of `base` in turns; each killed at once.
async fn creates_in_turns(api: &Api, template: &str, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut custom, mut base) = (Vec::new(), Vec::new());
    for _ in 0..n {
        for (which, out) in [(template, &mut custom), ("base", &mut base)] {
            let (c, took) = api.create_with(json!({"templateID": which})).await?;
            out.push(ms(took));
            api.kill(&c.id).await.ok();
        }
    }
    Ok((custom, base))
}

pub async fn rows(api: &Api, edge: &Edge, counts: &TemplateCounts) -> Vec<Row> {
    match rows_or_error(api, edge, counts).await {
        Ok(rows) => rows,
        Err(e) => vec![Row::error("template builds", &e)],
    }
}

async fn rows_or_error(api: &Api, edge: &Edge, counts: &TemplateCounts) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    // Unique to this run: a cold build finds nothing in the step cache.
    let nonce = format!("{:016x}", rand::random::<u64>());
    let tar = context_tar(&nonce)?;
    let hash = {
        let d = tar
            .iter()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
        format!("{d:016x}{nonce}{:032x}", 0)
    };
    let steps = json!([
        {"type": "COPY", "args": ["app.txt", "/home/user/", "", ""], "filesHash": hash},
        {"type": "RUN", "args": [format!("echo {nonce} > /home/user/one")]},
        {"type": "RUN", "args": ["cp /home/user/app.txt /home/user/two"]},
    ]);
    let files = vec![(hash, tar)];
    let name = format!("bench-{nonce}");
    let (tid, cold) = build(api, &name, steps.clone(), None, &files).await?;
    rows.push(
        Row::millis("template build: fromTemplate('base') + COPY + 2 RUN, cold", &[ms(cold)])
            .note("POST /v3/templates → ready, the COPY's files uploaded; a build sandbox, each step's layer snapshotted"),
    );
    let mut cached = Vec::new();
    for _ in 0..counts.creates.clamp(1, 5) {
        let (_, took) = build(api, &name, steps.clone(), None, &files).await?;
        cached.push(ms(took));
    }
    rows.push(
        Row::millis(
            "template build, the same definition again (fully cached)",
            &cached,
        )
        .target(Target::MedianAtMost(500.0))
        .note("every step found in the step cache; the files already uploaded")
        .judged(),
    );

    let (custom, base) = creates_in_turns(api, &tid, counts.creates).await?;
    rows.push(Row::millis(
        "create → ready from that custom template",
        &custom,
    ));
    rows.push(Row::millis("create → ready from base (same turns)", &base));
    if let (Some(c), Some(b)) = (Summary::of(&custom), Summary::of(&base)) {
        rows.push(
            Row::new(
                "create from a custom template vs from base",
                Measure::Value {
                    unit: "%".into(),
                    value: (1000.0 * c.median / b.median).round() / 10.0,
                },
            )
            .target(Target::AtMost(110.0))
            .note("p50 ÷ p50; the template's layer is one more overlay lower layer")
            .judged(),
        );
    }
    delete(api, &tid).await;

    // A start command: a Python HTTP server, ready when the port listens.
    let server = format!("bench-server-{nonce}");
    let server_steps = json!([{"type": "RUN", "args": [format!("mkdir -p /home/user/site && echo {nonce} > /home/user/site/index.html")]}]);
    let (sid, took) = build(
        api,
        &server,
        server_steps,
        Some((
            "cd /home/user/site && python3 -m http.server 8000",
            "[ -n \"$(ss -Htln sport = :8000)\" ]",
        )),
        &[],
    )
    .await?;
    rows.push(
        Row::millis("template build with a start command (Python HTTP server), cold", &[ms(took)])
            .note("the start command run and its ready command passed in the build sandbox, then its layer taken (with the processes where the node has CRIU)"),
    );
    let mut ready = Vec::new();
    for _ in 0..counts.creates {
        let (c, took) = api.create_with(json!({"templateID": sid})).await?;
        ready.push(ms(took));
        let sbx = SandboxAddr {
            id: c.id.clone(),
            envd_token: c.envd_token.clone(),
            domain: edge.domain.clone(),
        };
        let code = envd::run(
            &api.client,
            edge.https,
            &sbx,
            "curl -sf http://localhost:8000/ >/dev/null",
        )
        .await;
        api.kill(&c.id).await.ok();
        if !matches!(code, Ok(0)) {
            bail!("the template's server did not answer right after create: {code:?}");
        }
    }
    rows.push(
        Row::millis("create → ready from a template with a Python HTTP server start command (server answering)", &ready)
            .note("the create returns once the server listens: restored with it running where the node has CRIU, else booted and its ready command polled every 50 ms"),
    );
    delete(api, &sid).await;
    Ok(rows)
}
