//! Recipes of the built-in templates, embedded in the binary so that a
//! template can be built from any working directory, and the Debian mirrors
//! to build them from.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Debian release the built-in templates are made of.
pub const SUITE: &str = "bookworm";

/// Bumped when the way a recipe is turned into a root filesystem changes
/// (unpacking, ownership), so that existing templates are rebuilt.
const BUILDER_VERSION: &str = "sandbar-template-builder-1";

/// A built-in template's recipe.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    pub name: &'static str,
    pub description: &'static str,
    /// Packages, one a line (`#` comments).
    pub packages: &'static str,
    /// mmdebstrap customize hook (`sh customize.sh <rootfs>`).
    pub customize: &'static str,
}

pub const BASE: Recipe = Recipe {
    name: "base",
    description: "Debian 12 (bookworm) with python3, pip, venv, nodejs, npm, git, curl, wget, sudo; user `user` (uid 1000) with passwordless sudo",
    packages: include_str!("../../../../templates/base/packages.txt"),
    customize: include_str!("../../../../templates/base/customize.sh"),
};

/// Templates that are another template under a second name.
pub const ALIASES: &[(&str, &str, &str)] = &[(
    "code-interpreter-v1",
    "base",
    "Alias of `base` until the code-interpreter template (Jupyter kernel server) is built; same root filesystem",
)];

impl Recipe {
    pub fn packages(&self) -> Vec<&'static str> {
        self.packages
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    /// Changes whenever the resulting root filesystem would: recipe files,
    /// suite, builder, the uid range files are shifted to, and the host's
    /// operator-added CAs that the customize hook copies in.
    pub fn hash(&self, uid_base: u32) -> String {
        let mut h = Sha256::new();
        let cas = host_ca_certificates(Path::new(HOST_CA_DIR));
        for part in [
            BUILDER_VERSION.as_bytes(),
            SUITE.as_bytes(),
            self.name.as_bytes(),
            self.packages.as_bytes(),
            self.customize.as_bytes(),
            uid_base.to_string().as_bytes(),
            &cas,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        hex::encode(h.finalize())
    }
}

/// Where Debian keeps CAs added by the operator (not by packages).
const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";

/// Names and contents of the certificates under `dir`, in a stable order; empty
/// when there are none.
fn host_ca_certificates(dir: &Path) -> Vec<u8> {
    fn walk(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .flat_map(|(name, bytes)| [name.into_bytes(), bytes])
        .flatten()
        .collect()
}

pub fn builtin(name: &str) -> Option<Recipe> {
    (name == BASE.name).then_some(BASE)
}

/// Debian mirrors: the main archive and the security archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    pub main: String,
    pub security: String,
}

impl Default for Mirrors {
    fn default() -> Self {
        Self {
            main: "http://deb.debian.org/debian".into(),
            security: "http://deb.debian.org/debian-security".into(),
        }
    }
}

impl Mirrors {
    /// The mirrors the host's apt uses for [`SUITE`] (from
    /// `/etc/apt/sources.list` and `sources.list.d`), so that the build works
    /// where only the host's Debian mirror is reachable.
    pub fn from_host() -> Self {
        let mut texts = Vec::new();
        if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
            texts.push((false, t));
        }
        if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
            let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let deb822 = p.extension().is_some_and(|e| e == "sources");
                if deb822 || p.extension().is_some_and(|e| e == "list") {
                    if let Ok(t) = std::fs::read_to_string(&p) {
                        texts.push((deb822, t));
                    }
                }
            }
        }
        Self::from_sources(&texts)
    }

    fn from_sources(texts: &[(bool, String)]) -> Self {
        let mut found = Self::default();
        let (mut main, mut security) = (None, None);
        let security_suite = format!("{SUITE}-security");
        let mut consider = |uri: &str, suite: &str| {
            let uri = uri.trim_end_matches('/').to_string();
            if suite == SUITE && main.is_none() {
                main = Some(uri);
            } else if suite == security_suite && security.is_none() {
                security = Some(uri);
            }
        };
        for (deb822, text) in texts {
            if *deb822 {
                for stanza in text.split("\n\n") {
                    let field = |name: &str| {
                        stanza.lines().find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_string())
                        })
                    };
                    let (Some(types), Some(uris), Some(suites)) =
                        (field("Types"), field("URIs"), field("Suites"))
                    else {
                        continue;
                    };
                    if !types.split_whitespace().any(|t| t == "deb") {
                        continue;
                    }
                    for uri in uris.split_whitespace() {
                        for suite in suites.split_whitespace() {
                            consider(uri, suite);
                        }
                    }
                }
            } else {
                for line in text.lines() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    let mut words = line.split_whitespace().peekable();
                    if words.next() != Some("deb") {
                        continue;
                    }
                    if words.peek().is_some_and(|w| w.starts_with('[')) {
                        for w in words.by_ref() {
                            if w.ends_with(']') {
                                break;
                            }
                        }
                    }
                    if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                        consider(uri, suite);
                    }
                }
            }
        }
        if let Some(m) = main {
            found.main = m;
        }
        if let Some(s) = security {
            found.security = s;
        }
        found
    }

    /// mmdebstrap's mirror arguments (one-line sources).
    pub fn source_lines(&self) -> Vec<String> {
        vec![
            format!("deb {} {SUITE} main", self.main),
            format!("deb {} {SUITE}-updates main", self.main),
            format!("deb {} {SUITE}-security main", self.security),
        ]
    }
}

