//! The destinations a sandbox never reaches, derived from IANA's
//! special-purpose address registries (`special/ipv4.csv`,
//! `special/ipv6.csv`, in the registries' own columns) rather than kept as a
//! hand list: every block that is not globally reachable is blocked, and the
//! globally reachable blocks inside them (anycast services) are carved out.
//!
//! A policy cannot open these ranges (allow rules are checked after them);
//! only the operator can, per range, and then only for sandboxes whose
//! `allowOut` names it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use ipnet::{Ipv4Net, Ipv6Net};

const IPV4: &str = include_str!("special/ipv4.csv");
const IPV6: &str = include_str!("special/ipv6.csv");

/// One registry row.
#[derive(Debug, Clone)]
pub struct Entry {
    pub block: ipnet::IpNet,
    pub name: String,
    pub source: String,
    pub reachable: bool,
}

fn parse(csv: &str) -> Vec<Entry> {
    csv.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .skip(1) // the header
        .map(|line| {
            // The address block is the first column and reachability the
            // last; names may hold commas (quoted), so the middle is split
            // at its last comma only.
            let (block, rest) = line.split_once(',').expect("registry row has columns");
            let (middle, reachable) = rest.rsplit_once(',').expect("registry row has columns");
            let (name, source) = middle.rsplit_once(',').unwrap_or((middle, ""));
            Entry {
                block: block
                    .parse()
                    .unwrap_or_else(|e| panic!("registry block {block}: {e}")),
                name: name.trim_matches('"').to_string(),
                source: source.to_string(),
                reachable: reachable.trim() == "true",
            }
        })
        .collect()
}

pub fn ipv4_registry() -> &'static [Entry] {
    static R: OnceLock<Vec<Entry>> = OnceLock::new();
    R.get_or_init(|| parse(IPV4))
}

pub fn ipv6_registry() -> &'static [Entry] {
    static R: OnceLock<Vec<Entry>> = OnceLock::new();
    R.get_or_init(|| parse(IPV6))
}

/// Inclusive ranges, sorted and disjoint.
type Ranges = Vec<(u128, u128)>;

