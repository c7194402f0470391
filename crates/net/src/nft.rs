//! The instance's nftables table (`inet sandbar_<instance>`): NAT to the
//! internet, isolation, and per-sandbox egress policies.
//!
//! Sandboxes with the default policy need no state of their own here: their
//! host veths match the instance's interface-name wildcard. Only a sandbox
//! with a non-default policy gets an entry in the `offline` set and/or a chain
//! of its own reached through the `egress` verdict map, so acquiring and
//! releasing it is one small transaction, never a reload.

use std::borrow::Cow;
use std::collections::HashSet;

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix, SetItem, Verdict, CT,
};
use nftables::schema::{
    Chain, NfListObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{
    AnonymousCounter, Counter, JumpTarget, Match, Operator, Statement, VerdictMap, NAT,
};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::policy::CompiledPolicy;
use crate::NetError;

const OFFLINE_SET: &str = "offline";
const EGRESS_MAP: &str = "egress";
/// What sandboxes never reach: see [`crate::special`], plus the instance's
/// own subnet (other sandboxes).
const BLOCKED_SET: &str = "blocked4";
const BLOCKED6_SET: &str = "blocked6";
/// Blocked ranges the operator opened: reachable only by sandboxes whose
/// `allowOut` covers them.
const OPENED_SET: &str = "opened4";
/// Sandboxes whose names are checked: DNS to any address goes to the
/// forwarder, TCP 80/443 to the egress gateway.
const INSPECTED_SET: &str = "inspected";
/// Sandboxes whose TCP leaves through their SOCKS5 proxy (the gateway).
const TUNNELED_SET: &str = "tunneled";
/// How long a flow stays in a sandbox's flow log sets after it was last
/// seen, and how many each holds.
const FLOW_LOG_TIMEOUT_S: u64 = 3600;
const FLOW_LOG_SIZE: u64 = 1024;

/// What a sandbox currently has in the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SandboxRules {
    pub(crate) offline: bool,
    /// A chain of its own (with its flow log sets).
    pub(crate) egress_chain: bool,
    /// A set of addresses learned through DNS.
    pub(crate) learned: bool,
    pub(crate) inspected: bool,
    pub(crate) tunneled: bool,
}

impl SandboxRules {
    fn wanted(policy: &CompiledPolicy) -> Self {
        let offline = policy.offline();
        Self {
            offline,
            egress_chain: !offline && (!policy.allow.is_empty() || !policy.deny.is_empty()),
            learned: policy.learns(),
            inspected: policy.inspects(),
            tunneled: policy.tunnels(),
        }
    }
}

/// Names of the flow log sets of a sandbox: flows its rules let through,
/// and flows they refused.
pub(crate) fn flow_sets(veth: &str) -> [String; 2] {
    [format!("flows_ok_{veth}"), format!("flows_no_{veth}")]
}

#[derive(Debug, Clone)]
pub(crate) struct Firewall {
    table: String,
    veth_wildcard: String,
    subnet: Ipv4Net,
    dns_port: u16,
    gateway_port: u16,
    opened: Vec<Ipv4Net>,
    public: Vec<Ipv4Net>,
}

/// The operator's changes to what sandboxes never reach (already without
/// the instance's own subnet: see `Network::new`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Ranges {
    /// Reachable by sandboxes whose `allowOut` covers them.
    pub(crate) open: Vec<Ipv4Net>,
    /// Reachable by every sandbox, as the internet is.
    pub(crate) public: Vec<Ipv4Net>,
}

// Small constructors that keep the rule listings below readable.
fn s(text: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(text.to_string()))
}
fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}
fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}
fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}
fn prefix(net: Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(&net.network().to_string())),
        len: u32::from(net.prefix_len()),
    }))
}
fn anon_set(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}
fn tcp_or_udp() -> Expression<'static> {
    anon_set(vec![s("tcp"), s("udp")])
}
fn is(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}
fn is_not(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}
fn has(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::IN,
    })
}
fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(Some(AnonymousCounter::default())))
}
fn accept() -> Statement<'static> {
    Statement::Accept(None)
}
fn drop_() -> Statement<'static> {
    Statement::Drop(None)
}
fn jump(target: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: Cow::Owned(target.to_string()),
    })
}

