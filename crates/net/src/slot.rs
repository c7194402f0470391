//! One sandbox's network, built and torn down: namespace, veth pair,
//! addresses, default route.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use rtnetlink::Handle;

use crate::layout::Layout;
use crate::{links, netns, NetError};

/// A ready namespace with its veth pair, not yet given to a sandbox.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) index: u32,
    pub(crate) netns_path: PathBuf,
    pub(crate) addr: Ipv4Addr,
    pub(crate) gateway: Ipv4Addr,
    pub(crate) host_veth: String,
}

pub(crate) async fn build(layout: &Layout, host: &Handle, index: u32) -> Result<Slot, NetError> {
    let slot = Slot {
        index,
        netns_path: layout.netns_path(index),
        addr: layout.sandbox_addr(index),
        gateway: layout.gateway(index),
        host_veth: layout.host_veth(index),
    };
    // A previous holder of this index may have failed half-way through its
    // teardown; start from nothing.
    let _ = netns::remove(&slot.netns_path);
    links::delete(host, &slot.host_veth).await?;

    let inside = netns::create(slot.netns_path.clone()).await?;
    let wired = async {
        let host_index = links::create_veth(host, &slot.host_veth, inside.fd.as_fd()).await?;
        // No IPv6 on the host end: a link-local address there would be a host
        // address a sandbox could talk to.
        netns::write_sysctl(
            &format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", slot.host_veth),
            "1",
        )?;
        links::add_address(host, host_index, slot.gateway, &slot.host_veth).await?;
        links::configure_inside(&inside.netlink, slot.addr, slot.gateway).await
    };
    match wired.await {
        Ok(()) => Ok(slot),
        Err(e) => {
            if let Err(cleanup) = destroy(host, &slot).await {
                tracing::warn!(error = %cleanup, index, "cleaning up a half-built sandbox network");
            }
            Err(e)
        }
    }
}

/// Removes the veth pair and unpins the namespace.
pub(crate) async fn destroy(host: &Handle, slot: &Slot) -> Result<(), NetError> {
    let veth = links::delete(host, &slot.host_veth).await;
    let ns = netns::remove(&slot.netns_path);
    veth.and(ns)
}
