//! Egress by name, end to end on this host: policies that name domains,
//! enforced at the DNS forwarder (only allowed names resolve; no query for
//! another leaves the host) and at connect (only the addresses handed out
//! for allowed names; TLS SNI and HTTP Host checked on shared addresses),
//! live policy changes that cut what they forbid, and a SOCKS5 egress proxy
//! that fails closed. Everything a sandbox reaches is a test host of this
//! test: web servers, a DNS server for the test zone, a SOCKS5 proxy, each
//! in a network namespace of its own. Root only, like the other network tests.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use common::*;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use sandbar_net::{EgressEvent, EgressPolicy, EgressProxy, NetError, Network, Verdict};

fn policy(allow: &[&str], deny: &[&str]) -> EgressPolicy {
    EgressPolicy {
        allow_internet: true,
        allow_out: allow.iter().map(|s| s.to_string()).collect(),
        deny_out: deny.iter().map(|s| s.to_string()).collect(),
        egress_proxy: None,
    }
}

/// The DNS answer's code for an A query of `name` to `server`.
fn rcode(server: SocketAddr, name: &str) -> std::io::Result<ResponseCode> {
    let mut query = Message::new();
    query.set_id(rand::random());
    query.set_recursion_desired(true);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(BLOCKED_TIMEOUT))?;
    socket.send_to(&query.to_vec().unwrap(), server)?;
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf)?;
    Ok(Message::from_vec(&buf[..len])
        .map_err(std::io::Error::other)?
        .response_code())
}

fn dns(gateway: Ipv4Addr) -> SocketAddr {
    (gateway, 53).into()
}

/// Two web hosts, a zone that names them, and a network whose forwarder
/// asks that zone. `web` serves allowed.test, denied.test (one address:
/// a shared one, as a CDN's), wild.test and a.wild.test; `other` serves
/// other.test.
struct Scene {
    net: Arc<Network>,
    footprint: Footprint,
    ca: TestCa,
    web: WebHost,
    other: WebHost,
    zone: Zone,
}

const NAMES: &[&str] = &[
    "allowed.test",
    "denied.test",
    "wild.test",
    "a.wild.test",
    "other.test",
];

async fn scene(extra_public: &[ipnet::Ipv4Net]) -> Scene {
    init();
    let ca = TestCa::new(NAMES);
    let web = WebHost::start(&ca).await;
    let other = WebHost::start(&ca).await;
    let zone = Zone::start(
        &[
            ("allowed.test", web.addr()),
            ("denied.test", web.addr()),
            ("wild.test", web.addr()),
            ("a.wild.test", web.addr()),
            ("other.test", other.addr()),
        ],
        // A TTL below the learned minimum: the floor is what holds.
        1,
    )
    .await;
    let mut config = unique_config(0);
    config.dns_upstream = vec![zone.server()];
    // The test hosts are this network's internet.
    config.public_ranges.extend([web.host.net, other.host.net]);
    config.public_ranges.extend(extra_public);
    let net = Network::new(config.clone()).await.expect("Network::new");
    let footprint = Footprint::of(&net, &config);
    Scene {
        net,
        footprint,
        ca,
        web,
        other,
        zone,
    }
}

