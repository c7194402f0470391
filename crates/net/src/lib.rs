//! Sandbox networking: a pool of pre-made network namespaces, veth pairs,
//! addressing, the nftables table that NATs sandboxes to the internet and
//! isolates them, the DNS forwarder, and dialing a port inside a namespace.
//!
//! Owns: every network object sandbar makes on the host. Must not touch:
//! mounts, processes, cgroups or the control plane.
//!
//! Layout of one sandbox (index `n`, a /30 of `config.subnet`):
//! namespace pinned at `<state_dir>/netns/<n>`, host veth `sb<instance>-<n>`
//! holding `.1` (the sandbox's gateway and resolver), `eth0` inside holding
//! `.2`, default route via `.1`, no IPv6 but loopback.

pub mod claim;
mod dial;
mod dns;
mod egress;
mod egress_log;
mod gateway;
mod layout;
mod links;
mod names;
mod netns;
mod nfset;
mod nft;
mod policy;
mod slot;
mod sniff;
pub mod special;

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use claim::InstanceClaim;
pub use dial::dial;
pub use dns::system_resolvers;
pub use egress_log::{EgressEvent, Logged, Verdict};
pub use netns::mount_points;

use dns::DnsForwarder;
use egress::{Registry, SandboxEgress};
use gateway::Gateway;
use layout::{IndexAllocator, Layout};
use nft::{Firewall, Ranges, SandboxRules};
use policy::CompiledPolicy;
use slot::Slot;

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
    /// Upstream resolvers for the DNS forwarder (empty: /etc/resolv.conf).
    pub dns_upstream: Vec<SocketAddr>,
    /// Ranges the operator opens out of the always-blocked set (private
    /// networks, say): reachable only by sandboxes whose `allowOut` covers
    /// them. The instance's own subnet is never opened.
    pub open_ranges: Vec<Ipv4Net>,
    /// Special-purpose ranges that are part of the internet for this
    /// deployment (an egress proxy or registry mirror on a documentation
    /// address, say): every sandbox reaches them. The instance's own subnet
    /// is never public.
    pub public_ranges: Vec<Ipv4Net>,
}

/// What a sandbox may reach (see `policy.rs` for how the rules combine).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EgressPolicy {
    /// `false`: everything is denied (`0.0.0.0/0`), DNS included, but what
    /// `allow_out` allows.
    pub allow_internet: bool,
    /// CIDRs, IPs, names and `*.` wildcards allowed even when otherwise
    /// denied (CIDRs also in ranges the operator opened).
    pub allow_out: Vec<String>,
    /// CIDRs, IPs, names and `*.` wildcards denied.
    pub deny_out: Vec<String>,
    /// A SOCKS5 proxy all of the sandbox's TCP leaves through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxy>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self {
            allow_internet: true,
            allow_out: Vec::new(),
            deny_out: Vec::new(),
            egress_proxy: None,
        }
    }
}

/// E2B's `network.egressProxy`: a SOCKS5 proxy (RFC 1928, with RFC 1929
/// credentials when given) that a sandbox's TCP is tunneled through.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EgressProxy {
    /// `host:port`; a host name is resolved by the host at each connection.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
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
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("invalid egress policy: {0}")]
    Policy(String),
    #[error("the sandbox network is shut down")]
    Closed,
    #[error("instance '{instance}' is in use by another sandbar process{}; stop it or pick another instance name", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InstanceInUse { instance: String, pid: Option<u32> },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A handed-out slot and the per-sandbox firewall state it carries.
struct Live {
    slot: Slot,
    rules: SandboxRules,
    egress: Arc<SandboxEgress>,
}

