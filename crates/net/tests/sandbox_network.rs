//! End-to-end checks of the sandbox network on this host. They need root:
//! they make namespaces, veths and an nftables table per test (unique names
//! and subnets, so they run in parallel), and each ends by checking that
//! shutdown removed all of it.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sandbar_net::{dial, EgressPolicy, NetError, Network};

fn policy(allow_internet: bool, allow: &[&str], deny: &[&str]) -> EgressPolicy {
    EgressPolicy {
        allow_internet,
        allow_out: allow.iter().map(|s| s.to_string()).collect(),
        deny_out: deny.iter().map(|s| s.to_string()).collect(),
        egress_proxy: None,
    }
}

fn dns(gateway: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((gateway, 53))
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_reaches_neither_host_nor_sibling_nor_private_ranges() {
    let port_start_file = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    let host_port_start = std::fs::read_to_string(port_start_file).unwrap();
    let (net, _config, mut footprint) = start(2).await;
    let a = net.acquire(&EgressPolicy::default()).await.unwrap();
    let b = net.acquire(&EgressPolicy::default()).await.unwrap();

    // A host service on every host address, counting who gets through.
    let host_listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            for conn in host_listener.incoming() {
                if conn.is_ok() {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    // A service in B on all of B's addresses; B itself can reach it.
    let b_port = in_ns(&b.netns_path, || {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || for _ in listener.incoming() {});
        port
    })
    .await;
    let b_addr = b.addr;
    in_ns(&b.netns_path, move || {
        connect((b_addr, b_port).into()).expect("B reaches its own service")
    })
    .await;

    let host = host_address();
    let registry = registry_addr();
    let lan = TestHost::start().await;
    let lan_sock = lan.sock();
    let (a_gw, b_gw) = (a.gateway, b.gateway);
    let dropped_before = dropped_in(&footprint.table, "sandbox_out")
        + dropped_in(&footprint.table, "sandbox_to_host");
    let results = in_ns(&a.netns_path, move || {
        let targets: Vec<(&str, SocketAddr)> = vec![
            (
                "host loopback (A's own loopback instead)",
                (Ipv4Addr::LOCALHOST, host_port).into(),
            ),
            ("host address", (host, host_port).into()),
            ("A's gateway", (a_gw, host_port).into()),
            ("B's gateway", (b_gw, host_port).into()),
            ("B's address", (b_addr, b_port).into()),
            ("a host on a private network (our test host)", lan_sock),
        ];
        let blocked: Vec<(String, bool)> = targets
            .into_iter()
            .map(|(what, addr)| (format!("{what} {addr}"), connect(addr).is_err()))
            .collect();
        // The same path works for the internet, so the failures above are the rules.
        (blocked, connect(registry).is_ok())
    })
    .await;
    let (blocked, internet) = results;
    for (what, was_blocked) in &blocked {
        assert!(was_blocked, "sandbox A reached {what}");
    }
    assert!(internet, "sandbox A cannot reach {registry}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the host service accepted a sandbox connection"
    );
    assert_eq!(
        lan.accepted.load(Ordering::SeqCst),
        1,
        "the private test host accepted a sandbox connection (1 is the host's own check)"
    );
    // Addresses no test may send a packet to are checked in the table:
    // the special-purpose blocks (IANA registries) and cloud metadata.
    for addr in [
        "169.254.169.254",
        "168.63.129.16",
        "100.100.100.200",
        "198.18.0.1",
        "192.0.0.1",
        "192.0.2.1",
        "10.0.0.1",
        "224.0.0.251",
        "255.255.255.255",
    ] {
        assert!(
            set_holds(&footprint.table, "blocked4", addr),
            "{addr} is not in the blocked set"
        );
    }
    for addr in ["fd00:ec2::254", "fe80::1", "::1", "ff02::1"] {
        assert!(
            set_holds(&footprint.table, "blocked6", addr),
            "{addr} is not in the IPv6 blocked set"
        );
    }
    assert!(
        !set_holds(&footprint.table, "blocked4", "192.0.0.9"),
        "PCP anycast is global"
    );
    let dropped_after = dropped_in(&footprint.table, "sandbox_out")
        + dropped_in(&footprint.table, "sandbox_to_host");
    assert!(
        dropped_after > dropped_before,
        "no packet hit the table's drop rules"
    );

    // No IPv6 leaves a sandbox: eth0 has no IPv6 address at all. And the
    // sysctls that let unprivileged sandbox users ping and bind port 80 hold,
    // inside only.
    let sysctls = in_ns(&a.netns_path, || {
        [
            "/proc/sys/net/ipv6/conf/eth0/disable_ipv6",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            "/proc/sys/net/ipv4/ping_group_range",
        ]
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
    })
    .await;
    assert_eq!(sysctls, ["1", "0", "0 2147483647"]);
    assert_eq!(
        std::fs::read_to_string(port_start_file).unwrap(),
        host_port_start,
        "the host's own setting changed"
    );

    net.release(a).await.unwrap();
    net.release(b).await.unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_resolves_through_the_forwarder_and_reaches_the_internet() {
    let (net, _config, mut footprint) = start(1).await;
    let sandbox = net.acquire(&EgressPolicy::default()).await.unwrap();
    let gateway = sandbox.gateway;
    let (udp, connected) = in_ns(&sandbox.netns_path, move || {
        let udp = resolve_udp(dns(gateway), "pypi.org.");
        let connected = udp
            .as_ref()
            .ok()
            .and_then(|ips| ips.first())
            .map(|ip| connect((*ip, 443).into()).is_ok());
        (udp, connected)
    })
    .await;
    let udp = udp.expect("DNS through the gateway");
    assert!(!udp.is_empty(), "no A record for pypi.org");
    assert_eq!(
        connected,
        Some(true),
        "pypi.org:443 not reachable from the sandbox"
    );

    // The forwarder serves sandboxes only: the host itself is refused.
    let port = net.dns_port().unwrap();
    let from_host = resolve_udp((Ipv4Addr::LOCALHOST, port).into(), "pypi.org.");
    assert!(from_host.unwrap_err().to_string().contains("Refused"));

    net.release(sandbox).await.unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarder_relays_udp_and_tcp_and_refuses_offline_sandboxes() {
    init();
    let answer = Ipv4Addr::new(192, 0, 2, 77);
    let mut config = unique_config(0);
    config.dns_upstream = vec![fake_upstream(answer)];
    let net = Network::new(config.clone()).await.unwrap();
    let mut footprint = Footprint::of(&net, &config);
    let online = net.acquire(&EgressPolicy::default()).await.unwrap();
    let offline = net.acquire(&policy(false, &[], &[])).await.unwrap();

    let gateway = online.gateway;
    let host = host_address();
    let (udp, tcp, to_other_host_addr) = in_ns(&online.netns_path, move || {
        (
            resolve_udp(dns(gateway), "example.test."),
            resolve_tcp(dns(gateway), "example.test."),
            // DNS to another host address is redirected the same way.
            resolve_udp((host, 53).into(), "example.test."),
        )
    })
    .await;
    assert_eq!(udp.unwrap(), vec![answer]);
    assert_eq!(tcp.unwrap(), vec![answer]);
    assert_eq!(to_other_host_addr.unwrap(), vec![answer]);

    let gateway = offline.gateway;
    let (udp, tcp) = in_ns(&offline.netns_path, move || {
        (
            resolve_udp(dns(gateway), "example.test."),
            resolve_tcp(dns(gateway), "example.test."),
        )
    })
    .await;
    assert!(
        udp.is_err() && tcp.is_err(),
        "an offline sandbox resolved: {udp:?} {tcp:?}"
    );

    // Straight to the forwarder's port, not via the redirect: dropped.
    let port = net.dns_port().unwrap();
    let gateway = online.gateway;
    let direct = in_ns(&online.netns_path, move || {
        resolve_udp((gateway, port).into(), "example.test.")
    })
    .await;
    assert!(direct.is_err());

    net.release(online).await.unwrap();
    net.release(offline).await.unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_internet_means_nothing_leaves_dns_included_and_can_change_live() {
    let (net, _config, mut footprint) = start(1).await;
    let offline = net.acquire(&policy(false, &[], &[])).await.unwrap();
    let online = net.acquire(&EgressPolicy::default()).await.unwrap();
    let registry = registry_addr();
    // (DNS over UDP, DNS over TCP, a TCP connection to the registry)
    let probe = |gateway: Ipv4Addr| {
        move || {
            (
                resolve_udp(dns(gateway), "pypi.org.").is_ok(),
                resolve_tcp(dns(gateway), "pypi.org.").is_err(),
                connect(registry).is_ok(),
            )
        }
    };
    // The TCP DNS probe only checks that nothing answers: this host's
    // upstream resolver does not serve TCP (the relay itself is checked
    // against a stand-in upstream below).
    assert_eq!(
        in_ns(&offline.netns_path, probe(offline.gateway)).await,
        (false, true, false)
    );
    let (udp, _, tcp) = in_ns(&online.netns_path, probe(online.gateway)).await;
    assert_eq!((udp, tcp), (true, true));

    net.set_policy(&offline, &EgressPolicy::default())
        .await
        .unwrap();
    let (udp, _, tcp) = in_ns(&offline.netns_path, probe(offline.gateway)).await;
    assert_eq!((udp, tcp), (true, true));
    net.set_policy(&offline, &policy(false, &[], &[]))
        .await
        .unwrap();
    assert_eq!(
        in_ns(&offline.netns_path, probe(offline.gateway)).await,
        (false, true, false)
    );

    net.release(offline).await.unwrap();
    net.release(online).await.unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_out_beats_deny_out_which_beats_the_default() {
    let (net, _config, mut footprint) = start(0).await;
    let registry = registry_addr();
    let registry_ip = registry.ip().to_string();
    let lan = TestHost::start().await;
    let lan_ip = lan.addr.to_string();

    let sandbox = net
        .acquire(&policy(true, &[], &[&registry_ip]))
        .await
        .unwrap();
    let lan_sock = lan.sock();
    let reach = move || (connect(registry).is_ok(), connect(lan_sock).is_ok());
    assert_eq!(
        in_ns(&sandbox.netns_path, reach).await,
        (false, false),
        "denied IP or private host reached"
    );

    // Allow wins over deny.
    net.set_policy(&sandbox, &policy(true, &[&registry_ip], &["0.0.0.0/0"]))
        .await
        .unwrap();
    assert_eq!(in_ns(&sandbox.netns_path, reach).await, (true, false));

    // A blocked range cannot be allowed: refused at once, with the reason,
    // and a policy that contains blocked ranges leaves them blocked.
    for entry in [lan_ip.as_str(), "169.254.169.254/32", "10.0.0.0/8"] {
        match net.set_policy(&sandbox, &policy(true, &[entry], &[])).await {
            Err(NetError::Policy(why)) => assert!(why.contains("never reach"), "{why}"),
            other => panic!("allowOut {entry} was accepted: {other:?}"),
        }
    }
    net.set_policy(&sandbox, &policy(true, &["0.0.0.0/0"], &[]))
        .await
        .unwrap();
    assert_eq!(in_ns(&sandbox.netns_path, reach).await, (true, false));

    // Deny-all with nothing allowed: nothing goes.
    net.set_policy(&sandbox, &policy(true, &[], &["0.0.0.0/0"]))
        .await
        .unwrap();
    assert_eq!(in_ns(&sandbox.netns_path, reach).await, (false, false));

    // Back to the default: internet yes, private host no.
    net.set_policy(&sandbox, &EgressPolicy::default())
        .await
        .unwrap();
    assert_eq!(in_ns(&sandbox.netns_path, reach).await, (true, false));
    assert_eq!(
        lan.accepted.load(Ordering::SeqCst),
        1,
        "only the host's own check"
    );

    // What cannot be enforced is refused, not ignored.
    assert!(matches!(
        net.acquire(&policy(true, &["*.example.com"], &[])).await,
        Err(NetError::Policy(_))
    ));

    net.release(sandbox).await.unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opened_range_is_reached_only_by_sandboxes_that_allow_it() {
    init();
    let lan = TestHost::start().await;
    let mut config = unique_config(0);
    // The operator opens the test host's range, and (in vain) this
    // instance's own subnet: sandboxes never reach each other.
    config.open_ranges = vec![lan.net, config.subnet];
    let net = Network::new(config.clone()).await.unwrap();
    let mut footprint = Footprint::of(&net, &config);
    let lan_ip = lan.addr.to_string();
    let plain = net.acquire(&EgressPolicy::default()).await.unwrap();
    let allowed = net.acquire(&policy(true, &[&lan_ip], &[])).await.unwrap();
    let lan_sock = lan.sock();
    let (allowed_addr, plain_addr) = (allowed.addr, plain.addr);
    let server = in_ns(&plain.netns_path, || {
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || for _ in l.incoming() {});
        port
    })
    .await;

    assert!(
        in_ns(&plain.netns_path, move || connect(lan_sock).is_err()).await,
        "a sandbox that does not allow the opened range reached it"
    );
    assert!(
        in_ns(&allowed.netns_path, move || connect(lan_sock).is_ok()).await,
        "a sandbox that allows the opened range cannot reach it"
    );
    // The subnet stays closed even to an explicit allow.
    let sibling = plain_addr.to_string();
    match net
        .set_policy(&allowed, &policy(true, &[&lan_ip, &sibling], &[]))
        .await
    {
        Err(NetError::Policy(why)) => assert!(why.contains("never reach"), "{why}"),
        other => panic!("allowOut of a sibling was accepted: {other:?}"),
    }
    assert!(
        in_ns(&allowed.netns_path, move || connect(
            (plain_addr, server).into()
        )
        .is_err())
        .await,
        "a sandbox reached its sibling"
    );
    let _ = allowed_addr;

    net.release(plain).await.unwrap();
    net.release(allowed).await.unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_never_opens_a_connection_into_a_sandbox() {
    let (net, _config, mut footprint) = start(0).await;
    let sandbox = net.acquire(&EgressPolicy::default()).await.unwrap();
    let port = in_ns(&sandbox.netns_path, || {
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || for _ in l.incoming() {});
        port
    })
    .await;
    let target: SocketAddr = (sandbox.addr, port).into();
    let addr = sandbox.addr;
    assert!(
        in_ns(&sandbox.netns_path, move || connect(target).is_ok()).await,
        "the service answers inside"
    );

    // Root on the host: the table's `output` rule answers the SYN with a
    // reset at once (ECONNREFUSED; a timeout would mean some other rule, or
    // nothing at all, closed it).
    let started = std::time::Instant::now();
    let err = connect(target).expect_err("host root connected into a sandbox");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));
    // Any other host user likewise.
    let out = std::process::Command::new("bash")
        .args(["-c", &format!("exec 3<>/dev/tcp/{addr}/{port}")])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody connected into a sandbox");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(
        dropped_in(&footprint.table, "output") >= 2,
        "the output rule did it"
    );

    net.release(sandbox).await.unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_sandbox_cannot_take_the_resolver_from_the_others() {
    init();
    let answer = Ipv4Addr::new(192, 0, 2, 78);
    let mut config = unique_config(0);
    config.dns_upstream = vec![fake_upstream(answer)];
    let net = Network::new(config.clone()).await.unwrap();
    let mut footprint = Footprint::of(&net, &config);
    let hog = net.acquire(&EgressPolicy::default()).await.unwrap();
    let other = net.acquire(&EgressPolicy::default()).await.unwrap();

    // The hog opens many TCP sessions to its resolver and sends nothing.
    let gw = hog.gateway;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let held = in_ns(&hog.netns_path, move || {
        std::thread::spawn(move || {
            let conns: Vec<_> = (0..300).filter_map(|_| connect(dns(gw)).ok()).collect();
            let n = conns.len();
            let _ = rx.recv();
            drop(conns);
            n
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gw = other.gateway;
    let (udp, tcp) = in_ns(&other.netns_path, move || {
        (
            resolve_udp(dns(gw), "example.test."),
            resolve_tcp(dns(gw), "example.test."),
        )
    })
    .await;
    assert_eq!(udp.unwrap(), vec![answer], "UDP DNS for another sandbox");
    assert_eq!(tcp.unwrap(), vec![answer], "TCP DNS for another sandbox");
    tx.send(()).unwrap();
    assert!(held.join().unwrap() > 0);

    net.release(hog).await.unwrap();
    net.release(other).await.unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn dial_reaches_loopback_listeners_inside_and_reports_closed_ports() {
    let (net, _config, mut footprint) = start(1).await;
    let sandbox = net.acquire(&EgressPolicy::default()).await.unwrap();

    // An echo server bound to 127.0.0.1 inside, and one bound to ::1 only.
    let (v4_port, v6_port) = in_ns(&sandbox.netns_path, || {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").unwrap();
        let ports = (
            v4.local_addr().unwrap().port(),
            v6.local_addr().unwrap().port(),
        );
        for listener in [v4, v6] {
            std::thread::spawn(move || {
                for mut conn in listener.incoming().flatten() {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64];
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        }
        ports
    })
    .await;

    for port in [v4_port, v6_port] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = dial(&sandbox, port).await.unwrap();
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }
    // The host's loopback is not the sandbox's: a host listener is not dialed.
    let host_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let err = dial(&sandbox, host_port).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    let mut samples = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        let stream = dial(&sandbox, v4_port).await.unwrap();
        samples.push(started.elapsed());
        drop(stream);
    }
    report(
        "dial (connect to 127.0.0.1 inside the namespace)",
        &mut samples,
    );

    net.release(sandbox).await.unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_serves_warm_namespaces_and_refills() {
    let (net, _config, mut footprint) = start(4).await;
    wait_for_pool(&net, 4).await;
    let mut warm = Vec::new();
    let mut held = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        held.push(net.acquire(&EgressPolicy::default()).await.unwrap());
        warm.push(started.elapsed());
        wait_for_pool(&net, 4).await;
    }
    report("acquire, warm pool", &mut warm);
    assert_eq!(footprint.links().len(), 24);
    for sandbox in held {
        net.release(sandbox).await.unwrap();
    }
    wait_for_links(&footprint, 4).await;
    net.shutdown().await.unwrap();
    footprint.assert_gone();
    assert!(matches!(
        net.acquire(&EgressPolicy::default()).await,
        Err(NetError::Closed)
    ));
    net.shutdown().await.unwrap(); // idempotent
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_acquire_until_the_subnet_is_full_and_addresses_never_clash() {
    let (net, _config, mut footprint) = start(0).await;
    let mut cold = Vec::new();
    let mut held = Vec::new();
    loop {
        let started = Instant::now();
        match net.acquire(&EgressPolicy::default()).await {
            Ok(sandbox) => {
                cold.push(started.elapsed());
                held.push(sandbox);
            }
            Err(NetError::Exhausted(_)) => break,
            Err(e) => panic!("acquire: {e}"),
        }
    }
    report("acquire, no pool (built inline)", &mut cold);
    // A /24 holds 64 /30s, all distinct.
    assert_eq!(held.len(), 64);
    let mut addrs: Vec<Ipv4Addr> = held.iter().map(|s| s.addr).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 64);
    assert_eq!(footprint.links().len(), 64);

    // A released address comes back; releasing twice is harmless.
    let released = held.pop().unwrap();
    let released_addr = released.addr;
    net.release(released.clone()).await.unwrap();
    net.release(released).await.unwrap();
    let again = net.acquire(&EgressPolicy::default()).await.unwrap();
    assert_eq!(again.addr, released_addr);
    held.push(again);

    let count = held.len() as u32;
    let started = Instant::now();
    for sandbox in held {
        net.release(sandbox).await.unwrap();
    }
    println!(
        "release: {:?} per sandbox over {count}",
        started.elapsed() / count
    );
    // The kernel destroys the unpinned namespaces, and their veths, by itself.
    wait_for_links(&footprint, 0).await;
    println!(
        "all {count} veth pairs gone {:?} after the first release",
        started.elapsed()
    );
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_acquires_all_succeed_with_distinct_addresses() {
    let (net, _config, mut footprint) = start(8).await;
    wait_for_pool(&net, 8).await;
    let started = Instant::now();
    let timed = (0..50).map(|_| {
        let net = net.clone();
        async move {
            let t = Instant::now();
            let sandbox = net.acquire(&EgressPolicy::default()).await;
            (sandbox, t.elapsed())
        }
    });
    let results = futures::future::join_all(timed).await;
    let wall = started.elapsed();
    let mut samples: Vec<Duration> = results.iter().map(|(_, t)| *t).collect();
    report("acquire, 50 at once (pool of 8)", &mut samples);
    println!("50 concurrent acquires: {wall:?} wall");
    let held: Vec<_> = results
        .into_iter()
        .map(|(s, _)| s.expect("acquire"))
        .collect();
    let mut addrs: Vec<Ipv4Addr> = held.iter().map(|s| s.addr).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 50);
    // Every one of them is wired: each reaches its own gateway's DNS.
    let first = held[0].clone();
    let last = held[49].clone();
    for sandbox in [first, last] {
        let gateway = sandbox.gateway;
        assert!(
            in_ns(&sandbox.netns_path, move || resolve_udp(
                dns(gateway),
                "pypi.org."
            )
            .is_ok())
            .await
        );
    }
    futures::future::join_all(held.into_iter().map(|s| net.release(s)))
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .unwrap();
    net.shutdown().await.unwrap();
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_start_removes_what_a_dead_run_left() {
    init();
    let mut config = unique_config(2);
    let first = Network::new(config.clone()).await.unwrap();
    let mut footprint = Footprint::of(&first, &config);
    let kept = first.acquire(&policy(false, &[], &[])).await.unwrap();
    wait_for_pool(&first, 2).await;
    // The process "dies": nothing is torn down.
    drop(first);
    assert_eq!(footprint.links().len(), 3);
    assert!(footprint.table_exists());
    assert!(footprint.mounts().len() >= 3);

    config.pool_size = 0;
    let second = Network::new(config.clone()).await.unwrap();
    assert_eq!(footprint.links(), Vec::<String>::new());
    // Only the namespace directory's own mount is left.
    assert_eq!(footprint.mounts(), vec![config.state_dir.join("netns")]);
    assert!(!kept.netns_path.exists());
    // The fresh table has none of the dead run's per-sandbox rules.
    let sandbox = second.acquire(&EgressPolicy::default()).await.unwrap();
    let gateway = sandbox.gateway;
    let resolved = in_ns(&sandbox.netns_path, move || {
        resolve_udp(dns(gateway), "pypi.org.").is_ok()
    })
    .await;
    assert!(resolved);

    second.shutdown().await.unwrap();
    footprint.assert_gone();
}

async fn wait_for_links(footprint: &Footprint, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while footprint.links().len() != count {
        assert!(
            Instant::now() < deadline,
            "{} veths, expected {count}",
            footprint.links().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for_pool(net: &Network, size: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while net.pooled() < size {
        assert!(
            Instant::now() < deadline,
            "pool stuck at {} of {size}",
            net.pooled()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(what: &str, samples: &mut [Duration]) {
    assert!(!samples.is_empty(), "no samples for {what}");
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        pick(0.5),
        pick(0.99),
        samples[samples.len() - 1]
    );
}
