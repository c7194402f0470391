//! The edge proxy rows: a small HTTP (and WebSocket echo) server inside a
//! sandbox, loaded with wrk through sandbar's proxy over TLS and plain HTTP,
//! beside the same server reached directly (wrk in the sandbox's network
//! namespace) and beside nginx proxying to it from that namespace, all in
//! the same run; then WebSocket echo round trips.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;

use crate::api::Api;
use crate::envd::{self, Background, SandboxAddr};
use crate::http::{request, send, Client};
use crate::nginx::{self, Nginx};
use crate::report::{Measure, Row, Target, Unit};
use crate::stats::Summary;
use crate::websocket::echo_round_trips;
use crate::wrk::{self, Load, WrkResult};
use crate::{netns, server::Sandbar};

const SERVER_JS: &str = include_str!("../assets/server.js");
pub const SERVER_PORT: u16 = 8080;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// wrk's load: two threads (one per core of the design's 2-core machine)
/// and 50 keep-alive connections.
const THREADS: u32 = 2;
const CONNECTIONS: u32 = 50;

/// The sandbox with the server running, and how to reach it.
pub struct ServerInSandbox {
    pub sandbox: SandboxAddr,
    pub netns: PathBuf,
    _server: Background,
}

pub async fn prepare(api: &Api, sandbar: &Sandbar) -> Result<ServerInSandbox> {
    let (created, _) = api.create().await?;
    let domain = sandbar.env.require("E2B_DOMAIN")?.to_string();
    let sandbox = SandboxAddr {
        id: created.id,
        envd_token: created.envd_token,
        domain,
    };
    let envs = BTreeMap::from([
        ("BENCH_PORT".to_string(), SERVER_PORT.to_string()),
        ("BENCH_SERVER_JS".to_string(), SERVER_JS.to_string()),
    ]);
    let server = envd::start(
        &api.client,
        sandbar.https,
        &sandbox,
        "exec node -e \"$BENCH_SERVER_JS\"",
        &envs,
    )
    .await
    .context("starting the HTTP server in the sandbox")?;
    tracing::info!(sandbox = %sandbox.id, pid = server.pid, "server started in the sandbox");
    // The proxy answers 502 until the server listens.
    let ep = sandbox.endpoint(sandbar.http, SERVER_PORT, false);
    let start = Instant::now();
    loop {
        let last = async {
            let mut conn = api.client.connect(&ep).await?;
            let (status, body) = send(
                &mut conn,
                request(&ep, http::Method::GET, "/").body(Full::new(Bytes::new()))?,
            )
            .await?;
            if status != http::StatusCode::OK {
                bail!("{status}: {}", String::from_utf8_lossy(&body));
            }
            Ok(())
        }
        .await;
        match last {
            Ok(()) => break,
            Err(e) if start.elapsed() > READY_TIMEOUT => {
                return Err(e).context(format!("the server in the sandbox did not answer through the proxy within {READY_TIMEOUT:?}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let netns = netns::sandbox_netns(&sandbar.instance, &sandbox.id)?;
    Ok(ServerInSandbox {
        sandbox,
        netns,
        _server: server,
    })
}

/// One figure per row from its rounds: the median round's rate and p99, and
/// every round's failures.
fn combine(rounds: &[WrkResult]) -> Option<WrkResult> {
    let rps = Summary::of(&rounds.iter().map(|r| r.requests_per_s).collect::<Vec<_>>())?;
    let p99 = Summary::of(&rounds.iter().map(|r| r.p99_ms).collect::<Vec<_>>())?;
    Some(WrkResult {
        requests: rounds.iter().map(|r| r.requests).sum(),
        requests_per_s: rps.median,
        p99_ms: p99.median,
        errors: rounds.iter().map(|r| r.errors).sum(),
    })
}

pub async fn throughput_rows(
    target: &ServerInSandbox,
    sandbar: &Sandbar,
    scratch: &Path,
    seconds: u64,
    rounds: usize,
) -> Vec<Row> {
    let nginx = Nginx::start(&target.netns, &scratch.join("nginx"), SERVER_PORT).await;
    let host = target.sandbox.host(SERVER_PORT);
    let direct_url = format!("http://127.0.0.1:{SERVER_PORT}/");
    let nginx_http = format!("http://127.0.0.1:{}/", nginx::HTTP_PORT);
    let nginx_https = format!("https://127.0.0.1:{}/", nginx::HTTPS_PORT);
    let sandbar_http = format!("http://{}/", sandbar.http);
    let sandbar_https = format!("https://{}/", sandbar.https);
    let ns = Some(target.netns.as_path());
    let runs: [(&'static str, Load); 5] = [
        (
            "HTTP to the sandbox's server: direct (reference)",
            load(&direct_url, None, ns, seconds),
        ),
        (
            "HTTP to the sandbox's server: nginx, plain HTTP (reference)",
            load(&nginx_http, None, ns, seconds),
        ),
        (
            "HTTP to the sandbox's server: nginx, TLS (reference)",
            load(&nginx_https, None, ns, seconds),
        ),
        (
            "HTTP to the sandbox's server: sandbar proxy, plain HTTP",
            load(&sandbar_http, Some(&host), None, seconds),
        ),
        (
            "HTTP to the sandbox's server: sandbar proxy, TLS",
            load(&sandbar_https, Some(&host), None, seconds),
        ),
    ];
    // Per row: its rounds so far, or why it cannot be measured.
    let mut measured: Vec<Result<Vec<WrkResult>>> = runs.iter().map(|_| Ok(Vec::new())).collect();
    if let Err(e) = &nginx {
        for m in &mut measured[1..3] {
            *m = Err(anyhow::anyhow!("nginx could not start: {e:#}"));
        }
    }
    // Node's JIT, nginx's upstream keep-alive pool and sandbar's upstream
    // pool all warm up first, for every row alike.
    for (m, (_, l)) in measured.iter().zip(&runs) {
        if m.is_ok() {
            let _ = wrk::run(&Load { seconds: 1, ..*l }).await;
        }
    }
    // Round-robin rounds, so that a drift in what else the host is doing
    // falls on every row alike instead of on whichever ran at the time.
    for round in 0..rounds {
        for (m, (what, l)) in measured.iter_mut().zip(&runs) {
            let Ok(results) = m else { continue };
            tracing::info!(round, "wrk: {what}");
            match wrk::run(l).await {
                Ok(r) => results.push(r),
                Err(e) => *m = Err(e),
            }
        }
    }
    drop(nginx);

    let combined: Vec<Result<WrkResult>> = measured
        .into_iter()
        .map(|m| m.and_then(|rounds| combine(&rounds).context("no wrk round completed")))
        .collect();
    let rps = |i: usize| combined[i].as_ref().ok().map(|r| r.requests_per_s);
    let direct = rps(0);
    let mut rows = Vec::new();
    for (i, (result, (what, _))) in combined.iter().zip(&runs).enumerate() {
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                rows.push(Row::error(*what, e));
                continue;
            }
        };
        let nginx_ref = match i {
            3 => rps(1),
            4 => rps(2),
            _ => None,
        };
        let vs_direct = if i == 0 {
            None
        } else {
            direct.map(|d| r.requests_per_s / d)
        };
        let mut row = Row::new(
            *what,
            Measure::Throughput {
                requests_per_s: r.requests_per_s,
                p99_ms: r.p99_ms,
                vs_nginx: nginx_ref.map(|n| r.requests_per_s / n),
                vs_direct,
            },
        )
        .failures(r.errors as usize, true);
        if i >= 3 {
            row = row.target(Target::RatioToNginxAtLeast(0.9));
        }
        if r.errors > 0 {
            row = row.note(format!(
                "{} of {} requests failed (non-2xx or socket errors)",
                r.errors, r.requests
            ));
        }
        if i == 0 {
            row = row.note(format!(
                "wrk -t{THREADS} -c{CONNECTIONS} -d{seconds}s, {rounds} round(s) per row taken in turn, median round shown; the server is node's http module in the sandbox; \
                 direct and nginx rows run wrk (and nginx) in the sandbox's network namespace"
            ));
        }
        rows.push(row.judged());
    }
    rows
}

fn load<'a>(
    url: &'a str,
    host: Option<&'a str>,
    netns: Option<&'a Path>,
    seconds: u64,
) -> Load<'a> {
    Load {
        url,
        host,
        netns,
        seconds,
        connections: CONNECTIONS,
        threads: THREADS,
    }
}

pub async fn websocket_rows(
    target: &ServerInSandbox,
    client: &Client,
    sandbar: &Sandbar,
    n: usize,
) -> Vec<Row> {
    let sandbox = &target.sandbox;
    let host = sandbox.host(SERVER_PORT);
    let via_tls = async {
        let stream = client
            .stream(&sandbox.endpoint(sandbar.https, SERVER_PORT, true))
            .await?;
        echo_round_trips(stream, &format!("wss://{host}/"), n).await
    };
    let tls = via_tls.await;
    let via_plain = async {
        let stream = client
            .stream(&sandbox.endpoint(sandbar.http, SERVER_PORT, false))
            .await?;
        echo_round_trips(stream, &format!("ws://{host}/"), n).await
    };
    let plain = via_plain.await;
    let via_direct = async {
        let stream = netns::dial(
            target.netns.clone(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, SERVER_PORT)),
        )
        .await?;
        echo_round_trips(stream, &format!("ws://127.0.0.1:{SERVER_PORT}/"), n).await
    };
    let direct = via_direct.await;
    let direct_p50 = direct
        .as_ref()
        .ok()
        .and_then(|s| Summary::of(s))
        .map(|s| s.median);
    [
        ("WebSocket echo round trip: sandbar proxy, TLS", tls),
        (
            "WebSocket echo round trip: sandbar proxy, plain HTTP",
            plain,
        ),
        ("WebSocket echo round trip: direct (reference)", direct),
    ]
    .into_iter()
    .map(
        |(what, result)| match result.and_then(|s| Summary::of(&s).context("no samples")) {
            Ok(summary) => {
                let mut row = Row::new(
                    what,
                    Measure::Distribution {
                        unit: Unit::Ms,
                        summary,
                    },
                );
                if let (Some(d), false) = (direct_p50, what.contains("direct")) {
                    row = row.note(format!(
                        "adds {:.3} ms at p50 over direct",
                        summary.median - d
                    ));
                }
                row.judged()
            }
            Err(e) => Row::error(what, &e),
        },
    )
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Endpoint;

    /// The server script as the sandbox runs it, here on the host's
    /// loopback (node is on every machine that runs the e2e suites).
    #[tokio::test]
    async fn the_server_script_serves_http_and_echoes_websocket_messages() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut node = tokio::process::Command::new("node")
            .arg("-e")
            .arg(SERVER_JS)
            .env("BENCH_PORT", port.to_string())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed to test the sandbox server script");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let start = Instant::now();
        let tcp = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("the server script did not listen: {e}"),
            }
        };
        let samples = echo_round_trips(tcp, &format!("ws://127.0.0.1:{port}/"), 50)
            .await
            .unwrap();
        assert_eq!(samples.len(), 50);
        assert!(
            samples.iter().all(|&ms| ms > 0.0 && ms < 5_000.0),
            "{samples:?}"
        );

        let client = Client::new(&[]).unwrap();
        let ep = Endpoint {
            addr,
            tls_name: None,
            authority: format!("127.0.0.1:{port}"),
        };
        let mut conn = client.connect(&ep).await.unwrap();
        for _ in 0..3 {
            let req = request(&ep, http::Method::GET, "/")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let (status, body) = send(&mut conn, req).await.unwrap();
            assert_eq!(
                (status, &body[..]),
                (http::StatusCode::OK, &b"hello from the sandbox\n"[..])
            );
        }
        node.kill().await.unwrap();
    }
}