/// The mmdebstrap command line for `recipe`, writing a tarball to stdout.
/// `customize_script` is the recipe's hook written to disk; `apt_cache` keeps
/// downloaded packages between builds.
pub fn mmdebstrap_args(
    recipe: &Recipe,
    mirrors: &Mirrors,
    customize_script: &Path,
    apt_cache: &Path,
) -> Vec<String> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let mut args = vec![
        "--mode=root".to_string(),
        "--variant=apt".to_string(),
        "--format=tar".to_string(),
        format!("--include={}", recipe.packages().join(",")),
        // Keep the essential packages' .debs for the cache below.
        "--skip=essential/unlink".to_string(),
        r#"--setup-hook=mkdir -p "$1"/var/cache/apt/archives/"#.to_string(),
        format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives/",
            quote(apt_cache)
        ),
        format!(r#"--customize-hook=sh {} "$1""#, quote(customize_script)),
        format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            quote(apt_cache)
        ),
        SUITE.to_string(),
        "-".to_string(),
    ];
    args.extend(mirrors.source_lines());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_from_the_hosts_sources() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n";
        let list = "deb [signed-by=/x.gpg] https://other.example/apt cloud-sdk-bookworm main\n";
        let m = Mirrors::from_sources(&[(false, list.to_string()), (true, deb822.to_string())]);
        assert_eq!(m.main, "http://mirror.example/debian");
        assert_eq!(m.security, "http://mirror.example/debian-security");
        let one_line = "deb http://ftp.example/debian/ bookworm main contrib\n";
        let m = Mirrors::from_sources(&[(false, one_line.to_string())]);
        assert_eq!(m.main, "http://ftp.example/debian");
        assert_eq!(m.security, Mirrors::default().security);
    }

    #[test]
    fn host_cas_are_read_in_a_stable_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(host_ca_certificates(dir.path()).is_empty());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.crt"), "B").unwrap();
        std::fs::write(dir.path().join("sub/a.crt"), "A").unwrap();
        let first = host_ca_certificates(dir.path());
        assert_eq!(first, host_ca_certificates(dir.path()));
        std::fs::write(dir.path().join("b.crt"), "B2").unwrap();
        assert_ne!(first, host_ca_certificates(dir.path()));
    }

    #[test]
    fn hash_follows_recipe_and_uid_base() {
        assert_eq!(BASE.hash(100_000), BASE.hash(100_000));
        assert_ne!(BASE.hash(100_000), BASE.hash(200_000));
        let mut other = BASE;
        other.packages = "python3\n";
        assert_ne!(BASE.hash(100_000), other.hash(100_000));
        assert!(BASE.packages().contains(&"python-is-python3"));
    }
}
