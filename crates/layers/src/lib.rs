//! The layer store: sandboxes' writable layers on disk with a hard quota,
//! and the immutable layers that snapshots (and with them forks, templates
//! made from snapshots and paused sandboxes' history) are made of.
//!
//! Owns: a btrfs filesystem of its own (normally a sparse image in the data
//! dir on a loop device, mounted at `<data_dir>/store`), and in it
//! `writable/<id>` (one subvolume per sandbox: `upper/` and `work/` of its
//! overlay, limited by a quota group to the sandbox's disk size) and
//! `layers/<id>` (read-only snapshots of writable layers, each described by
//! `layers/<id>.json`), and the process images (CRIU) of what carries
//! memory: `checkpoints/<id>/` for a sandbox checkpointed with its processes
//! (a paused sandbox that outlives the server), `layers/<id>.memory/` for a
//! snapshot layer taken with its processes. The images are opaque here: the
//! runtime writes and reads them, the store only keeps them beside the files
//! they belong to, outside any quota, and deletes them with those. Must not
//! touch: namespaces, processes, HTTP, the database.
//!
//! Why btrfs, measured on the 2-core build machine (see ARCHITECTURE.md):
//! a per-sandbox tmpfs counts every byte written against the sandbox's
//! memory (the fault this replaces); ext4 and XFS project quotas need
//! kernel quota support that not every kernel has (this one lacks it) and
//! give no cheap copy; a filesystem image per sandbox costs ~125 ms per
//! create (mkfs, loop device, mount) and a loop device each. A btrfs
//! subvolume with a quota group costs well under a millisecond to make,
//! enforces the limit (writes fail with EDQUOT), and a read-only snapshot of
//! it is O(1) whatever was written: a snapshot or a fork costs what
//! changed, not the size of the template.
//!
//! Layers are referenced by what stands on them: a sandbox (running or
//! paused) by its base layer, a layer by its child, a snapshot by its
//! record in the control plane. [`LayerStore::collect`] removes the layers
//! nothing references any more; removing one still in use is refused.

mod btrfs;
mod pool;

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use pool::StoreConfig;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer store setup: {0}")]
    Setup(String),
    #[error("layer '{0}' not found")]
    NotFound(String),
    #[error("layer '{0}' is in use ({1})")]
    InUse(String, String),
    #[error("invalid id '{0}'")]
    InvalidId(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LayerError {
    let context = context.into();
    move |source| LayerError::Io { context, source }
}

/// Ids of sandboxes and layers are single path components.
fn checked(id: &str) -> Result<&str, LayerError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(id)
    } else {
        Err(LayerError::InvalidId(id.to_string()))
    }
}

/// What a layer is, kept beside it as `layers/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerMeta {
    pub id: String,
    /// The layer it was written on top of (`None`: right on the template).
    pub parent: Option<String>,
    /// The template at the bottom of its stack.
    pub template: String,
    pub created_at: DateTime<Utc>,
    /// The sandbox it was taken from.
    pub source: Option<String>,
}

/// An immutable layer: `dir/upper` is what it adds to the layers below.
#[derive(Debug, Clone)]
pub struct Layer {
    pub meta: LayerMeta,
    pub dir: PathBuf,
}

impl Layer {
    /// The directory overlayfs stacks (a lower layer).
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// The process images taken with this layer (a snapshot with memory),
    /// if it has them.
    pub fn memory(&self) -> Option<PathBuf> {
        let dir = memory_dir_of(&self.dir);
        dir.is_dir().then_some(dir)
    }
}

/// `layers/<id>` -> `layers/<id>.memory`.
fn memory_dir_of(layer_dir: &Path) -> PathBuf {
    let mut name = layer_dir.file_name().unwrap_or_default().to_os_string();
    name.push(MEMORY_SUFFIX);
    layer_dir.with_file_name(name)
}

