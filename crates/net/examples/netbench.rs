//! Measures the sandbox network's hot paths on this host (run as root,
//! preferably with `--release`): `acquire` from a warm pool and from an empty
//! one, `dial` into a namespace, and `release`. Uses its own instance and
//! subnet and removes everything it made.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use sandbar_net::{dial, EgressPolicy, NetConfig, Network, SandboxNet};

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what:<34} n={:<5} p50={:>10.1?} p99={:>10.1?} max={:>10.1?}",
        samples.len(),
        pick(0.5),
        pick(0.99),
        samples[samples.len() - 1]
    );
}

async fn wait_for_pool(net: &Network, size: usize) {
    while net.pooled() < size {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A listener on 127.0.0.1 inside the sandbox, accepting forever.
fn listen_inside(net: &SandboxNet) -> u16 {
    let ns = File::open(&net.netns_path).unwrap();
    std::thread::spawn(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || for _ in listener.incoming() {});
        port
    })
    .join()
    .unwrap()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pid = std::process::id();
    let config = NetConfig {
        instance: format!("nb{}", pid % 10000),
        subnet: format!("10.{}.0.0/20", 200 + pid % 50).parse()?,
        state_dir: std::env::temp_dir().join(format!("sandbar-netbench-{pid}")),
        pool_size: 16,
        dns_upstream: Vec::new(),
        open_ranges: Vec::new(),
        public_ranges: Vec::new(),
    };
    let started = Instant::now();
    let net = Network::new(config.clone()).await?;
    println!("Network::new                       {:?}", started.elapsed());

    wait_for_pool(&net, 16).await;
    let mut warm = Vec::new();
    let mut held = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        held.push(net.acquire(&EgressPolicy::default()).await?);
        warm.push(t.elapsed());
        wait_for_pool(&net, 16).await;
    }
    report("acquire (warm pool)", &mut warm);

    let offline = EgressPolicy {
        allow_internet: false,
        ..Default::default()
    };
    let mut custom = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        held.push(net.acquire(&offline).await?);
        custom.push(t.elapsed());
        wait_for_pool(&net, 16).await;
    }
    report("acquire (warm, no-internet policy)", &mut custom);

    let target = held[0].clone();
    let port = listen_inside(&target);
    let mut dials = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let stream = dial(&target, port).await?;
        dials.push(t.elapsed());
        drop(stream);
    }
    report("dial (open port)", &mut dials);
    let mut refused = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        assert!(dial(&target, 1).await.is_err());
        refused.push(t.elapsed());
    }
    report("dial (closed port, v4 then v6)", &mut refused);

    let mut releases = Vec::new();
    for sandbox in held.drain(..) {
        let t = Instant::now();
        net.release(sandbox).await?;
        releases.push(t.elapsed());
    }
    report("release", &mut releases);

    let cold_net = {
        net.shutdown().await?;
        let mut cold_config = config.clone();
        cold_config.pool_size = 0;
        Network::new(cold_config).await?
    };
    let mut cold = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        held.push(cold_net.acquire(&EgressPolicy::default()).await?);
        cold.push(t.elapsed());
    }
    report("acquire (empty pool, built inline)", &mut cold);
    for sandbox in held.drain(..) {
        cold_net.release(sandbox).await?;
    }
    cold_net.shutdown().await?;
    Ok(())
}
