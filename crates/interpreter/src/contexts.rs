//! Contexts: each a kernel of one language with its own state and working
//! directory, running one piece of code at a time. Also the per-language
//! default contexts that `/execute` uses when no context is named.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::kernel::{Kernel, KernelError, KernelEvent};
use crate::kernelspec::{KernelSpec, KernelSpecs};
use crate::output::{kernel_error, Line, ResultData};
use crate::{envvars, sandbox_env};

/// After a client went away mid-run and the kernel was interrupted, how long
/// it may take to stop before it is declared hung and replaced.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for the shell reply once the kernel reported idle (the
/// two travel on different sockets).
const REPLY_GRACE: Duration = Duration::from_secs(2);
/// A silent run (setting env vars) that takes longer is abandoned.
const QUIET_RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a run with no output writes a keepalive line.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// An error for the HTTP layer: a status and a plain-text message.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Internal(String),
}

/// What `/contexts` answers with.
#[derive(Debug, Clone, Serialize)]
pub struct ContextInfo {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

pub struct Context {
    pub info: ContextInfo,
    spec: KernelSpec,
    run_dir: PathBuf,
    /// Held by the run in progress (and by a kernel (re)start); later runs
    /// queue on it in arrival order.
    turn: tokio::sync::Mutex<()>,
    kernel: Mutex<Option<Arc<Kernel>>>,
    /// Set while a restart kills the kernel, so the run it cuts short says so.
    restarting: AtomicBool,
    removed: AtomicBool,
    /// The last start failed (the next run tries again and reports why):
    /// readiness has nothing left to wait for.
    start_failed: AtomicBool,
}

/// How a run ended, as far as the kernel is concerned.
enum Outcome {
    Finished,
    /// The kernel exited (the error line went out).
    Died,
    /// The kernel ignored an interrupt: it must be replaced.
    Hung,
}

impl Context {
    fn current_kernel(&self) -> Option<Arc<Kernel>> {
        self.kernel.lock().unwrap().clone()
    }

    /// The live kernel, started if there is none (or it died). Call with
    /// the turn held.
    async fn ensure_kernel(&self) -> Result<Arc<Kernel>, KernelError> {
        if let Some(k) = self.current_kernel().filter(|k| k.exited().is_none()) {
            return Ok(k);
        }
        if self.removed.load(Ordering::SeqCst) {
            return Err(KernelError::Gone("the context was removed".into()));
        }
        *self.kernel.lock().unwrap() = None;
        let started = Instant::now();
        let cwd = PathBuf::from(&self.info.cwd);
        let kernel = match Kernel::start(&self.spec, &cwd, &self.run_dir).await {
            Ok(k) => k,
            Err(e) => {
                self.start_failed.store(true, Ordering::SeqCst);
                tracing::warn!(context = %self.info.id, kernel = %self.spec.name, error = %e, "kernel did not start");
                return Err(e);
            }
        };
        self.start_failed.store(false, Ordering::SeqCst);
        let kernel = Arc::new(kernel);
        tracing::info!(
            context = %self.info.id,
            kernel = %kernel.name,
            ms = started.elapsed().as_millis() as u64,
            "kernel ready"
        );
        *self.kernel.lock().unwrap() = Some(kernel.clone());
        Ok(kernel)
    }

    /// Starts a kernel in the background unless one is live.
    fn warm_up(self: &Arc<Self>) -> tokio::task::JoinHandle<Result<(), KernelError>> {
        let ctx = self.clone();
        tokio::spawn(async move {
            let _turn = ctx.turn.lock().await;
            ctx.ensure_kernel().await.map(|_| ())
        })
    }

    /// A fresh kernel: state is gone, a run in progress ends with an error.
    pub async fn restart(self: &Arc<Self>) -> Result<(), ContextError> {
        self.restarting.store(true, Ordering::SeqCst);
        if let Some(k) = self.current_kernel() {
            k.kill().await;
        }
        let _turn = self.turn.lock().await;
        self.restarting.store(false, Ordering::SeqCst);
        *self.kernel.lock().unwrap() = None;
        self.ensure_kernel()
            .await
            .map(|_| ())
            .map_err(|e| ContextError::Internal(format!("restarting the context: {e}")))
    }

