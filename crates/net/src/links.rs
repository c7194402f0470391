//! veth pairs and addresses, over rtnetlink (no `ip` subprocesses).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::NetError;

const SANDBOX_IFNAME: &str = "eth0";
const PREFIX_LEN: u8 = 30;

fn netlink_err(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> NetError {
    move |e| NetError::Setup(format!("{what}: {e}"))
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

fn name_of(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32, NetError> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(netlink_err(format_args!("looking up link {name}")))?
        .ok_or_else(|| NetError::Setup(format!("link {name} vanished")))?;
    Ok(link.header.index)
}

/// Creates `host_name` (up, on the host) paired with `eth0` inside the
/// namespace `netns`, in one request. Returns the host end's index. (`eth0`
/// cannot be created up: the kernel configures the peer before the pair is
/// joined, and a veth without its peer refuses to open.)
pub(crate) async fn create_veth(
    host: &Handle,
    host_name: &str,
    netns: BorrowedFd<'_>,
) -> Result<u32, NetError> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(SANDBOX_IFNAME.to_string())
        .setns_by_fd(netns.as_raw_fd())
        .build();
    let message = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
        .name(host_name.to_string())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .up()
        .build();
    host.link()
        .add(message)
        .execute()
        .await
        .map_err(netlink_err(format_args!("creating veth {host_name}")))?;
    index_of(host, host_name).await
}

pub(crate) async fn add_address(
    handle: &Handle,
    index: u32,
    addr: Ipv4Addr,
    what: &str,
) -> Result<(), NetError> {
    handle
        .address()
        .add(index, IpAddr::V4(addr), PREFIX_LEN)
        .execute()
        .await
        .map_err(netlink_err(format_args!(
            "adding {addr}/{PREFIX_LEN} to {what}"
        )))
}

/// Inside the namespace: `lo` up, the sandbox address on `eth0` and `eth0`
/// up, default route via the gateway (the host end).
pub(crate) async fn configure_inside(
    inside: &Handle,
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<(), NetError> {
    inside
        .link()
        .set(LinkUnspec::new_with_name("lo").up().build())
        .execute()
        .await
        .map_err(netlink_err("bringing lo up"))?;
    let eth0 = index_of(inside, SANDBOX_IFNAME).await?;
    add_address(inside, eth0, addr, SANDBOX_IFNAME).await?;
    inside
        .link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .map_err(netlink_err("bringing eth0 up"))?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(eth0)
        .build();
    inside
        .route()
        .add(route)
        .execute()
        .await
        .map_err(netlink_err(format_args!(
            "adding the default route via {gateway}"
        )))
}

/// Deletes a link by name (its veth peer goes with it); a missing link is fine.
pub(crate) async fn delete(handle: &Handle, name: &str) -> Result<(), NetError> {
    let mut request = handle.clone().link().del(0);
    request
        .message_mut()
        .attributes
        .push(LinkAttribute::IfName(name.to_string()));
    match request.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(NetError::Setup(format!("deleting link {name}: {e}"))),
    }
}

/// Names of the host's links that start with `prefix`.
pub(crate) async fn names_with_prefix(
    handle: &Handle,
    prefix: &str,
) -> Result<Vec<String>, NetError> {
    let links: Vec<LinkMessage> = handle
        .clone()
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink_err("listing links"))?;
    Ok(links
        .iter()
        .filter_map(name_of)
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

/// IPv4 networks the host already uses: those of its addresses (with the
/// interface that holds each) and the destinations of its routes (the
/// default route left out), for telling whether a sandbox subnet would
/// clash with them.
pub(crate) async fn ipv4_in_use(
    handle: &Handle,
) -> Result<Vec<(ipnet::Ipv4Net, String)>, NetError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};

    let links: Vec<LinkMessage> = handle
        .clone()
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink_err("listing links"))?;
    let ifname = |index: u32| {
        links
            .iter()
            .find(|l| l.header.index == index)
            .and_then(name_of)
            .unwrap_or("?")
            .to_string()
    };
    let mut out = Vec::new();
    let addresses: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink_err("listing addresses"))?;
    for a in &addresses {
        for attr in &a.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                if let Ok(net) = ipnet::Ipv4Net::new(*ip, a.header.prefix_len) {
                    out.push((
                        net.trunc(),
                        format!(
                            "address {ip}/{} on {}",
                            a.header.prefix_len,
                            ifname(a.header.index)
                        ),
                    ));
                }
            }
        }
    }
    let routes: Vec<_> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(netlink_err("listing routes"))?;
    for r in &routes {
        let len = r.header.destination_prefix_length;
        if len == 0 {
            continue;
        }
        let dest = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let dev = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(ifname(*i)),
            _ => None,
        });
        if let Some(Ok(net)) = dest.map(|ip| ipnet::Ipv4Net::new(ip, len)) {
            out.push((
                net.trunc(),
                format!("route {net} via {}", dev.unwrap_or_else(|| "?".into())),
            ));
        }
    }
    Ok(out)
}