struct Inner {
    /// Held for the network's life: no other process manages this instance.
    _claim: InstanceClaim,
    config: NetConfig,
    /// The operator's open and public ranges, without this instance's subnet.
    ranges: Ranges,
    layout: Layout,
    /// rtnetlink in the host namespace.
    host: rtnetlink::Handle,
    firewall: Firewall,
    registry: Arc<Registry>,
    dns: Mutex<Option<DnsForwarder>>,
    gateway: Mutex<Option<Gateway>>,
    /// Conntrack marks of per-sandbox rules: a fresh one at each change.
    marks: AtomicU32,
    indices: Mutex<IndexAllocator>,
    pool: Mutex<VecDeque<Slot>>,
    live: Mutex<HashMap<u32, Live>>,
    /// Serializes changes to per-sandbox rules, so that the recorded
    /// [`SandboxRules`] always match the table.
    rules_lock: tokio::sync::Mutex<()>,
    refill: Arc<Notify>,
    closed: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The node's sandbox network.
pub struct Network {
    inner: Arc<Inner>,
    refill_task: Mutex<Option<JoinHandle<()>>>,
}

impl Network {
    pub async fn new(config: NetConfig) -> Result<Arc<Self>, NetError> {
        let layout = Layout::new(&config)?;
        let claim = InstanceClaim::acquire(&config.instance)?;
        let upstreams = if config.dns_upstream.is_empty() {
            system_resolvers()
        } else {
            config.dns_upstream.clone()
        };
        let (connection, host, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);

        remove_leftovers(&layout, &host).await?;
        refuse_overlap(&host, layout.subnet()).await?;
        enable_forwarding()?;
        netns::prepare_dir(&layout.netns_dir())?;
        let registry = Arc::new(Registry::default());
        let started = async {
            let dns = DnsForwarder::start(upstreams, registry.clone(), layout.table()).await?;
            let gateway = Gateway::start(registry.clone(), &ranges(&config, &layout)).await?;
            let firewall = Firewall::new(
                layout.table(),
                layout.veth_wildcard(),
                layout.subnet(),
                dns.port(),
                gateway.port(),
                &ranges(&config, &layout),
            );
            firewall.install().await?;
            Ok::<_, NetError>((dns, gateway, firewall))
        };
        let (dns, gateway, firewall) = match started.await {
            Ok(parts) => parts,
            Err(e) => {
                let _ = netns::clean_dir(&layout.netns_dir(), true);
                remove_if_empty(&config.state_dir);
                return Err(e);
            }
        };
        tracing::info!(
            instance = %config.instance,
            subnet = %layout.subnet(),
            table = %layout.table(),
            dns_port = dns.port(),
            gateway_port = gateway.port(),
            pool_size = config.pool_size,
            "sandbox network ready"
        );

        let inner = Arc::new(Inner {
            _claim: claim,
            ranges: ranges(&config, &layout),
            indices: Mutex::new(IndexAllocator::new(layout.slots())),
            config,
            layout,
            host,
            firewall,
            registry,
            dns: Mutex::new(Some(dns)),
            gateway: Mutex::new(Some(gateway)),
            marks: AtomicU32::new(1),
            pool: Mutex::new(VecDeque::new()),
            live: Mutex::new(HashMap::new()),
            rules_lock: tokio::sync::Mutex::new(()),
            refill: Arc::new(Notify::new()),
            closed: AtomicBool::new(false),
        });
        let task = tokio::spawn(refill_pool(Arc::downgrade(&inner), inner.refill.clone()));
        inner.refill.notify_one();
        Ok(Arc::new(Self {
            inner,
            refill_task: Mutex::new(Some(task)),
        }))
    }

