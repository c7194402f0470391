//! The DNS forwarder sandboxes use as their resolver.
//!
//! Sandboxes send DNS to their gateway; nftables redirects it here (and,
//! for sandboxes whose names are checked, DNS to any address). The host's
//! own resolver usually sits on a private address that sandboxes may not
//! reach, which is why the host relays. Queries and answers are relayed as
//! bytes; they are parsed to see what they ask and carry:
//! - a sandbox whose policy allows nothing out is REFUSED (nftables already
//!   drops its packets; this is the second lock);
//! - a name its policy does not allow gets NXDOMAIN from here, and no query
//!   leaves the host: nothing is carried out in the labels of a name;
//! - where the policy allows only names, the addresses of an allowed
//!   name's answer go into the sandbox's `learned` set before the answer
//!   goes back, so that the connection made on it finds them.
//!
//! Every question is written to the sandbox's egress log.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::egress::{Registry, SandboxEgress};
use crate::egress_log::{EgressEvent, Verdict};
use crate::nfset::SetWriter;
use crate::NetError;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_SESSION_LIMIT: Duration = Duration::from_secs(30);
/// Node-wide caps, which protect the host...
const MAX_UDP_IN_FLIGHT: usize = 4096;
const MAX_TCP_SESSIONS: usize = 1024;
/// ...and per-sandbox shares of them, so that no sandbox can hold what the
/// others need: a resolver serves a client a handful of queries at a time.
const MAX_UDP_IN_FLIGHT_PER_SOURCE: usize = 64;
const MAX_TCP_SESSIONS_PER_SOURCE: usize = 4;
const MAX_DNS_MESSAGE: usize = 65535;

/// How many slots each source holds, with a cap per source.
struct PerSource {
    held: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    max: usize,
}

/// A slot held by one source; released on drop.
struct SourceSlot {
    owner: Arc<PerSource>,
    source: IpAddr,
}

impl PerSource {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: Default::default(),
            max,
        })
    }

    fn try_take(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(source).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            owner: self.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.source);
            }
        }
    }
}

pub(crate) struct DnsForwarder {
    port: u16,
    tasks: Vec<JoinHandle<()>>,
}

/// What the forwarder consults for every query.
struct Resolver {
    upstreams: Vec<SocketAddr>,
    registry: Arc<Registry>,
    writer: SetWriter,
    /// The instance's nftables table, where the learned sets live.
    table: String,
}

