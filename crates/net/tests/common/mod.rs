//! Helpers for the root-only network tests: unique names, running code inside
//! a namespace, DNS queries, and the leak check every test ends with.

#![allow(dead_code)]

pub mod servers;
#[allow(unused_imports)] // not every test file uses the servers
pub use servers::*;

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use nix::sched::{setns, CloneFlags};
use rand::Rng;
use sandbar_net::{NetConfig, Network};

pub const BLOCKED_TIMEOUT: Duration = Duration::from_millis(1500);

pub fn init() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the sandbar-net integration tests make namespaces, veths and nftables tables: run them as root"
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "sandbar_net=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A config no other test (or server) shares: random instance, a free
/// /24, its own state dir.
pub fn unique_config(pool_size: usize) -> NetConfig {
    let mut config = NetConfig::unique('t', pool_size).expect("a free test subnet");
    // Where this host reaches the registries through special-purpose
    // addresses, they are this network's internet.
    config.public_ranges =
        sandbar_net::special::blocked_addresses_of(sandbar_net::special::WELL_KNOWN_NAMES);
    config
}

/// What a test checks is gone after shutdown. A test that fails before
/// checking still removes its instance's leftovers when this is dropped.
pub struct Footprint {
    pub table: String,
    pub veth_prefix: String,
    pub state_dir: PathBuf,
    config: NetConfig,
    checked: bool,
}

impl Drop for Footprint {
    fn drop(&mut self) {
        if self.checked {
            return;
        }
        let config = self.config.clone();
        // A runtime of its own: this may run inside the test's runtime.
        let cleaned = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Network::remove_instance(&config))
        })
        .join();
        eprintln!(
            "removed the leftovers of instance {}: {cleaned:?}",
            self.config.instance
        );
    }
}

impl Footprint {
    pub fn of(net: &Network, config: &NetConfig) -> Self {
        Self {
            table: net.table_name(),
            veth_prefix: net.veth_prefix(),
            state_dir: config.state_dir.clone(),
            config: config.clone(),
            checked: false,
        }
    }

    pub fn links(&self) -> Vec<String> {
        std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&self.veth_prefix))
            .collect()
    }

    pub fn mounts(&self) -> Vec<PathBuf> {
        sandbar_net::mount_points()
            .unwrap()
            .into_iter()
            .filter(|m| m.starts_with(&self.state_dir))
            .collect()
    }

    pub fn table_exists(&self) -> bool {
        std::process::Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    pub fn assert_gone(&mut self) {
        assert_eq!(self.links(), Vec::<String>::new(), "veths left behind");
        assert_eq!(
            self.mounts(),
            Vec::<PathBuf>::new(),
            "namespace mounts left behind"
        );
        assert!(!self.table_exists(), "table {} left behind", self.table);
        assert!(!self.state_dir.exists(), "state dir left behind");
        self.checked = true;
    }
}

pub async fn start(pool_size: usize) -> (Arc<Network>, NetConfig, Footprint) {
    init();
    let config = unique_config(pool_size);
    let net = Network::new(config.clone()).await.expect("Network::new");
    let footprint = Footprint::of(&net, &config);
    (net, config, footprint)
}

/// Runs `f` on a fresh thread inside the namespace pinned at `path`.
pub async fn in_ns<T, F>(path: &Path, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path).unwrap();
    tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
    .await
    .unwrap()
}

pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, BLOCKED_TIMEOUT)
}

/// The host's source address for outside traffic (a UDP connect sends nothing).
pub fn host_address() -> Ipv4Addr {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("198.51.100.1:9").unwrap();
    match socket.local_addr().unwrap().ip() {
        std::net::IpAddr::V4(v4) => v4,
        other => panic!("host address is not IPv4: {other}"),
    }
}

/// The registry test target, resolved on the host.
pub fn registry_addr() -> SocketAddr {
    ("pypi.org", 443)
        .to_socket_addrs()
        .unwrap()
        .find(SocketAddr::is_ipv4)
        .unwrap()
}

fn a_query(name: &str) -> Vec<u8> {
    let mut query = Message::new();
    query.set_id(rand::rng().random());
    query.set_recursion_desired(true);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    query.to_vec().unwrap()
}

fn a_records(answer: &[u8]) -> io::Result<Vec<Ipv4Addr>> {
    let answer = Message::from_vec(answer).map_err(io::Error::other)?;
    if answer.response_code() != ResponseCode::NoError {
        return Err(io::Error::other(format!(
            "DNS answered {}",
            answer.response_code()
        )));
    }
    Ok(answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}

/// A records for `name` asked over UDP from `server`.
pub fn resolve_udp(server: SocketAddr, name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(BLOCKED_TIMEOUT))?;
    socket.send_to(&a_query(name), server)?;
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf)?;
    a_records(&buf[..len])
}