    /// A ready namespace (from the pool when it has one) with `policy` in force.
    pub async fn acquire(&self, policy: &EgressPolicy) -> Result<SandboxNet, NetError> {
        let compiled = policy::compile(policy, &self.inner.ranges)?;
        check_proxy(&compiled, &self.inner.ranges).await?;
        let inner = &self.inner;
        inner.ensure_open()?;
        let pooled = lock(&inner.pool).pop_front();
        inner.refill.notify_one();
        let slot = match pooled {
            Some(slot) => slot,
            // Builds for an empty pool run concurrently: measured with 50 at
            // once, that finished sooner than taking them a few at a time.
            None => inner.build_slot().await?,
        };
        let egress = inner
            .registry
            .insert(slot.addr, &slot.host_veth, compiled.clone());
        let rules = if compiled.is_default() {
            SandboxRules::default()
        } else {
            let _guard = inner.rules_lock.lock().await;
            match inner
                .firewall
                .apply_policy(
                    &slot.host_veth,
                    SandboxRules::default(),
                    &compiled,
                    inner.next_mark(),
                    &[],
                )
                .await
            {
                Ok(rules) => rules,
                Err(e) => {
                    inner.registry.remove(slot.addr);
                    // The transaction failed as a whole, so the slot has no rules.
                    inner.discard(slot, SandboxRules::default()).await;
                    return Err(e);
                }
            }
        };
        if inner.closed.load(Ordering::SeqCst) {
            inner.registry.remove(slot.addr);
            inner.discard(slot, rules).await;
            return Err(NetError::Closed);
        }
        let net = slot.sandbox_net();
        lock(&inner.live).insert(
            slot.index,
            Live {
                slot,
                rules,
                egress,
            },
        );
        Ok(net)
    }

    /// Replaces a live sandbox's egress policy in place. Connections the
    /// new policy forbids are cut (see `nft.rs` and `gateway.rs`).
    pub async fn set_policy(
        &self,
        net: &SandboxNet,
        policy: &EgressPolicy,
    ) -> Result<(), NetError> {
        let compiled = policy::compile(policy, &self.inner.ranges)?;
        check_proxy(&compiled, &self.inner.ranges).await?;
        let inner = &self.inner;
        let _guard = inner.rules_lock.lock().await;
        let (current, egress) = inner.live_rules(net)?;
        let kept = egress.kept_under(&compiled);
        // The forwarder and the gateway follow at once; the table follows in
        // one transaction (or the old policy comes back).
        let old = egress.policy();
        egress.set_policy(compiled.clone());
        let applied = inner
            .firewall
            .apply_policy(&net.host_veth, current, &compiled, inner.next_mark(), &kept)
            .await;
        match applied {
            Ok(rules) => {
                if let Some(live) = lock(&inner.live).get_mut(&net.index) {
                    live.rules = rules;
                }
                tracing::info!(veth = %net.host_veth, "egress policy replaced");
                Ok(())
            }
            Err(e) => {
                egress.set_policy((*old).clone());
                Err(e)
            }
        }
    }

    /// The egress log of the live sandbox at `addr`: names it asked for,
    /// connections through the gateway, and (for a sandbox with rules of
    /// its own) the flows the table saw, oldest first. `None` when no live
    /// sandbox has that address.
    pub async fn egress_log(&self, addr: Ipv4Addr) -> Option<Vec<Logged>> {
        let (egress, rules, veth) = {
            let live = lock(&self.inner.live);
            let entry = live.values().find(|l| l.slot.addr == addr)?;
            (
                entry.egress.clone(),
                entry.rules,
                entry.slot.host_veth.clone(),
            )
        };
        let mut events = egress.events();
        if rules.egress_chain {
            events.extend(self.inner.firewall.flows(&veth).await);
        }
        events.sort_by_key(|e| e.at);
        Some(events)
    }

    /// Port of the egress gateway (TCP, all host addresses; only redirected
    /// sandbox connections may reach it).
    pub fn gateway_port(&self) -> Option<u16> {
        lock(&self.inner.gateway).as_ref().map(Gateway::port)
    }

