//! The template store: `<dir>/<name>/rootfs/` (owned by the shifted uid
//! range) and `<dir>/<name>/template.json`.
//!
//! Builds happen in `<dir>/.build-*` and are renamed into place, so a reader
//! never sees half a template. A replaced template is moved to
//! `<dir>/.retired-*` (sandboxes may still have it as their lower layer) and
//! removed by [`TemplateStore::remove_retired`] once none can.

pub mod image;
pub mod recipe;
pub mod unpack;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use recipe::{Mirrors, Recipe, INTERPRETER_PATH};

const META: &str = "template.json";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template '{0}' is not a built-in template")]
    UnknownBuiltin(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: invalid template.json: {1}")]
    Meta(PathBuf, serde_json::Error),
    #[error("{0}")]
    Image(String),
    #[error("mmdebstrap failed ({status}); last output:\n{tail}")]
    Build { status: String, tail: String },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TemplateError {
    let context = context.into();
    move |source| TemplateError::Io { context, source }
}

/// `template.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TemplateMeta {
    pub name: String,
    pub description: String,
    /// Hash of what the template was made from.
    pub recipe_hash: String,
    pub built_at: DateTime<Utc>,
    /// Host uid/gid that the image's root was shifted to.
    #[serde(default)]
    pub uid_base: u32,
    /// What envd starts in every sandbox of this template (argv), as root in
    /// `/home/user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<Vec<String>>,
    /// Env vars its processes start with (an image's `Env`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

impl TemplateMeta {
    /// Whether its start command is the code-interpreter server, which the
    /// runtime then binds into the sandbox and waits on for warm sandboxes.
    pub fn runs_interpreter(&self) -> bool {
        self.start_cmd
            .as_ref()
            .and_then(|argv| argv.first())
            .is_some_and(|cmd| cmd == INTERPRETER_PATH)
    }
}

/// A template ready to start sandboxes from.
#[derive(Debug, Clone)]
pub struct Template {
    pub meta: TemplateMeta,
    pub rootfs: PathBuf,
}

/// Templates on disk.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    dir: PathBuf,
    /// Where root filesystems pulled from images go (names with
    /// [`image::IMAGE_PREFIX`]): a node's own, apart from the built-in
    /// templates that several nodes or test runs may share.
    images: PathBuf,
}

