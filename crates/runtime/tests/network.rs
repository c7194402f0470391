//! Sandboxes on the node network (`sandbar-net`): internet through NAT, DNS
//! through the sandbox's gateway, ports reached through the namespace, and
//! no network objects left after create/kill cycles.

mod common;

use std::time::Instant;

use common::*;
use sandbar_runtime::Catalog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_reach_the_internet_through_the_node_network() {
    let t = runtime_on_network().await;
    let rt = &t.rt;
    let info = rt.create(spec("net1")).await.expect("create");
    let addr = info.addr.expect("a node-network sandbox has an address");

    let out = exec(
        rt,
        "net1",
        "user",
        "cat /etc/resolv.conf; ip -4 -o addr show eth0 | awk '{print $4}'",
        10_000,
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(out.stdout.starts_with("nameserver "), "{out:?}");
    assert!(
        out.stdout.contains(&addr.to_string()),
        "eth0 has the sandbox address: {out:?}"
    );

    // The template trusts the host's operator-added CAs, so HTTPS works
    // inside with no per-test setup, even behind a TLS-inspecting egress.
    let out = exec(
        rt,
        "net1",
        "user",
        "curl -sS -o /dev/null -w '%{http_code}' https://pypi.org/simple/six/",
        30_000,
    )
    .await;
    assert_eq!(out.stdout, "200", "{out:?}");
    let out = exec(rt, "net1", "user", "pip install --quiet --no-cache-dir six 2>&1 | tail -2; python -c 'import six; print(six.__name__)'", 90_000).await;
    assert!(
        out.stdout.ends_with("six\n"),
        "pip install works inside: {out:?}"
    );

    // Root inside may bind low ports in its own namespace.
    let out = exec(rt, "net1", "root", "nohup python3 -m http.server 80 --bind 127.0.0.1 >/dev/null 2>&1 & sleep 0.7; echo started", 10_000).await;
    assert_eq!(out.stdout, "started\n");
    let mut s = rt
        .dial("net1", 80)
        .await
        .expect("dial port 80 on loopback inside");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    rt.shutdown().await;
    t.net.as_ref().unwrap().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_create_kill_cycles_leave_no_links_or_mounts() {
    let t = runtime_on_network().await;
    let rt = &t.rt;
    // The pool is filled in the background: let it settle before counting.
    rt.create(spec("warm")).await.unwrap();
    rt.kill("warm").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let net = t.net.clone().unwrap();
    let prefix = net.veth_prefix();
    let state_dir = net.netns_dir().to_string_lossy().into_owned();
    let data = t.data.path().to_string_lossy().into_owned();
    let cycles = 50;
    let started = Instant::now();
    for i in 0..cycles {
        let id = format!("ncyc{i}");
        rt.create(spec(&id)).await.unwrap();
        assert!(rt.kill(&id).await.unwrap());
    }
    eprintln!(
        "{cycles} create/kill cycles on the node network, {:?} each",
        started.elapsed() / cycles
    );
    // Only the pool's ready namespaces (4, and one its refill may be making)
    // keep veths and mounts; 50 sandboxes' worth would pile up otherwise.
    // The kernel destroys released namespaces (and their veths) in a
    // background worker: give it a moment.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while links_with_prefix(&prefix) > 5 && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (links, pooled) = (links_with_prefix(&prefix), net.pooled());
    assert!(
        links <= 5,
        "veths do not pile up: {links} with prefix {prefix}, {pooled} pooled"
    );
    assert!(
        mounts_mentioning(&state_dir) <= 5,
        "netns mounts do not pile up"
    );
    // The layer store's own mount is there for the runtime's life.
    assert_eq!(
        mounts_mentioning(&data) - mounts_mentioning(&format!("{data}/store")),
        0
    );
    assert!(cgroup_children(&t.instance).is_empty());
    rt.shutdown().await;
    net.shutdown().await.unwrap();
    assert_eq!(links_with_prefix(&prefix), 0, "no veth left");
    assert_eq!(mounts_mentioning(&state_dir), 0, "no namespace left");
}
