//! Image references as Docker reads them, and the registry mirrors the
//! operator configured (`--registry-mirror docker.io=http://127.0.0.1:5000`):
//! where a build's `fromImage` is pulled from.

use sandbar_runtime::templates::image::ImageSource;
use sha2::{Digest, Sha256};

/// Docker Hub's name in references.
const DOCKER_HUB: &str = "docker.io";

/// `(registry, repository, tag-or-digest suffix)` of a reference, with
/// Docker's defaults: `python:3.12` is `docker.io/library/python:3.12`,
/// no tag is `:latest`.
pub fn parse(reference: &str) -> Result<(String, String, String), String> {
    let r = reference.trim();
    let bad = |why: &str| format!("image '{reference}': {why}");
    if r.is_empty() || r.contains(char::is_whitespace) || r.contains("://") {
        return Err(bad(
            "not an image reference (name[:tag] or registry/name[:tag])",
        ));
    }
    let (first, rest) = match r.split_once('/') {
        Some((f, rest)) if f.contains('.') || f.contains(':') || f == "localhost" => {
            (f.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), r.to_string()),
    };
    let (path, suffix) = if let Some((p, d)) = rest.split_once('@') {
        (p.to_string(), format!("@{d}"))
    } else {
        match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p.to_string(), format!(":{t}")),
            _ => (rest.clone(), ":latest".to_string()),
        }
    };
    let path = if first == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'_' | b'-' | b'/')
            })
    };
    if !ok(&path) {
        return Err(bad(
            "repository names are lowercase letters, digits, '.', '_', '-' and '/'",
        ));
    }
    Ok((first, path, suffix))
}

/// Where to pull `reference` from: its registry, or the mirror configured
/// for it (`mirrors`: registry, then `http(s)://host[:port]`).
pub fn source(
    mirrors: &[(String, String)],
    reference: &str,
    username: &Option<String>,
    password: &Option<String>,
) -> Result<ImageSource, String> {
    let (registry, path, suffix) = parse(reference)?;
    let mirror = mirrors.iter().find(|(r, _)| *r == registry);
    let (host, tls_verify) = match mirror {
        Some((_, url)) => match url.split_once("://") {
            Some(("http", h)) => (h.trim_end_matches('/').to_string(), false),
            Some(("https", h)) => (h.trim_end_matches('/').to_string(), true),
            _ => return Err(format!("registry mirror '{url}' is not an http(s) URL")),
        },
        None => (registry, true),
    };
    Ok(ImageSource {
        reference: format!("{host}/{path}{suffix}"),
        tls_verify,
        username: username.clone(),
        password: password.clone(),
    })
}

/// The root filesystem template of an image digest pulled by a team:
/// never shared between teams (a private image stays private) and never a
/// name a create could start from directly (see [`is_image_rootfs`]).
pub fn rootfs_name(team_id: &str, digest: &str) -> String {
    let h = Sha256::digest(format!("{team_id}\0{digest}").as_bytes());
    format!(
        "{}{}",
        sandbar_runtime::templates::image::IMAGE_PREFIX,
        &hex::encode(h)[..24]
    )
}

/// Whether a root filesystem template is an image's (used through the
/// team's templates only).
pub fn is_image_rootfs(name: &str) -> bool {
    name.starts_with(sandbar_runtime::templates::image::IMAGE_PREFIX)
}

/// Parses `--registry-mirror` values: `registry=http(s)://host[:port]`.
pub fn parse_mirror(arg: &str) -> Result<(String, String), String> {
    let (registry, url) = arg.split_once('=').ok_or_else(|| {
        format!("'{arg}': expected registry=URL, e.g. docker.io=http://127.0.0.1:5000")
    })?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "'{arg}': the mirror must be an http:// or https:// URL"
        ));
    }
    Ok((registry.trim().to_string(), url.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_docker_reads_them() {
        let p = |r| parse(r).unwrap();
        assert_eq!(
            p("python:3.12"),
            ("docker.io".into(), "library/python".into(), ":3.12".into())
        );
        assert_eq!(
            p("debian"),
            (
                "docker.io".into(),
                "library/debian".into(),
                ":latest".into()
            )
        );
        assert_eq!(
            p("e2bdev/base"),
            ("docker.io".into(), "e2bdev/base".into(), ":latest".into())
        );
        assert_eq!(
            p("ghcr.io/org/app:v1"),
            ("ghcr.io".into(), "org/app".into(), ":v1".into())
        );
        assert_eq!(
            p("localhost:5000/x@sha256:ab"),
            ("localhost:5000".into(), "x".into(), "@sha256:ab".into())
        );
        assert!(parse("Upper/Case").is_err());
        assert!(parse("http://x/y").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn mirrors_replace_their_registry() {
        let m = vec![("docker.io".to_string(), "http://127.0.0.1:5000".to_string())];
        let s = source(&m, "python:3.12", &None, &None).unwrap();
        assert_eq!(s.reference, "127.0.0.1:5000/library/python:3.12");
        assert!(!s.tls_verify);
        let s = source(&m, "quay.io/a/b", &Some("u".into()), &Some("p".into())).unwrap();
        assert_eq!(s.reference, "quay.io/a/b:latest");
        assert!(s.tls_verify);
        assert_eq!(s.username.as_deref(), Some("u"));
        assert!(parse_mirror("docker.io").is_err());
        assert!(parse_mirror("docker.io=ftp://x").is_err());
        assert_ne!(rootfs_name("t1", "sha256:1"), rootfs_name("t2", "sha256:1"));
        assert!(is_image_rootfs(&rootfs_name("t", "d")));
    }
}
