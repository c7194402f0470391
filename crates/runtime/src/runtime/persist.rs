//! What outlives a sandbox's processes: pause (in place, or down to its
//! files), resume, snapshots, and what a restart of the server finds.
//!
//! A sandbox's spec is kept in `<data_dir>/sandboxes/<id>/sandbox.json`
//! (mode 0600) from its first boot on, with its pause mode once paused, and
//! its files in its writable layer: whatever stops the server (a clean stop,
//! a crash, `kill -9`), the next start finds both and holds the sandbox as
//! paused, resumable on its files.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::launch::Boot;
use super::{io, Entry, Runtime, RuntimeEvent, Sandbox};
use crate::lifecycle::{Op, PauseMode, State};
use crate::{RuntimeError, SandboxInfo, SandboxSpec, SnapshotInfo};

const SPEC_FILE: &str = "sandbox.json";

#[derive(Serialize, Deserialize)]
struct Saved {
    spec: SandboxSpec,
    /// Set while paused.
    paused: Option<PauseMode>,
}

/// Writes the sandbox's spec (and pause mode) atomically, root-only.
pub(super) fn save(
    dir: &Path,
    spec: &SandboxSpec,
    paused: Option<PauseMode>,
) -> Result<(), RuntimeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(".sandbox.json.tmp");
    let body = serde_json::to_vec(&Saved {
        spec: spec.clone(),
        paused,
    })
    .expect("the spec serializes");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("write {}", tmp.display())))?;
    f.write_all(&body).map_err(io("write sandbox.json"))?;
    std::fs::rename(&tmp, dir.join(SPEC_FILE)).map_err(io("write sandbox.json"))
}

fn load(dir: &Path) -> Option<Saved> {
    serde_json::from_slice(&std::fs::read(dir.join(SPEC_FILE)).ok()?).ok()
}

/// An operation under way: where the sandbox was, and what it had.
struct Begun {
    before: State,
    live: Option<Arc<Sandbox>>,
    spec: Arc<SandboxSpec>,
}

impl Runtime {
    /// Moves `id` along `op`, returning what it was.
    fn transition(&self, id: &str, op: Op) -> Result<Begun, RuntimeError> {
        let mut map = self.sandboxes.lock().unwrap();
        let entry = map
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let before = entry.state;
        entry.state = before.next(id, op, before)?;
        Ok(Begun {
            before,
            live: entry.live.clone(),
            spec: entry.spec.clone(),
        })
    }

    /// Ends an operation: the entry's new state and processes. `false` when
    /// a kill came meanwhile (the entry is gone): what the operation made is
    /// then the caller's to tear down.
    fn settle(&self, id: &str, state: State, live: Option<Arc<Sandbox>>) -> bool {
        match self.sandboxes.lock().unwrap().get_mut(id) {
            Some(entry) => {
                entry.state = state;
                entry.live = live;
                true
            }
            None => false,
        }
    }

    /// Pauses a running sandbox. `Full` freezes its processes in place
    /// (memory kept, no CPU used); `Filesystem` ends them and keeps the
    /// files. A paused sandbox's timeout does not kill it.
    pub async fn pause(&self, id: &str, mode: PauseMode) -> Result<(), RuntimeError> {
        let Begun { before, live, spec } = self.transition(id, Op::Pause(mode))?;
        let live =
            live.ok_or_else(|| RuntimeError::Start(format!("sandbox '{id}' has no processes")))?;
        let done = match mode {
            PauseMode::Full => {
                let cg = live.cgroup.clone();
                tokio::task::spawn_blocking(move || cg.freeze())
                    .await
                    .map_err(|e| RuntimeError::Start(format!("freeze panicked: {e}")))?
                    .map_err(RuntimeError::from)
            }
            PauseMode::Filesystem => {
                self.stop(&live, true).await;
                Ok(())
            }
        };
        match done.and_then(|()| save(&live.dir, &spec, Some(mode))) {
            Ok(()) => {
                let keep = (mode == PauseMode::Full).then_some(live);
                self.settle(id, State::Paused(mode), keep);
                tracing::info!(sandbox = %id, mode = mode.as_str(), "sandbox paused");
                Ok(())
            }
            Err(e) => {
                let back = if mode == PauseMode::Full {
                    Some(live)
                } else {
                    None
                };
                self.settle(
                    id,
                    if back.is_some() {
                        before
                    } else {
                        State::Paused(mode)
                    },
                    back,
                );
                Err(e)
            }
        }
    }

