//! The egress gateway: a host-side listener that nftables hands the TCP
//! connections of some sandboxes to (transparently: the sandbox connects
//! to its destination as usual), only for sandboxes that need it:
//!
//! - with name rules, TCP 80 and 443: the TLS SNI or HTTP Host the
//!   connection names must be allowed, so that an address shared by an
//!   allowed and a denied name (a CDN) reaches only the allowed one;
//! - with an egress proxy, all TCP: it leaves through that SOCKS5 proxy,
//!   and fails (a reset) when the proxy cannot be reached, never directly.
//!
//! The address itself was already judged by the sandbox's rules in the
//! table before the redirect (see `nft.rs`, chain `prerouting_filter`), so
//! the gateway checks names and picks the way out, nothing else. A policy
//! change makes every connection check itself again; those the new policy
//! forbids are cut.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::egress::{Registry, SandboxEgress};
use crate::egress_log::{EgressEvent, Verdict};
use crate::nft::Ranges;
use crate::policy::{CompiledPolicy, ProxyTarget};
use crate::sniff::{sniff, Sniffed, MAX_SNIFF};
use crate::NetError;

/// The operator's changes to what is blocked, as the gateway needs them.
struct Open {
    /// Where a proxy may be: opened and public ranges.
    for_proxies: Vec<Ipv4Net>,
    /// Reached only through an `allowOut` CIDR, never a learned address.
    opened: Vec<Ipv4Net>,
}

/// Ports whose connections are checked by name.
pub(crate) const NAMED_PORTS: [u16; 2] = [80, 443];
/// How long a client may take to say which name it wants.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffers: large enough that a bulk transfer costs few syscalls.
const COPY_BUFFER: usize = 256 * 1024;

pub(crate) struct Gateway {
    port: u16,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Listens on an ephemeral port of every host address (the table lets
    /// only redirected sandbox connections reach it). `ranges` are the
    /// operator's opened and public ranges.
    pub(crate) async fn start(registry: Arc<Registry>, ranges: &Ranges) -> Result<Self, NetError> {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        let port = listener.local_addr()?.port();
        let open = Arc::new(Open {
            for_proxies: ranges.open.iter().chain(&ranges.public).copied().collect(),
            opened: ranges.open.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let (stream, from) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "egress gateway: accepting");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let registry = registry.clone();
                let open = open.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, from, &registry, &open).await {
                        tracing::debug!(%from, error = %e, "egress gateway: connection");
                    }
                });
            }
        });
        tracing::debug!(port, "egress gateway listening");
        Ok(Self { port, task })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the sandbox meant to connect, before the redirect.
fn original_destination(stream: &TcpStream) -> io::Result<SocketAddrV4> {
    // SAFETY: an all-zero sockaddr_in is valid; getsockopt writes at most
    // `len` bytes into it.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    ))
}

/// Ends a connection with a reset, so the sandbox's side fails at once.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve(
    client: TcpStream,
    from: SocketAddr,
    registry: &Registry,
    open: &Open,
) -> io::Result<()> {
    let source = match from.ip() {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    // Only redirected connections of live sandboxes have anything to do here.
    let Some(sandbox) = source.and_then(|s| registry.get(s)) else {
        reset(client);
        return Ok(());
    };
    let to = match original_destination(&client) {
        Ok(to) => to,
        Err(e) => {
            reset(client);
            return Err(e);
        }
    };
    let mut client = client;
    client.set_nodelay(true)?;
    let policy = sandbox.policy();
    let mut first = Vec::new();
    let mut names = None;
    if checks_names(&policy, to) {
        let (bytes, asked) = read_names(&mut client).await;
        first = bytes;
        let verdict = name_verdict(&policy, &asked);
        names = Some(asked.clone());
        if verdict != Verdict::Allowed {
            sandbox.log(connect_event(
                to,
                &asked,
                Verdict::Denied,
                policy.tunnels(),
                None,
            ));
            tracing::debug!(sandbox_addr = %sandbox.addr, %to, names = ?asked, "egress gateway: name not allowed");
            reset(client);
            return Ok(());
        }
    }
    let asked = names.clone().unwrap_or_default();
    let upstream = match &policy.proxy {
        Some(proxy) if policy.tunnels() => through_proxy(proxy, to, &open.for_proxies).await,
        _ => direct(to).await,
    };
    let mut upstream = match upstream {
        Ok(stream) => stream,
        Err(e) => {
            sandbox.log(connect_event(
                to,
                &asked,
                Verdict::Failed,
                policy.tunnels(),
                Some(e.to_string()),
            ));
            reset(client);
            return Ok(());
        }
    };
    sandbox.log(connect_event(
        to,
        &asked,
        Verdict::Allowed,
        policy.tunnels(),
        None,
    ));
    upstream.set_nodelay(true)?;
    upstream.write_all(&first).await?;
    let mut changes = sandbox.changes();
    let used = policy.clone();
    let outcome = tokio::select! {
        copied = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUFFER, COPY_BUFFER) => copied.map(|_| ()),
        () = until_forbidden(&mut changes, &sandbox, &used, to, names.as_deref(), &open.opened) => {
            tracing::debug!(sandbox_addr = %sandbox.addr, %to, "egress gateway: cut by a policy change");
            sandbox.log(connect_event(to, &asked, Verdict::Denied, used.tunnels(), Some("cut by a policy change".into())));
            reset(client);
            reset(upstream);
            return Ok(());
        }
    };
    outcome
}