    async fn shut_down(&self) {
        self.removed.store(true, Ordering::SeqCst);
        self.restarting.store(true, Ordering::SeqCst);
        let kernel = self.kernel.lock().unwrap().take();
        if let Some(k) = kernel {
            k.kill().await;
        }
    }

    /// Runs `code`, writing NDJSON lines to `out`, `end_of_execution` last.
    pub async fn run(
        self: Arc<Self>,
        code: String,
        env: BTreeMap<String, String>,
        inherited: Arc<BTreeMap<String, String>>,
        access_token: Option<String>,
        out: mpsc::Sender<Bytes>,
    ) {
        let turn = self.turn.lock().await;
        let kernel = match self.ensure_kernel().await {
            Ok(k) => k,
            Err(e) => {
                emit(&out, Line::error("KernelStartFailed", e.to_string())).await;
                emit(&out, Line::EndOfExecution).await;
                return;
            }
        };
        let language = self.info.language.as_str();
        let globals = self
            .sync_sandbox_env(&kernel, &inherited, access_token.as_deref())
            .await;
        if !env.is_empty() && !envvars::supported(language) {
            tracing::warn!(
                language,
                "per-call env vars are not supported for this language"
            );
        }
        if let Some(set) = envvars::set_code(language, &env) {
            self.run_quiet(&kernel, &set).await;
        }
        let outcome = self.stream(&kernel, &code, &out).await;
        if matches!(outcome, Outcome::Finished) {
            if let Some(restore) = envvars::restore_code(language, env.keys(), &globals) {
                self.run_quiet(&kernel, &restore).await;
            }
        }
        emit(&out, Line::EndOfExecution).await;
        drop(out);
        match outcome {
            Outcome::Finished => {}
            Outcome::Died | Outcome::Hung => {
                if matches!(outcome, Outcome::Hung) {
                    tracing::warn!(context = %self.info.id, "kernel ignored an interrupt; replacing it");
                    kernel.kill().await;
                }
                drop(turn);
                // A fresh kernel right away, so the next run does not wait.
                if !self.restarting.load(Ordering::SeqCst) {
                    drop(self.warm_up());
                }
            }
        }
    }