impl Firewall {
    pub(crate) fn new(
        table: String,
        veth_wildcard: String,
        subnet: Ipv4Net,
        dns_port: u16,
        gateway_port: u16,
        ranges: &Ranges,
    ) -> Self {
        Self {
            table,
            veth_wildcard,
            subnet,
            dns_port,
            gateway_port,
            opened: ranges.open.clone(),
            public: ranges.public.clone(),
        }
    }

    fn table_obj(&self) -> Table<'static> {
        Table {
            family: NfFamily::INet,
            name: Cow::Owned(self.table.clone()),
            handle: None,
        }
    }

    fn chain(&self, name: &str) -> Chain<'static> {
        Chain {
            family: NfFamily::INet,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Owned(name.to_string()),
            ..Chain::default()
        }
    }

    fn base_chain(&self, name: &str, kind: NfChainType, hook: NfHook, prio: i32) -> Chain<'static> {
        Chain {
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..self.chain(name)
        }
    }

    fn rule(&self, chain: &str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
        NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: Cow::Owned(self.table.clone()),
            chain: Cow::Owned(chain.to_string()),
            expr: expr.into(),
            ..Rule::default()
        })
    }

    fn egress_chain_name(veth: &str) -> String {
        format!("egress_{veth}")
    }

    /// Replaces whatever table a previous run left with a fresh one, in one
    /// atomic transaction.
    pub(crate) async fn install(&self) -> Result<(), NetError> {
        let mut head = Batch::new();
        // `add` then `delete` makes the delete succeed whether or not the table exists.
        head.add(NfListObject::Table(self.table_obj()));
        head.delete(NfListObject::Table(self.table_obj()));
        head.add(NfListObject::Table(self.table_obj()));
        self.add_sets(&mut head);
        let mut chains = Batch::new();
        self.add_chains(&mut chains);
        let mut objects = to_json_objects(head.to_nftables());
        objects.push(self.egress_map_json());
        objects.extend(to_json_objects(chains.to_nftables()));
        let payload = serde_json::json!({ "nftables": objects }).to_string();
        apply_raw(&payload, "installing the table").await
    }

    /// The `egress` map (interface name -> verdict). Written as raw JSON
    /// because the nftables crate's set types have no `verdict`.
    fn egress_map_json(&self) -> serde_json::Value {
        serde_json::json!({ "add": { "map": {
            "family": "inet",
            "table": self.table,
            "name": EGRESS_MAP,
            "type": "ifname",
            "map": "verdict",
        }}})
    }

    pub(crate) async fn remove(&self) -> Result<(), NetError> {
        let mut batch = Batch::new();
        batch.add(NfListObject::Table(self.table_obj()));
        batch.delete(NfListObject::Table(self.table_obj()));
        apply(batch.to_nftables(), "removing the table").await
    }

    fn add_sets(&self, batch: &mut Batch<'static>) {
        let table: Cow<'static, str> = Cow::Owned(self.table.clone());
        for name in [OFFLINE_SET, INSPECTED_SET, TUNNELED_SET] {
            batch.add(NfListObject::Set(Box::new(Set {
                family: NfFamily::INet,
                table: table.clone(),
                name: name.into(),
                set_type: SetTypeValue::Single(SetType::Ifname),
                ..Set::default()
            })));
        }
        let mut blocked = crate::special::blocked_v4(&self.public);
        blocked.push(self.subnet);
        let blocked = ipnet::Ipv4Net::aggregate(&blocked);
        let interval_set = |name: &'static str, set_type, elem: Vec<Expression<'static>>| {
            NfListObject::Set(Box::new(Set {
                family: NfFamily::INet,
                table: table.clone(),
                name: name.into(),
                set_type: SetTypeValue::Single(set_type),
                flags: Some(HashSet::from([SetFlag::Interval])),
                // An empty element list is not valid JSON for nft: leave it out.
                elem: (!elem.is_empty()).then(|| elem.into()),
                ..Set::default()
            }))
        };
        batch.add(interval_set(
            BLOCKED_SET,
            SetType::Ipv4Addr,
            blocked.into_iter().map(prefix).collect(),
        ));
        batch.add(interval_set(
            BLOCKED6_SET,
            SetType::Ipv6Addr,
            crate::special::blocked_v6()
                .into_iter()
                .map(|n| {
                    Expression::Named(NamedExpression::Prefix(Prefix {
                        addr: Box::new(s(&n.network().to_string())),
                        len: u32::from(n.prefix_len()),
                    }))
                })
                .collect(),
        ));
        // The instance's own subnet is never opened: sandboxes stay apart.
        let opened: Vec<Ipv4Net> = self
            .opened
            .iter()
            .filter(|n| !n.contains(&self.subnet.network()) && !self.subnet.contains(&n.network()))
            .copied()
            .collect();
        batch.add(interval_set(
            OPENED_SET,
            SetType::Ipv4Addr,
            Ipv4Net::aggregate(&opened)
                .into_iter()
                .map(prefix)
                .collect(),
        ));
    }

    fn add_chains(&self, batch: &mut Batch<'static>) {
        let ours = || s(&self.veth_wildcard);
        let port = Expression::Number(u32::from(self.dns_port));
        // Jump targets must exist before the rules that name them.
        for chain in ["sandbox_to_host", "sandbox_out", "sandbox_in"] {
            batch.add(NfListObject::Chain(self.chain(chain)));
        }

        // DNS sent by a sandbox to its gateway (or any host address) goes to the forwarder.
        batch.add(NfListObject::Chain(self.base_chain(
            "prerouting",
            NfChainType::NAT,
            NfHook::Prerouting,
            -100,
        )));
        batch.add(self.rule(
            "prerouting",
            vec![
                is(meta(MetaKey::Iifname), ours()),
                is(
                    Expression::Named(NamedExpression::Fib(Fib {
                        result: FibResult::Type,
                        flags: HashSet::from([FibFlag::Daddr]),
                    })),
                    s("local"),
                ),
                is(meta(MetaKey::L4proto), tcp_or_udp()),
                is(field("th", "dport"), Expression::Number(53)),
                Statement::Redirect(Some(NAT {
                    addr: None,
                    family: None,
                    port: Some(port.clone()),
                    flags: None,
                })),
            ],
        ));

        // Sandboxes whose names are checked send DNS to the forwarder
        // whatever resolver they name: no name is resolved around the policy.
        batch.add(self.rule(
            "prerouting",
            vec![
                is(meta(MetaKey::Iifname), s(&format!("@{INSPECTED_SET}"))),
                is(meta(MetaKey::L4proto), tcp_or_udp()),
                is(field("th", "dport"), Expression::Number(53)),
                Statement::Redirect(Some(NAT {
                    addr: None,
                    family: None,
                    port: Some(port.clone()),
                    flags: None,
                })),
            ],
        ));
        // To the egress gateway: all TCP of tunneled sandboxes, TCP 80/443
        // of those checked by name. (Never what is addressed to the host:
        // that stays refused in `sandbox_to_host`.)
        let gateway = Expression::Number(u32::from(self.gateway_port));
        let not_local = || {
            is_not(
                Expression::Named(NamedExpression::Fib(Fib {
                    result: FibResult::Type,
                    flags: HashSet::from([FibFlag::Daddr]),
                })),
                s("local"),
            )
        };
        let named_ports = || {
            anon_set(
                crate::gateway::NAMED_PORTS
                    .iter()
                    .map(|p| Expression::Number(u32::from(*p)))
                    .collect(),
            )
        };
        let to_gateway = || {
            Statement::Redirect(Some(NAT {
                addr: None,
                family: None,
                port: Some(gateway.clone()),
                flags: None,
            }))
        };
        batch.add(self.rule(
            "prerouting",
            vec![
                is(meta(MetaKey::Iifname), s(&format!("@{TUNNELED_SET}"))),
                is(meta(MetaKey::L4proto), s("tcp")),
                not_local(),
                to_gateway(),
            ],
        ));
        batch.add(self.rule(
            "prerouting",
            vec![
                is(meta(MetaKey::Iifname), s(&format!("@{INSPECTED_SET}"))),
                is(meta(MetaKey::L4proto), s("tcp")),
                is(field("th", "dport"), named_ports()),
                not_local(),
                to_gateway(),
            ],
        ));
        // What goes to the gateway is judged by the sandbox's rules first,
        // packet by packet as the forward path is: the redirect makes it
        // local traffic, which `forward` never sees.
        batch.add(NfListObject::Chain(self.base_chain(
            "prerouting_filter",
            NfChainType::Filter,
            NfHook::Prerouting,
            -150,
        )));
        batch.add(self.rule(
            "prerouting_filter",
            vec![
                is(meta(MetaKey::Iifname), s(&format!("@{TUNNELED_SET}"))),
                is(meta(MetaKey::L4proto), s("tcp")),
                not_local(),
                jump("sandbox_out"),
            ],
        ));
        batch.add(self.rule(
            "prerouting_filter",
            vec![
                is(meta(MetaKey::Iifname), s(&format!("@{INSPECTED_SET}"))),
                is(meta(MetaKey::L4proto), s("tcp")),
                is(field("th", "dport"), named_ports()),
                not_local(),
                jump("sandbox_out"),
            ],
        ));

        batch.add(NfListObject::Chain(self.base_chain(
            "postrouting",
            NfChainType::NAT,
            NfHook::Postrouting,
            100,
        )));
        batch.add(self.rule(
            "postrouting",
            vec![
                is(field("ip", "saddr"), prefix(self.subnet)),
                is_not(meta(MetaKey::Oifname), ours()),
                Statement::Masquerade(None),
            ],
        ));

        // Sandboxes reach no host address, except the forwarder through the redirect above.
        batch.add(NfListObject::Chain(self.base_chain(
            "input",
            NfChainType::Filter,
            NfHook::Input,
            0,
        )));
        batch.add(self.rule(
            "input",
            vec![is(meta(MetaKey::Iifname), ours()), jump("sandbox_to_host")],
        ));
        // The forwarder and the gateway listen on all addresses; nobody
        // else may use them.
        batch.add(self.rule(
            "input",
            vec![
                is(meta(MetaKey::L4proto), tcp_or_udp()),
                is(field("th", "dport"), port.clone()),
                is_not(meta(MetaKey::Iifname), s("lo")),
                counter(),
                drop_(),
            ],
        ));
        batch.add(self.rule(
            "input",
            vec![
                is(meta(MetaKey::L4proto), s("tcp")),
                is(field("th", "dport"), gateway.clone()),
                is_not(meta(MetaKey::Iifname), s("lo")),
                counter(),
                drop_(),
            ],
        ));
        batch.add(self.rule(
            "sandbox_to_host",
            vec![
                is(meta(MetaKey::Iifname), s(&format!("@{OFFLINE_SET}"))),
                counter(),
                drop_(),
            ],
        ));
        batch.add(self.rule(
            "sandbox_to_host",
            vec![
                has(ct("status"), s("dnat")),
                is(meta(MetaKey::L4proto), tcp_or_udp()),
                is(field("th", "dport"), port),
                accept(),
            ],
        ));
        batch.add(self.rule(
            "sandbox_to_host",
            vec![
                has(ct("status"), s("dnat")),
                is(meta(MetaKey::L4proto), s("tcp")),
                is(field("th", "dport"), gateway),
                accept(),
            ],
        ));
        batch.add(self.rule("sandbox_to_host", vec![counter(), drop_()]));

        // The host never opens a connection into a sandbox: the proxy and the
        // runtime reach sandboxes from inside their namespaces, and warm
        // sandboxes' envd has no token yet. TCP gets a reset at once (a local
        // connect() fails with ECONNREFUSED), the rest is dropped. Replies
        // (DNS answers) are not new.
        batch.add(NfListObject::Chain(self.base_chain(
            "output",
            NfChainType::Filter,
            NfHook::Output,
            0,
        )));
        batch.add(self.rule(
            "output",
            vec![
                is(meta(MetaKey::Oifname), ours()),
                is(meta(MetaKey::L4proto), s("tcp")),
                has(ct("state"), s("new")),
                counter(),
                Statement::Reject(Some(nftables::stmt::Reject::new(
                    Some(nftables::stmt::RejectType::TCPReset),
                    None,
                ))),
            ],
        ));
        batch.add(self.rule(
            "output",
            vec![
                is(meta(MetaKey::Oifname), ours()),
                has(ct("state"), s("new")),
                counter(),
                drop_(),
            ],
        ));

        batch.add(NfListObject::Chain(self.base_chain(
            "forward",
            NfChainType::Filter,
            NfHook::Forward,
            0,
        )));
        batch.add(self.rule(
            "forward",
            vec![is(meta(MetaKey::Iifname), ours()), jump("sandbox_out")],
        ));
        batch.add(self.rule(
            "forward",
            vec![is(meta(MetaKey::Oifname), ours()), jump("sandbox_in")],
        ));

        batch.add(self.rule(
            "sandbox_out",
            vec![
                is(meta(MetaKey::Iifname), s(&format!("@{OFFLINE_SET}"))),
                counter(),
                drop_(),
            ],
        ));
        // Sandboxes get no IPv6 route; this holds even if one adds its own.
        // (The special-purpose set comes first for the day IPv6 egress lands.)
        batch.add(self.rule(
            "sandbox_out",
            vec![
                is(field("ip6", "daddr"), s(&format!("@{BLOCKED6_SET}"))),
                counter(),
                drop_(),
            ],
        ));
        batch.add(self.rule(
            "sandbox_out",
            vec![is(meta(MetaKey::Nfproto), s("ipv6")), counter(), drop_()],
        ));
        let egress = || {
            Statement::VerdictMap(VerdictMap {
                key: meta(MetaKey::Iifname),
                data: s(&format!("@{EGRESS_MAP}")),
            })
        };
        // An opened range: the sandbox's own rules decide (its allowOut
        // accepts); without a verdict there, the blocked drop below holds.
        batch.add(self.rule(
            "sandbox_out",
            vec![
                is(field("ip", "daddr"), s(&format!("@{OPENED_SET}"))),
                egress(),
            ],
        ));
        // Blocked ranges are dropped before a sandbox's own rules are looked
        // at, so no allowOut can open them.
        batch.add(self.rule(
            "sandbox_out",
            vec![
                is(field("ip", "daddr"), s(&format!("@{BLOCKED_SET}"))),
                counter(),
                drop_(),
            ],
        ));
        batch.add(self.rule("sandbox_out", vec![egress()]));
        batch.add(self.rule("sandbox_out", vec![accept()]));

        // Into a sandbox only replies pass: no other sandbox, no outsider starts a connection.
        batch.add(self.rule(
            "sandbox_in",
            vec![
                has(
                    ct("state"),
                    Expression::List(vec![s("established"), s("related")]),
                ),
                accept(),
            ],
        ));
        batch.add(self.rule("sandbox_in", vec![counter(), drop_()]));
    }

    /// Moves a sandbox from the rules it has (`current`) to those `policy`
    /// needs, in one transaction. `mark` tags the conntrack entries of
    /// flows admitted by a learned address under this policy (see
    /// [`Self::egress_rules`]); `kept` are the learned addresses the new
    /// policy keeps, with the time they have left. Returns what the
    /// sandbox has afterwards.
    pub(crate) async fn apply_policy(
        &self,
        veth: &str,
        current: SandboxRules,
        policy: &CompiledPolicy,
        mark: u32,
        kept: &[(Ipv4Addr, Duration)],
    ) -> Result<SandboxRules, NetError> {
        let wanted = SandboxRules::wanted(policy);
        let commands = self.policy_commands(veth, current, wanted, policy, mark, kept);
        if !commands.is_empty() {
            let payload = serde_json::json!({ "nftables": commands }).to_string();
            apply_raw(&payload, &format!("setting the egress policy of {veth}")).await?;
        }
        Ok(wanted)
    }

    fn policy_commands(
        &self,
        veth: &str,
        current: SandboxRules,
        wanted: SandboxRules,
        policy: &CompiledPolicy,
        mark: u32,
        kept: &[(Ipv4Addr, Duration)],
    ) -> Vec<serde_json::Value> {
        use serde_json::json;
        let table = self.table.as_str();
        let chain_name = Self::egress_chain_name(veth);
        let learned = crate::egress::learned_set(veth);
        let flows = flow_sets(veth);
        let chain = json!({"family": "inet", "table": table, "name": chain_name});
        let set = |name: &str| json!({"family": "inet", "table": table, "name": name});
        let member = |set_name: &str| json!({"element": {"family": "inet", "table": table, "name": set_name, "elem": [veth]}});
        let mut out = Vec::new();
        for (set_name, now, then) in [
            (OFFLINE_SET, current.offline, wanted.offline),
            (INSPECTED_SET, current.inspected, wanted.inspected),
            (TUNNELED_SET, current.tunneled, wanted.tunneled),
        ] {
            match (now, then) {
                (false, true) => out.push(json!({"add": member(set_name)})),
                (true, false) => out.push(json!({"delete": member(set_name)})),
                _ => {}
            }
        }
        // The chain refers to the sets: it goes (or is emptied) first, and
        // the sets are made before it is filled.
        if current.egress_chain {
            if wanted.egress_chain {
                out.push(json!({"flush": {"chain": chain}}));
            } else {
                let map_elem = json!({"element": {"family": "inet", "table": table, "name": EGRESS_MAP, "elem": [veth]}});
                out.push(json!({"delete": map_elem}));
                out.push(json!({"delete": {"chain": chain}}));
            }
        }
        match (current.learned, wanted.learned) {
            (true, true) => out.push(json!({"flush": {"set": set(&learned)}})),
            (true, false) => out.push(json!({"delete": {"set": set(&learned)}})),
            (false, true) => out.push(json!({"add": {"set": {
                "family": "inet", "table": table, "name": learned,
                "type": "ipv4_addr", "flags": ["timeout"],
            }}})),
            (false, false) => {}
        }
        if wanted.learned && !kept.is_empty() {
            let elems: Vec<serde_json::Value> = kept
                .iter()
                .map(|(addr, left)| json!({"elem": {"val": addr.to_string(), "timeout": left.as_secs().max(1)}}))
                .collect();
            out.push(json!({"add": {"element": {"family": "inet", "table": table, "name": learned, "elem": elems}}}));
        }
        match (current.egress_chain, wanted.egress_chain) {
            (false, true) => {
                for name in &flows {
                    out.push(json!({"add": {"set": {
                        "family": "inet", "table": table, "name": name,
                        "type": ["ipv4_addr", "inet_proto", "inet_service"],
                        // nft marks it dynamic itself (its JSON of 1.0.6 has no such flag).
                        "flags": ["timeout"],
                        "timeout": FLOW_LOG_TIMEOUT_S, "size": FLOW_LOG_SIZE,
                    }}}));
                }
                out.push(json!({"add": {"chain": chain}}));
            }
            (true, false) => {
                for name in &flows {
                    out.push(json!({"delete": {"set": set(name)}}));
                }
            }
            _ => {}
        }
        if wanted.egress_chain {
            for expr in self.egress_rules(veth, policy, mark) {
                out.push(json!({"add": {"rule": {"family": "inet", "table": table, "chain": chain_name, "expr": expr}}}));
            }
            if !current.egress_chain {
                let mapping = serde_json::to_value(self.egress_mapping(veth, &chain_name))
                    .expect("a mapping serializes");
                out.push(json!({"add": {"element": {"family": "inet", "table": table, "name": EGRESS_MAP, "elem": [mapping]}}}));
            }
        }
        out
    }

    /// The rules of a sandbox's own chain, in order:
    /// 1. its `allowOut` CIDRs: accepted (allow wins over any denial);
    /// 2. with learned addresses: a flow admitted by one under this policy
    ///    (conntrack mark `mark`) goes on even after its address expired
    ///    from the set, as a client keeps a connection past a TTL; a new
    ///    TCP flow to a learned address is admitted and marked. Opened
    ///    ranges are never reached this way, only through a CIDR. A policy
    ///    change comes with a new mark, so every such flow is judged again
    ///    by the new rules on its next packet: those they forbid are cut;
    /// 3. its `denyOut` CIDRs (all of them when everything is denied): TCP
    ///    refused with a reset (an established connection is cut at once),
    ///    the rest dropped.
    ///
    /// New flows are recorded in the sandbox's flow log sets on the way.
    fn egress_rules(
        &self,
        veth: &str,
        policy: &CompiledPolicy,
        mark: u32,
    ) -> Vec<Vec<serde_json::Value>> {
        use serde_json::json;
        let [ok, no] = flow_sets(veth);
        let daddr = json!({"payload": {"protocol": "ip", "field": "daddr"}});
        let nets = |list: &[Ipv4Net]| json!({"set": list.iter().map(|n| json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}})).collect::<Vec<_>>()});
        let to =
            |list: &[Ipv4Net]| json!({"match": {"op": "==", "left": daddr, "right": nets(list)}});
        let record = |set_name: &str| {
            vec![
                json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}),
                json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp"]}}}),
                json!({"set": {"op": "update", "set": format!("@{set_name}"), "elem": {"concat": [
                    daddr,
                    {"meta": {"key": "l4proto"}},
                    {"payload": {"protocol": "th", "field": "dport"}},
                ]}}}),
            ]
        };
        let with = |mut first: Vec<serde_json::Value>, more: Vec<serde_json::Value>| {
            first.extend(more);
            first
        };
        let mut rules = Vec::new();
        if !policy.allow.is_empty() {
            rules.push(with(vec![to(&policy.allow)], record(&ok)));
            rules.push(vec![to(&policy.allow), json!({"accept": null})]);
        }
        if policy.learns() {
            let not_opened =
                json!({"match": {"op": "!=", "left": daddr, "right": format!("@{OPENED_SET}")}});
            let marked =
                json!({"match": {"op": "==", "left": {"ct": {"key": "mark"}}, "right": mark}});
            let learned = json!({"match": {"op": "==", "left": daddr, "right": format!("@{}", crate::egress::learned_set(veth))}});
            let tcp = json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}});
            rules.push(vec![marked, not_opened.clone(), json!({"accept": null})]);
            rules.push(with(
                vec![tcp.clone(), not_opened.clone(), learned.clone()],
                record(&ok),
            ));
            rules.push(vec![
                tcp,
                not_opened,
                learned,
                json!({"mangle": {"key": {"ct": {"key": "mark"}}, "value": mark}}),
                json!({"accept": null}),
            ]);
        }
        if !policy.deny.is_empty() {
            rules.push(with(vec![to(&policy.deny)], record(&no)));
            rules.push(vec![
                to(&policy.deny),
                json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}),
                json!({"counter": {"packets": 0, "bytes": 0}}),
                json!({"reject": {"type": "tcp reset"}}),
            ]);
            rules.push(vec![
                to(&policy.deny),
                json!({"counter": {"packets": 0, "bytes": 0}}),
                json!({"drop": null}),
            ]);
        }
        if !policy.default_deny() {
            // What falls through is accepted by `sandbox_out` (but an
            // opened range, which stays blocked without a CIDR).
            let not_opened =
                json!({"match": {"op": "!=", "left": daddr, "right": format!("@{OPENED_SET}")}});
            rules.push(with(vec![not_opened], record(&ok)));
        }
        rules
    }

    fn egress_mapping(&self, veth: &str, chain: &str) -> Expression<'static> {
        Expression::List(vec![
            s(veth),
            Expression::Verdict(Verdict::Jump(JumpTarget {
                target: Cow::Owned(chain.to_string()),
            })),
        ])
    }
}

