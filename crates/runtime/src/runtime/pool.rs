//! Warm sandboxes: made ahead of demand, so that a create only hands one
//! over (its envd gets the caller's token, env vars, user and workdir over
//! `/init`, sent by the `SandboxClient` the runtime was given; its cgroup
//! the caller's CPU and memory limits, its writable layer the caller's disk
//! quota, its firewall the caller's egress rules).
//!
//! Two kinds of pool, one per template: the operator's floors
//! ([`WarmSpec`], e.g. code-interpreter-v1's kernel, slow to become
//! useful), and demand pools ([`DemandPools`]) for every template that is
//! created from: their depth is the most creates of it that came within
//! one [`BURST_SLOT`] during the last [`DEMAND_WINDOW`] (a burst of 50 is
//! met by 50 for the next one; creates one after another by a few),
//! at least one while the template was used within [`IDLE_AFTER`], none
//! after; all of them together within the operator's memory budget.
//! Warm sandboxes boot one at a time and at a low CPU weight, so refilling
//! does not slow the sandboxes in use. Only plain boots are pooled: a
//! create on a layer (a snapshot) or with a start command of its own boots
//! afresh.
//!
//! A warm sandbox is a whole sandbox under an internal id (`warm-…`, which
//! keeps naming its cgroup after the hand-over); it is not in the catalog,
//! so no request can reach it before it is handed over.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{NetMode, Runtime, Sandbox};
use crate::cgroup::Limits;
use crate::{EgressPolicy, Route, RuntimeError, SandboxInfo, SandboxSpec};

/// CPU weight of a warm sandbox until it is handed over (100 = normal).
const WARMING_CPU_WEIGHT: u16 = 5;
/// How long a warm sandbox's service may take to become ready.
const SERVICE_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Where the code interpreter listens inside its sandboxes.
const INTERPRETER_PORT: u16 = 49999;
/// How long envd may take to accept the hand-over's `/init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(5);
/// A demand pool is as deep as the biggest burst of its template's creates
/// in this window...
pub(super) const DEMAND_WINDOW: Duration = Duration::from_secs(30);
/// ...a burst being the creates within this long (a burst the admission
/// queue spreads out still counts whole).
const BURST_SLOT: Duration = Duration::from_secs(1);
/// A template with no create for this long keeps no demand pool.
const IDLE_AFTER: Duration = Duration::from_secs(600);
/// The deepest one demand pool gets.
const MAX_DEMAND_DEPTH: usize = 128;
/// What a warm sandbox is taken to cost until ready ones are measured.
const ASSUMED_COST: u64 = 8 << 20;
/// How often pools are trimmed to their targets when nothing else asks.
pub(super) const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Keep `count` sandboxes of `template` ready, booted with these resources
/// (the caller's are applied at the hand-over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmSpec {
    pub template: String,
    pub count: usize,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// Pools sized by demand for every template created from (see the module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemandPools {
    /// Memory all warm sandboxes of demand pools may take together, as
    /// their cgroups count it.
    pub budget_mb: u64,
    /// What their sandboxes boot with (the caller's are applied at the
    /// hand-over).
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// How full one warm pool is (see [`Runtime::warm_pools`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmDepth {
    pub template: String,
    pub ready: usize,
    pub target: usize,
}

/// Whether a warm sandbox of `template` can become `spec`'s: the caller's
/// resources, token, env vars, user, workdir and egress are all set at the
/// hand-over; a layer below or a start command of the caller's are not.
fn fits(template: &str, spec: &SandboxSpec) -> bool {
    spec.base_layer.is_none() && spec.start.start_cmd.is_none() && spec.template == template
}

/// The ready sandboxes, how many are being made, and the recent creates,
/// per template.
pub(super) struct WarmPool {
    ready: std::sync::Mutex<Vec<Arc<Sandbox>>>,
    filling: std::sync::Mutex<BTreeMap<String, usize>>,
    demand: std::sync::Mutex<BTreeMap<String, Demand>>,
    /// The mean memory of a ready warm sandbox, measured at each trim (0:
    /// not yet, [`ASSUMED_COST`] then).
    cost: std::sync::atomic::AtomicU64,
    /// Set by shutdown: nothing new is made, what is being made is undone.
    closed: std::sync::atomic::AtomicBool,
    /// One warm boot at a time: the host-side work of a boot (mounts,
    /// namespaces, the helper) is not under the warm sandbox's low CPU
    /// weight, and many at once slowed the creates they were for.
    booting: tokio::sync::Semaphore,
}