fn connect_event(
    to: SocketAddrV4,
    names: &[String],
    verdict: Verdict,
    via_proxy: bool,
    detail: Option<String>,
) -> EgressEvent {
    EgressEvent::Connect {
        to,
        name: (!names.is_empty()).then(|| names.join(",")),
        verdict,
        via_proxy,
        detail,
    }
}

fn checks_names(policy: &CompiledPolicy, to: SocketAddrV4) -> bool {
    policy.inspects() && NAMED_PORTS.contains(&to.port()) && !policy.allows_addr(*to.ip())
}

/// A connection naming only allowed names passes; one that names none
/// passes only where the policy does not default to deny.
fn name_verdict(policy: &CompiledPolicy, names: &[String]) -> Verdict {
    let ok = if names.is_empty() {
        !policy.default_deny()
    } else {
        names.iter().all(|n| policy.allows_name(n))
    };
    if ok {
        Verdict::Allowed
    } else {
        Verdict::Denied
    }
}

/// Reads until the client's first bytes name a host (or cannot); returns
/// what was read, to be sent on unchanged, and the names.
async fn read_names(client: &mut TcpStream) -> (Vec<u8>, Vec<String>) {
    let mut buf = Vec::with_capacity(2048);
    let read = async {
        loop {
            match sniff(&buf) {
                Sniffed::Names(names) => return names,
                Sniffed::Other => return Vec::new(),
                Sniffed::Incomplete if buf.len() >= MAX_SNIFF => return Vec::new(),
                Sniffed::Incomplete => {}
            }
            let mut chunk = [0u8; 4096];
            let want = chunk.len().min(MAX_SNIFF - buf.len());
            match client.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return Vec::new(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let names = tokio::time::timeout(SNIFF_TIMEOUT, read)
        .await
        .unwrap_or_default();
    (buf, names)
}

async fn direct(to: SocketAddrV4) -> io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {to} timed out"),
        )),
    }
}

/// Connects to `to` through the SOCKS5 proxy. The proxy's name is resolved
/// now (by the host) and each address is checked as a sandbox destination
/// would be, so that no proxy setting makes the host dial its own or a
/// private network's services.
async fn through_proxy(
    proxy: &ProxyTarget,
    to: SocketAddrV4,
    open: &[Ipv4Net],
) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddrV4> = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((proxy.host.as_str(), proxy.port)),
    )
    .await
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("resolving proxy {}", proxy.host),
        )
    })??
    .filter_map(|a| match a {
        SocketAddr::V4(v4) => Some(v4),
        SocketAddr::V6(_) => None,
    })
    .collect();
    let mut last = io::Error::other(format!("proxy {} has no IPv4 address", proxy.host));
    for addr in addrs {
        if let Some(why) = crate::policy::proxy_blocked(*addr.ip(), open) {
            last = io::Error::other(format!("proxy {}: {why}", proxy.host));
            continue;
        }
        if is_local(*addr.ip()) {
            last = io::Error::other(format!("proxy {} is an address of this host", proxy.host));
            continue;
        }
        let attempt = async {
            let socket = TcpStream::connect(addr).await?;
            let stream = match &proxy.credentials {
                Some((user, password)) => {
                    tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(
                        socket, to, user, password,
                    )
                    .await
                }
                None => tokio_socks::tcp::Socks5Stream::connect_with_socket(socket, to).await,
            }
            .map_err(|e| io::Error::other(format!("SOCKS5 proxy {addr}: {e}")))?;
            Ok::<_, io::Error>(stream.into_inner())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("SOCKS5 proxy {addr} timed out"),
                )
            }
        }
    }
    Err(last)
}

/// Whether `addr` is one of this host's own (a bind to it succeeds).
fn is_local(addr: Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((addr, 0)).is_ok()
}

/// Resolves once a policy change forbids this connection (or the sandbox
/// is released); pending forever while it stays allowed.
async fn until_forbidden(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    sandbox: &SandboxEgress,
    used: &CompiledPolicy,
    to: SocketAddrV4,
    names: Option<&[String]>,
    opened: &[Ipv4Net],
) {
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        let now = sandbox.policy();
        if !still_allowed(&now, used, sandbox, to, names, opened) {
            return;
        }
    }
}

/// Whether a connection made under `used` is allowed under `now`: by its
/// address (as the table would judge a new one), by the names it sent,
/// and by the way out it took.
fn still_allowed(
    now: &CompiledPolicy,
    used: &CompiledPolicy,
    sandbox: &SandboxEgress,
    to: SocketAddrV4,
    names: Option<&[String]>,
    opened: &[Ipv4Net],
) -> bool {
    if now.offline() {
        return false;
    }
    let addr = *to.ip();
    let in_opened = opened.iter().any(|n| n.contains(&addr));
    let by_address = now.allows_addr(addr)
        || (!in_opened
            && if now.learns() {
                sandbox.has_learned(addr)
            } else {
                !now.deny.iter().any(|n| n.contains(&addr))
            });
    if !by_address {
        return false;
    }
    if checks_names(now, to) {
        match names {
            Some(names) if name_verdict(now, names) == Verdict::Allowed => {}
            // Checked by name now but not when it was made: its name is unknown.
            None if !now.default_deny() => {}
            _ => return false,
        }
    }
    let way = |p: &CompiledPolicy| p.tunnels().then(|| p.proxy.clone()).flatten();
    way(now) == way(used)
}