impl Firewall {
    /// The flows a sandbox's rules let through and refused within the last
    /// hour (from its flow log sets), each with about when it was last seen.
    pub(crate) async fn flows(&self, veth: &str) -> Vec<crate::egress_log::Logged> {
        use crate::egress_log::{EgressEvent, Logged, Verdict};
        let now = std::time::SystemTime::now();
        let mut out = Vec::new();
        for (name, verdict) in flow_sets(veth)
            .iter()
            .zip([Verdict::Allowed, Verdict::Denied])
        {
            let listed = tokio::process::Command::new("nft")
                .args(["-j", "list", "set", "inet", &self.table, name])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .await;
            let Ok(listed) = listed else { continue };
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&listed.stdout) else {
                continue;
            };
            for object in json["nftables"].as_array().into_iter().flatten() {
                for elem in object["set"]["elem"].as_array().into_iter().flatten() {
                    let item = &elem["elem"];
                    let parts = item["val"]["concat"].as_array();
                    let Some([to, protocol, port]) = parts.map(Vec::as_slice) else {
                        continue;
                    };
                    let (Some(to), Some(protocol), Some(port)) = (
                        to.as_str().and_then(|t| t.parse().ok()),
                        protocol.as_str(),
                        port.as_u64().and_then(|p| u16::try_from(p).ok()),
                    ) else {
                        continue;
                    };
                    let timeout = item["timeout"].as_u64().unwrap_or(FLOW_LOG_TIMEOUT_S);
                    let expires = item["expires"].as_u64().unwrap_or(timeout);
                    let ago = Duration::from_secs(timeout.saturating_sub(expires));
                    out.push(Logged {
                        at: now.checked_sub(ago).unwrap_or(now),
                        event: EgressEvent::Flow {
                            to,
                            protocol: protocol.to_string(),
                            port,
                            verdict,
                        },
                    });
                }
            }
        }
        out
    }
}

