//! Sandboxes that last, through the REST API as the SDKs call it: pause and
//! resume in both modes, a snapshot of a sandbox with 100 MiB written and a
//! create from it, fork ×10, auto-resume (the first answer to a request for
//! a paused sandbox), and what writing 1 GiB inside costs in memory.
//! Each row is held to the issue's target; the relative ones ("create +
//! 5 ms") against the create p50 measured in this same section.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::api::{Api, Created};
use crate::create::ms;
use crate::envd::{self, SandboxAddr, ENVD_PORT};
use crate::http::{request, send};
use crate::memory;
use crate::report::{Measure, Row, Target};
use crate::stats::Summary;

const MIB: f64 = 1024.0 * 1024.0;
/// What the snapshot and fork rows have written in the sandbox first.
const WRITTEN_MIB: u32 = 100;
/// Forks made at once.
const FORKS: u32 = 10;

/// How many of each, from the run's size.
pub struct PersistCounts {
    pub rounds: usize,
    pub big_write_mib: u32,
}

/// Where the server is: the proxy's TLS listener and the public domain.
pub struct Edge {
    pub https: SocketAddr,
    pub domain: String,
    pub instance: String,
}

pub async fn rows(api: &Api, edge: &Edge, counts: &PersistCounts) -> Vec<Row> {
    let mut rows = Vec::new();
    let create = creates(api, counts.rounds.max(3)).await;
    let create_p50 = Summary::of(&create).map(|s| s.median);
    rows.push(
        Row::millis(
            "create → ready, 1 concurrent (this section's reference)",
            &create,
        )
        .note("the reference of the relative targets below"),
    );
    rows.extend(pause_rows(api, edge, counts.rounds, create_p50).await);
    rows.extend(snapshot_rows(api, edge, counts.rounds, create_p50).await);
    rows.push(fork_row(api, edge, counts.rounds).await);
    rows.extend(auto_resume_rows(api, edge, counts.rounds).await);
    rows.extend(big_write_rows(api, edge, counts.big_write_mib).await);
    rows
}

async fn creates(api: &Api, n: usize) -> Vec<f64> {
    let mut samples = Vec::new();
    for _ in 0..n {
        if let Ok((c, took)) = api.create().await {
            samples.push(ms(took));
            api.kill(&c.id).await.ok();
        }
    }
    samples
}

fn addr(created: &Created, edge: &Edge) -> SandboxAddr {
    SandboxAddr {
        id: created.id.clone(),
        envd_token: created.envd_token.clone(),
        domain: edge.domain.clone(),
    }
}

async fn run_ok(api: &Api, edge: &Edge, sbx: &SandboxAddr, cmd: &str) -> Result<()> {
    match envd::run(&api.client, edge.https, sbx, cmd).await? {
        0 => Ok(()),
        code => bail!("`{cmd}` exited with {code}"),
    }
}

fn pause_body(memory: bool) -> serde_json::Value {
    json!({ "memory": memory })
}

async fn pause(api: &Api, id: &str, memory: bool) -> Result<Duration> {
    let path = format!("/sandboxes/{id}/pause");
    let (_, took) = api
        .call(
            Method::POST,
            &path,
            Some(pause_body(memory)),
            StatusCode::NO_CONTENT,
        )
        .await?;
    Ok(took)
}

/// `POST /sandboxes/{id}/connect` of a paused sandbox: 201 once it runs
/// (for a filesystem pause: once envd answers in the new boot).
async fn resume(api: &Api, id: &str) -> Result<Duration> {
    let path = format!("/sandboxes/{id}/connect");
    let (_, took) = api
        .call(
            Method::POST,
            &path,
            Some(json!({ "timeout": 600 })),
            StatusCode::CREATED,
        )
        .await?;
    Ok(took)
}

fn relative(row: Row, create_p50: Option<f64>, plus_ms: f64) -> Row {
    match create_p50 {
        Some(c) => row
            .target(Target::MedianAtMost(c + plus_ms))
            .note(format!("target: this run's create p50 + {plus_ms} ms")),
        None => row.note("no create reference measured"),
    }
}

