//! What the DNS forwarder and the egress gateway know of each live sandbox:
//! its policy, the addresses it learned through DNS for allowed names, and
//! its egress log. Keyed by the sandbox's address, the source of what it sends.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::egress_log::{EgressEvent, EgressLog, Logged};
use crate::nfset::{Change, SetWriter};
use crate::policy::CompiledPolicy;

/// Shortest time a learned address stays reachable, whatever the TTL:
/// clients keep answers a little past it, and a connection made right
/// after a 0-TTL answer must still find its address.
pub(crate) const MIN_LEARNED: Duration = Duration::from_secs(60);
/// Longest: an address must be asked for again within a day.
pub(crate) const MAX_LEARNED: Duration = Duration::from_secs(24 * 3600);
/// Addresses learned per sandbox; past it the oldest expiring go first.
const MAX_ADDRESSES: usize = 4096;

/// Name of a sandbox's set of learned addresses (in the instance's table).
pub(crate) fn learned_set(veth: &str) -> String {
    format!("learned_{veth}")
}

#[derive(Debug, Default)]
struct Learned {
    /// Address -> when it leaves the set, and the names it was learned for.
    addrs: HashMap<Ipv4Addr, (Instant, Vec<String>)>,
}

/// One live sandbox.
pub(crate) struct SandboxEgress {
    pub(crate) addr: Ipv4Addr,
    pub(crate) veth: String,
    policy: RwLock<Arc<CompiledPolicy>>,
    learned: Mutex<Learned>,
    log: Mutex<EgressLog>,
    /// Bumped at every policy change; gateway connections re-check then.
    changed: watch::Sender<u64>,
}

impl SandboxEgress {
    fn new(addr: Ipv4Addr, veth: String, policy: CompiledPolicy) -> Self {
        Self {
            addr,
            veth,
            policy: RwLock::new(Arc::new(policy)),
            learned: Mutex::default(),
            log: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }

    pub(crate) fn policy(&self) -> Arc<CompiledPolicy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn log(&self, event: EgressEvent) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    pub(crate) fn events(&self) -> Vec<Logged> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot()
    }

    /// A receiver that sees every later policy change.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether `addr` is in the learned set now (the firewall's view,
    /// modulo its own clock).
    pub(crate) fn has_learned(&self, addr: Ipv4Addr) -> bool {
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        learned
            .addrs
            .get(&addr)
            .is_some_and(|(until, _)| *until > Instant::now())
    }

    /// Records that `name` resolved to `answers` (address, TTL) and, where
    /// the policy learns, puts them in the sandbox's set before returning,
    /// so that a connection made on the answer finds them.
    pub(crate) fn learn(
        &self,
        writer: &SetWriter,
        table: &str,
        name: &str,
        answers: &[(Ipv4Addr, u32)],
    ) -> std::io::Result<()> {
        if answers.is_empty() || !self.policy().learns() {
            return Ok(());
        }
        let now = Instant::now();
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        learned.addrs.retain(|_, (until, _)| *until > now);
        let mut add = Vec::new();
        let mut renew = Vec::new();
        for &(addr, ttl) in answers {
            let life = Duration::from_secs(u64::from(ttl)).clamp(MIN_LEARNED, MAX_LEARNED);
            let until = now + life;
            match learned.addrs.get(&addr) {
                // Still there for long enough: nothing to tell the kernel.
                Some((old, _)) if *old >= until - life / 2 => {}
                // The kernel may drop it any moment on its own clock: a
                // delete could miss it and fail the batch, so add only.
                Some((old, _)) if *old > now + Duration::from_secs(2) => {
                    renew.push(addr);
                    add.push((addr, life));
                }
                _ => add.push((addr, life)),
            }
        }
        if !add.is_empty() {
            let room = MAX_ADDRESSES.saturating_sub(learned.addrs.len());
            if add.len() - renew.len() > room {
                tracing::warn!(sandbox_addr = %self.addr, "a sandbox learned {MAX_ADDRESSES} addresses; not adding more until some expire");
                let fresh: Vec<(Ipv4Addr, Duration)> = add
                    .iter()
                    .filter(|(a, _)| !renew.contains(a))
                    .take(room)
                    .copied()
                    .collect();
                add.retain(|(a, _)| renew.contains(a));
                add.extend(fresh);
            }
            writer.apply(&Change {
                table,
                set: &learned_set(&self.veth),
                remove: &renew,
                add: &add,
            })?;
            for (addr, life) in &add {
                let entry = learned
                    .addrs
                    .entry(*addr)
                    .or_insert_with(|| (now, Vec::new()));
                entry.0 = now + *life;
            }
        }
        for &(addr, _) in answers {
            if let Some((_, names)) = learned.addrs.get_mut(&addr) {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
        Ok(())
    }

    /// The learned addresses still allowed under `policy`, with the time
    /// they have left: what the rebuilt set keeps across a policy change.
    pub(crate) fn kept_under(&self, policy: &CompiledPolicy) -> Vec<(Ipv4Addr, Duration)> {
        let now = Instant::now();
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if !policy.learns() {
            learned.addrs.clear();
            return Vec::new();
        }
        learned.addrs.retain(|_, (until, names)| {
            names.retain(|n| policy.allow_names.matches(n));
            *until > now + Duration::from_secs(1) && !names.is_empty()
        });
        learned
            .addrs
            .iter()
            .map(|(a, (until, _))| (*a, *until - now))
            .collect()
    }

    /// Puts `policy` in force for the forwarder and the gateway, and tells
    /// the gateway's connections to check themselves against it.
    pub(crate) fn set_policy(&self, policy: CompiledPolicy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Every live sandbox, by address. Sources that are not listed (pooled
/// namespaces, strangers) get nothing.
#[derive(Default)]
pub(crate) struct Registry {
    by_addr: RwLock<HashMap<Ipv4Addr, Arc<SandboxEgress>>>,
}

impl Registry {
    pub(crate) fn insert(
        &self,
        addr: Ipv4Addr,
        veth: &str,
        policy: CompiledPolicy,
    ) -> Arc<SandboxEgress> {
        let entry = Arc::new(SandboxEgress::new(addr, veth.to_string(), policy));
        self.by_addr
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, entry.clone());
        entry
    }

    pub(crate) fn get(&self, addr: Ipv4Addr) -> Option<Arc<SandboxEgress>> {
        self.by_addr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .cloned()
    }

    pub(crate) fn remove(&self, addr: Ipv4Addr) {
        let gone = self
            .by_addr
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
        // Gateway connections of a released sandbox end with it.
        if let Some(gone) = gone {
            gone.set_policy(CompiledPolicy {
                allow_internet: false,
                ..CompiledPolicy::open()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Registry {
        fn may_resolve(&self, addr: Ipv4Addr) -> bool {
            self.get(addr).is_some_and(|e| !e.policy().offline())
        }
    }

    #[test]
    fn unknown_and_offline_sources_are_refused() {
        let registry = Registry::default();
        let a = Ipv4Addr::new(10, 0, 0, 2);
        assert!(!registry.may_resolve(a));
        registry.insert(a, "v", CompiledPolicy::open());
        assert!(registry.may_resolve(a));
        registry.get(a).unwrap().set_policy(CompiledPolicy {
            allow_internet: false,
            ..CompiledPolicy::open()
        });
        assert!(!registry.may_resolve(a));
        let entry = registry.get(a).unwrap();
        let changes = entry.changes();
        registry.remove(a);
        assert!(!registry.may_resolve(a));
        assert!(
            changes.has_changed().unwrap(),
            "a release tells the gateway"
        );
    }
}