impl Scene {
    async fn finish(mut self, sandboxes: Vec<sandbar_net::SandboxNet>) {
        for sandbox in sandboxes {
            self.net.release(sandbox).await.unwrap();
        }
        self.net.shutdown().await.unwrap();
        self.footprint.assert_gone();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_names_resolve_and_connect_and_nothing_else_does() {
    let s = scene(&[]).await;
    let sandbox = s
        .net
        .acquire(&policy(&["allowed.test", "*.wild.test"], &["0.0.0.0/0"]))
        .await
        .unwrap();
    let (gw, web, other, zone) = (
        sandbox.gateway,
        s.web.addr(),
        s.other.addr(),
        s.zone.server(),
    );
    let tls = s.ca.client();
    let web80: SocketAddr = (web, 80).into();
    let web443: SocketAddr = (web, 443).into();
    let web_echo: SocketAddr = (web, ECHO_PORT).into();
    let other_echo: SocketAddr = (other, ECHO_PORT).into();

    // Before any lookup, the allowed name's server is not reachable by address.
    let before = in_ns(&sandbox.netns_path, move || {
        (
            http_get(web80, "allowed.test").is_err(),
            echo(web_echo).is_err(),
        )
    })
    .await;
    assert_eq!(
        before,
        (true, true),
        "reached an allowed name's server by its raw address"
    );

    let t = tls.clone();
    let checks = in_ns(&sandbox.netns_path, move || {
        let resolved = (
            resolve_udp(dns(gw), "allowed.test.").unwrap(),
            resolve_tcp(dns(gw), "a.wild.test.").unwrap(),
        );
        let refused = [
            rcode(dns(gw), "other.test.").unwrap(),
            rcode(dns(gw), "wild.test.").unwrap(),
            // Asked of another resolver (the zone's own server): the
            // forwarder still answers, so the name does not leave either.
            rcode(zone, "other.test.").unwrap(),
        ];
        let reached = (
            http_get(web80, "allowed.test").unwrap(),
            https_get(web443, "allowed.test", t.clone()).unwrap(),
            https_get(web443, "a.wild.test", t.clone()).unwrap(),
            // Other ports: by the learned address.
            echo(web_echo).is_ok(),
        );
        let still_refused = (
            // On 80/443 the connection must name an allowed host: a raw IP
            // is refused even once its address is known.
            http_get(web80, &web.to_string()).is_err(),
            echo(other_echo).is_err(),
            http_get((other, 80).into(), "other.test").is_err(),
        );
        (resolved, refused, reached, still_refused)
    })
    .await;
    let (resolved, refused, reached, still_refused) = checks;
    assert_eq!(resolved, (vec![web], vec![web]));
    assert_eq!(refused, [ResponseCode::NXDomain; 3]);
    assert_eq!(
        reached,
        (
            "hello allowed.test".to_string(),
            "hello allowed.test".to_string(),
            "hello a.wild.test".to_string(),
            true
        )
    );
    assert_eq!(still_refused, (true, true, true));

    // What left the host: queries for allowed names only; the servers saw
    // allowed names only.
    let asked = s.zone.asked();
    assert!(asked.contains(&"allowed.test".to_string()), "{asked:?}");
    assert!(
        !asked.iter().any(|n| n == "other.test" || n == "wild.test"),
        "{asked:?}"
    );
    let hosts = s.web.hosts();
    assert!(
        hosts
            .iter()
            .all(|h| h == "allowed.test" || h == "a.wild.test"),
        "{hosts:?}"
    );
    assert!(s.other.hosts().is_empty() && s.other.echo_peers().is_empty());

    // The learned set holds the address, with a timeout no shorter than the floor.
    let listed = std::process::Command::new("nft")
        .args([
            "list",
            "set",
            "inet",
            &s.footprint.table,
            &format!("learned_{}", sandbox.host_veth),
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&format!("{web} timeout 1m")), "{listed}");

    // The egress log tells all of it.
    let log = s.net.egress_log(sandbox.addr).await.unwrap();
    let has = |f: &dyn Fn(&EgressEvent) -> bool| log.iter().any(|l| f(&l.event));
    assert!(has(
        &|e| matches!(e, EgressEvent::Dns { name, verdict: Verdict::Denied, .. } if name == "other.test")
    ));
    assert!(has(
        &|e| matches!(e, EgressEvent::Dns { name, verdict: Verdict::Allowed, answers, .. } if name == "allowed.test" && answers == &vec![web])
    ));
    assert!(has(
        &|e| matches!(e, EgressEvent::Connect { to, name: Some(n), verdict: Verdict::Allowed, .. } if *to.ip() == web && to.port() == 443 && n == "allowed.test")
    ));
    assert!(has(
        &|e| matches!(e, EgressEvent::Connect { to, name: None, verdict: Verdict::Denied, .. } if *to.ip() == web && to.port() == 80)
    ));
    assert!(has(
        &|e| matches!(e, EgressEvent::Flow { to, port: ECHO_PORT, verdict: Verdict::Allowed, .. } if *to == web)
    ));
    assert!(has(
        &|e| matches!(e, EgressEvent::Flow { to, port: ECHO_PORT, verdict: Verdict::Denied, .. } if *to == other)
    ));
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));