/// Pause and resume one sandbox `rounds` times in each mode; a command
/// after each resume proves it runs.
async fn pause_rows(api: &Api, edge: &Edge, rounds: usize, create_p50: Option<f64>) -> Vec<Row> {
    let names = [
        "pause, full (POST /pause → 204)",
        "resume, full (POST /connect → 201)",
        "pause, filesystem (POST /pause memory:false → 204)",
        "resume, filesystem (POST /connect → 201, envd answering)",
    ];
    let measured = async {
        let (created, _) = api.create().await?;
        let sbx = addr(&created, edge);
        let mut samples: [Vec<f64>; 4] = Default::default();
        let result = async {
            for (mode, memory) in [(0, true), (2, false)] {
                for _ in 0..rounds {
                    samples[mode].push(ms(pause(api, &sbx.id, memory).await?));
                    samples[mode + 1].push(ms(resume(api, &sbx.id).await?));
                    run_ok(api, edge, &sbx, "true")
                        .await
                        .context("a command after the resume")?;
                }
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        api.kill(&sbx.id).await.ok();
        result.map(|()| samples)
    }
    .await;
    match measured {
        Ok(s) => vec![
            Row::millis(names[0], &s[0]).target(Target::MedianAtMost(5.0)),
            Row::millis(names[1], &s[1]).target(Target::MedianAtMost(5.0)),
            Row::millis(names[2], &s[2]).target(Target::MedianAtMost(20.0)),
            relative(Row::millis(names[3], &s[3]), create_p50, 5.0),
        ]
        .into_iter()
        .map(Row::judged)
        .collect(),
        Err(e) => names.iter().map(|n| Row::error(*n, &e)).collect(),
    }
}

async fn write_mib(api: &Api, edge: &Edge, sbx: &SandboxAddr, name: &str, mib: u32) -> Result<()> {
    // Random bytes: nothing below can make them cheaper than they are.
    run_ok(
        api,
        edge,
        sbx,
        &format!("head -c {mib}M /dev/urandom > /home/user/{name}"),
    )
    .await
}

async fn snapshot(api: &Api, id: &str) -> Result<(String, Duration)> {
    let path = format!("/sandboxes/{id}/snapshots");
    let (body, took) = api
        .call(Method::POST, &path, Some(json!({})), StatusCode::CREATED)
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&body).context("parsing the snapshot")?;
    let snap = v
        .get("snapshotID")
        .and_then(|s| s.as_str())
        .context("the snapshot answer has no snapshotID")?;
    Ok((snap.to_string(), took))
}

async fn delete_snapshot(api: &Api, snap: &str) {
    let path = format!("/templates/{}", urlencoding_path(snap));
    api.call(Method::DELETE, &path, None, StatusCode::NO_CONTENT)
        .await
        .ok();
}

/// Snapshot ids hold `/` and `:`; a path segment may hold `:` but not `/`.
fn urlencoding_path(s: &str) -> String {
    s.replace('/', "%2F")
}

/// Each round writes another 100 MiB, snapshots, and creates a sandbox from
/// the snapshot (which must see the file).
async fn snapshot_rows(api: &Api, edge: &Edge, rounds: usize, create_p50: Option<f64>) -> Vec<Row> {
    let names = [
        format!("snapshot of a sandbox with {WRITTEN_MIB} MiB just written"),
        "create → ready from that snapshot".to_string(),
    ];
    let measured = async {
        let (created, _) = api.create().await?;
        let sbx = addr(&created, edge);
        let mut snaps = Vec::new();
        let mut made = Vec::new();
        let mut samples: [Vec<f64>; 2] = Default::default();
        let result = async {
            for round in 0..rounds {
                let file = format!("data-{round}");
                write_mib(api, edge, &sbx, &file, WRITTEN_MIB).await?;
                let (snap, took) = snapshot(api, &sbx.id).await?;
                samples[0].push(ms(took));
                snaps.push(snap.clone());
                let (child, took) = api.create_with(json!({ "templateID": snap })).await?;
                samples[1].push(ms(took));
                let child = addr(&child, edge);
                made.push(child.id.clone());
                run_ok(
                    api,
                    edge,
                    &child,
                    &format!("test $(stat -c %s /home/user/{file}) -eq $(({WRITTEN_MIB} << 20))"),
                )
                .await
                .context("the sandbox made from the snapshot does not hold its file")?;
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        made.push(sbx.id.clone());
        api.kill_all(&made).await.ok();
        for s in &snaps {
            delete_snapshot(api, s).await;
        }
        result.map(|()| samples)
    }
    .await;
    match measured {
        Ok(s) => vec![
            Row::millis(names[0].clone(), &s[0])
                .target(Target::MedianAtMost(300.0))
                .judged(),
            relative(Row::millis(names[1].clone(), &s[1]), create_p50, 10.0).judged(),
        ],
        Err(e) => names.iter().map(|n| Row::error(n.clone(), &e)).collect(),
    }
}

/// `POST /sandboxes/{id}/fork {count: 10}` of a sandbox with 100 MiB
/// written, until the answer with all ten.
async fn fork_row(api: &Api, edge: &Edge, rounds: usize) -> Row {
    let what = format!("fork ×{FORKS} of a sandbox with {WRITTEN_MIB} MiB written (all ten ready)");
    let measured = async {
        let (created, _) = api.create().await?;
        let sbx = addr(&created, edge);
        let mut made = vec![sbx.id.clone()];
        let mut samples = Vec::new();
        let result = async {
            write_mib(api, edge, &sbx, "data", WRITTEN_MIB).await?;
            for _ in 0..rounds {
                let path = format!("/sandboxes/{}/fork", sbx.id);
                let (body, took) = api
                    .call(
                        Method::POST,
                        &path,
                        Some(json!({ "count": FORKS, "timeout": 600 })),
                        StatusCode::CREATED,
                    )
                    .await?;
                let results: Vec<serde_json::Value> =
                    serde_json::from_slice(&body).context("parsing the fork answer")?;
                let ids: Vec<String> = results
                    .iter()
                    .filter_map(|r| r.pointer("/sandbox/sandboxID")?.as_str().map(String::from))
                    .collect();
                let all = ids.len() == FORKS as usize;
                made.extend(ids);
                if !all {
                    bail!("fork made {} of {FORKS}: {results:?}", made.len() - 1);
                }
                samples.push(ms(took));
                api.kill_all(&made[1..]).await?;
                made.truncate(1);
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        api.kill_all(&made).await.ok();
        result.map(|()| samples)
    }
    .await;
    match measured {
        Ok(s) => Row::millis(what, &s)
            .target(Target::MedianAtMost(200.0))
            .judged(),
        Err(e) => Row::error(what, &e),
    }
}

/// A request through the proxy (envd's `/health`, TLS) to a sandbox paused
/// with auto-resume on: the time to its answer, which waits for the resume.
async fn auto_resume_rows(api: &Api, edge: &Edge, rounds: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for (memory, label, target) in [(true, "full", 50.0), (false, "filesystem", 100.0)] {
        let what =
            format!("auto-resume, {label} pause: first answer of a request through the proxy");
        let measured = async {
            let (created, _) = api
                .create_with(json!({
                    "autoPause": true,
                    "autoPauseMemory": memory,
                    "autoResume": { "enabled": true },
                }))
                .await?;
            let sbx = addr(&created, edge);
            let result = async {
                let mut samples = Vec::new();
                for _ in 0..rounds {
                    pause(api, &sbx.id, memory).await?;
                    samples.push(ms(health(api, edge, &sbx).await?));
                }
                Ok::<_, anyhow::Error>(samples)
            }
            .await;
            api.kill(&sbx.id).await.ok();
            result
        }
        .await;
        rows.push(match measured {
            Ok(s) => Row::millis(what, &s)
                .target(Target::MedianAtMost(target))
                .judged(),
            Err(e) => Row::error(what, &e),
        });
    }
    rows
}

async fn health(api: &Api, edge: &Edge, sbx: &SandboxAddr) -> Result<Duration> {
    let ep = sbx.endpoint(edge.https, ENVD_PORT, true);
    let mut conn = api
        .client
        .connect(&ep)
        .await
        .context("connecting to the proxy")?;
    let req = request(&ep, Method::GET, "/health").body(Full::new(Bytes::new()))?;
    let start = Instant::now();
    let (status, body) = send(&mut conn, req).await.context("GET /health")?;
    let took = start.elapsed();
    if !status.is_success() {
        bail!(
            "GET /health of a paused sandbox answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(took)
}

/// Writes `mib` MiB to a file inside a default sandbox (its memory limit is
/// smaller than that): no OOM, the host's shared memory (tmpfs) does not
/// grow, and the cgroup's growth is page cache the kernel may reclaim.
async fn big_write_rows(api: &Api, edge: &Edge, mib: u32) -> Vec<Row> {
    let names = [
        format!("writing {mib} MiB inside: host shared memory (tmpfs) growth"),
        format!("writing {mib} MiB inside: the sandbox's memory cgroup growth"),
    ];
    let measured = async {
        let (created, _) = api.create().await?;
        let sbx = addr(&created, edge);
        let result = async {
            let cg_before = memory::sandbox_memory(&edge.instance, &sbx.id)?;
            let host_before = memory::meminfo()?;
            run_ok(
                api,
                edge,
                &sbx,
                &format!(
                    "dd if=/dev/zero of=/home/user/big bs=1M count={mib} conv=fsync status=none"
                ),
            )
            .await
            .context("the write was refused or the sandbox was killed (OOM?)")?;
            let host_after = memory::meminfo()?;
            let cg_after = memory::sandbox_memory(&edge.instance, &sbx.id)?;
            run_ok(api, edge, &sbx, "rm /home/user/big").await?;
            Ok::<_, anyhow::Error>((
                (host_after.shmem as f64 - host_before.shmem as f64) / MIB,
                (cg_after as f64 - cg_before as f64) / MIB,
            ))
        }
        .await;
        api.kill(&sbx.id).await.ok();
        result
    }
    .await;
    match measured {
        Ok((shmem, cgroup)) => vec![
            Row::new(
                names[0].clone(),
                Measure::Value {
                    unit: "MiB".into(),
                    value: shmem,
                },
            )
            .target(Target::AtMost(16.0))
            .note("a tmpfs writable layer would grow it by the whole file")
            .judged(),
            Row::new(
                names[1].clone(),
                Measure::Value {
                    unit: "MiB".into(),
                    value: cgroup,
                },
            )
            .note("page cache, reclaimable: the write finished without an OOM kill"),
        ],
        Err(e) => names.iter().map(|n| Row::error(n.clone(), &e)).collect(),
    }
}
