//! Egress policies: checking what a sandbox asks for and reducing it to
//! what the firewall, the DNS forwarder and the egress gateway enforce.
//!
//! The rules, as E2B states them and sandbar enforces them:
//! - `allowOut` wins over `denyOut`; `allow_internet_access: false` is a
//!   denial of everything (`0.0.0.0/0`), which `allowOut` still punches
//!   holes in.
//! - Where everything is denied, a sandbox reaches only its `allowOut`
//!   CIDRs and the addresses the forwarder handed it for its `allowOut`
//!   names, and resolves only those names.
//! - Elsewhere, `denyOut` names are neither resolved nor connected to by
//!   name (TLS SNI, HTTP Host), unless an `allowOut` name covers them.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::names::{self, NameSet};
use crate::{EgressPolicy, NetError};

/// More rules than this per list is not a policy but a data set; nftables
/// and the matchers stay small and fast below it.
const MAX_ENTRIES: usize = 1000;
/// RFC 1929's limits on the SOCKS5 credentials.
const MAX_CREDENTIAL: usize = 255;

/// Where a sandbox's TCP is tunneled (`network.egressProxy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyTarget {
    /// A host name (resolved by the host at each dial) or an IPv4 literal.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) credentials: Option<(String, String)>,
}

/// An [`EgressPolicy`] reduced to what is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompiledPolicy {
    pub(crate) allow_internet: bool,
    pub(crate) allow: Vec<Ipv4Net>,
    pub(crate) deny: Vec<Ipv4Net>,
    pub(crate) allow_names: NameSet,
    pub(crate) deny_names: NameSet,
    pub(crate) proxy: Option<ProxyTarget>,
}

impl CompiledPolicy {
    /// What a sandbox with no policy of its own gets.
    pub(crate) fn open() -> Self {
        Self {
            allow_internet: true,
            allow: Vec::new(),
            deny: Vec::new(),
            allow_names: NameSet::default(),
            deny_names: NameSet::default(),
            proxy: None,
        }
    }

    /// The common case needs no per-sandbox state at all.
    pub(crate) fn is_default(&self) -> bool {
        *self == Self::open()
    }

    /// Nothing leaves at all, DNS included: no internet and nothing allowed.
    pub(crate) fn offline(&self) -> bool {
        !self.allow_internet && self.allow.is_empty() && self.allow_names.is_empty()
    }

    /// Whatever no rule allows is denied.
    pub(crate) fn default_deny(&self) -> bool {
        !self.allow_internet || self.deny.iter().any(|n| n.prefix_len() == 0)
    }

    /// Reachable addresses come from DNS answers for allowed names.
    pub(crate) fn learns(&self) -> bool {
        !self.offline() && self.default_deny() && !self.allow_names.is_empty()
    }

    /// Names are checked: DNS to any address goes to the forwarder, and
    /// TCP 80/443 through the gateway (SNI, Host).
    pub(crate) fn inspects(&self) -> bool {
        !self.offline() && (!self.allow_names.is_empty() || !self.deny_names.is_empty())
    }

    /// All TCP leaves through the SOCKS5 proxy.
    pub(crate) fn tunnels(&self) -> bool {
        !self.offline() && self.proxy.is_some()
    }

    /// Whether a sandbox under this policy may resolve, or connect by, `name`.
    pub(crate) fn allows_name(&self, name: &str) -> bool {
        if self.offline() {
            return false;
        }
        if self.allow_names.matches(name) {
            return true;
        }
        !self.default_deny() && !self.deny_names.matches(name)
    }

    /// Whether an `allowOut` CIDR covers `addr` (allow wins over any name rule).
    pub(crate) fn allows_addr(&self, addr: Ipv4Addr) -> bool {
        self.allow.iter().any(|n| n.contains(&addr))
    }
}

/// What an entry of `allowOut`/`denyOut` is.
enum Entry {
    Net(Ipv4Net),
    Name(names::NameRule),
}