    s.finish(vec![sandbox]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_address_is_reached_only_under_an_allowed_name() {
    let s = scene(&[]).await;
    let sandbox = s
        .net
        .acquire(&policy(&["allowed.test"], &["0.0.0.0/0"]))
        .await
        .unwrap();
    let (gw, web, tls) = (sandbox.gateway, s.web.addr(), s.ca.client());
    let (web80, web443): (SocketAddr, SocketAddr) = ((web, 80).into(), (web, 443).into());
    let results = in_ns(&sandbox.netns_path, move || {
        // denied.test lives at the same address as allowed.test.
        assert_eq!(resolve_udp(dns(gw), "allowed.test.").unwrap(), vec![web]);
        let denied_dns = rcode(dns(gw), "denied.test.").unwrap();
        let sni = https_get(web443, "denied.test", tls.clone()).is_err();
        let host = http_get(web80, "denied.test").is_err();
        // An absolute target is what servers go by: it must be allowed too.
        let absolute = {
            use std::io::{Read, Write};
            let mut conn = connect(web80).unwrap();
            conn.set_read_timeout(Some(std::time::Duration::from_secs(3)))
                .unwrap();
            conn.write_all(b"GET http://denied.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 64];
            !matches!(conn.read(&mut buf), Ok(n) if n > 0)
        };
        let allowed = https_get(web443, "allowed.test", tls.clone()).unwrap();
        (denied_dns, sni, host, absolute, allowed)
    })
    .await;
    assert_eq!(
        results,
        (
            ResponseCode::NXDomain,
            true,
            true,
            true,
            "hello allowed.test".to_string()
        )
    );
    // None of the refused connections reached the server.
    assert_eq!(s.web.sni(), vec!["allowed.test".to_string()]);
    assert_eq!(s.web.hosts(), vec!["allowed.test".to_string()]);
    assert!(!s.zone.asked().contains(&"denied.test".to_string()));
    s.finish(vec![sandbox]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_denied_beside_allow_all_neither_resolves_nor_connects() {
    let s = scene(&[]).await;
    let sandbox = s
        .net
        .acquire(&policy(&["ok.wild.test"], &["denied.test", "*.wild.test"]))
        .await
        .unwrap();
    let (gw, web, other, tls) = (sandbox.gateway, s.web.addr(), s.other.addr(), s.ca.client());
    let (web80, web443): (SocketAddr, SocketAddr) = ((web, 80).into(), (web, 443).into());
    let results = in_ns(&sandbox.netns_path, move || {
        let dns_codes = [
            rcode(dns(gw), "denied.test.").unwrap(),
            rcode(dns(gw), "a.wild.test.").unwrap(),
            rcode(dns(gw), "allowed.test.").unwrap(),
        ];
        let other_resolves = resolve_udp(dns(gw), "other.test.").unwrap();
        let refused = (
            https_get(web443, "denied.test", tls.clone()).is_err(),
            http_get(web80, "a.wild.test").is_err(),
        );
        let reached = (
            https_get(web443, "allowed.test", tls.clone()).unwrap(),
            http_get((other, 80).into(), "other.test").unwrap(),
            // Everything else stays open, by address too.
            echo((web, ECHO_PORT).into()).is_ok(),
        );
        (dns_codes, other_resolves, refused, reached)
    })
    .await;
    assert_eq!(
        results,
        (
            [
                ResponseCode::NXDomain,
                ResponseCode::NXDomain,
                ResponseCode::NoError
            ],
            vec![other],
            (true, true),
            (
                "hello allowed.test".to_string(),
                "hello other.test".to_string(),
                true
            )
        )
    );
    let asked = s.zone.asked();
    assert!(
        !asked
            .iter()
            .any(|n| n == "denied.test" || n == "a.wild.test"),
        "{asked:?}"
    );
    assert_eq!(s.web.sni(), vec!["allowed.test".to_string()]);
    s.finish(vec![sandbox]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_change_takes_effect_live_and_cuts_what_it_forbids() {
    let s = scene(&[]).await;
    let sandbox = s.net.acquire(&EgressPolicy::default()).await.unwrap();
    let (gw, web, other) = (sandbox.gateway, s.web.addr(), s.other.addr());
    let ns = sandbox.netns_path.clone();
    let (web80, web_echo, other_echo): (SocketAddr, SocketAddr, SocketAddr) = (
        (web, 80).into(),
        (web, ECHO_PORT).into(),
        (other, ECHO_PORT).into(),
    );

    // Open: connections of every kind, kept open across the change.
    let (mut to_other, mut plain_http) = in_ns(&ns, move || {
        let mut to_other = KeptEcho::open(other_echo).unwrap();
        to_other.round_trip().unwrap();
        let mut plain_http = KeptHttp::open(web80).unwrap();
        assert_eq!(plain_http.get("other.test").unwrap(), "hello other.test");
        (to_other, plain_http)
    })
    .await;

    // Only allowed.test: what was open to anything else is cut.
    s.net
        .set_policy(&sandbox, &policy(&["allowed.test"], &["0.0.0.0/0"]))
        .await
        .unwrap();
    let (to_other_cut, plain_cut, codes, by_gateway, mut kept_gateway, mut kept_echo) =
        in_ns(&ns, move || {
            let to_other_cut = to_other.round_trip().is_err();
            let plain_cut = plain_http.get("other.test").is_err();
            let codes = (
                rcode(dns(gw), "other.test.").unwrap(),
                rcode(dns(gw), "allowed.test.").unwrap(),
            );
            let by_gateway = http_get(web80, "allowed.test").unwrap();
            let mut kept_gateway = KeptHttp::open(web80).unwrap();
            kept_gateway.get("allowed.test").unwrap();
            let mut kept_echo = KeptEcho::open(web_echo).unwrap();
            kept_echo.round_trip().unwrap();
            (
                to_other_cut,
                plain_cut,
                codes,
                by_gateway,
                kept_gateway,
                kept_echo,
            )
        })
        .await;
    assert!(
        to_other_cut,
        "a connection to an address no longer allowed survived"
    );
    assert!(
        plain_cut,
        "an HTTP connection the new policy forbids survived"
    );
    assert_eq!(codes, (ResponseCode::NXDomain, ResponseCode::NoError));
    assert_eq!(by_gateway, "hello allowed.test");

    // A change that still allows them keeps them.
    s.net
        .set_policy(
            &sandbox,
            &policy(&["allowed.test", "other.test"], &["0.0.0.0/0"]),
        )
        .await
        .unwrap();
    let (kept_gateway_ok, kept_echo_ok) = in_ns(&ns, move || {
        let a = kept_gateway.get("allowed.test").is_ok();
        let b = kept_echo.round_trip().is_ok();
        ((a, kept_gateway), (b, kept_echo))
    })
    .await;
    assert!(
        kept_gateway_ok.0 && kept_echo_ok.0,
        "an allowed connection was cut"
    );
    let (mut kept_gateway, mut kept_echo) = (kept_gateway_ok.1, kept_echo_ok.1);

    // Now only other.test: allowed.test's connections go.
    s.net
        .set_policy(&sandbox, &policy(&["other.test"], &["0.0.0.0/0"]))
        .await
        .unwrap();
    let cut = in_ns(&ns, move || {
        (
            kept_gateway.get("allowed.test").is_err(),
            kept_echo.round_trip().is_err(),
            rcode(dns(gw), "allowed.test.").unwrap(),
            resolve_udp(dns(gw), "other.test.").unwrap(),
        )
    })
    .await;
    assert_eq!(cut, (true, true, ResponseCode::NXDomain, vec![other]));

    // And back to the default, internet access included.
    s.net
        .set_policy(&sandbox, &EgressPolicy::default())
        .await
        .unwrap();
    let open = in_ns(&ns, move || {
        (
            rcode(dns(gw), "allowed.test.").unwrap(),
            echo(web_echo).is_ok(),
            http_get(web80, &web.to_string()).is_ok(),
        )
    })
    .await;
    assert_eq!(open, (ResponseCode::NoError, true, true));

    // No internet, then names only on top of it (allowOut still applies).
    let mut offline = policy(&[], &[]);
    offline.allow_internet = false;
    s.net.set_policy(&sandbox, &offline).await.unwrap();
    let closed = in_ns(&ns, move || {
        (
            resolve_udp(dns(gw), "allowed.test.").is_err(),
            echo(web_echo).is_err(),
        )
    })
    .await;
    assert_eq!(closed, (true, true));
    let mut names_only = policy(&["allowed.test"], &[]);
    names_only.allow_internet = false;
    s.net.set_policy(&sandbox, &names_only).await.unwrap();
    let names = in_ns(&ns, move || {
        (
            resolve_udp(dns(gw), "allowed.test.").unwrap(),
            rcode(dns(gw), "other.test.").unwrap(),
            http_get(web80, "allowed.test").unwrap(),
        )
    })
    .await;
    assert_eq!(
        names,
        (
            vec![web],
            ResponseCode::NXDomain,
            "hello allowed.test".to_string()
        )
    );
    s.finish(vec![sandbox]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_egress_proxy_carries_the_tcp_and_fails_closed() {
    init();
    let proxy = SocksProxy::start(Some(("sandbar", "s3cret"))).await;
    let s = scene(&[proxy.host.net]).await;
    let with_proxy = |mut p: EgressPolicy, password: &str| {
        p.egress_proxy = Some(EgressProxy {
            address: proxy.address(),
            username: Some("sandbar".into()),
            password: Some(password.into()),
        });
        p
    };
    let sandbox = s
        .net
        .acquire(&with_proxy(EgressPolicy::default(), "s3cret"))
        .await
        .unwrap();
    let (web, gw) = (s.web.addr(), sandbox.gateway);
    let ns = sandbox.netns_path.clone();
    let web_echo: SocketAddr = (web, ECHO_PORT).into();
    let web80: SocketAddr = (web, 80).into();
    let through = in_ns(&ns, move || {
        (
            echo(web_echo).is_ok(),
            http_get(web80, "allowed.test").unwrap(),
        )
    })
    .await;
    assert_eq!(through, (true, "hello allowed.test".to_string()));
    let connects = proxy.connects();
    assert!(
        connects.contains(&(
            Some("sandbar".into()),
            std::net::SocketAddrV4::new(web, ECHO_PORT)
        )),
        "{connects:?}"
    );
    // The server saw the proxy, not this host.
    assert!(
        s.web.echo_peers().iter().all(|p| p.ip() == proxy.host.addr),
        "{:?}",
        s.web.echo_peers()
    );

    // Names and a proxy together: filtering first, then the tunnel.
    let mut named = with_proxy(policy(&["allowed.test"], &["0.0.0.0/0"]), "s3cret");
    s.net.set_policy(&sandbox, &named).await.unwrap();
    let tls = s.ca.client();
    let named_results = in_ns(&ns, move || {
        resolve_udp(dns(gw), "allowed.test.").unwrap();
        (
            https_get((web, 443).into(), "allowed.test", tls.clone()).unwrap(),
            https_get((web, 443).into(), "denied.test", tls).is_err(),
        )
    })
    .await;
    assert_eq!(named_results, ("hello allowed.test".to_string(), true));
    assert!(!proxy
        .connects()
        .iter()
        .any(|(_, to)| to.port() == 443 && s.web.sni().contains(&"denied.test".to_string())));

    // Wrong credentials: nothing gets through, and nothing goes around.
    let peers = s.web.echo_peers().len();
    s.net
        .set_policy(&sandbox, &with_proxy(EgressPolicy::default(), "wrong"))
        .await
        .unwrap();
    assert!(in_ns(&ns, move || echo(web_echo).is_err()).await);
    // The proxy down: the same.
    named = with_proxy(EgressPolicy::default(), "s3cret");
    s.net.set_policy(&sandbox, &named).await.unwrap();
    assert!(in_ns(&ns, move || echo(web_echo).is_ok()).await);
    proxy.stop().await;
    assert!(
        in_ns(&ns, move || echo(web_echo).is_err()).await,
        "a connection went around a proxy that is down"
    );
    assert_eq!(
        s.web.echo_peers().len(),
        peers + 1,
        "only the one made while the proxy was up"
    );
    let log = s.net.egress_log(sandbox.addr).await.unwrap();
    assert!(log.iter().any(|l| matches!(
        &l.event,
        EgressEvent::Connect {
            via_proxy: true,
            verdict: Verdict::Failed,
            ..
        }
    )));

    // A proxy the host must not dial for a sandbox is refused up front.
    let local = EgressPolicy {
        egress_proxy: Some(EgressProxy {
            address: "127.0.0.1:1080".into(),
            username: None,
            password: None,
        }),
        ..EgressPolicy::default()
    };
    match s.net.set_policy(&sandbox, &local).await {
        Err(NetError::Policy(why)) => assert!(why.contains("never reach"), "{why}"),
        other => panic!("a loopback proxy was accepted: {other:?}"),
    }
    s.finish(vec![sandbox]).await;
}