fn range_of(net: ipnet::IpNet) -> (u128, u128) {
    match net {
        ipnet::IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        ipnet::IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn union(mut r: Ranges) -> Ranges {
    r.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn subtract(from: &Ranges, holes: &Ranges) -> Ranges {
    let mut out = Vec::new();
    for &(mut a, b) in from {
        let mut open = true;
        for &(h0, h1) in holes {
            if h1 < a || h0 > b {
                continue;
            }
            if h0 > a {
                out.push((a, h0 - 1));
            }
            if h1 >= b {
                open = false;
                break;
            }
            a = h1 + 1;
        }
        if open {
            out.push((a, b));
        }
    }
    out
}

fn blocked_ranges(registry: &[Entry], open: &Ranges) -> Ranges {
    let blocked = union(
        registry
            .iter()
            .filter(|e| !e.reachable)
            .map(|e| range_of(e.block))
            .collect(),
    );
    let carved = union(
        registry
            .iter()
            .filter(|e| e.reachable)
            .map(|e| range_of(e.block))
            .collect(),
    );
    subtract(&subtract(&blocked, &carved), open)
}

/// The IPv4 destinations sandboxes never reach, as prefixes, with the
/// operator's `open` ranges taken out.
pub fn blocked_v4(open: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let open = union(open.iter().map(|n| range_of((*n).into())).collect());
    blocked_ranges(ipv4_registry(), &open)
        .into_iter()
        .flat_map(|(a, b)| {
            ipnet::Ipv4Subnets::new(Ipv4Addr::from(a as u32), Ipv4Addr::from(b as u32), 0)
        })
        .collect()
}

/// The IPv6 destinations sandboxes never reach, as prefixes.
pub fn blocked_v6() -> Vec<Ipv6Net> {
    blocked_ranges(ipv6_registry(), &Vec::new())
        .into_iter()
        .flat_map(|(a, b)| ipnet::Ipv6Subnets::new(Ipv6Addr::from(a), Ipv6Addr::from(b), 0))
        .collect()
}

/// `ranges` without `hole`, as prefixes.
pub fn without_v4(ranges: &[Ipv4Net], hole: Ipv4Net) -> Vec<Ipv4Net> {
    let from = union(ranges.iter().map(|n| range_of((*n).into())).collect());
    subtract(&from, &vec![range_of(hole.into())])
        .into_iter()
        .flat_map(|(a, b)| {
            ipnet::Ipv4Subnets::new(Ipv4Addr::from(a as u32), Ipv4Addr::from(b as u32), 0)
        })
        .collect()
}

/// When `net` lies wholly in what sandboxes never reach (given the
/// operator's open ranges), the registry entry that says why.
pub fn blocked_entry_v4(net: Ipv4Net, open: &[Ipv4Net]) -> Option<&'static Entry> {
    let open_r = union(open.iter().map(|n| range_of((*n).into())).collect());
    let blocked = blocked_ranges(ipv4_registry(), &open_r);
    let (a, b) = range_of(net.into());
    let inside = blocked.iter().any(|&(x, y)| x <= a && b <= y);
    if !inside {
        return None;
    }
    // The most specific non-reachable block that contains it.
    ipv4_registry()
        .iter()
        .filter(|e| !e.reachable && e.block.contains(&ipnet::IpNet::from(net)))
        .max_by_key(|e| e.block.prefix_len())
}

/// Names of the package registries and mirrors a sandbox is expected to
/// reach, for telling whether this host's way to the internet runs through
/// special-purpose addresses.
pub const WELL_KNOWN_NAMES: &[&str] = &[
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "deb.debian.org",
];

/// The IPv4 addresses of `names` (resolved by this host) that lie in what
/// sandboxes never reach, as /32s: on a network whose internet is reached
/// through such addresses (a proxy on a documentation range), these are
/// what `public_ranges` must hold for sandboxes to reach the internet.
pub fn blocked_addresses_of(names: &[&str]) -> Vec<Ipv4Net> {
    use std::net::ToSocketAddrs;
    let blocked = blocked_v4(&[]);
    let mut out: Vec<Ipv4Net> = names
        .iter()
        .filter_map(|n| (*n, 443).to_socket_addrs().ok())
        .flatten()
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            _ => None,
        })
        .filter(|ip| blocked.iter().any(|n| n.contains(ip)))
        .map(|ip| Ipv4Net::new(ip, 32).expect("a /32"))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn blocks(list: &[Ipv4Net], addr: &str) -> bool {
        let a: Ipv4Addr = addr.parse().unwrap();
        list.iter().any(|n| n.contains(&a))
    }

    #[test]
    fn the_registries_parse() {
        assert!(ipv4_registry().len() >= 25);
        assert!(ipv6_registry().len() >= 25);
        let pcp = ipv4_registry()
            .iter()
            .find(|e| e.block.to_string() == "192.0.0.9/32")
            .unwrap();
        assert!(pcp.reachable);
        assert_eq!(pcp.name, "Port Control Protocol Anycast");
        assert_eq!(pcp.source, "RFC7723");
    }

    #[test]
    fn blocked_v4_covers_every_non_global_block_and_spares_the_anycast_ones() {
        let b = blocked_v4(&[]);
        for addr in [
            "0.0.0.1",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "192.0.0.1",
            "192.0.0.8",
            "192.0.2.77",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "168.63.129.16",
        ] {
            assert!(blocks(&b, addr), "{addr} must be blocked");
        }
        for addr in [
            "192.0.0.9",
            "192.0.0.10",
            "192.31.196.1",
            "192.175.48.1",
            "1.1.1.1",
            "151.101.0.223",
            "168.63.129.17",
        ] {
            assert!(!blocks(&b, addr), "{addr} must stay reachable");
        }
    }

    #[test]
    fn the_operator_can_open_a_range() {
        let b = blocked_v4(&[v4("10.20.0.0/16")]);
        assert!(!blocks(&b, "10.20.1.1"));
        assert!(blocks(&b, "10.21.0.1"));
        assert!(blocks(&b, "10.19.255.255"));
    }

    #[test]
    fn a_hole_splits_a_range() {
        assert_eq!(
            without_v4(&[v4("10.0.0.0/8")], v4("10.201.0.0/16")),
            without_v4(&[v4("10.0.0.0/9"), v4("10.128.0.0/9")], v4("10.201.0.0/16"))
        );
        let rest = without_v4(&[v4("10.0.0.0/8")], v4("10.201.0.0/16"));
        let has = |a: &str| {
            rest.iter()
                .any(|n| n.contains(&a.parse::<Ipv4Addr>().unwrap()))
        };
        assert!(has("10.0.0.1") && has("10.200.255.255") && has("10.202.0.0"));
        assert!(!has("10.201.3.2"));
        assert_eq!(
            without_v4(&[v4("10.201.1.0/24")], v4("10.201.0.0/16")),
            vec![]
        );
    }

    #[test]
    fn entries_wholly_inside_a_blocked_block_are_named() {
        let e = blocked_entry_v4(v4("169.254.169.254/32"), &[]).unwrap();
        assert_eq!(e.name, "Link Local");
        let e = blocked_entry_v4(v4("192.0.0.8/32"), &[]).unwrap();
        assert_eq!(e.name, "IPv4 dummy address");
        assert!(
            blocked_entry_v4(v4("0.0.0.0/0"), &[]).is_none(),
            "only partly blocked"
        );
        assert!(blocked_entry_v4(v4("1.1.1.1/32"), &[]).is_none());
        assert!(blocked_entry_v4(v4("10.20.0.5/32"), &[v4("10.20.0.0/24")]).is_none());
    }

    #[test]
    fn blocked_v6_holds_the_non_global_blocks() {
        let b = blocked_v6();
        let has = |a: &str| {
            let a: Ipv6Addr = a.parse().unwrap();
            b.iter().any(|n| n.contains(&a))
        };
        assert!(has("::1"));
        assert!(has("fe80::1"));
        assert!(has("fd00:ec2::254"));
        assert!(has("ff02::1"));
        assert!(has("2001:db8::1"));
        assert!(!has("2001:1::1"), "PCP anycast is global");
        assert!(!has("2606:4700::1111"));
    }
}
