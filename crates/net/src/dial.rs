//! Opening a TCP connection to loopback inside a sandbox's namespace.
//!
//! A socket belongs to the network namespace of the thread that creates it,
//! whichever thread uses it later. So one dedicated thread enters the
//! namespace, creates the sockets, and returns to the host namespace; the
//! connect itself then runs on the caller's runtime like any other.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Mutex;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

use crate::SandboxNet;

struct Job {
    netns: File,
    reply: oneshot::Sender<io::Result<(OwnedFd, OwnedFd)>>,
}

/// The socket-making thread; replaced if it ever dies.
static WORKER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

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
    let (v4, v6) = sockets_in(netns).await?;
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

async fn sockets_in(netns: File) -> io::Result<(OwnedFd, OwnedFd)> {
    let (reply, answer) = oneshot::channel();
    let mut job = Job { netns, reply };
    for _ in 0..2 {
        let sender = {
            let mut worker = WORKER.lock().unwrap_or_else(|e| e.into_inner());
            match worker.as_ref() {
                Some(sender) => sender.clone(),
                None => {
                    let sender = spawn_worker()?;
                    *worker = Some(sender.clone());
                    sender
                }
            }
        };
        match sender.send(job) {
            Ok(()) => {
                return answer
                    .await
                    .map_err(|_| io::Error::other("the namespace socket thread died"))?;
            }
            Err(mpsc::SendError(returned)) => {
                job = returned;
                WORKER.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
        }
    }
    Err(io::Error::other(
        "could not start the namespace socket thread",
    ))
}

fn spawn_worker() -> io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    // The namespace this thread starts in is the one it must return to.
    let home = File::open("/proc/thread-self/ns/net")?;
    std::thread::Builder::new().name("sandbar-dial".into()).spawn(move || {
        for job in rx {
            let result = make_sockets(&job.netns);
            let back = setns(home.as_fd(), CloneFlags::CLONE_NEWNET);
            let _ = job.reply.send(result);
            if let Err(e) = back {
                // Stuck in a sandbox's namespace: this thread must not make
                // another socket. Exiting drops `rx`; the next dial starts a new one.
                tracing::error!(error = %e, "dial thread could not return to the host namespace");
                return;
            }
        }
    })?;
    Ok(tx)
}

fn make_sockets(netns: &File) -> io::Result<(OwnedFd, OwnedFd)> {
    setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("entering the sandbox's namespace: {e}")))?;
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let v4 = socket(AddressFamily::Inet, SockType::Stream, flags, None)?;
    let v6 = socket(AddressFamily::Inet6, SockType::Stream, flags, None)?;
    Ok((v4, v6))
}
