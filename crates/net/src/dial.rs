//! Opening a TCP connection to loopback inside a sandbox's namespace.
//!
//! A socket belongs to the network namespace of the thread that creates it,
//! whichever thread uses it later. So the calling thread enters the
//! namespace, creates the sockets, and goes straight back (a few
//! microseconds, nothing in between can yield); the connect then runs on the
//! caller's runtime like any other. (A dedicated socket-making thread was
//! tried first: waking it cost more than the whole switch, ~30 us in a
//! debug build.)

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use tokio::net::{TcpSocket, TcpStream};

use crate::SandboxNet;

/// Connects to `127.0.0.1:port`, then `[::1]:port`, inside the namespace.
/// When nothing listens on either, the error has kind
/// [`io::ErrorKind::ConnectionRefused`].
pub async fn dial(net: &SandboxNet, port: u16) -> io::Result<TcpStream> {
    let netns = File::open(&net.netns_path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("opening namespace {}: {e}", net.netns_path.display()),
        )
    })?;
    let (v4, v6) = sockets_in(&netns)?;
    let v4 = TcpSocket::from_std_stream(std::net::TcpStream::from(v4));
    let refused = match v4
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
    {
        Ok(stream) => return Ok(stream),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => e,
        Err(e) => return Err(e),
    };
    let v6 = TcpSocket::from_std_stream(std::net::TcpStream::from(v6));
    match v6
        .connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
        .await
    {
        Ok(stream) => Ok(stream),
        // Refused on ::1 too, or no IPv6 loopback at all: report the IPv4 refusal.
        Err(_) => Err(io::Error::new(
            refused.kind(),
            format!("nothing listens on port {port} in the sandbox ({refused})"),
        )),
    }
}

fn sockets_in(netns: &File) -> io::Result<(OwnedFd, OwnedFd)> {
    // Where this thread is now is where it must return to.
    let home = File::open("/proc/thread-self/ns/net")?;
    setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("entering the sandbox's namespace: {e}")))?;
    let made = make_sockets();
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        // Every socket this thread made from now on (the proxy's, the API's)
        // would live inside a sandbox. Nothing can make that safe.
        tracing::error!(error = %e, "could not return to the host namespace after dialing a sandbox; aborting");
        std::process::abort();
    }
    made
}

fn make_sockets() -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let v4 = socket(AddressFamily::Inet, SockType::Stream, flags, None)?;
    let v6 = socket(AddressFamily::Inet6, SockType::Stream, flags, None)?;
    Ok((v4, v6))
}
