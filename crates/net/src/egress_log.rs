//! The per-sandbox egress log: names a sandbox asked for, addresses it
//! reached or was refused, and what the policy said. Bounded: the oldest
//! events go first.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::SystemTime;

/// Events kept per sandbox.
pub(crate) const CAPACITY: usize = 1000;

/// What the policy said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Denied,
    /// Allowed, but it did not work out (no upstream answer, the proxy
    /// or the destination unreachable).
    Failed,
}

/// One thing that happened on a sandbox's way out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EgressEvent {
    /// A DNS question to the node's forwarder.
    Dns {
        name: String,
        qtype: String,
        verdict: Verdict,
        /// The IPv4 addresses the answer carried.
        answers: Vec<Ipv4Addr>,
    },
    /// A TCP connection through the egress gateway (checked by name, or
    /// tunneled through the sandbox's SOCKS5 proxy).
    Connect {
        to: SocketAddrV4,
        /// The TLS SNI or HTTP Host it named, if it was checked by name.
        name: Option<String>,
        verdict: Verdict,
        via_proxy: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A new flow the firewall saw (sandboxes with a policy of their own):
    /// the last time it was seen within the past hour.
    Flow {
        to: Ipv4Addr,
        protocol: String,
        port: u16,
        verdict: Verdict,
    },
}

/// An event and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub at: SystemTime,
    pub event: EgressEvent,
}

#[derive(Debug, Default)]
pub(crate) struct EgressLog {
    events: VecDeque<Logged>,
}

impl EgressLog {
    pub(crate) fn push(&mut self, event: EgressEvent) {
        if self.events.len() == CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(Logged {
            at: SystemTime::now(),
            event,
        });
    }

    pub(crate) fn snapshot(&self) -> Vec<Logged> {
        self.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events() {
        let mut log = EgressLog::default();
        for i in 0..(CAPACITY + 5) {
            log.push(EgressEvent::Dns {
                name: format!("n{i}.test"),
                qtype: "A".into(),
                verdict: Verdict::Allowed,
                answers: Vec::new(),
            });
        }
        let events = log.snapshot();
        assert_eq!(events.len(), CAPACITY);
        assert!(matches!(&events[0].event, EgressEvent::Dns { name, .. } if name == "n5.test"));
    }
}
