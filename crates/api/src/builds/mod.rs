//! Template builds: each step runs in a build sandbox (the same isolation,
//! network policy and limits as any sandbox, with the CPU and memory the
//! build asked for), and each step that changes files leaves a layer, a
//! snapshot of the build sandbox's files, cached under the key of
//! everything that made it ([`plan`]). A rebuild reuses the longest cached
//! prefix and runs only what follows; `force` re-runs a step and those
//! after it. A start command is started and its ready command waited for
//! at the end of the build, and the template's top layer is then taken
//! with the running processes where the node can checkpoint them, so that
//! its sandboxes start with the server already up.
//!
//! Owns: running builds and their logs. Must not touch: the runtime's
//! internals (it goes through [`crate::backend::SandboxBackend`] like every
//! handler) or HTTP routing.

pub mod files;
pub mod gc;
pub mod image;
pub mod plan;
mod steps;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sandbar_runtime::{EgressPolicy, Route, SandboxSpec};
use sandbar_store::{BuildLog, BuildRecord, BuildStatus, TemplateRecord};

use crate::AppState;
use plan::{Plan, Settings, StepKind};

/// Longest a whole build may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest a start command may take to pass its ready command, in a build
/// and at each create.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the ready command is tried.
const READY_EVERY: Duration = Duration::from_millis(50);
/// Disk of a build sandbox (its writable layer's quota), unless the build
/// asks for more free space.
const BUILD_DISK_MB: u64 = 10 * 1024;
/// Log lines a failed build's reason carries.
const TAIL: usize = 20;

/// The builds' shared parts: where uploaded files are kept, and how many
/// builds each team runs (a build sandbox is outside the team's sandbox
/// limits, so builds have a bound of their own).
pub struct Builds {
    files: Option<files::BuildFiles>,
    running: Arc<Mutex<BTreeMap<String, usize>>>,
    per_team: usize,
}

/// A team's place among its running builds, given back when dropped.
pub struct Admission {
    team: String,
    running: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap();
        if let Some(n) = running.get_mut(&self.team) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.team);
            }
        }
    }
}

impl Builds {
    /// `dir`: where `COPY` files are kept (`None`: builds are refused);
    /// `per_team`: builds a team may run at once.
    pub fn new(dir: Option<std::path::PathBuf>, per_team: usize) -> Self {
        Self {
            files: dir.map(files::BuildFiles::new),
            running: Arc::default(),
            per_team,
        }
    }

    pub fn files(&self) -> Option<&files::BuildFiles> {
        self.files.as_ref()
    }

    /// A place for one more build of `team`, unless it runs as many as it
    /// may.
    pub fn admit(&self, team: &str) -> Option<Admission> {
        let mut running = self.running.lock().unwrap();
        let n = running.entry(team.to_string()).or_default();
        if *n >= self.per_team {
            return None;
        }
        *n += 1;
        Some(Admission {
            team: team.to_string(),
            running: self.running.clone(),
        })
    }

    pub fn per_team(&self) -> usize {
        self.per_team
    }
}

/// Whether `name` is a built-in template a client may name (an image's
/// root filesystem is only ever used through the team's own templates).
pub fn is_builtin(state: &AppState, name: &str) -> bool {
    !image::is_image_rootfs(name) && state.backend.has_template(name)
}

/// Why a build failed: a message for the SDK's `BuildError` and the step
/// it names (`base`, a step number, or `finalize`).
#[derive(Debug, Clone)]
pub struct Failure {
    pub step: String,
    pub message: String,
}

impl Failure {
    fn at(step: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            message: message.into(),
        }
    }
}

/// What a finished build made.
#[derive(Debug, Clone)]
pub struct Made {
    pub base_template: String,
    pub layer: Option<String>,
    pub settings: Settings,
}

/// A build's log: kept in memory, written to the store in batches (a
/// step's output can be many thousand lines), and its tail for errors.
#[derive(Clone)]
pub struct Logger {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Default)]
struct LogInner {
    pending: Vec<BuildLog>,
    tail: Vec<BuildLog>,
    /// Partial lines of a step's output, by stream.
    partial: BTreeMap<&'static str, String>,
}

