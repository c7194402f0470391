//! Root filesystems from OCI/Docker images: `skopeo` (Debian's package)
//! talks to the registry (auth, manifest lists, both manifest formats,
//! blob digests checked) and writes an OCI layout; this module reads the
//! layout (`oci-spec`'s types) and applies its layers in order with the
//! owners shifted into the sandbox range ([`super::unpack::apply_layer`]).
//!
//! A sandbox needs envd to run in it: envd is a glibc program (2.34 or
//! newer), and the SDKs run commands with `/bin/bash`; an image without
//! those (Alpine and other musl images, distributions older than Debian 12
//! or Ubuntu 22.04) is refused with a message that says so.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::Utc;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest, Sha256};

use super::unpack::{apply_layer, UnpackStats};

/// Names of root filesystem templates made from images.
pub const IMAGE_PREFIX: &str = "image-";
use super::{io_err, write_meta_atomic, Template, TemplateError, TemplateMeta, TemplateStore};

/// Where an image comes from, as skopeo's `docker://` transport takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// `host[:port]/repository[:tag|@digest]`.
    pub reference: String,
    /// Whether the registry speaks HTTPS with a certificate the host trusts
    /// (`false` for a plain-HTTP mirror on loopback).
    pub tls_verify: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// What the image says about the processes it runs: `Env` (as
/// `NAME=value`) and its user and workdir, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSettings {
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// A credentials file for skopeo (`--authfile`, mode 0600), so that the
/// password is never on a command line other users can read.
struct AuthFile(PathBuf);

impl AuthFile {
    fn write(dir: &Path, src: &ImageSource) -> Result<Option<Self>, TemplateError> {
        let (Some(user), Some(pass)) = (&src.username, &src.password) else {
            return Ok(None);
        };
        use base64::Engine;
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let host = src.reference.split('/').next().unwrap_or_default();
        let json =
            serde_json::json!({ "auths": { host: { "auth": encode(&format!("{user}:{pass}")) } } });
        let path = dir.join("auth.json");
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("write registry credentials"))?;
        std::io::Write::write_all(&mut f, json.to_string().as_bytes())
            .map_err(io_err("write registry credentials"))?;
        Ok(Some(Self(path)))
    }
}

impl Drop for AuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tls_flag(flag: &str, src: &ImageSource) -> String {
    format!("--{flag}={}", src.tls_verify)
}