    /// Removes the sandbox's namespace and rules; its veth pair goes with the
    /// namespace once no process is left inside (the kernel does that in the
    /// background). Releasing twice is harmless.
    pub async fn release(&self, net: SandboxNet) -> Result<(), NetError> {
        let inner = &self.inner;
        let live = {
            let mut live = lock(&inner.live);
            match live.get(&net.index) {
                Some(entry) if entry.slot.host_veth == net.host_veth => live.remove(&net.index),
                _ => None,
            }
        };
        let Some(Live { slot, rules, .. }) = live else {
            tracing::debug!(veth = %net.host_veth, "release of a sandbox network that is not live");
            return Ok(());
        };
        inner.registry.remove(slot.addr);
        inner.teardown(slot, rules).await
    }

    /// Removes every namespace, veth and rule this instance made, and stops
    /// the DNS forwarder. Later calls to `acquire` fail with [`NetError::Closed`].
    pub async fn shutdown(&self) -> Result<(), NetError> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        inner.refill.notify_one();
        let task = lock(&self.refill_task).take();
        if let Some(task) = task {
            // Let a build in progress finish so that its slot is accounted for.
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "pool refill task ended badly");
            }
        }
        let mut first_err: Option<NetError> = None;
        let mut note = |result: Result<(), NetError>| {
            if let Err(e) = result {
                tracing::warn!(error = %e, "shutting down the sandbox network");
                first_err.get_or_insert(e);
            }
        };
        let pooled: Vec<Slot> = lock(&inner.pool).drain(..).collect();
        let live: Vec<Slot> = lock(&inner.live)
            .drain()
            .map(|(_, live)| live.slot)
            .collect();
        for slot in pooled.iter().chain(&live) {
            inner.registry.remove(slot.addr);
            note(netns::remove(&slot.netns_path));
        }
        note(netns::clean_dir(&inner.layout.netns_dir(), true).map(|_| ()));
        remove_if_empty(&inner.config.state_dir);
        // The veths must be gone before the table: without its rules, a
        // process still inside a sandbox would be forwarded unfiltered.
        note(remove_links(&inner.host, &inner.layout.veth_prefix()).await);
        note(inner.firewall.remove().await);
        lock(&inner.dns).take();
        lock(&inner.gateway).take();
        match first_err {
            None => {
                tracing::info!(instance = %inner.config.instance, "sandbox network shut down");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Removes everything an instance left (namespaces, veths, its table)
    /// without starting it: for cleaning up after a process that died, when
    /// it is not going to be started again.
    pub async fn remove_instance(config: &NetConfig) -> Result<(), NetError> {
        let layout = Layout::new(config)?;
        let _claim = InstanceClaim::acquire(&config.instance)?;
        let (connection, host, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        remove_leftovers(&layout, &host).await?;
        netns::clean_dir(&layout.netns_dir(), true)?;
        remove_if_empty(&config.state_dir);
        Firewall::new(
            layout.table(),
            layout.veth_wildcard(),
            layout.subnet(),
            0,
            0,
            &Ranges::default(),
        )
        .remove()
        .await
    }

    /// Namespaces ready in the pool right now.
    pub fn pooled(&self) -> usize {
        lock(&self.inner.pool).len()
    }

    /// Port the DNS forwarder listens on (UDP and TCP, all host addresses;
    /// only sandboxes and loopback may reach it).
    pub fn dns_port(&self) -> Option<u16> {
        lock(&self.inner.dns).as_ref().map(DnsForwarder::port)
    }

    /// Name of this instance's nftables table (family `inet`).
    pub fn table_name(&self) -> String {
        self.inner.layout.table()
    }

    /// Prefix of this instance's host veth names.
    pub fn veth_prefix(&self) -> String {
        self.inner.layout.veth_prefix()
    }

    /// Directory where this instance pins namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.inner.layout.netns_dir()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if !self.inner.closed.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                instance = %self.inner.config.instance,
                "sandbox network dropped without shutdown: its namespaces, veths and table stay until the next start of this instance"
            );
        }
        self.inner.refill.notify_one();
        if let Some(task) = lock(&self.refill_task).take() {
            task.abort();
        }
    }
}