impl Logger {
    fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(LogInner::default())),
        }
    }

    pub fn line(&self, level: &str, step: Option<&str>, message: impl Into<String>) {
        let entry = BuildLog {
            at: Utc::now(),
            level: level.to_string(),
            step: step.map(str::to_string),
            message: message.into(),
        };
        tracing::debug!(target: "sandbar::build", step = step.unwrap_or(""), "{}", entry.message);
        let mut inner = self.inner.lock().unwrap();
        inner.tail.push(entry.clone());
        if inner.tail.len() > TAIL {
            inner.tail.remove(0);
        }
        inner.pending.push(entry);
    }

    /// Output of a step's command: split into lines as they complete.
    pub fn output(&self, stream: &'static str, step: &str, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<String> = {
            let mut inner = self.inner.lock().unwrap();
            let buf = inner.partial.entry(stream).or_default();
            buf.push_str(&text);
            let mut out = Vec::new();
            while let Some(i) = buf.find('\n') {
                let line: String = buf.drain(..=i).collect();
                out.push(line.trim_end_matches(['\n', '\r']).to_string());
            }
            out
        };
        for l in lines {
            self.line("info", Some(step), l);
        }
    }

    /// Ends a step's output: what is left of a last line without newline.
    pub fn end_output(&self, step: &str) {
        let rest: Vec<String> = {
            let mut inner = self.inner.lock().unwrap();
            std::mem::take(&mut inner.partial)
                .into_values()
                .filter(|s| !s.is_empty())
                .collect()
        };
        for l in rest {
            self.line("info", Some(step), l);
        }
    }

    fn take(&self) -> Vec<BuildLog> {
        std::mem::take(&mut self.inner.lock().unwrap().pending)
    }

    /// Lines a write could not store go back in front, for the next one.
    fn put_back(&self, mut lines: Vec<BuildLog>) {
        let mut inner = self.inner.lock().unwrap();
        lines.append(&mut inner.pending);
        inner.pending = lines;
    }

    fn tail(&self) -> Vec<BuildLog> {
        self.inner.lock().unwrap().tail.clone()
    }
}

/// Writes a logger's lines to the store every 200 ms until `stop`, then
/// the rest.
async fn flush_loop(
    state: AppState,
    build_id: String,
    log: Logger,
    written: Arc<tokio::sync::Mutex<u64>>,
    stop: Arc<tokio::sync::Notify>,
) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => false,
            _ = stop.notified() => true,
        };
        flush(&state, &build_id, &log, &written).await;
        if stopping {
            return;
        }
    }
}

/// Stores what the logger holds, one writer at a time (the count of lines
/// written numbers them); a failed write keeps the lines for the next.
async fn flush(state: &AppState, build_id: &str, log: &Logger, written: &tokio::sync::Mutex<u64>) {
    let mut written = written.lock().await;
    let lines = log.take();
    if lines.is_empty() {
        return;
    }
    match state
        .store
        .append_build_logs(build_id, *written, &lines)
        .await
    {
        Ok(()) => *written += lines.len() as u64,
        Err(e) => {
            tracing::warn!(build = %build_id, error = %e, "writing build logs (kept for the next write)");
            log.put_back(lines);
        }
    }
}

/// Runs a build to its end (in the background: the SDK polls its status)
/// and records the result.
pub fn spawn(
    state: AppState,
    template: TemplateRecord,
    build: BuildRecord,
    plan: Plan,
    admission: Admission,
) {
    tokio::spawn(async move {
        let _admission = admission;
        let log = Logger::new();
        let written = Arc::new(tokio::sync::Mutex::new(0u64));
        let stop = Arc::new(tokio::sync::Notify::new());
        let flusher = tokio::spawn(flush_loop(
            state.clone(),
            build.id.clone(),
            log.clone(),
            written.clone(),
            stop.clone(),
        ));
        let started = std::time::Instant::now();
        log.line(
            "info",
            None,
            format!("Building template {} (build {})", template.name, build.id),
        );
        let mut sandbox = BuildSandbox::default();
        // The layers and root filesystem the build makes and uses, kept
        // from the collection until its result is recorded.
        let mut leases = Vec::new();
        let result = match tokio::time::timeout(
            BUILD_TIMEOUT,
            execute(
                &state,
                &template,
                &build,
                &plan,
                &log,
                &mut sandbox,
                &mut leases,
            ),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Failure::at(
                "finalize",
                format!(
                    "the build did not finish within {} s",
                    BUILD_TIMEOUT.as_secs()
                ),
            )),
        };
        sandbox.remove(&state).await;
        let secs = started.elapsed().as_secs_f64();
        let recorded = match &result {
            Ok(made) => {
                log.line("info", None, format!("Build finished in {secs:.2} s"));
                flush(&state, &build.id, &log, &written).await;
                let config = serde_json::to_value(&made.settings).expect("settings serialize");
                state
                    .store
                    .finish_build(
                        &build.id,
                        &made.base_template,
                        made.layer.as_deref(),
                        &config,
                    )
                    .await
            }
            Err(f) => {
                log.line("error", Some(&f.step), f.message.clone());
                flush(&state, &build.id, &log, &written).await;
                let tail: Vec<_> = log
                    .tail()
                    .into_iter()
                    .map(|l| crate::routes::templates::log_entry(&l))
                    .collect();
                let reason = serde_json::json!({
                    "message": f.message,
                    "step": f.step,
                    "logEntries": tail,
                });
                state.store.fail_build(&build.id, &reason).await
            }
        };
        stop.notify_one();
        let _ = flusher.await;
        flush(&state, &build.id, &log, &written).await;
        drop(leases);
        if let Err(e) = recorded {
            tracing::error!(build = %build.id, error = %e, "recording a build's result");
        }
        match &result {
            Ok(made) => tracing::info!(
                template = %template.name, build = %build.id,
                layer = made.layer.as_deref().unwrap_or(""), secs = format!("{secs:.2}"),
                "template built"
            ),
            Err(f) => tracing::info!(
                template = %template.name, build = %build.id, step = %f.step,
                message = %f.message, "template build failed"
            ),
        }
        // The layers a replaced build or a failed one no longer needs.
        crate::routes::persistence::collect_unused_layers(&state).await;
    });
}

