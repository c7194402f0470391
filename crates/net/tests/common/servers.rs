//! Servers on test hosts of our own (network namespaces the test makes):
//! web servers (HTTP on 80, HTTPS on 443 with a certificate from a test CA,
//! an echo service on 8080), a DNS server for a test zone, and a SOCKS5
//! proxy. Each records what it saw, so a test can tell "refused before it
//! left the host" from "refused by the server". Plus the blocking clients a
//! test runs inside a sandbox's namespace.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::{connect, in_ns, TestHost};

const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// A test CA and one server certificate for `names`, signed by it.
pub struct TestCa {
    ca: CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new(names: &[&str]) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sandbar test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&leaf_key, &issuer)
                .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
            )
            .unwrap();
        Self {
            ca: ca_cert.der().clone(),
            server: Arc::new(server),
        }
    }

    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// What a web host saw.
#[derive(Default)]
pub struct Seen {
    /// Host headers of HTTP requests (on 80 and inside TLS on 443).
    pub hosts: Mutex<Vec<String>>,
    /// SNI of TLS handshakes that reached the server (including the ones
    /// without SNI, as "").
    pub sni: Mutex<Vec<String>>,
    /// Peers of the echo service.
    pub echo_peers: Mutex<Vec<SocketAddr>>,
}

/// A test host serving HTTP (80), HTTPS (443) and echo (8080).
pub struct WebHost {
    pub host: TestHost,
    pub seen: Arc<Seen>,
}

pub const ECHO_PORT: u16 = 8080;