impl TemplateStore {
    /// Opens (making if needed) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, TemplateError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        Ok(Self {
            images: dir.clone(),
            dir,
        })
    }

    /// Keeps images' root filesystems in `images` (made if needed).
    pub fn with_images_dir(mut self, images: impl Into<PathBuf>) -> Result<Self, TemplateError> {
        let images = images.into();
        std::fs::create_dir_all(&images).map_err(io_err(format!("create {}", images.display())))?;
        self.images = images;
        Ok(self)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory a template of this name lives in.
    fn dir_of(&self, name: &str) -> &Path {
        if name.starts_with(image::IMAGE_PREFIX) {
            &self.images
        } else {
            &self.dir
        }
    }

    fn read_meta(&self, name: &str) -> Result<Option<TemplateMeta>, TemplateError> {
        if !valid_name(name) {
            return Ok(None);
        }
        let path = self.dir_of(name).join(name).join(META);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TemplateError::Meta(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("read {}", path.display()))(e)),
        }
    }

    /// The template called `name`; `None` if it is not (completely) there.
    /// (A directory with only a `template.json`, as aliases of older
    /// versions left, is no template: building it replaces it.)
    pub fn get(&self, name: &str) -> Result<Option<Template>, TemplateError> {
        let Some(meta) = self.read_meta(name)? else {
            return Ok(None);
        };
        let rootfs = self.dir_of(name).join(name).join("rootfs");
        if !rootfs.is_dir() {
            return Ok(None);
        }
        Ok(Some(Template { meta, rootfs }))
    }

    /// Every template in the store, by name.
    pub fn list(&self) -> Result<Vec<TemplateMeta>, TemplateError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .map_err(io_err(format!("list {}", self.dir.display())))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(t) = self.get(&name)? {
                out.push(t.meta);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Names [`build_builtin`](Self::build_builtin) accepts.
    pub fn builtin_names() -> Vec<&'static str> {
        recipe::BUILTIN.iter().map(|r| r.name).collect()
    }

    /// Whether the built-in template `name` exists and matches its recipe.
    pub fn is_current(&self, name: &str, uid_base: u32) -> bool {
        let Some(recipe) = recipe::builtin(name) else {
            return false;
        };
        matches!(self.get(name), Ok(Some(t)) if t.meta.uid_base == uid_base && t.meta.recipe_hash == recipe.hash(uid_base))
    }

    /// Builds the built-in template `name` unless it is current. A recipe
    /// that extends another is built in one go from both (the other template
    /// need not exist). Blocking, minutes on a first build: call it from a
    /// blocking thread. `progress` receives the builder's output lines.
    pub fn build_builtin(
        &self,
        name: &str,
        uid_base: u32,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Template, TemplateError> {
        let recipe =
            recipe::builtin(name).ok_or_else(|| TemplateError::UnknownBuiltin(name.to_string()))?;
        let hash = recipe.hash(uid_base);
        if let Some(t) = self.get(name)? {
            if t.meta.recipe_hash == hash {
                progress(&format!("template {name} is up to date"));
                return Ok(t);
            }
            progress(&format!("template {name} changed; rebuilding"));
        }
        self.build_recipe(&recipe, &hash, uid_base, progress)
    }

    fn build_recipe(
        &self,
        recipe: &Recipe,
        hash: &str,
        uid_base: u32,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Template, TemplateError> {
        let name = recipe.name;
        let tmp = self
            .dir
            .join(format!(".build-{name}-{}", rand::random::<u32>()));
        let result = self.build_into(recipe, &tmp, hash, uid_base, progress);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        let meta = result?;
        let dest = self.dir.join(name);
        if dest.exists() {
            let retired = self
                .dir
                .join(format!(".retired-{name}-{}", rand::random::<u32>()));
            std::fs::rename(&dest, &retired)
                .map_err(io_err(format!("retire {}", dest.display())))?;
        }
        std::fs::rename(&tmp, &dest).map_err(io_err(format!("install {}", dest.display())))?;
        progress(&format!("template {name} built"));
        Ok(Template {
            meta,
            rootfs: dest.join("rootfs"),
        })
    }

    fn build_into(
        &self,
        recipe: &Recipe,
        tmp: &Path,
        hash: &str,
        uid_base: u32,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<TemplateMeta, TemplateError> {
        let rootfs = tmp.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io_err(format!("create {}", rootfs.display())))?;
        let mut hooks = Vec::new();
        for (i, script) in recipe.customize_hooks().into_iter().enumerate() {
            let hook = tmp.join(format!("customize-{i}.sh"));
            std::fs::write(&hook, script).map_err(io_err("write a customize hook"))?;
            hooks.push(hook);
        }
        let cache = self.dir.join(".cache").join("apt-archives");
        std::fs::create_dir_all(&cache).map_err(io_err(format!("create {}", cache.display())))?;
        let mirrors = Mirrors::from_host();
        progress(&format!(
            "building template {} from {} ({} packages)",
            recipe.name,
            mirrors.main,
            recipe.packages().len()
        ));

        let mut child = Command::new("mmdebstrap")
            .args(recipe::mmdebstrap_args(recipe, &mirrors, &hooks, &cache))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("run mmdebstrap (is it installed?)"))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (unpacked, tail) = std::thread::scope(|s| {
            let log = s.spawn(|| {
                let mut tail: Vec<String> = Vec::new();
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    tracing::info!(target: "sandbar::template", "{line}");
                    progress(&line);
                    tail.push(line);
                    if tail.len() > 30 {
                        tail.remove(0);
                    }
                }
                tail
            });
            let unpacked = unpack::unpack_shifted(stdout, &rootfs, uid_base);
            (unpacked, log.join().unwrap_or_default())
        });
        let status = child.wait().map_err(io_err("wait for mmdebstrap"))?;
        if !status.success() {
            return Err(TemplateError::Build {
                status: status.to_string(),
                tail: tail.join("\n"),
            });
        }
        let stats = unpacked.map_err(io_err("unpack the root filesystem"))?;
        progress(&format!(
            "unpacked {} entries ({} MB), uids shifted by {uid_base}",
            stats.entries,
            stats.bytes / 1_000_000
        ));
        for hook in &hooks {
            let _ = std::fs::remove_file(hook);
        }
        let meta = TemplateMeta {
            name: recipe.name.to_string(),
            description: recipe.description.to_string(),
            recipe_hash: hash.to_string(),
            built_at: Utc::now(),
            uid_base,
            start_cmd: recipe.start_cmd(),
            env: Vec::new(),
        };
        write_meta_atomic(tmp, &meta)?;
        Ok(meta)
    }

    /// Removes replaced templates, and build dirs of builds that died. Only
    /// safe when no sandbox of this store runs (the runtime calls it at
    /// start, after cleaning up).
    pub fn remove_retired(&self) {
        let mut dirs = vec![&self.dir];
        if self.images != self.dir {
            dirs.push(&self.images);
        }
        for e in dirs
            .into_iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|rd| rd.flatten())
        {
            let n = e.file_name().to_string_lossy().into_owned();
            // A build dir may belong to a build running right now in another
            // process: only old ones are debris of a build that died.
            let stale_build = n.starts_with(".build-")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(6 * 3600));
            if n.starts_with(".retired-") || stale_build {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "could not remove an old template");
                }
            }
        }
    }
}

