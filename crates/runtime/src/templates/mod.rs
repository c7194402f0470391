//! The template store: `<dir>/<name>/rootfs/` (owned by the shifted uid
//! range) and `<dir>/<name>/template.json`. An alias template has only the
//! json, naming the template whose root filesystem it uses.
//!
//! Builds happen in `<dir>/.build-*` and are renamed into place, so a reader
//! never sees half a template. A replaced template is moved to
//! `<dir>/.retired-*` (sandboxes may still have it as their lower layer) and
//! removed by [`TemplateStore::remove_retired`] once none can.

pub mod recipe;
pub mod unpack;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use recipe::{Mirrors, Recipe};

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
    /// Hash of what the root filesystem was made from (empty for aliases).
    pub recipe_hash: String,
    pub built_at: DateTime<Utc>,
    /// Host uid/gid that the image's root was shifted to.
    #[serde(default)]
    pub uid_base: u32,
    /// When set, this template uses that template's root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<String>,
}

/// A template ready to start sandboxes from.
#[derive(Debug, Clone)]
pub struct Template {
    pub meta: TemplateMeta,
    /// The root filesystem (the alias target's, for an alias).
    pub rootfs: PathBuf,
}

/// Templates on disk.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    dir: PathBuf,
}

impl TemplateStore {
    /// Opens (making if needed) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, TemplateError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_meta(&self, name: &str) -> Result<Option<TemplateMeta>, TemplateError> {
        if !valid_name(name) {
            return Ok(None);
        }
        let path = self.dir.join(name).join(META);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TemplateError::Meta(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("read {}", path.display()))(e)),
        }
    }

    /// The template called `name`, aliases resolved; `None` if it is not
    /// (completely) there.
    pub fn get(&self, name: &str) -> Result<Option<Template>, TemplateError> {
        let Some(meta) = self.read_meta(name)? else {
            return Ok(None);
        };
        let target = match &meta.alias_of {
            Some(of) => match self.read_meta(of)? {
                Some(t) if t.alias_of.is_none() => of.clone(),
                _ => return Ok(None),
            },
            None => name.to_string(),
        };
        let rootfs = self.dir.join(&target).join("rootfs");
        if !rootfs.is_dir() {
            return Ok(None);
        }
        let meta = match &meta.alias_of {
            Some(of) => TemplateMeta {
                uid_base: self
                    .read_meta(of)?
                    .map(|m| m.uid_base)
                    .unwrap_or(meta.uid_base),
                ..meta
            },
            None => meta,
        };
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
        let mut names = vec![recipe::BASE.name];
        names.extend(recipe::ALIASES.iter().map(|(n, _, _)| *n));
        names
    }

    /// Whether the built-in template `name` exists and matches its recipe.
    pub fn is_current(&self, name: &str, uid_base: u32) -> bool {
        let target = recipe::ALIASES
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, of, _)| *of)
            .unwrap_or(name);
        let Some(recipe) = recipe::builtin(target) else {
            return false;
        };
        matches!(self.get(name), Ok(Some(t)) if t.meta.uid_base == uid_base && self.read_meta(target).ok().flatten().is_some_and(|m| m.recipe_hash == recipe.hash(uid_base)))
    }

    /// Builds the built-in template `name` (and what it aliases) unless it is
    /// current. Blocking, minutes on a first build: call it from a blocking
    /// thread. `progress` receives the builder's output lines.
    pub fn build_builtin(
        &self,
        name: &str,
        uid_base: u32,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Template, TemplateError> {
        if let Some((alias, of, description)) = recipe::ALIASES.iter().find(|(n, _, _)| *n == name)
        {
            self.build_builtin(of, uid_base, progress)?;
            let meta = TemplateMeta {
                name: alias.to_string(),
                description: description.to_string(),
                recipe_hash: String::new(),
                built_at: Utc::now(),
                uid_base,
                alias_of: Some(of.to_string()),
            };
            if self
                .read_meta(alias)?
                .is_none_or(|m| m.alias_of.as_deref() != Some(of))
            {
                let dir = self.dir.join(alias);
                std::fs::create_dir_all(&dir)
                    .map_err(io_err(format!("create {}", dir.display())))?;
                write_meta_atomic(&dir, &meta)?;
            }
            return self
                .get(alias)?
                .ok_or_else(|| TemplateError::UnknownBuiltin(name.to_string()));
        }
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
        let built = self.build_recipe(&recipe, &hash, uid_base, progress)?;
        // Whatever aliases this template now points at the new build.
        for (alias, of, _) in recipe::ALIASES {
            if *of == name && self.read_meta(alias)?.is_none() {
                self.build_builtin(alias, uid_base, progress)?;
            }
        }
        Ok(built)
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
        let hook = tmp.join("customize.sh");
        std::fs::write(&hook, recipe.customize).map_err(io_err("write the customize hook"))?;
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
            .args(recipe::mmdebstrap_args(recipe, &mirrors, &hook, &cache))
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
        let _ = std::fs::remove_file(&hook);
        let meta = TemplateMeta {
            name: recipe.name.to_string(),
            description: recipe.description.to_string(),
            recipe_hash: hash.to_string(),
            built_at: Utc::now(),
            uid_base,
            alias_of: None,
        };
        write_meta_atomic(tmp, &meta)?;
        Ok(meta)
    }

    /// Removes replaced templates, and build dirs of builds that died. Only
    /// safe when no sandbox of this store runs (the runtime calls it at
    /// start, after cleaning up).
    pub fn remove_retired(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
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

    fn fake(store: &TemplateStore, name: &str, alias_of: Option<&str>) {
        let dir = store.dir().join(name);
        if alias_of.is_none() {
            std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        } else {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let meta = TemplateMeta {
            name: name.into(),
            description: "test".into(),
            recipe_hash: "h".into(),
            built_at: Utc::now(),
            uid_base: 7,
            alias_of: alias_of.map(Into::into),
        };
        write_meta_atomic(&dir, &meta).unwrap();
    }

    #[test]
    fn aliases_resolve_to_their_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = TemplateStore::open(dir.path()).unwrap();
        assert!(store.get("base").unwrap().is_none());
        fake(&store, "code-interpreter-v1", Some("base"));
        // An alias of a missing template is not a template.
        assert!(store.get("code-interpreter-v1").unwrap().is_none());
        fake(&store, "base", None);
        let t = store.get("code-interpreter-v1").unwrap().unwrap();
        assert_eq!(t.rootfs, dir.path().join("base/rootfs"));
        assert_eq!(t.meta.alias_of.as_deref(), Some("base"));
        let names: Vec<_> = store.list().unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["base", "code-interpreter-v1"]);
        assert!(store.get("../etc").unwrap().is_none());
        assert!(!store.is_current("base", 7), "a fake hash is not current");
    }
}
