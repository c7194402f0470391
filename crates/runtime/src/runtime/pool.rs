//! Warm sandboxes: made ahead of demand for the templates the operator
//! names, so that a create of such a template only hands one over (its envd
//! gets the caller's token and env vars over `/init`, sent by the
//! `SandboxClient` the runtime was given, its firewall the caller's egress
//! rules). Worth it where a template's start command is slow
//! to become useful, like code-interpreter-v1's kernel.
//!
//! A warm sandbox is a whole sandbox under an internal id (`warm-…`, which
//! keeps naming its directory and cgroup after the hand-over); it is not in
//! the catalog, so no request can reach it before it is handed over.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{NetMode, Runtime, Sandbox};
use crate::{EgressPolicy, Route, RuntimeError, SandboxInfo, SandboxSpec};

/// CPU weight of a warm sandbox until it is handed over (100 = normal).
const WARMING_CPU_WEIGHT: u16 = 5;
/// How long a warm sandbox's service may take to become ready.
const SERVICE_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Where the code interpreter listens inside its sandboxes.
const INTERPRETER_PORT: u16 = 49999;
/// How long envd may take to accept the hand-over's `/init`.
const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Keep `count` sandboxes of `template` with these resources ready. A create
/// asking for exactly this template and these resources gets one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmSpec {
    pub template: String,
    pub count: usize,
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

impl WarmSpec {
    fn fits(&self, spec: &SandboxSpec) -> bool {
        spec.base_layer.is_none()
            && spec.template == self.template
            && spec.cpu_count == self.cpu_count
            && spec.memory_mb == self.memory_mb
            && spec.disk_mb == self.disk_mb
    }
}

/// The ready sandboxes, and how many are being made, per [`WarmSpec`].
#[derive(Default)]
pub(super) struct WarmPool {
    ready: std::sync::Mutex<Vec<(usize, Arc<Sandbox>)>>,
    filling: std::sync::Mutex<BTreeMap<usize, usize>>,
    /// Set by shutdown: nothing new is made, what is being made is undone.
    closed: std::sync::atomic::AtomicBool,
}

impl WarmPool {
    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the pool: waits (bounded) for the warm sandboxes being made to
    /// be undone, then returns the ready ones for the caller to tear down.
    pub(super) async fn close(&self) -> Vec<Arc<Sandbox>> {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.filling.lock().unwrap().values().any(|n| *n > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.ready
            .lock()
            .unwrap()
            .drain(..)
            .map(|(_, s)| s)
            .collect()
    }

    fn take(&self, specs: &[WarmSpec], spec: &SandboxSpec) -> Option<Arc<Sandbox>> {
        let mut ready = self.ready.lock().unwrap();
        let pos = ready.iter().position(|(i, _)| specs[*i].fits(spec))?;
        Some(ready.remove(pos).1)
    }

    /// Removes a warm sandbox that died; false if it was handed over.
    fn forget(&self, sandbox: &Arc<Sandbox>) -> bool {
        let mut ready = self.ready.lock().unwrap();
        match ready.iter().position(|(_, s)| Arc::ptr_eq(s, sandbox)) {
            Some(pos) => {
                ready.remove(pos);
                true
            }
            None => false,
        }
    }
}

impl Runtime {
    /// How many warm sandboxes of `template` are ready to be handed over.
    pub fn warm_ready(&self, template: &str) -> usize {
        let ready = self.pool.ready.lock().unwrap();
        ready
            .iter()
            .filter(|(i, _)| self.options.warm[*i].template == template)
            .count()
    }

    /// Each warm pool: its template, how many sandboxes are ready in it, and
    /// how many it keeps.
    pub fn warm_pools(&self) -> Vec<WarmDepth> {
        let ready = self.pool.ready.lock().unwrap();
        self.options
            .warm
            .iter()
            .enumerate()
            .map(|(i, w)| WarmDepth {
                template: w.template.clone(),
                ready: ready.iter().filter(|(j, _)| *j == i).count(),
                target: w.count,
            })
            .collect()
    }

