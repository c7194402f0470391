//! Egress by name: what a domain policy costs a sandbox. A test host of the
//! bench's own (a network namespace with an HTTP server, a bulk source and
//! a sink) and a DNS server for its test zone on loopback, which the
//! scratch server's forwarder asks (`--dns-upstream`). Measured from inside
//! the sandboxes' network namespaces (entered by a thread of the bench), as
//! a program there would see it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

use crate::api::Api;
use crate::report::{Measure, Row, Target, Unit};
use crate::stats::Summary;

const ZONE: &str = "egress.bench.test";
const HTTP_PORT: u16 = 80;
const SOURCE_PORT: u16 = 9000;
const SINK_PORT: u16 = 9001;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How much the egress rows measure.
pub struct EgressCounts {
    pub round_trips: usize,
    pub bulk_mib: usize,
    pub rounds: usize,
}

/// The bench's test host and DNS zone.
pub struct TestHost {
    ns: String,
    veth: String,
    pub addr: Ipv4Addr,
    net: String,
    dns: SocketAddr,
    running: Arc<AtomicBool>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a thread of its own inside the network namespace at `path`.
fn in_ns<T: Send + 'static>(path: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    std::thread::spawn(move || -> Result<T> {
        let ns =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {}", path.display()))?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in a namespace panicked"))?
}

/// Accepts until `running` is cleared (`Drop` then connects once to wake
/// the loop, so that it ends and its socket closes).
fn serve(listener: TcpListener, running: Arc<AtomicBool>, handle: fn(TcpStream)) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if !running.load(Ordering::SeqCst) {
                return;
            }
            if let Ok(conn) = conn {
                std::thread::spawn(move || handle(conn));
            }
        }
    });
}

/// Requests on one connection: `GET /bulk/<MiB>` answers that much, any
/// other path a short body.
fn http(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = conn.read(&mut chunk) {
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mib: usize = path
                .strip_prefix("/bulk/")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            let len = if mib == 0 { 2 } else { mib << 20 };
            if write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").is_err() {
                return;
            }
            if mib == 0 {
                let _ = conn.write_all(b"ok");
            } else if send_bulk(&mut conn, len).is_err() {
                return;
            }
        }
    }
}

fn send_bulk(conn: &mut TcpStream, mut len: usize) -> std::io::Result<()> {
    let block = vec![0x5au8; 256 * 1024];
    while len > 0 {
        let n = len.min(block.len());
        conn.write_all(&block[..n])?;
        len -= n;
    }
    Ok(())
}

/// The first line says how many MiB to send; then they are sent.
fn source(mut conn: TcpStream) {
    // The whole line before sending: a byte of it left unread when this
    // closes makes the kernel answer RST, which drops what was still in
    // flight to the client ("Connection reset by peer" in its reads).
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") && line.len() < 16 {
        match conn.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return,
        }
    }
    let mib: usize = String::from_utf8_lossy(&line).trim().parse().unwrap_or(0);
    let _ = send_bulk(&mut conn, mib << 20);
}

fn sink(conn: TcpStream) {
    drop(conn);
}

impl TestHost {
    pub fn start() -> Result<Self> {
        let tag = format!("{:05x}", rand::random::<u32>() & 0xfffff);
        let base = u32::from(Ipv4Addr::new(172, 30, 0, 0)) + (rand::random::<u32>() % 16384) * 4;
        let (gw, addr) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let ns = format!("sandbar-bench-{tag}");
        let veth = format!("sbbh{tag}");
        let running = Arc::new(AtomicBool::new(true));
        let dns_socket = UdpSocket::bind("127.0.0.1:0")?;
        let dns = dns_socket.local_addr()?;
        let me = Self {
            ns: ns.clone(),
            veth: veth.clone(),
            addr,
            net: format!("{}/30", Ipv4Addr::from(base)),
            dns,
            running: running.clone(),
        };
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["addr", "add", &format!("{gw}/30"), "dev", &veth])?;
        ip(&["link", "set", &veth, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &gw.to_string()])?;
        let r = running.clone();
        in_ns(
            PathBuf::from(format!("/run/netns/{ns}")),
            move || -> Result<()> {
                serve(TcpListener::bind((addr, HTTP_PORT))?, r.clone(), http);
                serve(TcpListener::bind((addr, SOURCE_PORT))?, r.clone(), source);
                serve(TcpListener::bind((addr, SINK_PORT))?, r, sink);
                Ok(())
            },
        )??;
        dns_socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while running.load(Ordering::SeqCst) {
                if let Ok((len, from)) = dns_socket.recv_from(&mut buf) {
                    if let Some(answer) = zone_answer(&buf[..len], addr) {
                        let _ = dns_socket.send_to(&answer, from);
                    }
                }
            }
        });
        Ok(me)
    }

    /// What `sandbar serve` needs to reach the test host and its zone.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--dns-upstream".into(),
            self.dns.to_string(),
            "--public-range".into(),
            self.net.clone(),
        ]
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        for port in [HTTP_PORT, SOURCE_PORT, SINK_PORT] {
            let _ = TcpStream::connect_timeout(&(self.addr, port).into(), Duration::from_secs(1));
        }
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// An A record (TTL 300) for every name under the zone; NXDOMAIN otherwise.
fn zone_answer(query: &[u8], addr: Ipv4Addr) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let (mut i, mut labels) = (12usize, Vec::new());
    loop {
        let n = usize::from(*query.get(i)?);
        if n == 0 {
            i += 1;
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + n)?).to_ascii_lowercase());
        i += 1 + n;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let end = i + 4;
    let name = labels.join(".");
    let known = name == ZONE || name.ends_with(&format!(".{ZONE}"));
    let mut out = query[..2].to_vec();
    let rd = query[2] & 0x01;
    out.extend_from_slice(&[0x84 | rd, if known { 0x80 } else { 0x83 }]);
    let answers = u16::from(known && qtype == 1);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..end)?);
    if answers == 1 {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        out.extend_from_slice(&300u32.to_be_bytes());
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(&addr.octets());
    }
    Some(out)
}

