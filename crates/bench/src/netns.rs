//! Reaching a sandbox's loopback from the host, for the "direct" reference
//! figures: the sandbox's network namespace is found through a process in
//! its cgroup, and sockets are made by a thread that entered it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

use crate::memory::sandbox_pids;

/// `/proc/<pid>/ns/net` of a process of the sandbox.
pub fn sandbox_netns(instance: &str, id: &str) -> Result<PathBuf> {
    let pid = sandbox_pids(instance, id)
        .into_iter()
        .next()
        .with_context(|| format!("no process found in sandbox {id}'s cgroup"))?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

/// A TCP connection to `addr` as seen from inside the namespace at `netns`.
/// The socket keeps its namespace after the thread that made it ends.
pub async fn dial(netns: PathBuf, addr: SocketAddr) -> Result<tokio::net::TcpStream> {
    let std_stream = tokio::task::spawn_blocking(move || -> Result<std::net::TcpStream> {
        // A thread of its own: entering a namespace is for the rest of the
        // thread's life, and a pooled worker must not stay in it.
        std::thread::spawn(move || -> Result<std::net::TcpStream> {
            let ns = std::fs::File::open(&netns)
                .with_context(|| format!("opening {}", netns.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {}", netns.display()))?;
            let s = std::net::TcpStream::connect(addr)
                .with_context(|| format!("connecting to {addr} in the sandbox"))?;
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    })
    .await??;
    Ok(tokio::net::TcpStream::from_std(std_stream)?)
}