/// Checks and reduces a policy. `ranges` are the operator's open and
/// public ranges; an `allowOut` entry wholly inside a range that stays
/// blocked is refused, as it could never take effect.
pub(crate) fn compile(
    policy: &EgressPolicy,
    ranges: &crate::nft::Ranges,
) -> Result<CompiledPolicy, NetError> {
    let open: Vec<Ipv4Net> = ranges.open.iter().chain(&ranges.public).copied().collect();
    for (list, entries) in [
        ("allowOut", &policy.allow_out),
        ("denyOut", &policy.deny_out),
    ] {
        if entries.len() > MAX_ENTRIES {
            return Err(NetError::Policy(format!(
                "{list} has {} entries; at most {MAX_ENTRIES} are accepted",
                entries.len()
            )));
        }
    }
    let mut allow = Vec::new();
    let mut allow_names = Vec::new();
    for entry in &policy.allow_out {
        match parse_entry("allowOut", entry)? {
            Entry::Net(net) => {
                if let Some(why) = crate::special::blocked_entry_v4(net, &open) {
                    return Err(NetError::Policy(format!(
                        "allowOut entry {entry:?} lies in {} ({}, {}), which sandboxes never reach whatever their policy says; the operator can open a range with `sandbar serve --open-range`",
                        why.block, why.name, why.source
                    )));
                }
                allow.push(net)
            }
            Entry::Name(rule) => allow_names.push(rule),
        }
    }
    let mut deny = Vec::new();
    let mut deny_names = Vec::new();
    for entry in &policy.deny_out {
        match parse_entry("denyOut", entry)? {
            Entry::Net(net) => deny.push(net),
            Entry::Name(rule) => deny_names.push(rule),
        }
    }
    if !policy.allow_internet {
        // E2B's rule: no internet is a denial of everything, whatever
        // denyOut said; allowOut still applies.
        deny = vec![Ipv4Net::default()];
    }
    allow.sort();
    allow.dedup();
    deny.sort();
    deny.dedup();
    let compiled = CompiledPolicy {
        allow_internet: policy.allow_internet,
        allow,
        deny,
        allow_names: NameSet::from_rules(allow_names),
        deny_names: NameSet::from_rules(deny_names),
        proxy: policy
            .egress_proxy
            .as_ref()
            .map(|p| proxy_target(p, &open))
            .transpose()?,
    };
    if !compiled.allow_names.is_empty()
        && !compiled.default_deny()
        && compiled.deny_names.is_empty()
    {
        return Err(NetError::Policy(
            "names in allowOut only take effect where traffic is otherwise denied: add \"0.0.0.0/0\" to denyOut (or set allow_internet_access to false) to allow only them, or deny names in denyOut that they carve out of".into(),
        ));
    }
    Ok(compiled)
}

fn parse_entry(list: &str, entry: &str) -> Result<Entry, NetError> {
    let text = entry.trim();
    let net = text
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
    match net {
        Ok(IpNet::V4(net)) => return Ok(Entry::Net(net)),
        Ok(IpNet::V6(_)) => {
            return Err(NetError::Policy(format!(
                "{list} entry {entry:?} is IPv6, and sandboxes have no IPv6 egress on this node, so the rule could never apply; use IPv4 addresses, CIDRs or names"
            )))
        }
        Err(_) => {}
    }
    // What is meant as an address (a slash, a colon, only digits and dots)
    // gets an address's error, not a name's.
    if text.contains(['/', ':']) || text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(NetError::Policy(format!(
            "{list} entry {entry:?} is not a valid IP address or CIDR"
        )));
    }
    names::parse(text)
        .map(Entry::Name)
        .map_err(|e| NetError::Policy(format!("{list} entry {}", e.0)))
}

fn proxy_target(proxy: &crate::EgressProxy, open: &[Ipv4Net]) -> Result<ProxyTarget, NetError> {
    let bad =
        |why: String| NetError::Policy(format!("egressProxy address {:?}: {why}", proxy.address));
    let (host, port) = proxy
        .address
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port".into()))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad(format!("{port:?} is not a port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(addr)) => {
            if let Some(why) = proxy_blocked(addr, open) {
                return Err(bad(why));
            }
        }
        Ok(IpAddr::V6(_)) => return Err(bad("IPv6 is not routed from this node".into())),
        Err(_) => match names::parse(host) {
            Ok(names::NameRule::Exact(_)) => {}
            _ => {
                return Err(bad(format!(
                    "{host:?} is neither an IPv4 address nor a host name"
                )))
            }
        },
    }
    let credentials = match (&proxy.username, &proxy.password) {
        (None, None) => None,
        (None, Some(_)) => return Err(bad("a password needs a username".into())),
        (Some(user), password) => {
            let password = password.clone().unwrap_or_default();
            if user.is_empty() || user.len() > MAX_CREDENTIAL || password.len() > MAX_CREDENTIAL {
                return Err(bad(format!(
                    "username must be 1 to {MAX_CREDENTIAL} bytes and password at most {MAX_CREDENTIAL}"
                )));
            }
            Some((user.clone(), password))
        }
    };
    Ok(ProxyTarget {
        host: host.to_ascii_lowercase(),
        port,
        credentials,
    })
}