    /// Starts making warm sandboxes until every pool is full again.
    pub(super) fn refill_pools(&self) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        for (i, warm) in self.options.warm.iter().enumerate() {
            let have = self
                .pool
                .ready
                .lock()
                .unwrap()
                .iter()
                .filter(|(j, _)| *j == i)
                .count();
            let missing = {
                let mut filling = self.pool.filling.lock().unwrap();
                let in_flight = filling.entry(i).or_default();
                let missing = warm.count.saturating_sub(have + *in_flight);
                *in_flight += missing;
                missing
            };
            for _ in 0..missing {
                let rt = this.clone();
                tokio::spawn(async move { rt.make_warm(i).await });
            }
        }
    }

    async fn make_warm(self: Arc<Self>, i: usize) {
        let warm = &self.options.warm[i];
        let spec = SandboxSpec {
            id: format!("warm-{}", hex::encode(rand::random::<[u8; 8]>())),
            template: warm.template.clone(),
            cpu_count: warm.cpu_count,
            memory_mb: warm.memory_mb,
            disk_mb: warm.disk_mb,
            env_vars: BTreeMap::new(),
            envd_access_token: None,
            egress: EgressPolicy::default(),
            route: Route::default(),
            base_layer: None,
            auto_resume: false,
            start: Default::default(),
        };
        let mut made = self.boot(&spec).await;
        if let Ok(sb) = &made {
            if let Err(e) = sb.cgroup.set_cpu_weight(WARMING_CPU_WEIGHT) {
                tracing::debug!(error = %e, "warm sandbox keeps the normal CPU weight");
            }
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
        if self.pool.is_closed() {
            if let Ok(sb) = made {
                self.stop(&sb, false).await;
            }
            *self.pool.filling.lock().unwrap().entry(i).or_default() -= 1;
            return;
        }
        *self.pool.filling.lock().unwrap().entry(i).or_default() -= 1;
        match made {
            Ok(sandbox) => {
                let sandbox = Arc::new(sandbox);
                tracing::debug!(id = %spec.id, template = %spec.template, "warm sandbox ready");
                self.pool.ready.lock().unwrap().push((i, sandbox.clone()));
                self.watch_warm(sandbox);
            }
            // Not retried in a loop: the next hand-over asks again.
            Err(e) => {
                tracing::warn!(template = %spec.template, error = %e, "warm sandbox not made")
            }
        }
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
        let warm = self.pool.take(&self.options.warm, spec)?;
        self.refill_pools();
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
                    info: SandboxInfo {
                        id: spec.id.clone(),
                        started_at: chrono::Utc::now(),
                        ..warm.info
                    },
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
        tokio::time::timeout(INIT_TIMEOUT, self.post_init(warm, body.to_string()))
            .await
            .map_err(|_| {
                RuntimeError::Start(format!("envd's /init took over {INIT_TIMEOUT:?}"))
            })??;
        let dir = self.sandbox_dir(&spec.id);
        std::fs::rename(&warm.dir, &dir).map_err(super::io("rename a warm sandbox's directory"))?;
        let writable = self
            .layers()?
            .rename_writable(&warm.writable.id, &spec.id)?;
        super::persist::save(&dir, spec, None)?;
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
    fn a_warm_sandbox_fits_only_its_template_and_resources() {
        let warm = WarmSpec {
            template: "code-interpreter-v1".into(),
            count: 1,
            cpu_count: 2,
            memory_mb: 512,
            disk_mb: 2048,
        };
        // Token, env vars and egress are the caller's to set at hand-over.
        assert!(warm.fits(&spec("code-interpreter-v1", 512)));
        assert!(!warm.fits(&spec("base", 512)));
        assert!(!warm.fits(&spec("code-interpreter-v1", 1024)));
    }
}