impl WebHost {
    pub async fn start(ca: &TestCa) -> Self {
        let host = TestHost::start().await;
        let seen = Arc::new(Seen::default());
        let addr = host.addr;
        let (s, tls) = (seen.clone(), ca.server.clone());
        in_ns(&host.netns_path(), move || {
            let http = TcpListener::bind((addr, 80)).unwrap();
            let https = TcpListener::bind((addr, 443)).unwrap();
            let echo = TcpListener::bind((addr, ECHO_PORT)).unwrap();
            let seen = s.clone();
            std::thread::spawn(move || {
                for conn in http.incoming().flatten() {
                    let seen = seen.clone();
                    std::thread::spawn(move || {
                        let _ = serve_http(conn, &seen);
                    });
                }
            });
            let seen = s.clone();
            std::thread::spawn(move || {
                for conn in https.incoming().flatten() {
                    let (seen, tls) = (seen.clone(), tls.clone());
                    std::thread::spawn(move || {
                        let mut server = rustls::ServerConnection::new(tls).unwrap();
                        let mut conn = conn;
                        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                        while server.is_handshaking() {
                            if server.complete_io(&mut conn).is_err() {
                                break;
                            }
                        }
                        seen.sni
                            .lock()
                            .unwrap()
                            .push(server.server_name().unwrap_or_default().to_string());
                        let stream = rustls::StreamOwned::new(server, conn);
                        let _ = serve_http(stream, &seen);
                    });
                }
            });
            let seen = s;
            std::thread::spawn(move || {
                for conn in echo.incoming().flatten() {
                    if let Ok(peer) = conn.peer_addr() {
                        seen.echo_peers.lock().unwrap().push(peer);
                    }
                    std::thread::spawn(move || {
                        let mut conn = conn;
                        let mut buf = [0u8; 64 * 1024];
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        })
        .await;
        Self { host, seen }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.host.addr
    }

    pub fn hosts(&self) -> Vec<String> {
        self.seen.hosts.lock().unwrap().clone()
    }

    pub fn sni(&self) -> Vec<String> {
        self.seen.sni.lock().unwrap().clone()
    }

    pub fn echo_peers(&self) -> Vec<SocketAddr> {
        self.seen.echo_peers.lock().unwrap().clone()
    }
}

/// Answers requests on one connection (keep-alive) with `hello <host>`.
fn serve_http(mut conn: impl Read + Write, seen: &Seen) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let host = head
                .lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_default();
            seen.hosts.lock().unwrap().push(host.clone());
            let body = format!("hello {host}");
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            conn.flush()?;
        }
    }
}

/// A DNS server for a test zone on a test host (UDP and TCP, port 53):
/// A records for the names it holds, NXDOMAIN for the rest. It records
/// every name it is asked, so a test can tell that a query never left.
pub struct Zone {
    pub host: TestHost,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Zone {
    pub async fn start(records: &[(&str, Ipv4Addr)], ttl: u32) -> Self {
        let host = TestHost::start().await;
        let mut zone: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
        for (name, addr) in records {
            zone.entry(name.to_string()).or_default().push(*addr);
        }
        let zone = Arc::new(zone);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let addr = host.addr;
        let (z, a) = (zone.clone(), asked.clone());
        in_ns(&host.netns_path(), move || {
            let udp = UdpSocket::bind((addr, 53)).unwrap();
            let tcp = TcpListener::bind((addr, 53)).unwrap();
            let (zone, asked) = (z.clone(), a.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok((len, from)) = udp.recv_from(&mut buf) {
                    if let Some(answer) = answer(&buf[..len], &zone, ttl, &asked) {
                        let _ = udp.send_to(&answer, from);
                    }
                }
            });
            std::thread::spawn(move || {
                for mut conn in tcp.incoming().flatten() {
                    let (zone, asked) = (z.clone(), a.clone());
                    std::thread::spawn(move || {
                        let mut len = [0u8; 2];
                        while conn.read_exact(&mut len).is_ok() {
                            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                            if conn.read_exact(&mut query).is_err() {
                                return;
                            }
                            let Some(answer) = answer(&query, &zone, ttl, &asked) else {
                                return;
                            };
                            let _ = conn.write_all(&(answer.len() as u16).to_be_bytes());
                            let _ = conn.write_all(&answer);
                        }
                    });
                }
            });
        })
        .await;
        Self { host, asked }
    }

    pub fn server(&self) -> SocketAddr {
        (self.host.addr, 53).into()
    }

    /// Names asked so far (lower case, no trailing dot).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

fn answer(
    query: &[u8],
    zone: &HashMap<String, Vec<Ipv4Addr>>,
    ttl: u32,
    asked: &Mutex<Vec<String>>,
) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let mut response = Message::new();
    response.set_id(query.id());
    response.set_message_type(MessageType::Response);
    response.set_recursion_desired(query.recursion_desired());
    response.set_recursion_available(true);
    response.set_authoritative(true);
    let mut found = true;
    for q in query.queries() {
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        asked.lock().unwrap().push(name.clone());
        response.add_query(q.clone());
        match zone.get(&name) {
            Some(addrs) => {
                if q.query_type() == RecordType::A {
                    for addr in addrs {
                        response.add_answer(Record::from_rdata(
                            q.name().clone(),
                            ttl,
                            RData::A(A(*addr)),
                        ));
                    }
                }
            }
            None => found = false,
        }
    }
    if !found {
        response.set_response_code(ResponseCode::NXDomain);
    }
    response.to_vec().ok()
}

/// (username given, destination) of each CONNECT a proxy carried out.
pub type Connects = Arc<Mutex<Vec<(Option<String>, SocketAddrV4)>>>;

/// A SOCKS5 server (RFC 1928 CONNECT to IPv4 addresses, with RFC 1929
/// username/password when `credentials` is set) on a test host, port 1080.
pub struct SocksProxy {
    pub host: TestHost,
    /// (username given, destination) of each CONNECT it carried out.
    pub connects: Connects,
    running: Arc<AtomicBool>,
}

pub const SOCKS_PORT: u16 = 1080;

impl SocksProxy {
    pub async fn start(credentials: Option<(&str, &str)>) -> Self {
        let host = TestHost::start().await;
        let connects = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicBool::new(true));
        let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        let addr = host.addr;
        let (c, r) = (connects.clone(), running.clone());
        in_ns(&host.netns_path(), move || {
            let listener = TcpListener::bind((addr, SOCKS_PORT)).unwrap();
            listener.set_nonblocking(true).unwrap();
            std::thread::spawn(move || {
                // Polled, so that `stop` closes the port for good.
                while r.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (c, credentials) = (c.clone(), credentials.clone());
                            std::thread::spawn(move || {
                                let _ = conn.set_nonblocking(false);
                                let _ = socks_session(conn, credentials.as_ref(), &c);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        })
        .await;
        Self {
            host,
            connects,
            running,
        }
    }

    pub fn address(&self) -> String {
        format!("{}:{SOCKS_PORT}", self.host.addr)
    }

    /// Closes the proxy's port: connections to it are refused from now on.
    pub async fn stop(&self) {
        self.running.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pub fn connects(&self) -> Vec<(Option<String>, SocketAddrV4)> {
        self.connects.lock().unwrap().clone()
    }
}

fn socks_session(
    mut client: TcpStream,
    credentials: Option<&(String, String)>,
    connects: &Mutex<Vec<(Option<String>, SocketAddrV4)>>,
) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut head = [0u8; 2];
    client.read_exact(&mut head)?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods)?;
    if head[0] != 5 {
        return Ok(());
    }
    let mut user = None;
    match credentials {
        Some((want_user, want_pass)) => {
            if !methods.contains(&2) {
                return client.write_all(&[5, 0xff]);
            }
            client.write_all(&[5, 2])?;
            let mut ver_len = [0u8; 2];
            client.read_exact(&mut ver_len)?;
            let mut u = vec![0u8; usize::from(ver_len[1])];
            client.read_exact(&mut u)?;
            let mut plen = [0u8; 1];
            client.read_exact(&mut plen)?;
            let mut p = vec![0u8; usize::from(plen[0])];
            client.read_exact(&mut p)?;
            if u != want_user.as_bytes() || p != want_pass.as_bytes() {
                return client.write_all(&[1, 1]);
            }
            client.write_all(&[1, 0])?;
            user = Some(want_user.clone());
        }
        None => {
            if !methods.contains(&0) {
                return client.write_all(&[5, 0xff]);
            }
            client.write_all(&[5, 0])?;
        }
    }
    let mut request = [0u8; 4];
    client.read_exact(&mut request)?;
    if request[1] != 1 || request[3] != 1 {
        // Only CONNECT to an IPv4 address: "command/address type not supported".
        return client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
    let mut target = [0u8; 6];
    client.read_exact(&mut target)?;
    let to = SocketAddrV4::new(
        Ipv4Addr::new(target[0], target[1], target[2], target[3]),
        u16::from_be_bytes([target[4], target[5]]),
    );
    connects.lock().unwrap().push((user, to));
    let upstream = match connect(to.into()) {
        Ok(upstream) => upstream,
        Err(_) => return client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
    };
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])?;
    client.set_read_timeout(None)?;
    let (mut a, mut b) = (client.try_clone()?, upstream.try_clone()?);
    let (mut c, mut d) = (client, upstream);
    let t = std::thread::spawn(move || {
        let _ = io::copy(&mut a, &mut b);
        let _ = b.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut d, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = t.join();
    Ok(())
}

// ---- clients, run inside a sandbox's namespace ----------------------------

fn read_response(mut conn: impl Read) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return Ok(body[..len].to_string());
            }
        }
    }
}

/// `GET /` with `Host: host` over plain HTTP; the response body.
pub fn http_get(to: SocketAddr, host: &str) -> io::Result<String> {
    let mut conn = connect(to)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    write!(conn, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
    read_response(conn)
}

/// A plain HTTP connection kept open for more requests.
pub struct KeptHttp(TcpStream);

impl KeptHttp {
    pub fn open(to: SocketAddr) -> io::Result<Self> {
        let conn = connect(to)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(Self(conn))
    }

    pub fn get(&mut self, host: &str) -> io::Result<String> {
        write!(self.0, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
        read_response(&mut self.0)
    }
}

/// `GET /` over TLS, sending `name` as SNI (none when it is an IP address)
/// and as Host; the response body.
pub fn https_get(
    to: SocketAddr,
    name: &str,
    client: Arc<rustls::ClientConfig>,
) -> io::Result<String> {
    let server_name = ServerName::try_from(name.to_string()).map_err(io::Error::other)?;
    let tls = rustls::ClientConnection::new(client, server_name).map_err(io::Error::other)?;
    let conn = connect(to)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut stream = rustls::StreamOwned::new(tls, conn);
    write!(stream, "GET / HTTP/1.1\r\nHost: {name}\r\n\r\n")?;
    read_response(stream)
}

/// Sends a line to an echo service and reads it back.
pub fn echo(to: SocketAddr) -> io::Result<()> {
    let conn = connect(to)?;
    KeptEcho(conn).round_trip()
}

/// An echo connection kept open.
pub struct KeptEcho(pub TcpStream);

impl KeptEcho {
    pub fn open(to: SocketAddr) -> io::Result<Self> {
        Ok(Self(connect(to)?))
    }

    pub fn round_trip(&mut self) -> io::Result<()> {
        self.0.set_read_timeout(Some(IO_TIMEOUT))?;
        self.0.write_all(b"ping\n")?;
        let mut back = [0u8; 5];
        self.0.read_exact(&mut back)?;
        if &back != b"ping\n" {
            return Err(io::Error::other("echo answered something else"));
        }
        Ok(())
    }
}