fn write_meta_atomic(dir: &Path, meta: &TemplateMeta) -> Result<(), TemplateError> {
    let tmp = dir.join(".template.json.tmp");
    let json = serde_json::to_vec_pretty(meta).expect("serializable");
    std::fs::write(&tmp, json).map_err(io_err(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, dir.join(META))
        .map_err(io_err(format!("write {}", dir.join(META).display())))
}

/// Template names are single path components of a safe alphabet.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(store: &TemplateStore, name: &str, rootfs: bool, start_cmd: Option<Vec<String>>) {
        let dir = store.dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if rootfs {
            std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        }
        let meta = TemplateMeta {
            name: name.into(),
            description: "test".into(),
            recipe_hash: "h".into(),
            built_at: Utc::now(),
            uid_base: 7,
            start_cmd,
            env: Vec::new(),
        };
        write_meta_atomic(&dir, &meta).unwrap();
    }

    #[test]
    fn templates_need_their_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let store = TemplateStore::open(dir.path()).unwrap();
        assert!(store.get("base").unwrap().is_none());
        // What an alias of an older version left: only the json.
        fake(&store, "code-interpreter-v1", false, None);
        assert!(store.get("code-interpreter-v1").unwrap().is_none());
        assert!(!store.is_current("code-interpreter-v1", 7));
        fake(&store, "base", true, None);
        let t = store.get("base").unwrap().unwrap();
        assert_eq!(t.rootfs, dir.path().join("base/rootfs"));
        let names: Vec<_> = store.list().unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["base"]);
        assert!(store.get("../etc").unwrap().is_none());
        assert!(!store.is_current("base", 7), "a fake hash is not current");
    }

    #[test]
    fn start_cmd_is_kept_and_optional() {
        let dir = tempfile::tempdir().unwrap();
        let store = TemplateStore::open(dir.path()).unwrap();
        let cmd = vec![INTERPRETER_PATH.to_string()];
        fake(&store, "ci", true, Some(cmd.clone()));
        fake(&store, "plain", true, None);
        assert_eq!(store.get("ci").unwrap().unwrap().meta.start_cmd, Some(cmd));
        assert_eq!(store.get("plain").unwrap().unwrap().meta.start_cmd, None);
        let json = std::fs::read_to_string(dir.path().join("plain").join(META)).unwrap();
        assert!(!json.contains("start_cmd"), "{json}");
        // template.json files written before the field existed still load.
        let old = r#"{"name":"old","description":"d","recipe_hash":"h","built_at":"2026-01-01T00:00:00Z","uid_base":7}"#;
        let meta: TemplateMeta = serde_json::from_str(old).unwrap();
        assert_eq!(meta.start_cmd, None);
    }

    #[test]
    fn builtins_are_base_and_the_code_interpreter() {
        assert_eq!(
            TemplateStore::builtin_names(),
            ["base", "code-interpreter-v1"]
        );
    }
}
