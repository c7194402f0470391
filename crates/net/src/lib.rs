//! Sandbox networking: a pool of pre-made network namespaces, veth pairs,
//! addressing, the nftables table that NATs sandboxes to the internet and
//! isolates them, the DNS forwarder, and dialing a port inside a namespace.
//!
//! Owns: every network object sandbar makes on the host. Must not touch:
//! mounts, processes, cgroups or the control plane.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;

/// How the node's sandbox network is laid out.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Short unique name of this sandbar instance ([a-z0-9], <= 6 chars): it
    /// prefixes veths, namespaces and the nftables table so that several
    /// instances (tests in parallel) never collide.
    pub instance: String,
    /// Range sandboxes take their /30s from.
    pub subnet: Ipv4Net,
    /// Where namespaces are bind-mounted: `<state_dir>/netns/<n>`.
    pub state_dir: PathBuf,
    /// How many ready namespaces to keep in the pool.
    pub pool_size: usize,
    /// Upstream resolvers for the DNS forwarder (default: /etc/resolv.conf).
    pub dns_upstream: Vec<SocketAddr>,
}

/// What a sandbox may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    /// `false`: nothing leaves the sandbox, DNS included.
    pub allow_internet: bool,
    /// CIDRs/IPs allowed even when otherwise denied.
    pub allow_out: Vec<String>,
    /// CIDRs/IPs denied.
    pub deny_out: Vec<String>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self { allow_internet: true, allow_out: Vec::new(), deny_out: Vec::new() }
    }
}

/// One sandbox's network: its namespace and the addresses on its veth pair.
#[derive(Debug, Clone)]
pub struct SandboxNet {
    pub index: u32,
    /// Bind-mounted namespace file; open it and `setns` to enter.
    pub netns_path: PathBuf,
    /// Address of `eth0` inside the namespace.
    pub addr: Ipv4Addr,
    /// Host end of the veth: the sandbox's gateway and resolver.
    pub gateway: Ipv4Addr,
    pub host_veth: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network setup failed: {0}")]
    Setup(String),
    #[error("no free sandbox address left in {0}")]
    Exhausted(Ipv4Net),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The node's sandbox network.
pub struct Network {
    #[allow(dead_code)]
    config: NetConfig,
}

impl Network {
    pub async fn new(config: NetConfig) -> Result<Arc<Self>, NetError> {
        let _ = config;
        Err(NetError::Setup("sandbox networking is not built yet".into()))
    }

    pub async fn acquire(&self, policy: &EgressPolicy) -> Result<SandboxNet, NetError> {
        let _ = policy;
        Err(NetError::Setup("sandbox networking is not built yet".into()))
    }

    pub async fn set_policy(&self, net: &SandboxNet, policy: &EgressPolicy) -> Result<(), NetError> {
        let _ = (net, policy);
        Err(NetError::Setup("sandbox networking is not built yet".into()))
    }

    pub async fn release(&self, net: SandboxNet) -> Result<(), NetError> {
        let _ = net;
        Ok(())
    }

    /// Removes every namespace, veth and rule this instance made.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        Ok(())
    }
}

/// Connects to `port` on loopback inside the sandbox's namespace.
pub async fn dial(net: &SandboxNet, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let _ = (net, port);
    Err(std::io::Error::other("dialing into a namespace is not built yet"))
}