/// The digest of the image's manifest (or manifest list) in the registry:
/// what exactly the reference names now, before anything is pulled.
pub fn manifest_digest(src: &ImageSource, scratch: &Path) -> Result<String, TemplateError> {
    let auth = AuthFile::write(scratch, src)?;
    let mut cmd = Command::new("skopeo");
    cmd.arg("inspect")
        .arg("--raw")
        .arg(tls_flag("tls-verify", src));
    if let Some(a) = &auth {
        cmd.arg("--authfile").arg(&a.0);
    }
    let out = cmd
        .arg(format!("docker://{}", src.reference))
        .output()
        .map_err(io_err("run skopeo (is it installed?)"))?;
    if !out.status.success() {
        return Err(TemplateError::Image(format!(
            "{}: {}",
            src.reference,
            skopeo_error(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(&out.stdout))
    ))
}

/// Pulls the image into the OCI layout `layout` (for the host's platform
/// when the reference names a list), passing skopeo's progress lines on.
pub fn pull(
    src: &ImageSource,
    layout: &Path,
    scratch: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), TemplateError> {
    let auth = AuthFile::write(scratch, src)?;
    let mut cmd = Command::new("skopeo");
    cmd.arg("copy").arg(tls_flag("src-tls-verify", src));
    if let Some(a) = &auth {
        cmd.arg("--src-authfile").arg(&a.0);
    }
    let mut child = cmd
        .arg(format!("docker://{}", src.reference))
        .arg(format!("oci:{}:image", layout.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("run skopeo (is it installed?)"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::scope(|s| {
        let err = s.spawn(|| {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            progress(&line);
        }
        err.join().unwrap_or_default()
    });
    let status = child.wait().map_err(io_err("wait for skopeo"))?;
    if !status.success() {
        return Err(TemplateError::Image(format!(
            "pulling {}: {}",
            src.reference,
            skopeo_error(&errors.join("\n"))
        )));
    }
    Ok(())
}

/// What skopeo's log line says (`time=... level=fatal msg="..."`), without
/// its wrapping; the last cause is the one a user can act on.
fn skopeo_error(stderr: &str) -> String {
    let text = stderr.trim();
    let msg = match text.find("msg=\"") {
        Some(i) => {
            let rest = &text[i + 5..];
            let end = rest.rfind('"').unwrap_or(rest.len());
            rest[..end].replace("\\\"", "\"")
        }
        None => text.to_string(),
    };
    // "Error parsing image name \"docker://...\": reading manifest ...: unauthorized: ..."
    match msg.split_once("\": ") {
        Some((head, cause)) if head.starts_with("Error") => cause.to_string(),
        _ => msg,
    }
}

fn blob(layout: &Path, digest: &oci_spec::image::Digest) -> PathBuf {
    layout
        .join("blobs")
        .join(digest.algorithm().as_ref())
        .join(digest.digest())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, TemplateError> {
    let bytes = std::fs::read(path).map_err(io_err(format!("read the image's {what}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TemplateError::Image(format!("the image's {what} is not valid: {e}")))
}

/// Applies every layer of the layout's image to `rootfs`, in order.
pub fn unpack_layout(
    layout: &Path,
    rootfs: &Path,
    uid_base: u32,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(ImageSettings, UnpackStats), TemplateError> {
    let index: ImageIndex = read_json(&layout.join("index.json"), "index")?;
    let desc = index
        .manifests()
        .first()
        .ok_or_else(|| TemplateError::Image("the image has no manifest".into()))?;
    let manifest: ImageManifest = read_json(&blob(layout, desc.digest()), "manifest")?;
    let config: ImageConfiguration =
        read_json(&blob(layout, manifest.config().digest()), "configuration")?;
    let mut stats = UnpackStats::default();
    let total = manifest.layers().len();
    for (i, layer) in manifest.layers().iter().enumerate() {
        progress(&format!(
            "applying layer {}/{total} ({}, {} MB)",
            i + 1,
            layer.digest(),
            layer.size() / 1_000_000
        ));
        let file = std::fs::File::open(blob(layout, layer.digest()))
            .map_err(io_err("open an image layer"))?;
        let reader: Box<dyn Read> = match layer.media_type() {
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
                Box::new(flate2::read::GzDecoder::new(file))
            }
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Box::new(file),
            MediaType::Other(t) if t.ends_with("tar.gzip") || t.ends_with("tar+gzip") => {
                Box::new(flate2::read::GzDecoder::new(file))
            }
            MediaType::Other(t) if t.ends_with(".tar") => Box::new(file),
            other => {
                return Err(TemplateError::Image(format!(
                    "layer {}: media type {other} is not supported (gzip or plain tar layers only)",
                    i + 1
                )))
            }
        };
        apply_layer(reader, rootfs, uid_base, &mut stats)
            .map_err(|e| TemplateError::Image(format!("layer {}: {e}", i + 1)))?;
    }
    let settings = config
        .config()
        .as_ref()
        .map(|c| ImageSettings {
            env: c
                .env()
                .iter()
                .flatten()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect(),
            workdir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
        })
        .unwrap_or_default();
    Ok((settings, stats))
}

/// A path inside the image, symlinks resolved within it (absolute links
/// from its root): what a process in the sandbox would find there.
fn resolve_in(rootfs: &Path, path: &str) -> Option<PathBuf> {
    let mut current = PathBuf::new();
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let candidate = current.join(&c);
        let full = rootfs.join(&candidate);
        let meta = std::fs::symlink_metadata(&full).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&full).ok()?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                current = PathBuf::new();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(str::to_string),
            );
        } else {
            current = candidate;
        }
    }
    Some(rootfs.join(current))
}

/// Refuses an image envd cannot run in, saying why.
fn check_runnable(rootfs: &Path) -> Result<(), TemplateError> {
    let bash = resolve_in(rootfs, "/bin/bash").filter(|p| p.is_file());
    let loader = resolve_in(rootfs, "/lib64/ld-linux-x86-64.so.2")
        .or_else(|| resolve_in(rootfs, "/lib/ld-linux-aarch64.so.1"))
        .filter(|p| p.is_file());
    if loader.is_none() {
        return Err(TemplateError::Image(
            "the image has no glibc (an Alpine or other musl image?): sandboxes need glibc 2.34 or newer for envd (Debian 12+, Ubuntu 22.04+ and images based on them work)".into(),
        ));
    }
    if let Some(version) = glibc_version(rootfs) {
        if version < (2, 34) {
            return Err(TemplateError::Image(format!(
                "the image's glibc is {}.{}: sandboxes need 2.34 or newer for envd (Debian 12+, Ubuntu 22.04+)",
                version.0, version.1
            )));
        }
    }
    if bash.is_none() {
        return Err(TemplateError::Image(
            "the image has no /bin/bash, which the SDKs run commands with".into(),
        ));
    }
    Ok(())
}

/// glibc's version, from the banner its `libc.so.6` carries.
fn glibc_version(rootfs: &Path) -> Option<(u32, u32)> {
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
        "/usr/lib64/libc.so.6",
    ]
    .iter()
    .find_map(|p| resolve_in(rootfs, p).filter(|p| p.is_file()))?;
    let bytes = std::fs::read(libc).ok()?;
    let marker = b"release version ";
    let at = bytes.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let text: String = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .map(|b| *b as char)
        .collect();
    let mut parts = text.split('.').filter_map(|p| p.parse().ok());
    Some((parts.next()?, parts.next()?))
}

impl TemplateStore {
    /// The root filesystems pulled from images, by name.
    pub fn image_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.images) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(IMAGE_PREFIX) && self.images.join(n).join("rootfs").is_dir())
            .collect();
        names.sort();
        names
    }

    /// Removes an image's root filesystem (the caller made sure nothing
    /// stands on it): renamed out of the way first, so a reader never sees
    /// half of one.
    pub fn remove_image(&self, name: &str) -> Result<(), TemplateError> {
        if !name.starts_with(IMAGE_PREFIX) || !super::valid_name(name) {
            return Err(TemplateError::Image(format!(
                "'{name}' is not an image's root filesystem"
            )));
        }
        let dir = self.images.join(name);
        let retired = self
            .images
            .join(format!(".retired-{name}-{}", rand::random::<u32>()));
        std::fs::rename(&dir, &retired).map_err(io_err(format!("retire {}", dir.display())))?;
        std::fs::remove_dir_all(&retired).map_err(io_err(format!("remove {}", retired.display())))
    }

    /// Makes the root filesystem template `name` from the image `src`
    /// (pulled now); blocking, run it on a blocking thread. Returns the
    /// template and what the image says its processes run with.
    pub fn import_image(
        &self,
        name: &str,
        src: &ImageSource,
        digest: &str,
        uid_base: u32,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(Template, ImageSettings), TemplateError> {
        if !super::valid_name(name) || !name.starts_with(IMAGE_PREFIX) {
            return Err(TemplateError::Image(format!(
                "'{name}' is not a template name"
            )));
        }
        let tmp = self
            .images
            .join(format!(".build-{name}-{}", rand::random::<u32>()));
        let result = self.import_into(&tmp, name, src, digest, uid_base, progress);
        let settings = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let _ = std::fs::remove_dir_all(tmp.join("layout"));
        let dest = self.images.join(name);
        if dest.exists() {
            let retired = self
                .images
                .join(format!(".retired-{name}-{}", rand::random::<u32>()));
            std::fs::rename(&dest, &retired)
                .map_err(io_err(format!("retire {}", dest.display())))?;
        }
        std::fs::rename(&tmp, &dest).map_err(io_err(format!("install {}", dest.display())))?;
        let template = self
            .get(name)?
            .ok_or_else(|| TemplateError::Image(format!("template {name} vanished")))?;
        Ok((template, settings))
    }

    fn import_into(
        &self,
        tmp: &Path,
        name: &str,
        src: &ImageSource,
        digest: &str,
        uid_base: u32,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<ImageSettings, TemplateError> {
        let rootfs = tmp.join("rootfs");
        let layout = tmp.join("layout");
        std::fs::create_dir_all(&rootfs).map_err(io_err(format!("create {}", rootfs.display())))?;
        std::os::unix::fs::lchown(&rootfs, Some(uid_base), Some(uid_base))
            .map_err(io_err("own the image's root"))?;
        progress(&format!("pulling {}", src.reference));
        pull(src, &layout, tmp, progress)?;
        let (settings, stats) = unpack_layout(&layout, &rootfs, uid_base, progress)?;
        progress(&format!(
            "unpacked {} entries ({} MB), uids shifted by {uid_base}",
            stats.entries,
            stats.bytes / 1_000_000
        ));
        check_runnable(&rootfs)?;
        let meta = TemplateMeta {
            name: name.to_string(),
            description: format!("image {} ({digest})", src.reference),
            recipe_hash: digest.to_string(),
            built_at: Utc::now(),
            uid_base,
            start_cmd: None,
            env: settings.env.clone(),
        };
        write_meta_atomic(tmp, &meta)?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_envd_cannot_run_in_are_refused_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/sh"), b"busybox").unwrap();
        let e = check_runnable(root).unwrap_err().to_string();
        assert!(e.contains("musl"), "{e}");
        std::fs::create_dir_all(root.join("usr/lib64")).unwrap();
        std::fs::write(root.join("usr/lib64/ld-linux-x86-64.so.2"), b"ld").unwrap();
        std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
        std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(
            root.join("lib/x86_64-linux-gnu/libc.so.6"),
            b"\0GNU C Library (Ubuntu GLIBC 2.31-0ubuntu9) stable release version 2.31.\0",
        )
        .unwrap();
        let e = check_runnable(root).unwrap_err().to_string();
        assert!(e.contains("glibc is 2.31"), "{e}");
        std::fs::write(
            root.join("lib/x86_64-linux-gnu/libc.so.6"),
            b"GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.",
        )
        .unwrap();
        let e = check_runnable(root).unwrap_err().to_string();
        assert!(e.contains("/bin/bash"), "{e}");
        std::fs::write(root.join("bin/bash"), b"bash").unwrap();
        check_runnable(root).unwrap();
    }

    #[test]
    fn skopeo_errors_lose_their_wrapping() {
        let raw = r#"time="2026-12-01T17:08:43Z" level=fatal msg="Error parsing image name \"docker://h/p:1\": reading manifest 1 in h/p: unauthorized: authentication required""#;
        assert_eq!(
            skopeo_error(raw),
            "reading manifest 1 in h/p: unauthorized: authentication required"
        );
        assert_eq!(skopeo_error("plain failure\n"), "plain failure");
    }

    #[test]
    fn paths_resolve_inside_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/ld.so"), b"x").unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/ld.so", root.join("usr/lib/abs")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        assert_eq!(
            resolve_in(root, "/lib/ld.so"),
            Some(root.join("usr/lib/ld.so"))
        );
        assert_eq!(
            resolve_in(root, "/lib/abs"),
            Some(root.join("usr/lib/ld.so"))
        );
        assert!(
            resolve_in(root, "/escape/passwd").is_none(),
            "the host's /etc is not the image's"
        );
        assert!(resolve_in(root, "/missing").is_none());
    }
}
