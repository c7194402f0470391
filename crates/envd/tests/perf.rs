//! Measurements, not checks: run with `cargo test -p envd --release --test perf -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{can_run_as_user, Envd};
use serde_json::json;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn round_trips(envd: &Envd, body: serde_json::Value, runs: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let out = envd
            .stream("Start", body.clone(), &[])
            .await
            .collect()
            .await;
        times.push(started.elapsed());
        assert_eq!(out.end()["status"], "exit status 0");
    }
    times.sort();
    times
}

fn report(what: &str, times: &[Duration]) {
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    println!(
        "{what}: n={} p50={:?} p90={:?} p99={:?} max={:?}",
        times.len(),
        pct(50),
        pct(90),
        pct(99),
        times[times.len() - 1]
    );
}

#[tokio::test]
#[ignore = "measurement; run explicitly"]
async fn start_round_trip_and_idle_rss() {
    if !can_run_as_user() {
        return;
    }
    let envd = Envd::start();
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("idle RSS after start: {} KiB", rss_kib(envd.pid()));

    let direct = json!({"process": {"cmd": "/bin/true"}, "stdin": false});
    let _warm = round_trips(&envd, direct.clone(), 10).await;
    report("Start /bin/true", &round_trips(&envd, direct, 200).await);

    let sdk_like =
        json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "true"]}, "stdin": false});
    report(
        "Start /bin/bash -l -c true",
        &round_trips(&envd, sdk_like, 200).await,
    );

    tokio::time::sleep(Duration::from_secs(6)).await;
    println!("idle RSS after 410 processes: {} KiB", rss_kib(envd.pid()));
}