impl Default for WarmPool {
    fn default() -> Self {
        Self {
            ready: Default::default(),
            filling: Default::default(),
            demand: Default::default(),
            cost: Default::default(),
            closed: Default::default(),
            booting: tokio::sync::Semaphore::new(1),
        }
    }
}

/// One template's recent creates.
#[derive(Debug, Default)]
struct Demand {
    /// Creates within [`DEMAND_WINDOW`], oldest first.
    recent: VecDeque<Instant>,
    last: Option<Instant>,
}

impl Demand {
    fn depth(&mut self, now: Instant) -> usize {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > DEMAND_WINDOW)
        {
            self.recent.pop_front();
        }
        match self.last {
            Some(t) if now.duration_since(t) <= IDLE_AFTER => {
                biggest_burst(&self.recent).clamp(1, MAX_DEMAND_DEPTH)
            }
            _ => 0,
        }
    }
}

/// The most of `times` (in order) within one [`BURST_SLOT`].
fn biggest_burst(times: &VecDeque<Instant>) -> usize {
    let mut first = 0;
    let mut most = 0;
    for (i, t) in times.iter().enumerate() {
        while t.duration_since(times[first]) > BURST_SLOT {
            first += 1;
        }
        most = most.max(i + 1 - first);
    }
    most
}

/// Each template's target (how many, booted with what): the operator's
/// floor, raised to its demand, demand cut (in proportion) to what
/// `budget` allows at `cost` each.
fn targets(
    floors: &[WarmSpec],
    demand: &BTreeMap<String, usize>,
    pools: Option<&DemandPools>,
    cost: u64,
) -> BTreeMap<String, WarmSpec> {
    let mut out: BTreeMap<String, WarmSpec> = BTreeMap::new();
    for w in floors {
        out.entry(w.template.clone())
            .or_insert(WarmSpec {
                count: 0,
                ..w.clone()
            })
            .count += w.count;
    }
    let Some(pools) = pools else {
        return out;
    };
    let extra: BTreeMap<&String, usize> = demand
        .iter()
        .map(|(t, d)| (t, d.saturating_sub(out.get(t).map_or(0, |f| f.count))))
        .filter(|(_, n)| *n > 0)
        .collect();
    let wanted: usize = extra.values().sum();
    let affordable = usize::try_from((pools.budget_mb << 20) / cost.max(1)).unwrap_or(usize::MAX);
    for (template, n) in extra {
        let n = if wanted > affordable {
            n * affordable / wanted
        } else {
            n
        };
        if n == 0 {
            continue;
        }
        out.entry(template.clone())
            .or_insert(WarmSpec {
                template: template.clone(),
                count: 0,
                cpu_count: pools.cpu_count,
                memory_mb: pools.memory_mb,
                disk_mb: pools.disk_mb,
            })
            .count += n;
    }
    out
}

impl WarmPool {
    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the pool: waits (bounded) for the warm sandboxes being made to
    /// be undone, then returns the ready ones for the caller to tear down.
    pub(super) async fn close(&self) -> Vec<Arc<Sandbox>> {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.filling.lock().unwrap().values().any(|n| *n > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ready.lock().unwrap().drain(..).collect()
    }

    /// Counts a create of `spec`'s template toward its demand pool.
    fn note(&self, spec: &SandboxSpec) {
        if !fits(&spec.template, spec) {
            return;
        }
        let now = Instant::now();
        let mut demand = self.demand.lock().unwrap();
        let d = demand.entry(spec.template.clone()).or_default();
        d.recent.push_back(now);
        d.last = Some(now);
    }

    /// Each template's demand depth now (idle ones are forgotten).
    fn demand(&self) -> BTreeMap<String, usize> {
        let now = Instant::now();
        let mut demand = self.demand.lock().unwrap();
        let depths: BTreeMap<String, usize> = demand
            .iter_mut()
            .map(|(t, d)| (t.clone(), d.depth(now)))
            .collect();
        demand.retain(|t, _| depths.get(t).is_some_and(|n| *n > 0));
        depths.into_iter().filter(|(_, n)| *n > 0).collect()
    }

    fn take(&self, spec: &SandboxSpec) -> Option<Arc<Sandbox>> {
        let mut ready = self.ready.lock().unwrap();
        let pos = ready.iter().position(|s| fits(&s.info.template, spec))?;
        Some(ready.remove(pos))
    }

    /// Removes a warm sandbox that died; false if it was handed over.
    fn forget(&self, sandbox: &Arc<Sandbox>) -> bool {
        let mut ready = self.ready.lock().unwrap();
        match ready.iter().position(|s| Arc::ptr_eq(s, sandbox)) {
            Some(pos) => {
                ready.remove(pos);
                true
            }
            None => false,
        }
    }

    fn ready_of(&self, template: &str) -> usize {
        let ready = self.ready.lock().unwrap();
        ready.iter().filter(|s| s.info.template == template).count()
    }
}

impl Runtime {
    /// How many warm sandboxes of `template` are ready to be handed over.
    pub fn warm_ready(&self, template: &str) -> usize {
        self.pool.ready_of(template)
    }

