//! What outlives a sandbox's processes: pause (in place, or down to its
//! files), resume, snapshots, and what a restart of the server finds.
//!
//! A sandbox's spec is kept in `<data_dir>/sandboxes/<id>/sandbox.json`
//! (mode 0600) from its first boot on, with its pause mode once paused, and
//! its files in its writable layer: whatever stops the server (a clean stop,
//! a crash, `kill -9`), the next start finds both and holds the sandbox as
//! paused, resumable on its files. Where criu works, a clean stop also
//! checkpoints the processes of running and fully paused sandboxes
//! (`<store>/checkpoints/<id>/`): the next start holds those as paused in
//! full, and a resume restores them (same boot, same processes, same
//! memory; TCP connections closed). Snapshots may carry processes the same
//! way (`<store>/layers/<id>.memory/`), and sandboxes made on such a layer
//! are restored from them instead of booted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::launch::Boot;
use super::{io, Entry, Runtime, RuntimeEvent, Sandbox};
use crate::lifecycle::{Op, PauseMode, State};
use crate::{RuntimeError, SandboxInfo, SandboxSpec, SnapshotInfo};
use sandbar_layers::Layer;

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
        let made = if before == State::Paused(PauseMode::Full) {
            self.resume_checkpointed(&spec).await
        } else {
            self.boot(&spec).await
        };
        match made {
            Ok(sandbox) => {
                let sandbox = Arc::new(sandbox);
                let info = sandbox.info.clone();
                if !self.settle(id, State::Running, Some(sandbox.clone())) {
                    self.stop(&sandbox, false).await;
                    return Err(RuntimeError::NotFound(id.to_string()));
                }
                self.watch_exit(sandbox);
                if before != State::Paused(PauseMode::Full) {
                    tracing::info!(sandbox = %id, "sandbox booted again on its files");
                }
                Ok(info)
            }
            Err(e) => {
                self.settle(id, before, None);
                Err(e)
            }
        }
    }

    /// A sandbox whose processes were checkpointed (at a stop of the
    /// server): restored from its images, or, where that fails, booted
    /// afresh on its files (which are whole either way). The images go in
    /// both cases: the processes run on, or are gone.
    async fn resume_checkpointed(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        let layers = self.layers()?;
        let restored = match layers.checkpoint(&spec.id) {
            Some(images) => self.restore(spec, &images, false).await,
            None => Err(RuntimeError::Checkpoint("its images are gone".into())),
        };
        let id = spec.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = layers.remove_checkpoint(&id) {
                tracing::warn!(sandbox = %id, error = %e, "checkpoint not removed");
            }
        })
        .await;
        match restored {
            Ok(sandbox) => {
                tracing::info!(sandbox = %spec.id, "sandbox resumed with its processes");
                Ok(sandbox)
            }
            Err(e) => {
                tracing::warn!(sandbox = %spec.id, error = %e, "the sandbox's processes could not be restored; booting it afresh on its files");
                self.boot(spec).await
            }
        }
    }

    /// A new sandbox on `spec`: restored from its base layer's processes
    /// when the layer has them (a snapshot taken with memory) and criu
    /// works, else booted. A restore that fails boots it on the layer's
    /// files instead.
    pub(super) async fn make(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        if let (Some(_), Some(top)) = (&self.criu, &spec.base_layer) {
            let images = self.layers()?.layer(top).ok().and_then(|l| l.memory());
            if let Some(images) = images {
                match self.restore(spec, &images, true).await {
                    Ok(sandbox) => {
                        tracing::debug!(sandbox = %spec.id, layer = %top, "sandbox restored from a snapshot's processes");
                        return Ok(sandbox);
                    }
                    Err(e) => {
                        tracing::warn!(sandbox = %spec.id, layer = %top, error = %e, "the snapshot's processes could not be restored; booting on its files")
                    }
                }
            }
        }
        self.boot(spec).await
    }

    /// Boots `spec` on its template, its base layer and its writable layer
    /// (which `launch` makes when it has none yet); undone on failure.
    /// The snapshot layers `spec` stands on, top first, as overlay lower
    /// directories (without the template's root filesystem); each must have
    /// been made on `spec`'s template.
    pub(super) fn layer_lowers(&self, spec: &SandboxSpec) -> Result<Vec<PathBuf>, RuntimeError> {
        let Some(top) = &spec.base_layer else {
            return Ok(Vec::new());
        };
        let stack = self.layers()?.stack(top)?;
        if stack.iter().any(|l| l.meta.template != spec.template) {
            return Err(RuntimeError::Invalid(format!(
                "layer '{top}' was not made on template '{}'",
                spec.template
            )));
        }
        Ok(stack.iter().map(|l| l.upper()).collect())
    }

    pub(super) async fn boot(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        self.boot_weighted(spec, None).await
    }

    /// [`Runtime::boot`] with the cgroup's CPU weight set before its first
    /// process runs.
    pub(super) async fn boot_weighted(
        &self,
        spec: &SandboxSpec,
        cpu_weight: Option<u16>,
    ) -> Result<Sandbox, RuntimeError> {
        let template = self.template_for(&spec.template)?;
        let layers = self.layer_lowers(spec)?;
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
                    cpu_weight,
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
    /// btrfs snapshot: O(1) whatever was written; with its processes, their
    /// checkpoint too) and runs on after. `with_memory`: the layer carries
    /// the processes (CRIU images), and sandboxes made on it are restored
    /// from them; a sandbox paused to its files has none to carry.
    pub async fn snapshot(
        &self,
        id: &str,
        with_memory: bool,
    ) -> Result<SnapshotInfo, RuntimeError> {
        let Begun { before, live, spec } = self.transition(id, Op::Snapshot)?;
        let made = self
            .take_snapshot(id, before, live.as_deref(), &spec, with_memory)
            .await;
        self.settle(id, before, live);
        let layer = made?;
        tracing::info!(sandbox = %id, layer = %layer.meta.id, memory = with_memory, "snapshot taken");
        Ok(SnapshotInfo {
            layer: layer.meta.id,
            template: spec.template.clone(),
            memory: with_memory,
            cpu_count: spec.cpu_count,
            memory_mb: spec.memory_mb,
            disk_mb: spec.disk_mb,
        })
    }

    async fn take_snapshot(
        &self,
        id: &str,
        before: State,
        live: Option<&Sandbox>,
        spec: &SandboxSpec,
        with_memory: bool,
    ) -> Result<Layer, RuntimeError> {
        let layers = self.layers()?;
        let writable = layers
            .writable(id)
            .ok_or_else(|| RuntimeError::Start(format!("sandbox '{id}' has no writable layer")))?;
        let (parent, template) = (spec.base_layer.clone(), spec.template.clone());
        let commit = {
            let layers = layers.clone();
            move || {
                layers
                    .commit(&writable, parent.as_deref(), &template)
                    .map_err(RuntimeError::from)
            }
        };
        // Running: still while the files (and processes) are taken.
        let freeze = before == State::Running;
        let cg = live.map(|l| l.cgroup.clone());
        let set_frozen =
            |frozen: bool| {
                let cg = cg.clone();
                async move {
                    match (freeze, cg) {
                        (true, Some(cg)) => tokio::task::spawn_blocking(move || {
                            if frozen {
                                cg.freeze()
                            } else {
                                cg.thaw()
                            }
                        })
                        .await
                        .map_err(|e| RuntimeError::Start(format!("freezer panicked: {e}")))?
                        .map_err(RuntimeError::from),
                        _ => Ok(()),
                    }
                }
            };
        let blocking = |f: Box<dyn FnOnce() -> Result<Layer, RuntimeError> + Send>| async move {
            tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| RuntimeError::Start(format!("snapshot panicked: {e}")))?
        };
        if !with_memory {
            set_frozen(true).await?;
            let layer = blocking(Box::new(commit)).await;
            set_frozen(false).await?;
            return layer;
        }
        if self.criu.is_none() {
            return Err(RuntimeError::Invalid(
                "this node cannot snapshot processes (no working criu): snapshot the files only"
                    .into(),
            ));
        }
        match live {
            Some(live) => {
                set_frozen(true).await?;
                let scratch = format!("snap-{}", hex::encode(rand::random::<[u8; 8]>()));
                let taken = async {
                    let images = layers.create_checkpoint(&scratch)?;
                    // Both at once: the files' snapshot waits while btrfs
                    // writes out what the sandbox wrote (about 0.3 s for
                    // 100 MiB here), which the dump does not need, and the
                    // frozen tree changes neither. A layer made without its
                    // processes is collected as unused.
                    let (dumped, committed) = tokio::join!(
                        self.dump_into(live, spec, images),
                        blocking(Box::new(commit))
                    );
                    dumped.and(committed)
                }
                .await;
                let thawed = set_frozen(false).await;
                let attached = taken.and_then(|layer| {
                    layers.attach_memory(&layer.meta.id, &scratch)?;
                    Ok(layer)
                });
                if attached.is_err() {
                    let _ = layers.remove_checkpoint(&scratch);
                }
                thawed?;
                attached
            }
            // Checkpointed at a stop of the server: its images are the
            // processes (they keep them for its own resume).
            None if before == State::Paused(PauseMode::Full) => {
                let layer = blocking(Box::new(commit)).await?;
                layers.link_memory(&layer.meta.id, id)?;
                Ok(layer)
            }
            None => Err(RuntimeError::Invalid(format!(
                "sandbox '{id}' is paused to its files: it has no processes to snapshot; snapshot its files only"
            ))),
        }
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
    /// as paused: in full where their processes were checkpointed (and criu
    /// works here), else on their files; warm ones and debris are removed.
    /// Returns how many of each (files, memory).
    pub(super) fn recover(&self) -> (usize, usize) {
        let Ok(layers) = self.layers() else {
            return (0, 0);
        };
        let mut with_memory = 0;
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
                    let images = layers.checkpoint(&id);
                    let full = saved.paused == Some(PauseMode::Full)
                        && self.criu.is_some()
                        && images
                            .as_deref()
                            .and_then(crate::checkpoint::read_meta)
                            .is_some();
                    let mode = if full {
                        with_memory += 1;
                        PauseMode::Full
                    } else {
                        PauseMode::Filesystem
                    };
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
                    if !full {
                        kept += 1;
                    }
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
        // Images no sandbox resumes from (stale, or a snapshot's that died
        // halfway).
        for id in layers.checkpoint_ids() {
            let resumable = map
                .get(&id)
                .is_some_and(|e| e.state == State::Paused(PauseMode::Full));
            if !resumable {
                if let Err(e) = layers.remove_checkpoint(&id) {
                    tracing::warn!(checkpoint = %id, error = %e, "removing a stray checkpoint");
                }
            }
        }
        (kept, with_memory)
    }

    /// At shutdown: every sandbox with processes is paused so that nothing
    /// is lost and the next start resumes it: with its processes
    /// checkpointed to disk where criu can (`Paused(Full)`), else down to
    /// its files. A sandbox whose processes cannot be checkpointed (the
    /// error is logged) still keeps its files.
    pub(super) async fn pause_all_for_shutdown(&self) {
        let with_processes: Vec<(String, Arc<Sandbox>, Arc<SandboxSpec>)> = {
            let mut map = self.sandboxes.lock().unwrap();
            map.iter_mut()
                .filter_map(|(id, e)| {
                    let live = e.live.take()?;
                    e.state = State::Pausing;
                    Some((id.clone(), live, e.spec.clone()))
                })
                .collect()
        };
        futures::future::join_all(with_processes.into_iter().map(|(id, live, spec)| async move {
            let mode = match self.criu {
                Some(_) => match self.checkpoint_for_shutdown(&live, &spec).await {
                    Ok(()) => PauseMode::Full,
                    Err(e) => {
                        tracing::warn!(sandbox = %id, error = %e, "processes not checkpointed; the sandbox keeps its files only");
                        PauseMode::Filesystem
                    }
                },
                None => PauseMode::Filesystem,
            };
            self.stop(&live, true).await;
            if let Err(e) = save(&live.dir, &spec, Some(mode)) {
                tracing::warn!(sandbox = %id, error = %e, "recording a sandbox paused at shutdown");
            }
            if let Some(e) = self.sandboxes.lock().unwrap().get_mut(&id) {
                e.state = State::Paused(mode);
            }
            self.emit(RuntimeEvent::Paused { id, mode });
        }))
        .await;
    }

    /// Freezes `live` (a fully paused one is already) and checkpoints its
    /// processes to `<store>/checkpoints/<id>/`; the caller kills it then.
    async fn checkpoint_for_shutdown(
        &self,
        live: &Sandbox,
        spec: &SandboxSpec,
    ) -> Result<(), RuntimeError> {
        let cg = live.cgroup.clone();
        tokio::task::spawn_blocking(move || cg.freeze())
            .await
            .map_err(|e| RuntimeError::Start(format!("freeze panicked: {e}")))??;
        let layers = self.layers()?;
        let images = layers.create_checkpoint(&spec.id)?;
        let dumped = self.dump_into(live, spec, images).await;
        if dumped.is_err() {
            let _ = layers.remove_checkpoint(&spec.id);
        }
        dumped
    }
}