/// A records for `name` asked over TCP from `server`.
pub fn resolve_tcp(server: SocketAddr, name: &str) -> io::Result<Vec<Ipv4Addr>> {
    use std::io::{Read, Write};
    let mut stream = connect(server)?;
    stream.set_read_timeout(Some(BLOCKED_TIMEOUT))?;
    let query = a_query(name);
    stream.write_all(&(query.len() as u16).to_be_bytes())?;
    stream.write_all(&query)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer)?;
    a_records(&answer)
}

/// Sum of the packet counters in one chain of the table.
pub fn dropped_in(table: &str, chain: &str) -> u64 {
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "chain", "inet", table, chain])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut total = 0;
    for object in json["nftables"].as_array().unwrap() {
        if let Some(exprs) = object["rule"]["expr"].as_array() {
            for e in exprs {
                total += e["counter"]["packets"].as_u64().unwrap_or(0);
            }
        }
    }
    total
}

/// A stand-in upstream resolver on loopback (UDP and TCP, same port) that
/// answers every A query with `answer`, so the forwarder's relaying can be
/// checked without depending on what the host's real resolver supports.
pub fn fake_upstream(answer: Ipv4Addr) -> SocketAddr {
    use hickory_proto::op::MessageType;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::Record;
    use std::io::{Read, Write};

    fn respond(query: &[u8], answer: Ipv4Addr) -> Option<Vec<u8>> {
        let query = Message::from_vec(query).ok()?;
        let mut response = Message::new();
        response.set_id(query.id());
        response.set_message_type(MessageType::Response);
        response.set_recursion_desired(query.recursion_desired());
        response.set_recursion_available(true);
        for q in query.queries() {
            response.add_query(q.clone());
            response.add_answer(Record::from_rdata(q.name().clone(), 1, RData::A(A(answer))));
        }
        response.to_vec().ok()
    }

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = std::net::TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((len, from)) = udp.recv_from(&mut buf) {
            if let Some(response) = respond(&buf[..len], answer) {
                let _ = udp.send_to(&response, from);
            }
        }
    });
    std::thread::spawn(move || {
        for mut conn in tcp.incoming().flatten() {
            std::thread::spawn(move || {
                let mut len = [0u8; 2];
                while conn.read_exact(&mut len).is_ok() {
                    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if conn.read_exact(&mut query).is_err() {
                        return;
                    }
                    let Some(response) = respond(&query, answer) else {
                        return;
                    };
                    let _ = conn.write_all(&(response.len() as u16).to_be_bytes());
                    let _ = conn.write_all(&response);
                }
            });
        }
    });
    addr
}

/// A test host of our own on a private address: its own network namespace
/// behind a veth pair whose host end routes a /30 of 172.16.0.0/12 to it,
/// and a TCP service that counts connections. Traffic a test sends to a
/// private range goes here, never to a network outside this machine.
pub struct TestHost {
    pub addr: Ipv4Addr,
    pub net: ipnet::Ipv4Net,
    pub port: u16,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    name: String,
    veth: String,
}

impl TestHost {
    pub async fn start() -> Self {
        let mut rng = rand::rng();
        let tag: String = (0..5)
            .map(|_| char::from_digit(rng.random_range(0..36), 36).unwrap())
            .collect();
        // 172.31.x.y/30: one of 16384 blocks, random per test.
        let base = u32::from(Ipv4Addr::new(172, 31, 0, 0)) + rng.random_range(0..16384u32) * 4;
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(base), 30).unwrap();
        let (gw, addr) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let name = format!("sandbar-testhost-{tag}");
        let veth = format!("sbth{tag}");
        let ip = |args: &str| {
            let out = std::process::Command::new("ip")
                .args(args.split_whitespace())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&format!("netns add {name}"));
        ip(&format!(
            "link add {veth} type veth peer name eth0 netns {name}"
        ));
        ip(&format!("addr add {gw}/30 dev {veth}"));
        ip(&format!("link set {veth} up"));
        ip(&format!("-n {name} addr add {addr}/30 dev eth0"));
        ip(&format!("-n {name} link set eth0 up"));
        ip(&format!("-n {name} link set lo up"));
        ip(&format!("-n {name} route add default via {gw}"));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let port = in_ns(&PathBuf::from(format!("/run/netns/{name}")), move || {
            let listener = std::net::TcpListener::bind((addr, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    drop(conn);
                }
            });
            port
        })
        .await;
        // The host itself reaches it: a failure from a sandbox is the rules.
        connect((addr, port).into()).expect("the host reaches its test host");
        Self {
            addr,
            net,
            port,
            accepted,
            name,
            veth,
        }
    }

    pub fn sock(&self) -> SocketAddr {
        (self.addr, self.port).into()
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Whether the instance's nftables set `set` holds `addr`.
pub fn set_holds(table: &str, set: &str, addr: &str) -> bool {
    std::process::Command::new("nft")
        .args([
            "get",
            "element",
            "inet",
            table,
            set,
            &format!("{{ {addr} }}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}