impl Slot {
    fn sandbox_net(&self) -> SandboxNet {
        SandboxNet {
            index: self.index,
            netns_path: self.netns_path.clone(),
            addr: self.addr,
            gateway: self.gateway,
            host_veth: self.host_veth.clone(),
        }
    }
}

impl Inner {
    fn ensure_open(&self) -> Result<(), NetError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(NetError::Closed)
        } else {
            Ok(())
        }
    }

    fn next_mark(&self) -> u32 {
        // 0 is what every connection starts with: never a policy's mark.
        loop {
            let mark = self.marks.fetch_add(1, Ordering::Relaxed);
            if mark != 0 {
                return mark;
            }
        }
    }

    fn live_rules(&self, net: &SandboxNet) -> Result<(SandboxRules, Arc<SandboxEgress>), NetError> {
        match lock(&self.live).get(&net.index) {
            Some(live) if live.slot.host_veth == net.host_veth => {
                Ok((live.rules, live.egress.clone()))
            }
            _ => Err(NetError::Setup(format!(
                "sandbox network {} is not live",
                net.host_veth
            ))),
        }
    }

    async fn build_slot(&self) -> Result<Slot, NetError> {
        let index = lock(&self.indices)
            .alloc()
            .ok_or(NetError::Exhausted(self.layout.subnet()))?;
        match slot::build(&self.layout, &self.host, index).await {
            Ok(slot) => Ok(slot),
            Err(e) => {
                // `build` removed what it made, and the next build of this
                // index starts by clearing it again.
                lock(&self.indices).free(index);
                Err(e)
            }
        }
    }

    /// Tears a slot down; its index is reused only if that fully worked, so
    /// stale rules can never attach to a new sandbox.
    ///
    /// With the default rules, unpinning the namespace is enough: once no
    /// process is inside, the kernel destroys it and its veth pair in the
    /// background, batching many namespaces per RCU grace period, whereas an
    /// explicit delete holds the caller ~20 ms per pair. A process still
    /// inside keeps the pair under the instance's default rules until it dies
    /// (and `slot::build` deletes a pair still present when its index comes back).
    async fn teardown(&self, slot: Slot, rules: SandboxRules) -> Result<(), NetError> {
        let quarantine = |e: NetError| {
            tracing::error!(error = %e, veth = %slot.host_veth, "tearing down a sandbox network; its address stays out of use");
            e
        };
        if rules != SandboxRules::default() {
            // The pair goes first: a process still inside must never run
            // under the open default once its own rules are gone.
            links::delete(&self.host, &slot.host_veth)
                .await
                .map_err(quarantine)?;
            let _guard = self.rules_lock.lock().await;
            self.firewall
                .apply_policy(&slot.host_veth, rules, &CompiledPolicy::open(), 0, &[])
                .await
                .map_err(quarantine)?;
        }
        netns::remove(&slot.netns_path).map_err(quarantine)?;
        lock(&self.indices).free(slot.index);
        self.refill.notify_one();
        Ok(())
    }

    async fn discard(&self, slot: Slot, rules: SandboxRules) {
        if let Err(e) = self.teardown(slot, rules).await {
            tracing::warn!(error = %e, "discarding a sandbox network");
        }
    }
}