/// Removes a directory of images: plain files only (what CRIU writes), so
/// that nothing here ever recurses into anything else.
fn remove_images(dir: &Path) -> Result<(), LayerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("read {}", dir.display()))(e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let removed = if is_dir {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(format!("remove {}", path.display())))?;
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("remove {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// A sandbox's writable layer: overlayfs' upper and work directories.
#[derive(Debug, Clone)]
pub struct Writable {
    pub id: String,
    pub dir: PathBuf,
}

impl Writable {
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
}

/// The layer store of one data dir.
#[derive(Debug)]
pub struct LayerStore {
    root: PathBuf,
    pool: pool::Pool,
}

const WRITABLE: &str = "writable";
const LAYERS: &str = "layers";
const CHECKPOINTS: &str = "checkpoints";
/// Suffix of a layer's memory images beside it: `layers/<id>.memory`.
const MEMORY_SUFFIX: &str = ".memory";

impl LayerStore {
    /// Mounts (making it on first use) the store's filesystem. Blocking.
    pub fn open(config: &StoreConfig) -> Result<Self, LayerError> {
        let pool = pool::Pool::open(config)?;
        let root = pool.mount_point().to_path_buf();
        for d in [WRITABLE, LAYERS, CHECKPOINTS] {
            std::fs::create_dir_all(root.join(d)).map_err(io(format!("create {d}")))?;
        }
        Ok(Self { root, pool })
    }

    /// Unmounts the store (its contents stay in the image). Only when no
    /// sandbox uses it any more.
    pub fn close(self) {
        self.pool.close();
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir_fd(&self, sub: &str) -> Result<std::fs::File, LayerError> {
        std::fs::File::open(self.root.join(sub)).map_err(io(format!("open {sub}")))
    }

    /// Makes the writable layer of sandbox `id`, limited to `quota_mb`.
    pub fn create_writable(&self, id: &str, quota_mb: u64) -> Result<Writable, LayerError> {
        let id = checked(id)?;
        let parent = self.dir_fd(WRITABLE)?;
        btrfs::create_subvolume(parent.as_fd(), id)
            .map_err(io(format!("create the writable layer of {id}")))?;
        let w = Writable {
            id: id.to_string(),
            dir: self.root.join(WRITABLE).join(id),
        };
        let made = (|| {
            self.set_quota(&w, quota_mb)?;
            std::fs::create_dir(w.upper()).map_err(io("mkdir upper"))?;
            std::fs::create_dir(w.work()).map_err(io("mkdir work"))?;
            Ok(())
        })();
        if let Err(e) = made {
            let _ = btrfs::destroy_subvolume(parent.as_fd(), id);
            return Err(e);
        }
        Ok(w)
    }

    /// Sets the quota of writable layer `w` to `quota_mb` (at its making,
    /// and for a warm sandbox's handed over to a caller who asked for
    /// another disk size).
    pub fn set_quota(&self, w: &Writable, quota_mb: u64) -> Result<(), LayerError> {
        let sub = std::fs::File::open(&w.dir).map_err(io("open the writable layer"))?;
        btrfs::limit(sub.as_fd(), quota_mb.max(1) << 20).map_err(io(format!(
            "limit the writable layer of {} to {quota_mb} MiB",
            w.id
        )))
    }

    /// The writable layer of sandbox `id`, if the store has one.
    pub fn writable(&self, id: &str) -> Option<Writable> {
        let id = checked(id).ok()?;
        let dir = self.root.join(WRITABLE).join(id);
        dir.join("upper").is_dir().then(|| Writable {
            id: id.to_string(),
            dir,
        })
    }

    /// Gives writable layer `from` the id `to` (a warm sandbox handed over
    /// to its caller); it stays in use meanwhile.
    pub fn rename_writable(&self, from: &str, to: &str) -> Result<Writable, LayerError> {
        let (from, to) = (checked(from)?, checked(to)?);
        let dir = self.root.join(WRITABLE);
        std::fs::rename(dir.join(from), dir.join(to))
            .map_err(io(format!("rename the writable layer {from} to {to}")))?;
        Ok(Writable {
            id: to.to_string(),
            dir: dir.join(to),
        })
    }

    /// Ids of every writable layer on disk (running and paused sandboxes',
    /// and those a crash left).
    pub fn writable_ids(&self) -> Vec<String> {
        list_dir(&self.root.join(WRITABLE))
    }

    /// Deletes a writable layer and everything written in it.
    pub fn remove_writable(&self, id: &str) -> Result<(), LayerError> {
        let id = checked(id)?;
        if !self.root.join(WRITABLE).join(id).exists() {
            return Ok(());
        }
        let parent = self.dir_fd(WRITABLE)?;
        btrfs::destroy_subvolume(parent.as_fd(), id)
            .map_err(io(format!("delete the writable layer of {id}")))
    }

    /// Where the process images of sandbox `id` are kept while it is
    /// checkpointed (`checkpoints/<id>/`), if it has any.
    pub fn checkpoint(&self, id: &str) -> Option<PathBuf> {
        let id = checked(id).ok()?;
        let dir = self.root.join(CHECKPOINTS).join(id);
        dir.is_dir().then_some(dir)
    }

    /// An empty `checkpoints/<id>/` for new images (one left there before
    /// is deleted first). `id` is a sandbox's, or a scratch name for images
    /// that [`attach_memory`](Self::attach_memory) moves to a layer.
    pub fn create_checkpoint(&self, id: &str) -> Result<PathBuf, LayerError> {
        let id = checked(id)?;
        let dir = self.root.join(CHECKPOINTS).join(id);
        remove_images(&dir)?;
        std::fs::create_dir(&dir).map_err(io(format!("create the checkpoint dir of {id}")))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io("chmod the checkpoint dir"))?;
        Ok(dir)
    }

    /// Deletes the images of sandbox `id` (nothing if it has none).
    pub fn remove_checkpoint(&self, id: &str) -> Result<(), LayerError> {
        let id = checked(id)?;
        remove_images(&self.root.join(CHECKPOINTS).join(id))
    }

    /// Ids of every checkpoint on disk.
    pub fn checkpoint_ids(&self) -> Vec<String> {
        list_dir(&self.root.join(CHECKPOINTS))
    }

    /// Makes checkpoint `id` the memory images of `layer` (a snapshot taken
    /// with its processes): moved, so the checkpoint is gone afterwards.
    pub fn attach_memory(&self, layer: &str, id: &str) -> Result<PathBuf, LayerError> {
        let (layer, id) = (checked(layer)?, checked(id)?);
        let target = self.memory_target(layer)?;
        std::fs::rename(self.root.join(CHECKPOINTS).join(id), &target)
            .map_err(io(format!("move checkpoint {id} to layer {layer}")))?;
        Ok(target)
    }

    /// Gives `layer` a copy of checkpoint `id` as its memory images, by hard
    /// links (O(1); images are never written once made): a snapshot of a
    /// sandbox that is checkpointed, which keeps its own.
    pub fn link_memory(&self, layer: &str, id: &str) -> Result<PathBuf, LayerError> {
        let (layer, id) = (checked(layer)?, checked(id)?);
        let target = self.memory_target(layer)?;
        let source = self.root.join(CHECKPOINTS).join(id);
        let linked = (|| {
            std::fs::create_dir(&target)?;
            for entry in std::fs::read_dir(&source)? {
                let entry = entry?;
                if !entry.file_type()?.is_file() {
                    return Err(std::io::Error::other(format!(
                        "{} is not a plain file",
                        entry.path().display()
                    )));
                }
                std::fs::hard_link(entry.path(), target.join(entry.file_name()))?;
            }
            Ok(())
        })();
        if let Err(e) = linked {
            let _ = remove_images(&target);
            return Err(io(format!("link checkpoint {id} to layer {layer}"))(e));
        }
        Ok(target)
    }

    fn memory_target(&self, layer: &str) -> Result<PathBuf, LayerError> {
        let dir = self.root.join(LAYERS).join(layer);
        if !dir.is_dir() {
            return Err(LayerError::NotFound(layer.to_string()));
        }
        let target = memory_dir_of(&dir);
        if target.exists() {
            return Err(LayerError::InUse(
                layer.to_string(),
                "it has memory images already".into(),
            ));
        }
        Ok(target)
    }

    /// Bytes written in a writable layer (its quota group's count).
    pub fn used_bytes(&self, w: &Writable) -> Option<u64> {
        let f = std::fs::File::open(&w.dir).ok()?;
        let subvol = btrfs::subvolume_id(f.as_fd()).ok()?;
        self.pool.qgroup_referenced(subvol)
    }

    /// Freezes what `w` holds now into a new immutable layer on top of
    /// `parent` (O(1): a read-only snapshot). The caller keeps the
    /// sandbox still meanwhile so the layer is consistent.
    pub fn commit(
        &self,
        w: &Writable,
        parent: Option<&str>,
        template: &str,
    ) -> Result<Layer, LayerError> {
        let id = hex::encode(rand::random::<[u8; 10]>());
        let source = std::fs::File::open(&w.dir).map_err(io("open the writable layer"))?;
        let layers = self.dir_fd(LAYERS)?;
        btrfs::snapshot_readonly(source.as_fd(), layers.as_fd(), &id)
            .map_err(io(format!("snapshot {}", w.id)))?;
        let meta = LayerMeta {
            id: id.clone(),
            parent: parent.map(str::to_string),
            template: template.to_string(),
            created_at: Utc::now(),
            source: Some(w.id.clone()),
        };
        // Beside the layer (outside any quota); a layer is complete once
        // its metadata is in place.
        let meta_path = self.root.join(LAYERS).join(format!("{id}.json"));
        let tmp = self.root.join(LAYERS).join(format!(".{id}.json.tmp"));
        let written = std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&meta).expect("serializable"),
        )
        .and_then(|_| std::fs::rename(&tmp, &meta_path));
        if let Err(e) = written {
            let _ = btrfs::destroy_subvolume(layers.as_fd(), &id);
            return Err(io("write the layer's metadata")(e));
        }
        Ok(Layer {
            meta,
            dir: self.root.join(LAYERS).join(&id),
        })
    }

    pub fn layer(&self, id: &str) -> Result<Layer, LayerError> {
        let id = checked(id)?;
        let dir = self.root.join(LAYERS).join(id);
        let raw = std::fs::read(self.root.join(LAYERS).join(format!("{id}.json")))
            .map_err(|_| LayerError::NotFound(id.to_string()))?;
        let meta: LayerMeta = serde_json::from_slice(&raw)
            .map_err(|e| LayerError::Setup(format!("layer {id}: bad metadata: {e}")))?;
        Ok(Layer { meta, dir })
    }

    /// `top` and the layers under it, top first (overlayfs' lowerdir order).
    pub fn stack(&self, top: &str) -> Result<Vec<Layer>, LayerError> {
        let mut out = Vec::new();
        let mut next = Some(top.to_string());
        while let Some(id) = next {
            if out.len() > 256 {
                return Err(LayerError::Setup(format!(
                    "layer {top}: its stack is too deep"
                )));
            }
            let layer = self.layer(&id)?;
            next = layer.meta.parent.clone();
            out.push(layer);
        }
        Ok(out)
    }

    pub fn layer_ids(&self) -> Vec<String> {
        list_dir(&self.root.join(LAYERS))
    }

    /// Removes the layers nothing stands on: neither a sandbox (`bases`:
    /// the top layers of running and paused sandboxes), nor a snapshot
    /// (`kept`), nor another layer. Returns the ids removed.
    pub fn collect(&self, bases: &HashSet<String>, kept: &HashSet<String>) -> Vec<String> {
        let all: Vec<Layer> = self
            .layer_ids()
            .iter()
            .filter_map(|id| self.layer(id).ok())
            .collect();
        let mut live: HashSet<String> = HashSet::new();
        for root in bases.iter().chain(kept) {
            if let Ok(stack) = self.stack(root) {
                live.extend(stack.into_iter().map(|l| l.meta.id));
            }
        }
        let Ok(parent) = self.dir_fd(LAYERS) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        // Every subvolume there: those without metadata are debris of a
        // commit that died halfway.
        for id in self.layer_ids() {
            if live.contains(&id) {
                continue;
            }
            let complete = all.iter().any(|l| l.meta.id == id);
            match btrfs::destroy_subvolume(parent.as_fd(), &id) {
                Ok(()) => {
                    let _ = std::fs::remove_file(self.root.join(LAYERS).join(format!("{id}.json")));
                    if let Err(e) = remove_images(&memory_dir_of(&self.root.join(LAYERS).join(&id)))
                    {
                        tracing::warn!(layer = %id, error = %e, "removing an unused layer's memory");
                    }
                    if complete {
                        removed.push(id);
                    }
                }
                Err(e) => tracing::warn!(layer = %id, error = %e, "removing an unused layer"),
            }
        }
        // Memory images whose layer is gone (a removal that died halfway).
        if let Ok(rd) = std::fs::read_dir(self.root.join(LAYERS)) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(MEMORY_SUFFIX) {
                    if checked(id).is_ok() && !self.root.join(LAYERS).join(id).exists() {
                        let _ = remove_images(&entry.path());
                    }
                }
            }
        }
        removed
    }
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| checked(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