    /// Resumes a paused sandbox: thawed in place after a full pause, booted
    /// afresh on its files after a filesystem pause (or a restart of the
    /// server).
    pub async fn resume(&self, id: &str) -> Result<SandboxInfo, RuntimeError> {
        let Begun { before, live, spec } = self.transition(id, Op::Resume)?;
        if let Some(live) = live {
            let cg = live.cgroup.clone();
            let thawed = tokio::task::spawn_blocking(move || cg.thaw())
                .await
                .map_err(|e| RuntimeError::Start(format!("thaw panicked: {e}")))?;
            if let Err(e) = thawed
                .map_err(RuntimeError::from)
                .and_then(|()| save(&live.dir, &spec, None))
            {
                self.settle(id, before, Some(live));
                return Err(e);
            }
            let mut info = live.info.clone();
            info.state = State::Running;
            self.settle(id, State::Running, Some(live));
            tracing::info!(sandbox = %id, "sandbox resumed in place");
            return Ok(info);
        }
        match self.boot(&spec).await {
            Ok(sandbox) => {
                let sandbox = Arc::new(sandbox);
                let info = sandbox.info.clone();
                if !self.settle(id, State::Running, Some(sandbox.clone())) {
                    self.stop(&sandbox, false).await;
                    return Err(RuntimeError::NotFound(id.to_string()));
                }
                self.watch_exit(sandbox);
                tracing::info!(sandbox = %id, "sandbox booted again on its files");
                Ok(info)
            }
            Err(e) => {
                self.settle(id, before, None);
                Err(e)
            }
        }
    }