/// The sandbox a build runs its steps in, made when the first step that
/// is not cached needs it.
#[derive(Default)]
pub(crate) struct BuildSandbox {
    id: Option<String>,
    token: String,
}

impl BuildSandbox {
    async fn remove(&mut self, state: &AppState) {
        if let Some(id) = self.id.take() {
            if let Err(e) = state.backend.kill(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "removing a build sandbox");
            }
        }
    }
}

/// Where a build starts: a built-in root filesystem and, for a template
/// of the team's, the layer and settings of its build.
struct Base {
    template: String,
    layer: Option<String>,
    settings: Settings,
    /// What exactly it is, for the cache key.
    identity: String,
    /// A script run as root before the first step (what an image needs to
    /// be a sandbox's root), cached as a step.
    prepare: Option<String>,
    /// Keeps the root filesystem from the sweep while the build runs.
    lease: Option<crate::leases::Lease>,
}

async fn resolve_base(
    state: &AppState,
    team: &TemplateRecord,
    plan: &Plan,
    log: &Logger,
) -> Result<Base, Failure> {
    let name = match &plan.from {
        plan::From::Template(name) => name.clone(),
        plan::From::Image { reference, .. } => match steps::builtin_for_image(reference) {
            Some(t) => {
                log.line(
                    "info",
                    Some("base"),
                    format!("{reference} is the built-in template '{t}'"),
                );
                t.to_string()
            }
            None => return steps::image_base(state, team, plan, log).await,
        },
    };
    if crate::builds::is_builtin(state, &name) {
        let version = state
            .backend
            .template_version(&name)
            .unwrap_or_else(|| name.clone());
        return Ok(Base {
            template: name,
            layer: None,
            settings: Settings::default(),
            identity: format!("builtin:{version}"),
            prepare: None,
            lease: None,
        });
    }
    let (tname, tag) =
        plan::name_and_tag(&name, &team.team_id).map_err(|e| Failure::at("base", e))?;
    let parent = state
        .store
        .template_by_name(&team.team_id, &tname)
        .await
        .map_err(|e| Failure::at("base", e.to_string()))?
        .ok_or_else(|| Failure::at("base", format!("template '{name}' not found")))?;
    let tag = tag.unwrap_or_else(|| "default".into());
    let build = state
        .store
        .tagged_build(&parent.id, &tag)
        .await
        .map_err(|e| Failure::at("base", e.to_string()))?
        .filter(|b| b.status == BuildStatus::Ready)
        .ok_or_else(|| {
            Failure::at(
                "base",
                format!("template '{name}' has no ready build tagged '{tag}'"),
            )
        })?;
    let base_template = build
        .base_template
        .clone()
        .ok_or_else(|| Failure::at("base", format!("template '{name}' has no root filesystem")))?;
    if build.node != state.config.node {
        return Err(Failure::at(
            "base",
            format!(
                "template '{name}' was built on node '{}', not this one",
                build.node
            ),
        ));
    }
    let settings: Settings = build
        .config
        .clone()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default();
    Ok(Base {
        template: base_template,
        identity: format!(
            "build:{}:{}",
            build.id,
            build.layer.as_deref().unwrap_or("")
        ),
        layer: build.layer,
        settings,
        prepare: None,
        lease: None,
    })
}