/// Why the host must not dial `addr` as a sandbox's proxy, if it must not:
/// the same ranges sandboxes never reach (the host's own services, private
/// networks, metadata), unless the operator opened them.
pub(crate) fn proxy_blocked(addr: Ipv4Addr, open: &[Ipv4Net]) -> Option<String> {
    crate::special::blocked_entry_v4(Ipv4Net::from(addr), open).map(|why| {
        format!(
            "{addr} lies in {} ({}), which sandboxes never reach; the operator can open a range with `sandbar serve --open-range`",
            why.block, why.name
        )
    })
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

    fn policy(allow: &[&str], deny: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow_internet: true,
            allow_out: allow.iter().map(|s| s.to_string()).collect(),
            deny_out: deny.iter().map(|s| s.to_string()).collect(),
            egress_proxy: None,
        }
    }

    fn why(result: Result<CompiledPolicy, NetError>) -> String {
        match result {
            Err(NetError::Policy(why)) => why,
            other => panic!("accepted: {other:?}"),
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

    #[test]
    fn default_policy_needs_no_rules() {
        assert!(compile_all(&EgressPolicy::default()).unwrap().is_default());
        let offline = EgressPolicy {
            allow_internet: false,
            ..Default::default()
        };
        let offline = compile_all(&offline).unwrap();
        assert!(!offline.is_default() && offline.offline());
        assert!(!offline.allows_name("example.com"));
    }

    #[test]
    fn parses_cidrs_addresses_and_names() {
        let c = compile_all(&policy(
            &["151.101.2.3/16", "1.1.1.1", "api.example.com", "*.cdn.test"],
            &["0.0.0.0/0", "evil.test"],
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
        assert!(c.default_deny() && c.learns() && c.inspects() && !c.tunnels());
        assert!(c.allows_name("api.example.com") && c.allows_name("x.cdn.test"));
        assert!(!c.allows_name("example.com") && !c.allows_name("cdn.test"));
        assert!(!c.allows_name("evil.test"));
    }

    #[test]
    fn allow_wins_over_deny_and_no_internet_denies_everything_else() {
        // Deny by name beside allow-all: only that name (and what is under
        // a wildcard) is refused; an allowed name carves out of it.
        let c = compile_all(&policy(&["ok.evil.test"], &["*.evil.test"])).unwrap();
        assert!(!c.default_deny() && !c.learns() && c.inspects());
        assert!(c.allows_name("pypi.org"));
        assert!(!c.allows_name("x.evil.test"));
        assert!(c.allows_name("ok.evil.test"));
        // No internet is deny-all, and allowOut still applies to it.
        let mut p = policy(&["allowed.test"], &["10.0.0.0/8"]);
        p.allow_internet = false;
        let c = compile_all(&p).unwrap();
        assert!(!c.offline() && c.learns());
        assert_eq!(c.deny, vec![Ipv4Net::default()]);
        assert!(c.allows_name("allowed.test") && !c.allows_name("other.test"));
    }

    #[test]
    fn refuses_what_it_cannot_enforce_and_says_why() {
        assert!(why(compile_all(&policy(&["*"], &["0.0.0.0/0"]))).contains("bare"));
        assert!(why(compile_all(&policy(&["a.*.test"], &["0.0.0.0/0"]))).contains("leading"));
        assert!(why(compile_all(&policy(&["2001:db8::/32"], &[]))).contains("IPv6"));
        assert!(why(compile_all(&policy(&[], &["::/0"]))).contains("IPv6"));
        assert!(why(compile_all(&policy(&[], &["10.0.0.0/33"]))).contains("not a valid IP"));
        assert!(why(compile_all(&policy(&[], &["not an address!"]))).contains("not a valid domain"));
        // A name allowed where nothing is denied would change nothing.
        assert!(why(compile_all(&policy(&["example.com"], &[]))).contains("0.0.0.0/0"));
        let many: Vec<String> = (0..1001).map(|i| format!("n{i}.test")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(why(compile_all(&policy(&[], &many))).contains("at most"));
    }

    #[test]
    fn egress_proxy_addresses_are_checked() {
        let with_proxy = |address: &str, user: Option<&str>, password: Option<&str>| {
            let mut p = policy(&[], &[]);
            p.egress_proxy = Some(crate::EgressProxy {
                address: address.into(),
                username: user.map(Into::into),
                password: password.map(Into::into),
            });
            compile_all(&p)
        };
        let c = with_proxy("Proxy.Example.com:1080", Some("u"), Some("p")).unwrap();
        assert!(c.tunnels());
        assert_eq!(
            c.proxy,
            Some(ProxyTarget {
                host: "proxy.example.com".into(),
                port: 1080,
                credentials: Some(("u".into(), "p".into())),
            })
        );
        assert!(
            with_proxy("198.51.100.7:1080", None, None).is_err(),
            "documentation range"
        );
        assert!(why(with_proxy("127.0.0.1:1080", None, None)).contains("never reach"));
        assert!(why(with_proxy("proxy.example.com", None, None)).contains("host:port"));
        assert!(why(with_proxy("proxy.example.com:0", None, None)).contains("port"));
        assert!(why(with_proxy("proxy.example.com:1080", None, Some("p"))).contains("username"));
        assert!(why(with_proxy("a b:1080", None, None)).contains("neither"));
        assert!(compile(
            &{
                let mut p = policy(&[], &[]);
                p.egress_proxy = Some(crate::EgressProxy {
                    address: "172.31.0.2:1080".into(),
                    username: None,
                    password: None,
                });
                p
            },
            &opened(&["172.31.0.0/16"])
        )
        .is_ok());
    }
}