    /// Each warm pool: its template, how many sandboxes are ready in it, and
    /// how many it keeps now.
    pub fn warm_pools(&self) -> Vec<WarmDepth> {
        self.pool_targets()
            .into_iter()
            .map(|(template, t)| WarmDepth {
                ready: self.pool.ready_of(&template),
                template,
                target: t.count,
            })
            .collect()
    }

    /// What a warm sandbox costs: the mean memory of the ready ones when
    /// last measured ([`Runtime::measure_warm_cost`]).
    fn warm_cost(&self) -> u64 {
        match self.pool.cost.load(std::sync::atomic::Ordering::Relaxed) {
            0 => ASSUMED_COST,
            c => c,
        }
    }

    /// Reads the ready warm sandboxes' memory (blocking, a file per one).
    fn measure_warm_cost(&self) {
        let ready: Vec<Arc<Sandbox>> = self.pool.ready.lock().unwrap().clone();
        let used: Vec<u64> = ready
            .iter()
            .filter_map(|s| s.cgroup.usage().ok().map(|u| u.mem_used))
            .filter(|m| *m > 0)
            .collect();
        if let Some(n) = std::num::NonZeroU64::new(used.len() as u64) {
            let mean = used.iter().sum::<u64>() / n;
            self.pool
                .cost
                .store(mean, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn pool_targets(&self) -> BTreeMap<String, WarmSpec> {
        targets(
            &self.options.warm,
            &self.pool.demand(),
            self.options.demand_pools.as_ref(),
            self.warm_cost(),
        )
    }

    /// Counts a create toward its template's demand pool.
    pub(super) fn note_demand(&self, spec: &SandboxSpec) {
        if self.options.demand_pools.is_some() {
            self.pool.note(spec);
        }
    }

    /// Brings every pool to its target: starts making what is missing,
    /// tears down what is beyond it (a template's demand went).
    pub(super) fn refill_pools(&self) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        if self.pool.is_closed() {
            return;
        }
        let targets = self.pool_targets();
        // Beyond target: the newest go first (the oldest are warmest).
        let surplus: Vec<Arc<Sandbox>> = {
            let mut ready = self.pool.ready.lock().unwrap();
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            let mut keep = Vec::with_capacity(ready.len());
            let mut drop = Vec::new();
            for s in ready.drain(..) {
                let n = seen.entry(s.info.template.clone()).or_default();
                *n += 1;
                if *n > targets.get(&s.info.template).map_or(0, |t| t.count) {
                    drop.push(s);
                } else {
                    keep.push(s);
                }
            }
            *ready = keep;
            drop
        };
        for s in surplus {
            let rt = this.clone();
            tokio::spawn(async move { rt.stop(&s, false).await });
        }
        for (template, target) in targets {
            let have = self.pool.ready_of(&template);
            let missing = {
                let mut filling = self.pool.filling.lock().unwrap();
                let in_flight = filling.entry(template.clone()).or_default();
                let missing = target.count.saturating_sub(have + *in_flight);
                *in_flight += missing;
                missing
            };
            for _ in 0..missing {
                let (rt, target) = (this.clone(), target.clone());
                tokio::spawn(async move { rt.make_warm(target).await });
            }
        }
    }

    /// Every [`TRIM_EVERY`], while the runtime lives: pools follow their
    /// demand down too when no create asks (a burst's deep pool drains).
    pub(super) fn trim_pools_now_and_then(&self) {
        if self.options.demand_pools.is_none() {
            return;
        }
        let this = self.this.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TRIM_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(rt) = this.upgrade() else { return };
                if rt.pool.is_closed() {
                    return;
                }
                let measuring = rt.clone();
                let _ = tokio::task::spawn_blocking(move || measuring.measure_warm_cost()).await;
                rt.refill_pools();
            }
        });
    }