    /// Gives the kernel the sandbox-wide env vars set since it started (once
    /// per kernel); returns the values per-call vars are reset to.
    async fn sync_sandbox_env(
        &self,
        kernel: &Kernel,
        inherited: &Arc<BTreeMap<String, String>>,
        access_token: Option<&str>,
    ) -> Arc<BTreeMap<String, String>> {
        if let Some(env) = kernel.sandbox_env.lock().unwrap().clone() {
            return env;
        }
        let sandbox = match sandbox_env::fetch(access_token).await {
            Ok(vars) => vars,
            Err(e) => {
                // Not cached: a later run (with a token, or once envd
                // answers) tries again.
                tracing::debug!(error = %e, "sandbox env vars not available");
                return inherited.clone();
            }
        };
        // Java gets every sandbox-wide variable, not only those that changed
        // since the kernel started: they become system properties too,
        // which the kernel's start did not make them.
        let every = self.info.language == "java";
        let changed: BTreeMap<String, String> = sandbox
            .iter()
            .filter(|(k, v)| envvars::valid_name(k) && (every || inherited.get(*k) != Some(*v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(set) = envvars::set_code(&self.info.language, &changed) {
            self.run_quiet(kernel, &set).await;
        }
        let mut merged = (**inherited).clone();
        merged.extend(changed);
        let merged = Arc::new(merged);
        *kernel.sandbox_env.lock().unwrap() = Some(merged.clone());
        merged
    }

    /// Forwards what the kernel says about one run until it is over.
    async fn stream(&self, kernel: &Kernel, code: &str, out: &mpsc::Sender<Bytes>) -> Outcome {
        let (msg_id, mut events) = match kernel.execute(code, false).await {
            Ok(x) => x,
            Err(e) => {
                emit(out, self.death(&e.to_string())).await;
                return Outcome::Died;
            }
        };
        let (mut idle, mut replied, mut errored, mut client_gone) = (false, false, false, false);
        let mut has_result = false;
        let mut interrupt_deadline: Option<Instant> = None;
        let mut reply_deadline: Option<Instant> = None;
        // Set once the run is over but for a result the kernel may still
        // publish (see `late_result`).
        let mut late_deadline: Option<Instant> = None;
        let late_result = self.spec.late_result();
        let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
        let outcome = loop {
            tokio::select! {
                event = events.recv() => {
                    let event = event.unwrap_or_else(|| KernelEvent::Died("its channels closed".into()));
                    match event {
                        KernelEvent::Died(how) => {
                            emit(out, self.death(&how)).await;
                            break Outcome::Died;
                        }
                        KernelEvent::Iopub { msg_type, content, date } => {
                            if msg_type == "status" {
                                if content["execution_state"] == "idle" {
                                    idle = true;
                                    reply_deadline = Some(Instant::now() + REPLY_GRACE);
                                }
                            } else {
                                has_result |= msg_type == "execute_result";
                                if let Some(line) = iopub_line(&msg_type, content, date, &mut errored) {
                                    emit(out, line).await;
                                }
                            }
                        }
                        KernelEvent::Reply { content } => {
                            replied = true;
                            if let Some(line) = reply_line(&content, &mut errored) {
                                emit(out, line).await;
                            }
                        }
                    }
                    if idle && replied {
                        match late_result {
                            Some(wait) if !has_result && !errored => {
                                late_deadline.get_or_insert_with(|| Instant::now() + wait);
                            }
                            _ => break Outcome::Finished,
                        }
                    }
                }
                _ = out.closed(), if !client_gone => {
                    // The client gave up (its timeout) or vanished: stop the
                    // code, so the next run does not queue behind it.
                    client_gone = true;
                    tracing::info!(context = %self.info.id, "client went away mid-run; interrupting");
                    kernel.interrupt().await;
                    interrupt_deadline = Some(Instant::now() + INTERRUPT_GRACE);
                }
                _ = sleep_until(interrupt_deadline) => break Outcome::Hung,
                _ = sleep_until(late_deadline) => break Outcome::Finished,
                _ = sleep_until(reply_deadline), if late_deadline.is_none() => break Outcome::Finished,
                _ = keepalive.tick(), if !client_gone => emit(out, Line::Keepalive).await,
            }
        };
        kernel.forget(&msg_id);
        outcome
    }

    fn death(&self, how: &str) -> Line {
        if self.restarting.load(Ordering::SeqCst) {
            Line::error(
                "ContextRestarting",
                "the context was restarted (or removed) while this code ran",
            )
        } else {
            Line::error(
                "KernelDied",
                format!(
                    "the {} kernel died ({how}); its state is lost and a new kernel is starting",
                    self.info.language
                ),
            )
        }
    }

    /// Runs code whose output nobody reads (env var set-up); failures are logged.
    async fn run_quiet(&self, kernel: &Kernel, code: &str) {
        let (msg_id, mut events) = match kernel.execute(code, true).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(context = %self.info.id, error = %e, "env var set-up not sent");
                return;
            }
        };
        let waited = tokio::time::timeout(QUIET_RUN_TIMEOUT, async {
            let (mut idle, mut replied) = (false, false);
            while let Some(event) = events.recv().await {
                match event {
                    KernelEvent::Reply { content } => {
                        replied = true;
                        if content["status"] != "ok" {
                            tracing::warn!(context = %self.info.id, reply = %content, "env var set-up failed");
                        }
                    }
                    KernelEvent::Iopub { msg_type, content, .. } => {
                        idle |= msg_type == "status" && content["execution_state"] == "idle";
                    }
                    KernelEvent::Died(_) => return,
                }
                if idle && replied {
                    return;
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(context = %self.info.id, "env var set-up timed out");
        }
        kernel.forget(&msg_id);
    }
}

/// The line an iopub message becomes, if any.
fn iopub_line(
    msg_type: &str,
    mut content: Value,
    date: String,
    errored: &mut bool,
) -> Option<Line> {
    let bundle = |content: &mut Value| match content.get_mut("data").map(Value::take) {
        Some(Value::Object(map)) => map,
        _ => Default::default(),
    };
    match msg_type {
        "stream" => {
            let text = content["text"].as_str().unwrap_or_default().to_string();
            Some(if content["name"] == "stderr" {
                Line::Stderr {
                    text,
                    timestamp: date,
                }
            } else {
                Line::Stdout {
                    text,
                    timestamp: date,
                }
            })
        }
        "execute_result" => Some(Line::Result(Box::new(ResultData::from_bundle(
            bundle(&mut content),
            true,
        )))),
        "display_data" => Some(Line::Result(Box::new(ResultData::from_bundle(
            bundle(&mut content),
            false,
        )))),
        "error" if !*errored => {
            *errored = true;
            Some(kernel_error(&content))
        }
        "execute_input" => content["execution_count"]
            .as_u64()
            .map(|n| Line::NumberOfExecutions { execution_count: n }),
        _ => None,
    }
}

/// The line a shell reply becomes: kernels that report failures only in
/// the reply (bash_kernel's exit codes) still yield an error.
fn reply_line(content: &Value, errored: &mut bool) -> Option<Line> {
    match content["status"].as_str() {
        Some("error") if !*errored => {
            *errored = true;
            Some(kernel_error(content))
        }
        Some("aborted" | "abort") => Some(Line::error(
            "ExecutionAborted",
            "the kernel skipped this code because code queued before it failed",
        )),
        _ => None,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn emit(out: &mpsc::Sender<Bytes>, line: Line) {
    // A closed channel means the client left; the run still finishes.
    let _ = out.send(line.to_ndjson()).await;
}

/// The languages whose default contexts start with the server.
pub const DEFAULT_LANGUAGES: [&str; 2] = ["python", "javascript"];

/// Every context, and the default one of each language.
pub struct Contexts {
    specs: KernelSpecs,
    run_dir: PathBuf,
    default_cwd: String,
    /// The environment kernels inherit: per-call env vars are reset to it.
    pub globals: Arc<BTreeMap<String, String>>,
    all: Mutex<Vec<Arc<Context>>>,
    defaults: tokio::sync::Mutex<HashMap<String, String>>,
}

impl Contexts {
    pub fn new(specs: KernelSpecs, run_dir: PathBuf, default_cwd: String) -> Self {
        Self {
            specs,
            run_dir,
            default_cwd,
            globals: Arc::new(std::env::vars().collect()),
            all: Mutex::default(),
            defaults: tokio::sync::Mutex::default(),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Context>> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.info.id == id)
            .cloned()
    }

    pub fn list(&self) -> Vec<ContextInfo> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.info.clone())
            .collect()
    }

    /// A new context. With `wait`, returns once its kernel answers (or
    /// fails to start); otherwise the kernel starts in the background.
    pub async fn create(
        &self,
        language: &str,
        cwd: Option<&str>,
        wait: bool,
    ) -> Result<Arc<Context>, ContextError> {
        let spec = self.specs.for_language(language).cloned().ok_or_else(|| {
            ContextError::BadRequest(format!(
                "no kernel for language '{language}' in this sandbox; available: {}",
                self.specs.languages().join(", ")
            ))
        })?;
        let cwd = cwd
            .filter(|c| !c.trim().is_empty())
            .unwrap_or(&self.default_cwd)
            .to_string();
        if !std::path::Path::new(&cwd).is_dir() {
            return Err(ContextError::BadRequest(format!(
                "cwd '{cwd}' is not a directory in the sandbox"
            )));
        }
        let ctx = Arc::new(Context {
            info: ContextInfo {
                id: uuid::Uuid::new_v4().to_string(),
                language: language.to_string(),
                cwd,
            },
            spec,
            run_dir: self.run_dir.clone(),
            turn: tokio::sync::Mutex::new(()),
            kernel: Mutex::new(None),
            restarting: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            start_failed: AtomicBool::new(false),
        });
        self.all.lock().unwrap().push(ctx.clone());
        let starting = ctx.warm_up();
        if wait {
            let started = starting
                .await
                .unwrap_or_else(|e| Err(KernelError::Gone(format!("the start task failed: {e}"))));
            if let Err(e) = started {
                self.remove(&ctx.info.id).await;
                return Err(ContextError::Internal(format!(
                    "starting the {language} kernel: {e}"
                )));
            }
        }
        Ok(ctx)
    }

    /// The default context of `language`, made on first use. TypeScript
    /// shares JavaScript's when one kernel serves both (Deno's does): one
    /// kernel instead of two, a few hundred MiB in a small sandbox.
    pub async fn default_for(&self, language: &str) -> Result<Arc<Context>, ContextError> {
        let key = self.default_key(language);
        let mut defaults = self.defaults.lock().await;
        if let Some(ctx) = defaults.get(key).and_then(|id| self.get(id)) {
            return Ok(ctx);
        }
        let ctx = self.create(key, None, false).await?;
        defaults.insert(key.to_string(), ctx.info.id.clone());
        Ok(ctx)
    }

    fn default_key<'a>(&self, language: &'a str) -> &'a str {
        let same_kernel = |a: &str, b: &str| {
            matches!((self.specs.for_language(a), self.specs.for_language(b)),
                (Some(x), Some(y)) if x.name == y.name)
        };
        if language == "typescript" && same_kernel("typescript", "javascript") {
            "javascript"
        } else {
            language
        }
    }

    /// Starts the default contexts of [`DEFAULT_LANGUAGES`] that have a
    /// kernel here, in the background, as E2B's server does at start: the
    /// SDKs list them right after create, and the first run of each does
    /// not wait for a kernel to boot.
    pub async fn start_defaults(&self) {
        for language in DEFAULT_LANGUAGES {
            if !self.specs.has(language) {
                tracing::info!(language, "no kernel for a default language");
                continue;
            }
            if let Err(e) = self.default_for(language).await {
                tracing::warn!(language, error = %e, "no default context");
            }
        }
    }

    /// Whether every default context's kernel has started (or failed to,
    /// which the first run reports): then a first run waits on no start.
    pub async fn default_ready(&self) -> bool {
        let defaults = self.defaults.lock().await;
        DEFAULT_LANGUAGES
            .iter()
            .filter(|l| self.specs.has(l))
            .all(|l| {
                defaults
                    .get(*l)
                    .and_then(|id| self.get(id))
                    .is_some_and(|ctx| {
                        ctx.start_failed.load(Ordering::SeqCst)
                            || ctx.current_kernel().is_some_and(|k| k.exited().is_none())
                    })
            })
    }

    /// Removes a context and kills its kernel; false if there was none.
    pub async fn remove(&self, id: &str) -> bool {
        let ctx = {
            let mut all = self.all.lock().unwrap();
            let Some(pos) = all.iter().position(|c| c.info.id == id) else {
                return false;
            };
            all.remove(pos)
        };
        ctx.shut_down().await;
        true
    }

    /// Kills every kernel (the server is stopping).
    pub async fn shut_down(&self) {
        let all = std::mem::take(&mut *self.all.lock().unwrap());
        for ctx in all {
            ctx.shut_down().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn iopub_messages_become_lines() {
        let mut errored = false;
        let line = iopub_line(
            "stream",
            json!({"name": "stderr", "text": "oops\n"}),
            "t".into(),
            &mut errored,
        );
        assert_eq!(
            line,
            Some(Line::Stderr {
                text: "oops\n".into(),
                timestamp: "t".into()
            })
        );
        let line = iopub_line(
            "display_data",
            json!({"data": {"text/plain": "<Figure>", "image/png": "iVBO"}, "metadata": {}}),
            "t".into(),
            &mut errored,
        );
        let Some(Line::Result(r)) = line else {
            panic!("{line:?}")
        };
        assert!(!r.is_main_result);
        assert_eq!(r.png.as_deref(), Some("iVBO"));
        let line = iopub_line(
            "execute_input",
            json!({"code": "1", "execution_count": 7}),
            "t".into(),
            &mut errored,
        );
        assert_eq!(line, Some(Line::NumberOfExecutions { execution_count: 7 }));
        assert_eq!(
            iopub_line("clear_output", json!({}), "t".into(), &mut errored),
            None
        );
    }

    #[test]
    fn an_error_is_reported_once_even_when_the_reply_repeats_it() {
        let mut errored = false;
        let err = json!({"ename": "ValueError", "evalue": "bad", "traceback": ["tb"]});
        assert!(iopub_line("error", err.clone(), "t".into(), &mut errored).is_some());
        let mut reply = err.clone();
        reply["status"] = json!("error");
        assert_eq!(reply_line(&reply, &mut errored), None);
        // A kernel that only fails in its reply still yields the error.
        let mut errored = false;
        assert_eq!(
            reply_line(
                &json!({"status": "error", "ename": "", "evalue": "2"}),
                &mut errored
            ),
            Some(Line::error("", "2"))
        );
        assert!(matches!(
            reply_line(&json!({"status": "aborted"}), &mut false),
            Some(Line::Error { name, .. }) if name == "ExecutionAborted"
        ));
        assert_eq!(reply_line(&json!({"status": "ok"}), &mut false), None);
    }
}