/// Keeps `pool_size` namespaces ready. Holds the network only weakly, so
/// dropping the [`Network`] ends it.
async fn refill_pool(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        loop {
            let Some(inner) = inner.upgrade() else { return };
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
            if lock(&inner.pool).len() >= inner.config.pool_size {
                break;
            }
            match inner.build_slot().await {
                Ok(slot) if inner.closed.load(Ordering::SeqCst) => {
                    inner.discard(slot, SandboxRules::default()).await;
                    return;
                }
                Ok(slot) => lock(&inner.pool).push_back(slot),
                // Every address is in use; a release wakes this task again.
                Err(NetError::Exhausted(_)) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "refilling the namespace pool");
                    drop(inner);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Removes what a previous process of the same instance left: host veths with
/// its prefix and namespaces pinned in its state dir. (The table is replaced
/// atomically when it is installed.)
async fn remove_leftovers(layout: &Layout, host: &rtnetlink::Handle) -> Result<(), NetError> {
    let stale_namespaces = netns::clean_dir(&layout.netns_dir(), false)?;
    let stale_links = links::names_with_prefix(host, &layout.veth_prefix())
        .await?
        .len();
    remove_links(host, &layout.veth_prefix()).await?;
    if stale_links > 0 || stale_namespaces > 0 {
        tracing::info!(
            links = stale_links,
            namespaces = stale_namespaces,
            "removed sandbox networks left by a previous run"
        );
    }
    Ok(())
}

/// Waits briefly for the kernel to destroy the unpinned namespaces (and
/// with them the veth pairs), then deletes whatever pairs are left: those of
/// namespaces a process still holds.
async fn remove_links(host: &rtnetlink::Handle, prefix: &str) -> Result<(), NetError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let names = links::names_with_prefix(host, prefix).await?;
        if names.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(
                count = names.len(),
                "deleting veth pairs whose namespaces are still in use"
            );
            for name in names {
                links::delete(host, &name).await?;
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The operator's open and public ranges, with the instance's own subnet
/// taken out: whatever is opened, sandboxes never reach each other.
fn ranges(config: &NetConfig, layout: &Layout) -> Ranges {
    Ranges {
        open: special::without_v4(&config.open_ranges, layout.subnet()),
        public: special::without_v4(&config.public_ranges, layout.subnet()),
    }
}

/// Refuses a sandbox subnet that overlaps a network the host already uses
/// (another sandbar instance's sandboxes, a LAN, a VPN route): sandboxes
/// there would shadow it, or be shadowed, and traffic would go astray.
async fn refuse_overlap(host: &rtnetlink::Handle, subnet: Ipv4Net) -> Result<(), NetError> {
    match clash(host, subnet).await? {
        Some(what) => Err(NetError::Config(format!(
            "subnet {subnet} overlaps {what} on this host (another sandbar instance, or a network of the host); pick another subnet"
        ))),
        None => Ok(()),
    }
}

async fn clash(host: &rtnetlink::Handle, subnet: Ipv4Net) -> Result<Option<String>, NetError> {
    Ok(links::ipv4_in_use(host)
        .await?
        .into_iter()
        .find(|(net, _)| net.contains(&subnet.network()) || subnet.contains(&net.network()))
        .map(|(_, what)| what))
}

/// What on the host a sandbox subnet would overlap (an address or route), if anything.
pub async fn subnet_clash(subnet: Ipv4Net) -> Result<Option<String>, NetError> {
    let (connection, host, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let found = clash(&host, subnet.trunc()).await;
    task.abort();
    found
}

impl NetConfig {
    /// A configuration no other instance on this host uses, for tests and
    /// scratch servers: instance `<prefix>` + 5 random characters, a /24 in
    /// 10.100.0.0-10.199.255.0 that none of the host's addresses or routes
    /// touch (the default server subnet lies outside that range), state in
    /// `/run/sandbar/<instance>`. Blocking (it asks the kernel on a thread
    /// of its own), so callable from sync and async code alike.
    pub fn unique(prefix: char, pool_size: usize) -> Result<Self, NetError> {
        let in_use = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(NetError::Io)?
                .block_on(async {
                    let (connection, host, _) = rtnetlink::new_connection()?;
                    let task = tokio::spawn(connection);
                    let nets = links::ipv4_in_use(&host).await;
                    task.abort();
                    nets
                })
        })
        .join()
        .map_err(|_| NetError::Setup("listing the host's networks panicked".into()))??;
        use rand::Rng;
        let mut rng = rand::rng();
        let instance: String = std::iter::once(prefix)
            .chain((0..5).map(|_| char::from_digit(rng.random_range(0..36), 36).expect("base 36")))
            .collect();
        for _ in 0..1000 {
            let subnet = Ipv4Net::new(
                Ipv4Addr::new(10, rng.random_range(100..200), rng.random(), 0),
                24,
            )
            .expect("valid prefix");
            let clashes = in_use
                .iter()
                .any(|(net, _)| net.contains(&subnet.network()) || subnet.contains(&net.network()));
            if !clashes {
                return Ok(Self {
                    state_dir: PathBuf::from("/run/sandbar").join(&instance),
                    instance,
                    subnet,
                    pool_size,
                    dns_upstream: Vec::new(),
                    open_ranges: Vec::new(),
                    public_ranges: Vec::new(),
                });
            }
        }
        Err(NetError::Config(
            "no free /24 left in 10.100.0.0-10.199.255.0".into(),
        ))
    }
}

/// A proxy named by host name must resolve now, and to addresses the host
/// may dial for a sandbox (E2B refuses the sandbox otherwise, too); the
/// gateway checks again at every connection.
async fn check_proxy(policy: &CompiledPolicy, ranges: &Ranges) -> Result<(), NetError> {
    let Some(proxy) = &policy.proxy else {
        return Ok(());
    };
    if proxy.host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let bad = |why: String| {
        NetError::Policy(format!(
            "egressProxy address {}:{}: {why}",
            proxy.host, proxy.port
        ))
    };
    let resolved = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((proxy.host.as_str(), proxy.port)),
    )
    .await
    .map_err(|_| bad("resolving it timed out".into()))?
    .map_err(|e| bad(format!("it does not resolve ({e})")))?;
    let open: Vec<Ipv4Net> = ranges.open.iter().chain(&ranges.public).copied().collect();
    let v4: Vec<Ipv4Addr> = resolved
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    if v4.is_empty() {
        return Err(bad("it has no IPv4 address".into()));
    }
    for addr in v4 {
        if let Some(why) = policy::proxy_blocked(addr, &open) {
            return Err(bad(format!("it resolves to {why}")));
        }
    }
    Ok(())
}

/// The state dir may be shared with other parts of sandbar: only an empty one goes.
fn remove_if_empty(dir: &std::path::Path) {
    let _ = std::fs::remove_dir(dir);
}

fn enable_forwarding() -> Result<(), NetError> {
    const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
    if netns::read_sysctl(IP_FORWARD)? != "1" {
        netns::write_sysctl(IP_FORWARD, "1")?;
        tracing::info!("enabled net.ipv4.ip_forward: sandboxes reach the internet through this host (left on at exit)");
    }
    Ok(())
}

/// What the fuzz targets under `fuzz/` feed (not an API: it may change).
#[doc(hidden)]
pub mod fuzzing {
    use ipnet::Ipv4Net;

    use crate::{EgressPolicy, NetError};

    /// The check `Network::acquire` and `Network::set_policy` make before
    /// touching the firewall, with the operator's `open` and `public` ranges:
    /// `(allow_internet, allow, deny)` as they would be enforced.
    pub fn compile_policy(
        policy: &EgressPolicy,
        open: &[Ipv4Net],
        public: &[Ipv4Net],
    ) -> Result<(bool, Vec<Ipv4Net>, Vec<Ipv4Net>), NetError> {
        let ranges = crate::nft::Ranges {
            open: open.to_vec(),
            public: public.to_vec(),
        };
        crate::policy::compile(policy, &ranges).map(|c| (c.allow_internet, c.allow, c.deny))
    }

    /// The DNS forwarder's answer to a query it refuses (from a sandbox
    /// that may not resolve), or None when the query does not parse.
    pub fn dns_refusal(query: &[u8]) -> Option<Vec<u8>> {
        crate::dns::refusal(query)
    }
}