    async fn make_warm(self: Arc<Self>, target: WarmSpec) {
        let template = target.template;
        let spec = SandboxSpec {
            id: format!("warm-{}", hex::encode(rand::random::<[u8; 8]>())),
            template: template.clone(),
            cpu_count: target.cpu_count,
            memory_mb: target.memory_mb,
            disk_mb: target.disk_mb,
            env_vars: BTreeMap::new(),
            envd_access_token: None,
            egress: EgressPolicy::default(),
            route: Route::default(),
            base_layer: None,
            auto_resume: false,
            start: Default::default(),
        };
        let mut made = self.boot_warm(&spec).await;
        if let Ok(sb) = &made {
            // Ready means its service is, not just envd: the point is that
            // the caller's first call does not wait for a kernel to boot.
            if let Some(path) = self.readiness_path(&spec.template) {
                if let Err(e) = self.wait_ready(sb, path).await {
                    let sb = made.expect("checked Ok");
                    self.stop(&sb, false).await;
                    made = Err(e);
                }
            }
        }
        let done = || {
            if let Some(n) = self.pool.filling.lock().unwrap().get_mut(&template) {
                *n = n.saturating_sub(1);
            }
        };
        if self.pool.is_closed() {
            if let Ok(sb) = made {
                self.stop(&sb, false).await;
            }
            done();
            return;
        }
        done();
        match made {
            Ok(sandbox) => {
                let sandbox = Arc::new(sandbox);
                tracing::debug!(id = %spec.id, template = %spec.template, "warm sandbox ready");
                self.pool.ready.lock().unwrap().push(sandbox.clone());
                self.watch_warm(sandbox);
            }
            // Not retried in a loop: the next hand-over asks again.
            Err(e) => {
                tracing::warn!(template = %spec.template, error = %e, "warm sandbox not made")
            }
        }
    }

    /// A warm sandbox's boot, at a low CPU weight from its first process
    /// on, one at a time.
    async fn boot_warm(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        let _turn = self
            .pool
            .booting
            .acquire()
            .await
            .map_err(|_| RuntimeError::Start("the runtime is shutting down".into()))?;
        if self.pool.is_closed() {
            return Err(RuntimeError::Start("the runtime is shutting down".into()));
        }
        self.boot_weighted(spec, Some(WARMING_CPU_WEIGHT)).await
    }