async fn execute(
    state: &AppState,
    template: &TemplateRecord,
    build: &BuildRecord,
    plan: &Plan,
    log: &Logger,
    sandbox: &mut BuildSandbox,
    leases: &mut Vec<crate::leases::Lease>,
) -> Result<Made, Failure> {
    let mut base = resolve_base(state, template, plan, log).await?;
    leases.extend(base.lease.take());
    let node = state.config.node.clone();
    let total = plan.steps.len();
    let mut key = plan::base_key(&template.team_id, &base.identity);
    let mut layer = base.layer.clone();
    let mut settings = base.settings.clone();
    let mut forced = plan.force;
    if let Some(script) = &base.prepare {
        let prepare = StepKind::Run {
            cmd: script.clone(),
            user: Some("root".into()),
        };
        key = plan::step_key(&key, &prepare);
        match cached_layer(state, &node, &key, &base.template).await {
            Some(cached) if !forced => {
                log.line(
                    "info",
                    Some("base"),
                    "CACHED preparing the image for sandboxes",
                );
                layer = cached;
            }
            _ => {
                log.line(
                    "info",
                    Some("base"),
                    "Preparing the image for sandboxes (user, home, sudo)",
                );
                let id = ensure_sandbox(state, build, &base.template, layer.as_deref(), sandbox)
                    .await
                    .map_err(|m| Failure::at("base", m))?;
                let step = plan::Step {
                    number: 0,
                    kind: prepare,
                    force: false,
                };
                let root = Settings {
                    workdir: "/".into(),
                    ..base.settings.clone()
                };
                steps::run_step(
                    state,
                    &id,
                    &sandbox.token,
                    &template.team_id,
                    &step,
                    &root,
                    log,
                )
                .await
                .map_err(|m| Failure::at("base", format!("preparing the image: {m}")))?;
                let snap = snapshot_leased(state, &id, false, leases)
                    .await
                    .map_err(|e| Failure::at("base", format!("saving the prepared image: {e}")))?;
                layer = Some(snap);
                if let Err(e) = state
                    .store
                    .cache_step(&node, &key, layer.as_deref().unwrap_or(""), &base.template)
                    .await
                {
                    tracing::warn!(build = %build.id, error = %e, "caching the prepared image");
                }
            }
        }
    }
    for step in &plan.steps {
        key = plan::step_key(&key, &step.kind);
        let number = step.number.to_string();
        forced |= step.force;
        let desc = step.kind.describe();
        if !forced {
            if let Some(cached) = cached_layer(state, &node, &key, &base.template).await {
                log.line(
                    "info",
                    Some(&number),
                    format!("CACHED [{number}/{total}] {desc}"),
                );
                layer = cached;
                settings = settings.after(&step.kind);
                continue;
            }
        }
        // A miss: this step and every one after it run.
        forced = true;
        log.line("info", Some(&number), format!("[{number}/{total}] {desc}"));
        if step.kind.touches_files() {
            let id = ensure_sandbox(state, build, &base.template, layer.as_deref(), sandbox)
                .await
                .map_err(|m| Failure::at(number.clone(), m))?;
            steps::run_step(
                state,
                &id,
                &sandbox.token,
                &template.team_id,
                step,
                &settings,
                log,
            )
            .await
            .map_err(|m| Failure::at(number.clone(), format!("step {number}: {m}")))?;
            let snap = snapshot_leased(state, &id, false, leases)
                .await
                .map_err(|e| {
                    Failure::at(number.clone(), format!("saving the step's files: {e}"))
                })?;
            layer = Some(snap);
        }
        settings = settings.after(&step.kind);
        if let Err(e) = state
            .store
            .cache_step(&node, &key, layer.as_deref().unwrap_or(""), &base.template)
            .await
        {
            tracing::warn!(build = %build.id, error = %e, "caching a step");
        }
    }
    if plan.start_cmd.is_some() {
        settings.start_cmd = plan.start_cmd.clone();
        settings.ready_cmd = plan.ready_cmd.clone();
    } else if plan.ready_cmd.is_some() {
        settings.ready_cmd = plan.ready_cmd.clone();
    }
    if let Some(start) = settings.start_cmd.clone() {
        key = plan::start_key(&key, &start, settings.ready_cmd.as_deref());
        let cached = if forced {
            None
        } else {
            cached_layer(state, &node, &key, &base.template).await
        };
        match cached {
            Some(l) => {
                log.line(
                    "info",
                    Some("finalize"),
                    format!("CACHED start command: {start}"),
                );
                layer = l;
            }
            None => {
                let id = ensure_sandbox(state, build, &base.template, layer.as_deref(), sandbox)
                    .await
                    .map_err(|m| Failure::at("finalize", m))?;
                layer = Some(
                    steps::start_and_snapshot(state, &id, &sandbox.token, &settings, log, leases)
                        .await
                        .map_err(|m| Failure::at("finalize", m))?,
                );
                if let Err(e) = state
                    .store
                    .cache_step(&node, &key, layer.as_deref().unwrap_or(""), &base.template)
                    .await
                {
                    tracing::warn!(build = %build.id, error = %e, "caching the start layer");
                }
            }
        }
    }
    Ok(Made {
        base_template: base.template,
        layer,
        settings,
    })
}

