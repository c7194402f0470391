//! Egress policies: checking what a sandbox asks for, and the table the DNS
//! forwarder consults to know which sources it may answer.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::RwLock;

use ipnet::{IpNet, Ipv4Net};

use crate::{EgressPolicy, NetError};

/// An [`EgressPolicy`] reduced to what the firewall enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompiledPolicy {
    pub(crate) allow_internet: bool,
    pub(crate) allow: Vec<Ipv4Net>,
    pub(crate) deny: Vec<Ipv4Net>,
}

impl CompiledPolicy {
    /// The common case needs no per-sandbox firewall state at all.
    pub(crate) fn is_default(&self) -> bool {
        self.allow_internet && self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Checks and reduces a policy. `open` are the ranges the operator opened
/// out of the always-blocked set; an `allowOut` entry wholly inside a range
/// that stays blocked is refused, as it could never take effect.
pub(crate) fn compile(
    policy: &EgressPolicy,
    ranges: &crate::nft::Ranges,
) -> Result<CompiledPolicy, NetError> {
    let open: Vec<Ipv4Net> = ranges.open.iter().chain(&ranges.public).copied().collect();
    let mut allow = Vec::new();
    for entry in &policy.allow_out {
        match parse_net(entry)? {
            IpNet::V4(net) => {
                if let Some(why) = crate::special::blocked_entry_v4(net, &open) {
                    return Err(NetError::Policy(format!(
                        "allowOut entry {entry:?} lies in {} ({}, {}), which sandboxes never reach whatever their policy says; the operator can open a range with `sandbar serve --open-range`",
                        why.block, why.name, why.source
                    )));
                }
                allow.push(net)
            }
            IpNet::V6(_) => {
                return Err(NetError::Policy(format!(
                    "allowOut entry {entry:?}: sandboxes have no IPv6 egress"
                )))
            }
        }
    }
    let mut deny = Vec::new();
    for entry in &policy.deny_out {
        // IPv6 is never routed out of a sandbox, so an IPv6 deny already holds.
        if let IpNet::V4(net) = parse_net(entry)? {
            deny.push(net);
        }
    }
    allow.sort();
    allow.dedup();
    deny.sort();
    deny.dedup();
    Ok(CompiledPolicy {
        allow_internet: policy.allow_internet,
        allow,
        deny,
    })
}

fn parse_net(entry: &str) -> Result<IpNet, NetError> {
    let entry = entry.trim();
    if let Ok(net) = entry.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    if !entry.is_empty()
        && entry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | '_'))
    {
        return Err(NetError::Policy(format!(
            "{entry:?}: domain rules are not supported yet; use CIDRs or IP addresses"
        )));
    }
    Err(NetError::Policy(format!(
        "{entry:?} is not a CIDR or an IP address"
    )))
}

/// Which sandbox addresses the DNS forwarder may answer. Sources that are
/// not listed (pooled namespaces, strangers) are refused.
#[derive(Debug, Default)]
pub(crate) struct DnsAccess {
    allowed: RwLock<HashMap<Ipv4Addr, bool>>,
}

impl DnsAccess {
    pub(crate) fn set(&self, addr: Ipv4Addr, allow_internet: bool) {
        self.allowed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, allow_internet);
    }

    pub(crate) fn remove(&self, addr: Ipv4Addr) {
        self.allowed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
    }

    pub(crate) fn may_resolve(&self, addr: Ipv4Addr) -> bool {
        self.allowed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .copied()
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_all(policy: &EgressPolicy) -> Result<CompiledPolicy, NetError> {
        compile(policy, &Default::default())
    }

    fn opened(open: &[&str]) -> crate::nft::Ranges {
        crate::nft::Ranges {
            open: open.iter().map(|n| n.parse().unwrap()).collect(),
            public: Vec::new(),
        }
    }

    #[test]
    fn allow_out_cannot_name_a_blocked_range() {
        for entry in [
            "169.254.169.254",
            "169.254.0.0/16",
            "10.1.2.3",
            "192.168.0.0/24",
            "127.0.0.1",
        ] {
            let err = compile_all(&policy(&[entry], &[])).unwrap_err().to_string();
            assert!(err.contains("never reach"), "{entry}: {err}");
        }
        // A range the operator opened may be named; what contains blocked
        // ranges is accepted (the blocked parts stay blocked in the table).
        assert!(compile(&policy(&["10.20.0.5"], &[]), &opened(&["10.20.0.0/16"])).is_ok());
        assert!(compile_all(&policy(&["0.0.0.0/0"], &[])).is_ok());
        assert!(
            compile_all(&policy(&[], &["169.254.169.254"])).is_ok(),
            "deny is fine"
        );
    }

    fn policy(allow: &[&str], deny: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow_internet: true,
            allow_out: allow.iter().map(|s| s.to_string()).collect(),
            deny_out: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn default_policy_needs_no_rules() {
        assert!(compile_all(&EgressPolicy::default()).unwrap().is_default());
        let offline = EgressPolicy {
            allow_internet: false,
            ..Default::default()
        };
        assert!(!compile_all(&offline).unwrap().is_default());
    }

    #[test]
    fn parses_cidrs_and_addresses() {
        let c = compile_all(&policy(
            &["151.101.2.3/16", "1.1.1.1"],
            &["0.0.0.0/0", "::/0"],
        ))
        .unwrap();
        assert_eq!(
            c.allow,
            vec![
                "1.1.1.1/32".parse().unwrap(),
                "151.101.0.0/16".parse().unwrap()
            ]
        );
        assert_eq!(c.deny, vec!["0.0.0.0/0".parse::<Ipv4Net>().unwrap()]);
    }

    #[test]
    fn refuses_what_it_cannot_enforce() {
        assert!(matches!(
            compile_all(&policy(&["*.example.com"], &[])),
            Err(NetError::Policy(_))
        ));
        assert!(matches!(
            compile_all(&policy(&["2001:db8::/32"], &[])),
            Err(NetError::Policy(_))
        ));
        assert!(matches!(
            compile_all(&policy(&[], &["not an address!"])),
            Err(NetError::Policy(_))
        ));
    }

    #[test]
    fn dns_access_defaults_to_refused() {
        let access = DnsAccess::default();
        let a = Ipv4Addr::new(10, 0, 0, 2);
        assert!(!access.may_resolve(a));
        access.set(a, true);
        assert!(access.may_resolve(a));
        access.set(a, false);
        assert!(!access.may_resolve(a));
        access.set(a, true);
        access.remove(a);
        assert!(!access.may_resolve(a));
    }
}