    /// The HTTP path on the service port that answers 200 once a template's
    /// start command is ready to serve (only the code interpreter has one).
    fn readiness_path(&self, template: &str) -> Option<&'static str> {
        let t = self.store.get(template).ok()??;
        t.meta.runs_interpreter().then_some("/ready")
    }

    async fn wait_ready(&self, warm: &Sandbox, path: &str) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + SERVICE_READY_TIMEOUT;
        loop {
            if let Ok(200) = self
                .http(warm, INTERPRETER_PORT, "GET", path, String::new(), None)
                .await
                .map(|(s, _)| s)
            {
                return Ok(());
            }
            if self.pool.is_closed() {
                return Err(RuntimeError::Start("the runtime is shutting down".into()));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RuntimeError::Start(format!(
                    "the start command did not get ready within {SERVICE_READY_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Tears a warm sandbox down if it dies before it is handed over.
    fn watch_warm(&self, sandbox: Arc<Sandbox>) {
        let this = self.this.clone();
        let mut exited = sandbox.pid1.exited();
        let sandbox = Arc::downgrade(&sandbox);
        tokio::spawn(async move {
            let _ = exited.wait_for(|d| *d).await;
            let (Some(rt), Some(sandbox)) = (this.upgrade(), sandbox.upgrade()) else {
                return;
            };
            if rt.pool.forget(&sandbox) {
                tracing::warn!(id = %sandbox.info.id, "warm sandbox died; replacing it");
                rt.stop(&sandbox, false).await;
                rt.refill_pools();
            }
        });
    }

    /// A warm sandbox made into `spec`'s, if one fits; None means make one.
    pub(super) async fn take_warm(&self, spec: &SandboxSpec) -> Option<Sandbox> {
        self.note_demand(spec);
        let warm = self.pool.take(spec);
        self.refill_pools();
        let warm = warm?;
        let internal = warm.info.id.clone();
        let warm = match Arc::try_unwrap(warm) {
            Ok(w) => w,
            Err(shared) => {
                // Something still holds it (it is dying): not usable.
                self.stop(&shared, false).await;
                return None;
            }
        };
        match self.hand_over(&warm, spec).await {
            Ok((dir, writable)) => {
                tracing::debug!(sandbox = %spec.id, warm = %internal, "handed over a warm sandbox");
                Some(Sandbox {
                    info: SandboxInfo::running(
                        spec,
                        warm.info.addr,
                        warm.info.boot_id.clone(),
                        false,
                    ),
                    dir,
                    writable,
                    route: spec.route.clone(),
                    // CPU use is reported from the hand-over on, not the
                    // kernel's start before it.
                    cpu_sample: std::sync::Mutex::new((
                        std::time::Instant::now(),
                        warm.cgroup.usage().map(|u| u.cpu_ns).unwrap_or(0),
                    )),
                    ..warm
                })
            }
            Err(e) => {
                tracing::warn!(warm = %internal, error = %e, "warm sandbox could not be handed over; making a new one");
                self.stop(&warm, false).await;
                None
            }
        }
    }

    /// Gives a warm sandbox the caller's token, env vars and egress rules,
    /// and its files the caller's id (so that it pauses and survives a
    /// restart as any sandbox does): its new directory and writable layer.
    async fn hand_over(
        &self,
        warm: &Sandbox,
        spec: &SandboxSpec,
    ) -> Result<(PathBuf, sandbar_layers::Writable), RuntimeError> {
        warm.cgroup
            .set_cpu_weight(100)
            .map_err(|e| RuntimeError::Start(format!("restore the CPU weight: {e}")))?;
        if (warm.info.cpu_count, warm.info.memory_mb) != (spec.cpu_count, spec.memory_mb) {
            warm.cgroup.set_limits(Limits {
                memory_bytes: spec.memory_mb.max(16) << 20,
                cpus: spec.cpu_count.max(1),
                pids_max: self.options.pids_max,
            })?;
        }
        if warm.info.disk_mb != spec.disk_mb {
            self.layers()?.set_quota(&warm.writable, spec.disk_mb)?;
        }
        if spec.egress != EgressPolicy::default() {
            match (&self.net, &warm.net) {
                (NetMode::Node(n), Some(net)) => n.set_policy(net, &spec.egress).await?,
                _ => {
                    return Err(RuntimeError::Start(
                        "no node network to set egress on".into(),
                    ))
                }
            }
        }
        let body = super::launch::handover_json(spec);
        let began = Instant::now();
        tokio::time::timeout(INIT_TIMEOUT, self.post_init(warm, body.to_string()))
            .await
            .map_err(|_| {
                RuntimeError::Start(format!("envd's /init took over {INIT_TIMEOUT:?}"))
            })??;
        let init_took = began.elapsed();
        let dir = self.sandbox_dir(&spec.id);
        std::fs::rename(&warm.dir, &dir).map_err(super::io("rename a warm sandbox's directory"))?;
        let writable = self
            .layers()?
            .rename_writable(&warm.writable.id, &spec.id)?;
        super::persist::save(&dir, spec, None)?;
        tracing::debug!(
            sandbox = %spec.id,
            init_ms = init_took.as_secs_f64() * 1e3,
            elapsed_ms = began.elapsed().as_secs_f64() * 1e3,
            "warm sandbox's envd and files handed over"
        );
        Ok((dir, writable))
    }

    async fn post_init(&self, warm: &Sandbox, body: String) -> Result<(), RuntimeError> {
        let (status, text) = self
            .http(warm, super::ENVD_PORT, "POST", "/init", body, None)
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(RuntimeError::Start(format!(
                "envd /init: {status} {}",
                text.trim()
            )))
        }
    }

    /// One request to a server on `port` inside the sandbox, sent by the
    /// [`crate::SandboxClient`] this runtime was given: status and body.
    /// `token`: envd's access token.
    pub(super) async fn http(
        &self,
        sandbox: &Sandbox,
        port: u16,
        method: &'static str,
        path: &str,
        body: String,
        token: Option<&str>,
    ) -> Result<(u16, String), RuntimeError> {
        let fail = |e: &dyn std::fmt::Display| {
            RuntimeError::Start(format!("{method} {path} on port {port}: {e}"))
        };
        let Some(client) = &self.options.sandbox_client else {
            return Err(fail(
                &"this runtime was started without a client for servers inside sandboxes (RuntimeOptions::sandbox_client)",
            ));
        };
        let stream = match (&self.net, &sandbox.net) {
            (NetMode::Node(_), Some(net)) => sandbar_net::dial(net, port).await,
            _ => crate::dial::dial_in_netns(sandbox.netns.clone(), port).await,
        }
        .map_err(|e| fail(&e))?;
        let answer = client
            .send(
                stream,
                crate::InnerRequest {
                    method,
                    path: path.to_string(),
                    body,
                    token: token.map(str::to_string),
                },
            )
            .await
            .map_err(|e| fail(&e))?;
        Ok((answer.status, answer.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(template: &str, memory_mb: u64) -> SandboxSpec {
        SandboxSpec {
            base_layer: None,
            auto_resume: false,
            start: Default::default(),
            id: "x".into(),
            template: template.into(),
            cpu_count: 2,
            memory_mb,
            disk_mb: 2048,
            env_vars: BTreeMap::new(),
            envd_access_token: Some("t".into()),
            egress: EgressPolicy {
                allow_internet: false,
                ..EgressPolicy::default()
            },
            route: Route::default(),
        }
    }

    #[test]
    fn a_warm_sandbox_fits_its_template_whatever_the_resources() {
        // Resources, token, env vars and egress are the caller's to set at
        // the hand-over.
        assert!(fits(
            "code-interpreter-v1",
            &spec("code-interpreter-v1", 512)
        ));
        assert!(fits(
            "code-interpreter-v1",
            &spec("code-interpreter-v1", 4096)
        ));
        assert!(!fits("code-interpreter-v1", &spec("base", 512)));
        let mut on_layer = spec("base", 512);
        on_layer.base_layer = Some("abc".into());
        assert!(!fits("base", &on_layer));
        let mut own_start = spec("base", 512);
        own_start.start.start_cmd = Some("python3 -m http.server".into());
        assert!(!fits("base", &own_start));
    }

    #[test]
    fn demand_depth_follows_the_window_and_goes_when_idle() {
        let now = Instant::now();
        let mut d = Demand::default();
        assert_eq!(d.depth(now), 0, "never used: no pool");
        for _ in 0..50 {
            d.recent.push_back(now);
        }
        d.last = Some(now);
        assert_eq!(d.depth(now), 50, "a burst sizes the pool for the next");
        // One create every 250 ms: five within a slot.
        let mut steady = Demand::default();
        for i in 0..40 {
            steady
                .recent
                .push_back(now + Duration::from_millis(250 * i));
        }
        steady.last = steady.recent.back().copied();
        assert_eq!(steady.depth(now + Duration::from_secs(10)), 5);
        let later = now + DEMAND_WINDOW + Duration::from_secs(1);
        assert_eq!(d.depth(later), 1, "out of the window: one stays");
        assert_eq!(d.depth(now + IDLE_AFTER + Duration::from_secs(1)), 0);
    }

    fn pools(budget_mb: u64) -> DemandPools {
        DemandPools {
            budget_mb,
            cpu_count: 2,
            memory_mb: 512,
            disk_mb: 2048,
        }
    }

    #[test]
    fn targets_keep_floors_raise_to_demand_and_fit_the_budget() {
        let floor = WarmSpec {
            template: "code-interpreter-v1".into(),
            count: 1,
            cpu_count: 2,
            memory_mb: 1024,
            disk_mb: 2048,
        };
        let demand: BTreeMap<String, usize> =
            [("base".into(), 30), ("code-interpreter-v1".into(), 4)]
                .into_iter()
                .collect();
        let t = targets(
            std::slice::from_ref(&floor),
            &demand,
            Some(&pools(1024)),
            8 << 20,
        );
        assert_eq!(t["base"].count, 30);
        assert_eq!(t["code-interpreter-v1"].count, 4);
        assert_eq!(
            t["code-interpreter-v1"].memory_mb, 1024,
            "the floor's resources"
        );
        // 80 MiB at 8 MiB each: 10 warm sandboxes beyond the floors, shared
        // in proportion (30 and 3 wanted).
        let t = targets(
            std::slice::from_ref(&floor),
            &demand,
            Some(&pools(80)),
            8 << 20,
        );
        assert_eq!(t["base"].count, 9);
        assert_eq!(t["code-interpreter-v1"].count, 1, "its floor only");
        // No demand pools: floors only.
        let t = targets(std::slice::from_ref(&floor), &demand, None, 8 << 20);
        assert_eq!(t.len(), 1);
        assert_eq!(t["code-interpreter-v1"].count, 1);
    }
}