/// A files-only (or, with `memory`, processes too) snapshot of the build
/// sandbox, its layer leased until the build is recorded.
pub(crate) async fn snapshot_leased(
    state: &AppState,
    id: &str,
    memory: bool,
    leases: &mut Vec<crate::leases::Lease>,
) -> Result<String, sandbar_runtime::RuntimeError> {
    let _making = state.leases.making().await;
    let snap = state.backend.snapshot(id, memory).await?;
    leases.push(state.leases.hold(&snap.layer));
    Ok(snap.layer)
}

/// The cached layer of `key`, if it is still there (`Some(None)`: the
/// step left the root filesystem unchanged).
async fn cached_layer(
    state: &AppState,
    node: &str,
    key: &str,
    base_template: &str,
) -> Option<Option<String>> {
    let (layer, template) = state.store.cached_step(node, key).await.ok()??;
    if template != base_template {
        return None;
    }
    if layer.is_empty() {
        return Some(None);
    }
    state.backend.has_layer(&layer).then_some(Some(layer))
}

/// The build sandbox, booted on `layer` when there is none yet.
async fn ensure_sandbox(
    state: &AppState,
    build: &BuildRecord,
    base_template: &str,
    layer: Option<&str>,
    sandbox: &mut BuildSandbox,
) -> Result<String, String> {
    if let Some(id) = &sandbox.id {
        return Ok(id.clone());
    }
    let id = crate::routes::sandboxes::new_sandbox_id();
    let token = crate::routes::sandboxes::new_token();
    let spec = SandboxSpec {
        id: id.clone(),
        template: base_template.to_string(),
        cpu_count: build.cpu_count,
        memory_mb: build.memory_mb,
        disk_mb: build.disk_mb.max(BUILD_DISK_MB),
        env_vars: BTreeMap::new(),
        envd_access_token: Some(token.clone()),
        egress: EgressPolicy::default(),
        route: Route {
            // Nobody outside reaches a build sandbox's ports.
            traffic_access_token: Some(crate::routes::sandboxes::new_token()),
            mask_request_host: None,
        },
        base_layer: layer.map(str::to_string),
        auto_resume: false,
        start: Default::default(),
    };
    state
        .backend
        .create(spec)
        .await
        .map_err(|e| format!("starting the build sandbox: {e}"))?;
    tracing::debug!(sandbox = %id, build = %build.id, "build sandbox started");
    sandbox.id = Some(id.clone());
    sandbox.token = token;
    Ok(id)
}

/// What the runtime needs to start a sandbox of a ready build: the
/// settings, as a spec's env vars and start settings.
pub fn settings_of(build: &BuildRecord) -> Settings {
    build
        .config
        .clone()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default()
}

/// Waits until `ready_cmd` passes in sandbox `id` (run as the template's
/// user in its workdir, every [`READY_EVERY`]), at most `within`.
pub async fn wait_ready(
    state: &AppState,
    id: &str,
    token: Option<&str>,
    settings: &Settings,
    ready_cmd: &str,
    within: Duration,
) -> Result<u32, String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut tries = 0;
    loop {
        tries += 1;
        let code = steps::run_quiet(state, id, token, ready_cmd, settings).await;
        if code == Ok(0) {
            return Ok(tries);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the ready command `{ready_cmd}` did not pass within {} s ({tries} tries; last: {})",
                within.as_secs(),
                match code {
                    Ok(c) => format!("exit code {c}"),
                    Err(e) => e,
                }
            ));
        }
        tokio::time::sleep(READY_EVERY).await;
    }
}

/// The files each `COPY` step of the plan needs: its number and the hash.
pub fn copy_hashes(plan: &Plan) -> Vec<(usize, String)> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Copy { files_hash, .. } => Some((s.number, files_hash.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_runs_at_most_its_share_of_builds() {
        let b = Builds::new(None, 2);
        let one = b.admit("t1").unwrap();
        let _two = b.admit("t1").unwrap();
        assert!(b.admit("t1").is_none(), "a third waits");
        assert!(b.admit("t2").is_some(), "another team is not held up");
        drop(one);
        assert!(b.admit("t1").is_some(), "a place frees when a build ends");
    }
}