/// A query for `name` (A, recursion desired) with `id`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The default gateway of the namespace this thread is in (the sandbox's
/// resolver address).
fn gateway() -> Result<Ipv4Addr> {
    let routes = std::fs::read_to_string("/proc/thread-self/net/route")?;
    for line in routes.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && f[1] == "00000000" {
            let g = u32::from_str_radix(f[2], 16)?;
            return Ok(Ipv4Addr::from(u32::from_be(g)));
        }
    }
    bail!("no default route in the sandbox")
}

struct Inside {
    dns: Vec<f64>,
    connect: Vec<f64>,
    http_first: Vec<f64>,
    /// MiB/s, best of the rounds: raw TCP from the source, and HTTP on 80.
    tcp_mibps: f64,
    http_mibps: f64,
}

/// Everything measured from inside one sandbox.
fn measure_inside(host: Ipv4Addr, name: &str, counts: &EgressCounts) -> Result<Inside> {
    let resolver: SocketAddr = (gateway()?, 53).into();
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.connect(resolver)?;
    let mut buf = [0u8; 1500];
    let mut dns = Vec::new();
    // The first answer is learned; the rows are about what follows.
    for i in 0..=counts.round_trips {
        let id = i as u16;
        let started = Instant::now();
        socket.send(&query(name, id))?;
        let n = socket
            .recv(&mut buf)
            .context("no DNS answer from the forwarder")?;
        if n < 4 || u16::from_be_bytes([buf[0], buf[1]]) != id || buf[3] & 0x0f != 0 {
            bail!("the forwarder did not resolve {name}");
        }
        if i > 0 {
            dns.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let mut connect = Vec::new();
    for _ in 0..counts.round_trips {
        let started = Instant::now();
        let c = TcpStream::connect_timeout(&(host, SINK_PORT).into(), IO_TIMEOUT)
            .context("connect to the test host's sink")?;
        connect.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(c);
    }
    let mut http_first = Vec::new();
    for _ in 0..counts.round_trips {
        let started = Instant::now();
        let mut c = TcpStream::connect_timeout(&(host, HTTP_PORT).into(), IO_TIMEOUT)
            .context("connect to the test host's HTTP server")?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_nodelay(true)?;
        write!(c, "GET / HTTP/1.1\r\nHost: {name}\r\n\r\n").context("send an HTTP request")?;
        let mut got = Vec::new();
        while !got.ends_with(b"ok") {
            let n = c.read(&mut buf).context("read an HTTP answer")?;
            if n == 0 {
                bail!("the HTTP connection closed early");
            }
            got.extend_from_slice(&buf[..n]);
        }
        http_first.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let bulk = counts.bulk_mib;
    let read_all = |mut c: TcpStream, len: usize| -> Result<()> {
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut big = vec![0u8; 256 * 1024];
        let mut left = len;
        while left > 0 {
            let n = c.read(&mut big).context("read a bulk transfer")?;
            if n == 0 {
                bail!("the transfer ended {left} bytes short");
            }
            left = left.saturating_sub(n);
        }
        Ok(())
    };
    let (mut tcp_mibps, mut http_mibps) = (0f64, 0f64);
    // One round to warm up (page cache, TCP windows), then the best of the rest.
    for round in 0..=counts.rounds {
        let warm_up = round == 0;
        let started = Instant::now();
        let mut c = TcpStream::connect_timeout(&(host, SOURCE_PORT).into(), IO_TIMEOUT)
            .context("connect to the test host's source")?;
        c.write_all(format!("{bulk}\n").as_bytes())
            .context("ask the source")?;
        read_all(c, bulk << 20).context("TCP from the source")?;
        if !warm_up {
            tcp_mibps = tcp_mibps.max(bulk as f64 / started.elapsed().as_secs_f64());
        }

        let started = Instant::now();
        let mut c = TcpStream::connect_timeout(&(host, HTTP_PORT).into(), IO_TIMEOUT)
            .context("connect for an HTTP bulk transfer")?;
        write!(c, "GET /bulk/{bulk} HTTP/1.1\r\nHost: {name}\r\n\r\n")
            .context("ask for an HTTP bulk transfer")?;
        // The head is short; count it into the body's bytes.
        read_all(c, bulk << 20).context("HTTP bulk")?;
        if !warm_up {
            http_mibps = http_mibps.max(bulk as f64 / started.elapsed().as_secs_f64());
        }
    }
    Ok(Inside {
        dns,
        connect,
        http_first,
        tcp_mibps,
        http_mibps,
    })
}

fn distribution(what: &str, samples: &[f64]) -> Row {
    match Summary::of(samples) {
        Some(summary) => Row::new(
            what,
            Measure::Distribution {
                unit: Unit::Ms,
                summary,
            },
        ),
        None => Row::error(what, &anyhow::anyhow!("no samples")),
    }
}

fn value(what: &str, unit: &str, v: f64) -> Row {
    Row::new(
        what,
        Measure::Value {
            unit: unit.into(),
            value: (v * 10.0).round() / 10.0,
        },
    )
}

pub async fn rows(api: &Api, instance: &str, host: &TestHost, counts: &EgressCounts) -> Vec<Row> {
    match measure(api, instance, host, counts).await {
        Ok(rows) => rows,
        Err(e) => vec![Row::error("egress by name", &e)],
    }
}

async fn measure(
    api: &Api,
    instance: &str,
    host: &TestHost,
    counts: &EgressCounts,
) -> Result<Vec<Row>> {
    let target = format!("target.{ZONE}");
    // 50 names: 48 others, a wildcard, and the one asked for.
    let mut names: Vec<String> = (0..48).map(|i| format!("n{i}.{ZONE}")).collect();
    names.push(format!("*.w.{ZONE}"));
    names.push(target.clone());
    let (plain, _) = api.create().await?;
    let (named, _) = api
        .create_with(serde_json::json!({"network": {"allowOut": names, "denyOut": ["0.0.0.0/0"]}}))
        .await?;
    let run = async {
        let mut results = Vec::new();
        for id in [&plain.id, &named.id] {
            let ns = crate::netns::sandbox_netns(instance, id)?;
            let (addr, name) = (host.addr, target.clone());
            let c = EgressCounts {
                round_trips: counts.round_trips,
                bulk_mib: counts.bulk_mib,
                rounds: counts.rounds,
            };
            let which = if id == &plain.id {
                "no policy"
            } else {
                "a domain policy"
            };
            let inside = tokio::task::spawn_blocking(move || {
                in_ns(ns, move || {
                    measure_inside(addr, &name, &c)
                        .with_context(|| format!("in the sandbox with {which}"))
                })
            })
            .await???;
            results.push(inside);
        }
        Ok::<_, anyhow::Error>(results)
    };
    let measured = run.await;
    api.kill_all(&[plain.id.clone(), named.id.clone()]).await?;
    let [none, policy]: [Inside; 2] = measured?
        .try_into()
        .map_err(|_| anyhow::anyhow!("two sandboxes measured"))?;
    let tcp_ratio = 100.0 * policy.tcp_mibps / none.tcp_mibps;
    let http_ratio = 100.0 * policy.http_mibps / none.http_mibps;
    Ok(vec![
        distribution(
            "DNS round trip from inside, no policy (forwarder, test zone)",
            &none.dns,
        ),
        distribution(
            "DNS round trip from inside, 50-name allowOut policy",
            &policy.dns,
        )
        .note("name matched against 50 rules, answer's address already learned"),
        distribution("TCP connect to a test host, no policy", &none.connect),
        distribution(
            "TCP connect to a test host, domain policy (learned address)",
            &policy.connect,
        ),
        distribution(
            "HTTP GET on a new connection (port 80), no policy",
            &none.http_first,
        ),
        distribution(
            "HTTP GET on a new connection (port 80), domain policy (Host checked by the gateway)",
            &policy.http_first,
        ),
        value(
            "TCP throughput from a test host, no policy",
            "MiB/s",
            none.tcp_mibps,
        ),
        value(
            "TCP throughput from a test host, domain policy",
            "MiB/s",
            policy.tcp_mibps,
        ),
        value(
            "TCP throughput with a domain policy vs none",
            "%",
            tcp_ratio,
        )
        .target(Target::AtLeast(95.0))
        .note("kernel path: the address was learned through DNS")
        .judged(),
        value(
            "HTTP (port 80) throughput, no policy",
            "MiB/s",
            none.http_mibps,
        ),
        value(
            "HTTP (port 80) throughput, domain policy",
            "MiB/s",
            policy.http_mibps,
        ),
        value(
            "HTTP (port 80) throughput with a domain policy vs none",
            "%",
            http_ratio,
        )
        .note("80/443 pass the egress gateway (Host/SNI check, then spliced in user space)"),
    ])
}