impl DnsForwarder {
    /// Binds UDP and TCP on the same ephemeral port of every host address
    /// (nftables keeps everyone but sandboxes and loopback away from it).
    pub(crate) async fn start(
        upstreams: Vec<SocketAddr>,
        registry: Arc<Registry>,
        table: String,
    ) -> Result<Self, NetError> {
        if upstreams.is_empty() {
            return Err(NetError::Config(
                "no upstream DNS resolver configured".into(),
            ));
        }
        let writer = SetWriter::new()
            .map_err(|e| NetError::Setup(format!("opening a netfilter netlink socket: {e}")))?;
        let (udp, tcp) = bind_pair().await?;
        let port = udp.local_addr()?.port();
        let resolver = Arc::new(Resolver {
            upstreams,
            registry,
            writer,
            table,
        });
        let udp_task = tokio::spawn(serve_udp(Arc::new(udp), resolver.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, resolver));
        tracing::debug!(port, "DNS forwarder listening");
        Ok(Self {
            port,
            tasks: vec![udp_task, tcp_task],
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DnsForwarder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What to do with one query.
enum Decision {
    /// REFUSED: the source may not resolve at all.
    Refuse,
    /// Answered here (NXDOMAIN for a name the policy does not allow).
    Answer(Vec<u8>),
    /// Relayed upstream; the answer is then looked at for `questions`.
    Relay(Relay),
}

struct Relay {
    sandbox: Arc<SandboxEgress>,
    /// Names asked (normalized) and their record types.
    questions: Vec<(String, String)>,
}

impl Resolver {
    /// Judges one query, and counts the verdict for Prometheus.
    fn decide(&self, from: SocketAddr, query: &[u8]) -> Decision {
        let decision = self.judge(from, query);
        let verdict = match decision {
            Decision::Refuse => "refused",
            Decision::Answer(_) => "name_denied",
            Decision::Relay(_) => "relayed",
        };
        metrics::counter!("sandbar_dns_queries_total", "verdict" => verdict).increment(1);
        decision
    }

    fn judge(&self, from: SocketAddr, query: &[u8]) -> Decision {
        let Some(sandbox) = sandbox_source(from).and_then(|a| self.registry.get(a)) else {
            return Decision::Refuse;
        };
        let policy = sandbox.policy();
        if policy.offline() {
            return Decision::Refuse;
        }
        let checks_names = policy.inspects() || policy.learns();
        let Ok(message) = Message::from_vec(query) else {
            // What cannot be read cannot be checked.
            return if checks_names {
                Decision::Refuse
            } else {
                Decision::Relay(Relay {
                    sandbox,
                    questions: Vec::new(),
                })
            };
        };
        let questions: Vec<(String, String)> = message
            .queries()
            .iter()
            .map(|q| {
                let name = q.name().to_ascii().to_ascii_lowercase();
                let name = name.trim_end_matches('.').to_string();
                (name, q.query_type().to_string())
            })
            .collect();
        if checks_names && questions.is_empty() {
            return Decision::Refuse;
        }
        let denied = questions.iter().any(|(name, _)| !policy.allows_name(name));
        if denied {
            for (name, qtype) in &questions {
                sandbox.log(EgressEvent::Dns {
                    name: name.clone(),
                    qtype: qtype.clone(),
                    verdict: Verdict::Denied,
                    answers: Vec::new(),
                });
            }
            tracing::debug!(sandbox_addr = %sandbox.addr, names = ?questions, "DNS forwarder: name not allowed");
            return match nxdomain(&message) {
                Some(answer) => Decision::Answer(answer),
                None => Decision::Refuse,
            };
        }
        Decision::Relay(Relay { sandbox, questions })
    }

    /// Looks at an upstream answer: learns its addresses where the policy
    /// needs them (before the answer is handed over) and logs it.
    fn finish(&self, relay: &Relay, answer: Option<&[u8]>) {
        let Some(answer) = answer else {
            for (name, qtype) in &relay.questions {
                relay.sandbox.log(EgressEvent::Dns {
                    name: name.clone(),
                    qtype: qtype.clone(),
                    verdict: Verdict::Failed,
                    answers: Vec::new(),
                });
            }
            return;
        };
        let records: Vec<(Ipv4Addr, u32)> = Message::from_vec(answer)
            .map(|m| {
                m.answers()
                    .iter()
                    .filter_map(|r| match r.data() {
                        RData::A(a) => Some((a.0, r.ttl())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (name, qtype) in &relay.questions {
            if let Err(e) = relay
                .sandbox
                .learn(&self.writer, &self.table, name, &records)
            {
                tracing::warn!(sandbox_addr = %relay.sandbox.addr, error = %e, "DNS forwarder: adding learned addresses");
            }
            relay.sandbox.log(EgressEvent::Dns {
                name: name.clone(),
                qtype: qtype.clone(),
                verdict: Verdict::Allowed,
                answers: records.iter().map(|(a, _)| *a).collect(),
            });
        }
    }
}

/// An NXDOMAIN answer to `query`: the name does not exist, as far as this
/// sandbox is concerned.
fn nxdomain(query: &Message) -> Option<Vec<u8>> {
    let mut answer = Message::error_msg(query.id(), query.op_code(), ResponseCode::NXDomain);
    answer.add_queries(query.queries().to_vec());
    answer.set_recursion_desired(query.recursion_desired());
    answer.set_recursion_available(true);
    answer.to_vec().ok()
}

/// An ephemeral UDP port whose TCP twin is free too.
async fn bind_pair() -> Result<(UdpSocket, TcpListener), NetError> {
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let mut last_err = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(any).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(NetError::Setup(format!(
        "binding the DNS forwarder: no port free for both UDP and TCP: {}",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    )))
}

fn sandbox_source(addr: SocketAddr) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// A REFUSED answer to `query`, or None when it does not even parse.
pub(crate) fn refusal(query: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let mut answer = Message::error_msg(query.id(), query.op_code(), ResponseCode::Refused);
    answer.add_queries(query.queries().to_vec());
    answer.set_recursion_desired(query.recursion_desired());
    answer.to_vec().ok()
}

fn message_id(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*message.first()?, *message.get(1)?]))
}

async fn serve_udp(socket: Arc<UdpSocket>, resolver: Arc<Resolver>) {
    let in_flight = Arc::new(Semaphore::new(MAX_UDP_IN_FLIGHT));
    let per_source = PerSource::new(MAX_UDP_IN_FLIGHT_PER_SOURCE);
    let mut buf = vec![0u8; MAX_DNS_MESSAGE];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::warn!(error = %e, "DNS forwarder: receiving");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let query = buf[..len].to_vec();
        let relay = match resolver.decide(from, &query) {
            Decision::Refuse => {
                tracing::debug!(%from, "DNS forwarder: refused");
                if let Some(answer) = refusal(&query) {
                    let _ = socket.send_to(&answer, from).await;
                }
                continue;
            }
            Decision::Answer(answer) => {
                let _ = socket.send_to(&answer, from).await;
                continue;
            }
            Decision::Relay(relay) => relay,
        };
        // Under a flood, dropping is what a resolver does; clients retry.
        let Some(slot) = per_source.try_take(from.ip()) else {
            continue;
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let socket = socket.clone();
        let resolver = resolver.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            match relay_udp(&query, &resolver.upstreams).await {
                Ok(answer) => {
                    resolver.finish(&relay, Some(&answer));
                    let _ = socket.send_to(&answer, from).await;
                }
                Err(e) => {
                    resolver.finish(&relay, None);
                    tracing::debug!(%from, error = %e, "DNS forwarder: no upstream answer")
                }
            }
        });
    }
}

/// Asks each upstream in turn from a fresh socket (a random source port per
/// query, as resolvers do against spoofed answers).
async fn relay_udp(query: &[u8], upstreams: &[SocketAddr]) -> io::Result<Vec<u8>> {
    let id = message_id(query).ok_or_else(|| io::Error::other("query shorter than a header"))?;
    let mut last_err = io::Error::other("no upstream");
    for upstream in upstreams {
        let local: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let attempt = async {
            let socket = UdpSocket::bind(local).await?;
            socket.connect(upstream).await?;
            socket.send(query).await?;
            let mut buf = vec![0u8; MAX_DNS_MESSAGE];
            loop {
                let len = socket.recv(&mut buf).await?;
                if message_id(&buf[..len]) == Some(id) {
                    buf.truncate(len);
                    return Ok::<_, io::Error>(buf);
                }
            }
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => last_err = e,
            Err(_) => {
                last_err = io::Error::new(io::ErrorKind::TimedOut, format!("{upstream} timed out"))
            }
        }
    }
    Err(last_err)
}

async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>) {
    let sessions = Arc::new(Semaphore::new(MAX_TCP_SESSIONS));
    let per_source = PerSource::new(MAX_TCP_SESSIONS_PER_SOURCE);
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "DNS forwarder: accepting");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Over a cap the connection is closed at once (dropped here).
        let Some(slot) = per_source.try_take(from.ip()) else {
            tracing::debug!(%from, "DNS forwarder: too many TCP sessions from this source");
            continue;
        };
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            continue;
        };
        let resolver = resolver.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            let session = tcp_session(stream, from, &resolver);
            match tokio::time::timeout(TCP_SESSION_LIMIT, session).await {
                Ok(Err(e)) => tracing::debug!(%from, error = %e, "DNS forwarder: TCP session"),
                Err(_) => tracing::debug!(%from, "DNS forwarder: TCP session timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn read_message(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let len = match stream.read_u16().await {
        Ok(len) => len,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

async fn write_message(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let len = u16::try_from(message.len()).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

/// Queries one at a time, each judged on its own; allowed ones go over one
/// upstream connection, opened for the first of them.
async fn tcp_session(
    mut client: TcpStream,
    from: SocketAddr,
    resolver: &Resolver,
) -> io::Result<()> {
    let mut upstream: Option<TcpStream> = None;
    while let Some(query) = read_message(&mut client).await? {
        match resolver.decide(from, &query) {
            Decision::Refuse => {
                if let Some(answer) = refusal(&query) {
                    write_message(&mut client, &answer).await?;
                }
                return client.shutdown().await;
            }
            Decision::Answer(answer) => write_message(&mut client, &answer).await?,
            Decision::Relay(relay) => {
                let server = match &mut upstream {
                    Some(server) => server,
                    None => upstream.insert(connect_upstream(&resolver.upstreams).await?),
                };
                let exchanged = async {
                    write_message(server, &query).await?;
                    read_message(server).await?.ok_or_else(|| {
                        io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed")
                    })
                };
                match tokio::time::timeout(UPSTREAM_TIMEOUT, exchanged).await {
                    Ok(Ok(answer)) => {
                        resolver.finish(&relay, Some(&answer));
                        write_message(&mut client, &answer).await?;
                    }
                    Ok(Err(e)) => {
                        resolver.finish(&relay, None);
                        return Err(e);
                    }
                    Err(_) => {
                        resolver.finish(&relay, None);
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "upstream timed out",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

async fn connect_upstream(upstreams: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last_err = io::Error::other("no upstream");
    for upstream in upstreams {
        match tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(upstream)).await {
            Ok(Ok(server)) => return Ok(server),
            Ok(Err(e)) => last_err = e,
            Err(_) => {
                last_err = io::Error::new(io::ErrorKind::TimedOut, format!("{upstream} timed out"))
            }
        }
    }
    Err(last_err)
}

/// Nameservers from /etc/resolv.conf, port 53.
pub fn system_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // Drop a zone suffix (fe80::1%eth0): such resolvers are rare and
            // std cannot parse it.
            let addr = words.next()?.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_has_its_own_share() {
        let slots = PerSource::new(2);
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.0.6".parse().unwrap();
        let a1 = slots.try_take(a).unwrap();
        let _a2 = slots.try_take(a).unwrap();
        assert!(slots.try_take(a).is_none(), "a's share is used up");
        assert!(slots.try_take(b).is_some(), "b is not affected");
        drop(a1);
        assert!(slots.try_take(a).is_some(), "a slot comes back on drop");
    }
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn resolv_conf_nameservers() {
        let text =
            "# comment\nsearch x\nnameserver 10.255.255.53\nnameserver ::1\noptions ndots:1\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.255.255.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn refusal_keeps_id_and_question() {
        let mut query = Message::new();
        query.set_id(4242);
        query.set_recursion_desired(true);
        query.add_query(Query::query(
            Name::from_ascii("pypi.org.").unwrap(),
            RecordType::A,
        ));
        let answer = Message::from_vec(&refusal(&query.to_vec().unwrap()).unwrap()).unwrap();
        assert_eq!(answer.id(), 4242);
        assert_eq!(answer.response_code(), ResponseCode::Refused);
        assert_eq!(answer.queries(), query.queries());
        assert!(refusal(&[1, 2, 3]).is_none());
    }
}