    /// Boots `spec` on its template, its base layer and its writable layer
    /// (which `launch` makes when it has none yet); undone on failure.
    pub(super) async fn boot(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        let template = self.template_for(&spec.template)?;
        let layers = match &spec.base_layer {
            Some(top) => {
                let store = self.layers()?;
                let stack = store.stack(top)?;
                if stack.iter().any(|l| l.meta.template != spec.template) {
                    return Err(RuntimeError::Invalid(format!(
                        "layer '{top}' was not made on template '{}'",
                        spec.template
                    )));
                }
                stack.iter().map(|l| l.upper()).collect()
            }
            None => Vec::new(),
        };
        let binaries = self
            .binaries
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| RuntimeError::Start("the runtime is shutting down".into()))?;
        let interpreter_bin = self.interpreter_for(&spec.template, &template, &binaries)?;
        let mut partial = super::launch::Partial::default();
        let made = self
            .launch(
                spec,
                Boot {
                    template: &template,
                    layers,
                    envd_bin: &binaries.envd,
                    interpreter_bin,
                },
                &mut partial,
            )
            .await;
        if made.is_err() {
            self.undo(partial).await;
        }
        made
    }

    /// Freezes what sandbox `id` holds now into a layer that sandboxes can
    /// start on. A running sandbox is frozen for the moment it takes (a
    /// btrfs snapshot: O(1) whatever was written) and runs on after.
    pub async fn snapshot(&self, id: &str) -> Result<SnapshotInfo, RuntimeError> {
        let Begun { before, live, spec } = self.transition(id, Op::Snapshot)?;
        let layers = self.layers()?;
        let writable = match layers.writable(id) {
            Some(w) => w,
            None => {
                self.settle(id, before, live);
                return Err(RuntimeError::Start(format!(
                    "sandbox '{id}' has no writable layer"
                )));
            }
        };
        let freeze = before == State::Running;
        let cg = live.as_ref().map(|l| l.cgroup.clone());
        let parent = spec.base_layer.clone();
        let template = spec.template.clone();
        let made = tokio::task::spawn_blocking(move || {
            if let (true, Some(cg)) = (freeze, &cg) {
                cg.freeze()?;
            }
            let layer = layers.commit(&writable, parent.as_deref(), &template);
            if let (true, Some(cg)) = (freeze, &cg) {
                cg.thaw()?;
            }
            layer.map_err(RuntimeError::from)
        })
        .await
        .map_err(|e| RuntimeError::Start(format!("snapshot panicked: {e}")))?;
        self.settle(id, before, live);
        let layer = made?;
        tracing::info!(sandbox = %id, layer = %layer.meta.id, "snapshot taken");
        Ok(SnapshotInfo {
            layer: layer.meta.id,
            template: spec.template.clone(),
            cpu_count: spec.cpu_count,
            memory_mb: spec.memory_mb,
            disk_mb: spec.disk_mb,
        })
    }

    /// Removes the layers nothing stands on any more: neither a sandbox of
    /// this runtime (running or paused) nor one of `kept` (snapshots).
    pub async fn collect_layers(&self, kept: std::collections::HashSet<String>) -> Vec<String> {
        let bases: std::collections::HashSet<String> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .filter_map(|e| e.spec.base_layer.clone())
            .collect();
        let Ok(layers) = self.layers() else {
            return Vec::new();
        };
        tokio::task::spawn_blocking(move || layers.collect(&bases, &kept))
            .await
            .unwrap_or_default()
    }

    /// At start: the sandboxes a previous process of this runtime left on
    /// disk (their processes are gone, killed with their cgroups) come back
    /// as paused on their files; warm ones and debris are removed.
    pub(super) fn recover(&self) -> usize {
        let Ok(layers) = self.layers() else { return 0 };
        let dir = self.config.data_dir.join("sandboxes");
        let mut kept = 0;
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().collect())
            .unwrap_or_default();
        let mut map = self.sandboxes.lock().unwrap();
        for e in entries {
            let id = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            match load(&path) {
                Some(saved) if !id.starts_with("warm-") && layers.writable(&id).is_some() => {
                    let mode = PauseMode::Filesystem;
                    if saved.paused != Some(mode) {
                        if let Err(err) = save(&path, &saved.spec, Some(mode)) {
                            tracing::warn!(sandbox = %id, error = %err, "recording a recovered sandbox as paused");
                        }
                    }
                    map.insert(
                        id.clone(),
                        Entry {
                            state: State::Paused(mode),
                            spec: Arc::new(saved.spec),
                            live: None,
                        },
                    );
                    kept += 1;
                }
                _ => {
                    super::launch::Files {
                        dir: Some(path),
                        writable: Some(id),
                    }
                    .remove(Some(&layers));
                }
            }
        }
        // Writable layers whose sandbox left no spec: nothing can boot them.
        for id in layers.writable_ids() {
            if !map.contains_key(&id) {
                if let Err(e) = layers.remove_writable(&id) {
                    tracing::warn!(sandbox = %id, error = %e, "removing a stray writable layer");
                }
            }
        }
        kept
    }

    /// At shutdown: every sandbox with processes is paused down to its
    /// files, so that nothing written is lost and the next start resumes it.
    pub(super) async fn pause_all_for_shutdown(&self) {
        let with_processes: Vec<(String, Arc<Sandbox>, Arc<SandboxSpec>)> = {
            let mut map = self.sandboxes.lock().unwrap();
            map.iter_mut()
                .filter_map(|(id, e)| {
                    let live = e.live.take()?;
                    e.state = State::Paused(PauseMode::Filesystem);
                    Some((id.clone(), live, e.spec.clone()))
                })
                .collect()
        };
        futures::future::join_all(with_processes.into_iter().map(|(id, live, spec)| async move {
            self.stop(&live, true).await;
            if let Err(e) = save(&live.dir, &spec, Some(PauseMode::Filesystem)) {
                tracing::warn!(sandbox = %id, error = %e, "recording a sandbox paused at shutdown");
            }
            self.emit(RuntimeEvent::Paused {
                id,
                mode: PauseMode::Filesystem,
            });
        }))
        .await;
    }
}
