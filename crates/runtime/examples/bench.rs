//! Create-to-ready latency and idle memory of sandboxes.
//!
//! `bench [--offline] [--envd PATH] [--helper PATH] [--seq N] [--conc N] [--idle N] [--hold N]`
//! Build the helper first (`cargo build --release -p sandbar-runtime --bins`);
//! it is looked up next to this example's directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sandbar_runtime::{EgressPolicy, Route, Runtime, RuntimeConfig, RuntimeOptions, SandboxSpec};

fn spec(id: String) -> SandboxSpec {
    SandboxSpec {
        id,
        template: "base".into(),
        cpu_count: 1,
        memory_mb: 512,
        disk_mb: 512,
        env_vars: BTreeMap::new(),
        envd_access_token: None,
        egress: EgressPolicy::default(),
        route: Route::default(),
        base_layer: None,
        auto_resume: false,
        start: Default::default(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mem_available() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn smaps_kib(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let offline = args.iter().any(|a| a == "--offline");
    let seq: usize = flag("--seq").map(|s| s.parse()).transpose()?.unwrap_or(100);
    let conc: usize = flag("--conc").map(|s| s.parse()).transpose()?.unwrap_or(50);
    let hold: usize = flag("--hold").map(|s| s.parse()).transpose()?.unwrap_or(0);
    let idle: usize = flag("--idle").map(|s| s.parse()).transpose()?.unwrap_or(50);
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(|p| p.parent())
        .context("target dir")?
        .to_path_buf();
    let envd = flag("--envd")
        .map(PathBuf::from)
        .unwrap_or_else(|| release.join("envd"));
    let helper = flag("--helper")
        .map(PathBuf::from)
        .unwrap_or_else(|| release.join("sandbar-sandbox-init"));

    let instance = format!("b{}", std::process::id() % 100_000);
    let data = tempfile::Builder::new()
        .prefix("sandbar-bench-")
        .tempdir()?;
    let net = if offline {
        None
    } else {
        Some(
            sandbar_net::Network::new(sandbar_net::NetConfig {
                instance: instance.clone(),
                subnet: "10.120.0.0/18".parse()?,
                state_dir: data.path().join("net"),
                pool_size: 64,
                dns_upstream: Vec::new(),
                open_ranges: Vec::new(),
                public_ranges: Vec::new(),
            })
            .await?,
        )
    };
    let config = RuntimeConfig {
        instance: instance.clone(),
        data_dir: data.path().to_path_buf(),
        templates_dir: "/var/lib/sandbar/templates".into(),
        envd_bin: envd,
        interpreter_bin: None,
        uid_base: 1_000_000,
    };
    let rt: Arc<Runtime> = Runtime::start_with(
        config,
        net.clone(),
        RuntimeOptions {
            helper_exe: Some(helper),
            ..Default::default()
        },
    )
    .await?;
    let result = measure(&rt, offline, seq, conc, idle, hold).await;
    rt.shutdown().await;
    if let Some(n) = net {
        n.shutdown().await?;
    }
    result
}

async fn measure(
    rt: &Arc<Runtime>,
    offline: bool,
    seq: usize,
    conc: usize,
    idle: usize,
    hold: usize,
) -> anyhow::Result<()> {
    // Let the network pool fill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "network: {}",
        if offline {
            "private loopback-only namespaces"
        } else {
            "node network (pooled namespaces)"
        }
    );

    let mut times = Vec::new();
    for i in 0..seq {
        let id = format!("s{i}");
        let t = Instant::now();
        rt.create(spec(id.clone())).await?;
        times.push(t.elapsed());
        rt.kill(&id).await?;
    }
    times.sort();
    println!(
        "concurrency 1 ({seq} creates): p50 {} p99 {} max {}",
        ms(pct(&times, 0.5)),
        ms(pct(&times, 0.99)),
        ms(times[times.len() - 1])
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let results = futures::future::join_all((0..conc).map(|i| {
        let rt = rt.clone();
        async move {
            let t = Instant::now();
            rt.create(spec(format!("c{i}"))).await.map(|_| t.elapsed())
        }
    }))
    .await;
    let wall = t0.elapsed();
    let mut times: Vec<Duration> = results.into_iter().collect::<Result<_, _>>()?;
    times.sort();
    println!(
        "concurrency {conc}: all {} succeeded in {}; p50 {} p99 {}",
        times.len(),
        ms(wall),
        ms(pct(&times, 0.5)),
        ms(pct(&times, 0.99))
    );
    rt.shutdown().await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = mem_available();
    for i in 0..idle {
        rt.create(spec(format!("i{i}"))).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = mem_available();
    let (mut cg, mut rss, mut pss) = (0u64, 0u64, 0u64);
    for s in rt.list() {
        if let Some(c) = rt.cgroup(&s.id) {
            cg += c.usage().map(|u| u.mem_used).unwrap_or(0);
        }
        let pid = rt.init_pid(&s.id).unwrap_or(0);
        rss += smaps_kib(pid, "Rss:") * 1024;
        pss += smaps_kib(pid, "Pss:") * 1024;
    }
    let n = idle as f64;
    let mib = |b: f64| format!("{:.2} MiB", b / n / 1048576.0);
    println!(
        "idle memory per sandbox ({idle}): cgroup working set {}, envd RSS {} (PSS {}), host MemAvailable drop {}",
        mib(cg as f64),
        mib(rss as f64),
        mib(pss as f64),
        mib(before.saturating_sub(after) as f64)
    );
    rt.shutdown().await;

    if hold > 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = mem_available();
        let t0 = Instant::now();
        let mut held = 0;
        for i in 0..hold {
            match rt.create(spec(format!("h{i}"))).await {
                Ok(_) => held += 1,
                Err(e) => {
                    println!("hold: create {i} failed: {e}");
                    break;
                }
            }
        }
        let took = t0.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let used = before.saturating_sub(mem_available());
        let probe = rt.list().last().map(|s| s.id.clone());
        let alive = match probe {
            Some(id) => rt.metrics(&id).is_ok(),
            None => false,
        };
        println!(
            "held {held} idle sandboxes at once (created in {:.1} s; host MemAvailable drop {:.2} MiB each; last one alive: {alive})",
            took.as_secs_f64(),
            used as f64 / held.max(1) as f64 / 1048576.0
        );
        let t0 = Instant::now();
        rt.shutdown().await;
        println!("killed them in {:.1} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}