fn to_json_objects(nftables: Nftables<'_>) -> Vec<serde_json::Value> {
    match serde_json::to_value(nftables) {
        Ok(serde_json::Value::Object(mut top)) => match top.remove("nftables") {
            Some(serde_json::Value::Array(objects)) => objects,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

async fn apply(nftables: Nftables<'_>, what: &str) -> Result<(), NetError> {
    let payload = serde_json::to_string(&nftables)
        .map_err(|e| NetError::Setup(format!("nftables, {what}: encoding: {e}")))?;
    apply_raw(&payload, what).await
}

/// Runs `nft -j -f -` on `payload`. The crate's own runner lets nft's
/// stderr through to ours, which loses the reason of a failure; this one
/// keeps it for the error.
async fn apply_raw(payload: &str, what: &str) -> Result<(), NetError> {
    use tokio::io::AsyncWriteExt;
    let fail = |detail: String| NetError::Setup(format!("nftables, {what}: {detail}"));
    let mut child = tokio::process::Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("running nft (Debian package `nftables`): {e}")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| fail("no stdin".into()))?;
    stdin
        .write_all(payload.as_bytes())
        .await
        .map_err(|e| fail(format!("writing to nft: {e}")))?;
    drop(stdin);
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| fail(format!("waiting for nft: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall() -> Firewall {
        Firewall::new(
            "sandbar_t".into(),
            "sbt-*".into(),
            "10.201.0.0/24".parse().unwrap(),
            5353,
            5454,
            &Ranges {
                open: vec!["10.77.0.0/16".parse().unwrap()],
                public: vec!["203.0.113.80/32".parse().unwrap()],
            },
        )
    }

    #[test]
    fn table_json_has_the_shapes_nft_expects() {
        let fw = firewall();
        let mut batch = Batch::new();
        fw.add_sets(&mut batch);
        fw.add_chains(&mut batch);
        let json = serde_json::to_string(&batch.to_nftables()).unwrap();
        let map = fw.egress_map_json().to_string();
        assert!(map.contains(r#""map":"verdict""#), "{map}");
        assert!(
            json.contains(r#"{"vmap":{"key":{"meta":{"key":"iifname"}},"data":"@egress"}}"#),
            "{json}"
        );
        assert!(json.contains(r#"{"redirect":{"port":5353}}"#), "{json}");
        assert!(json.contains(r#"{"redirect":{"port":5454}}"#), "{json}");
        assert!(
            json.contains(r#"{"fib":{"result":"type","flags":["daddr"]}}"#),
            "{json}"
        );
        // The sandbox subnet sits inside 10/8, so aggregation folds it in.
        assert!(
            json.contains(r#"{"prefix":{"addr":"10.0.0.0","len":8}}"#),
            "{json}"
        );
    }

    #[test]
    fn egress_mapping_is_a_pair_with_a_jump() {
        let json =
            serde_json::to_string(&firewall().egress_mapping("sbt-1", "egress_sbt-1")).unwrap();
        assert_eq!(json, r#"["sbt-1",{"jump":{"target":"egress_sbt-1"}}]"#);
    }
}
