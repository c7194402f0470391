//! Recipes of the built-in templates, embedded in the binary so that a
//! template can be built from any working directory, and the Debian mirrors
//! to build them from.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Debian release the built-in templates are made of.
pub const SUITE: &str = "bookworm";

/// Bumped when the way a recipe is turned into a root filesystem changes
/// (unpacking, ownership), so that existing templates are rebuilt.
const BUILDER_VERSION: &str = "sandbar-template-builder-1";

/// A built-in template's recipe: packages and a customize hook, optionally on
/// top of another recipe's (whose files stay the one source of truth).
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    pub name: &'static str,
    pub description: &'static str,
    /// The recipe this one adds to: its packages are installed and its hook
    /// runs first.
    pub extends: Option<&'static Recipe>,
    /// Packages this recipe adds, one a line (`#` comments).
    pub packages: &'static str,
    /// mmdebstrap customize hook this recipe adds (`sh customize.sh <rootfs>`).
    pub customize: &'static str,
    /// What envd starts in every sandbox of the template, as root in
    /// `/home/user` (argv); empty for none.
    pub start_cmd: &'static [&'static str],
}

pub const BASE: Recipe = Recipe {
    name: "base",
    description: "Debian 12 (bookworm) with python3, pip, venv, nodejs, npm, git, curl, wget, sudo; user `user` (uid 1000) with passwordless sudo",
    extends: None,
    packages: include_str!("../../../../templates/base/packages.txt"),
    customize: include_str!("../../../../templates/base/customize.sh"),
    start_cmd: &[],
};

/// Where the runtime puts the host's `sandbar-interpreter` in sandboxes that
/// start it.
pub const INTERPRETER_PATH: &str = "/usr/bin/sandbar-interpreter";

pub const CODE_INTERPRETER: Recipe = Recipe {
    name: "code-interpreter-v1",
    description: "base + Jupyter kernels (IPython with numpy, pandas, matplotlib, pillow; JavaScript and TypeScript (Deno); R; Java; bash) driven by the code-interpreter server on port 49999",
    extends: Some(&BASE),
    packages: include_str!("../../../../templates/code-interpreter-v1/packages.txt"),
    customize: include_str!("../../../../templates/code-interpreter-v1/customize.sh"),
    start_cmd: &[INTERPRETER_PATH],
};

/// Every built-in recipe.
pub const BUILTIN: &[&Recipe] = &[&BASE, &CODE_INTERPRETER];

impl Recipe {
    /// This recipe and those it extends, the innermost first.
    pub fn layers(&self) -> Vec<&Recipe> {
        let mut layers = vec![self];
        while let Some(parent) = layers.last().and_then(|r| r.extends) {
            layers.push(parent);
        }
        layers.reverse();
        layers
    }

    /// Every package to install: the extended recipe's, then this one's.
    pub fn packages(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for layer in self.layers() {
            for p in layer
                .packages
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The customize hooks to run, in order: the extended recipe's first.
    pub fn customize_hooks(&self) -> Vec<&'static str> {
        self.layers().iter().map(|r| r.customize).collect()
    }

    /// [`start_cmd`](Self::start_cmd) as the template metadata keeps it.
    pub fn start_cmd(&self) -> Option<Vec<String>> {
        (!self.start_cmd.is_empty()).then(|| self.start_cmd.iter().map(|s| s.to_string()).collect())
    }

    /// Changes whenever the resulting template would: recipe files (of every
    /// layer), suite, builder, the uid range files are shifted to, the host's
    /// operator-added CAs that the customize hook copies in, and the start
    /// command.
    pub fn hash(&self, uid_base: u32) -> String {
        self.hash_with_cas(uid_base, &host_ca_certificates(Path::new(HOST_CA_DIR)))
    }

    fn hash_with_cas(&self, uid_base: u32, cas: &[u8]) -> String {
        let uid = uid_base.to_string();
        let start_cmd = self.start_cmd.join("\0");
        // For a recipe of one layer and no start command these are exactly
        // the parts hashed before recipes could extend each other, so that
        // existing `base` templates stay current.
        let mut parts: Vec<&[u8]> = vec![
            BUILDER_VERSION.as_bytes(),
            SUITE.as_bytes(),
            self.name.as_bytes(),
        ];
        for layer in self.layers() {
            parts.push(layer.packages.as_bytes());
            parts.push(layer.customize.as_bytes());
        }
        parts.push(uid.as_bytes());
        parts.push(cas);
        if !self.start_cmd.is_empty() {
            parts.push(start_cmd.as_bytes());
        }
        let mut h = Sha256::new();
        for part in parts {
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
    BUILTIN.iter().find(|r| r.name == name).map(|r| **r)
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
/// `customize_scripts` are the recipe's hooks written to disk, in the order
/// they run; `apt_cache` keeps downloaded packages between builds.
pub fn mmdebstrap_args(
    recipe: &Recipe,
    mirrors: &Mirrors,
    customize_scripts: &[PathBuf],
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
    ];
    args.extend(
        customize_scripts
            .iter()
            .map(|hook| format!(r#"--customize-hook=sh {} "$1""#, quote(hook))),
    );
    args.extend([
        format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            quote(apt_cache)
        ),
        SUITE.to_string(),
        "-".to_string(),
    ]);
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

    /// The hash of a recipe of one layer is what it was before recipes could
    /// extend each other, so that built `base` templates stay current.
    #[test]
    fn single_layer_hash_is_unchanged() {
        let cas = b"CA".as_slice();
        let mut h = Sha256::new();
        for part in [
            BUILDER_VERSION.as_bytes(),
            SUITE.as_bytes(),
            BASE.name.as_bytes(),
            BASE.packages.as_bytes(),
            BASE.customize.as_bytes(),
            b"100000".as_slice(),
            cas,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        assert_eq!(BASE.hash_with_cas(100_000, cas), hex::encode(h.finalize()));
    }

    static PARENT: Recipe = Recipe {
        name: "parent",
        description: "",
        extends: None,
        packages: "a\n# comment\nb\n",
        customize: "echo parent\n",
        start_cmd: &[],
    };

    fn child() -> Recipe {
        Recipe {
            name: "child",
            description: "",
            extends: Some(&PARENT),
            packages: "\nc\nb\n",
            customize: "echo child\n",
            start_cmd: &["/usr/bin/server", "--flag"],
        }
    }

    #[test]
    fn extending_recipes_compose() {
        let c = child();
        assert_eq!(c.packages(), ["a", "b", "c"]);
        assert_eq!(c.customize_hooks(), ["echo parent\n", "echo child\n"]);
        assert_eq!(
            c.start_cmd(),
            Some(vec!["/usr/bin/server".to_string(), "--flag".to_string()])
        );
        assert_eq!(PARENT.start_cmd(), None);
        assert_eq!(PARENT.customize_hooks(), ["echo parent\n"]);
    }

    #[test]
    fn hash_of_an_extending_recipe_covers_every_layer() {
        static OTHER_PARENT: Recipe = Recipe {
            customize: "echo parent changed\n",
            ..PARENT
        };
        let cas = b"".as_slice();
        let c = child();
        let base = c.hash_with_cas(1, cas);
        assert_eq!(base, child().hash_with_cas(1, cas));
        let changed = [
            Recipe {
                extends: Some(&OTHER_PARENT),
                ..c
            },
            Recipe {
                packages: "c\n",
                ..c
            },
            Recipe {
                customize: "echo child changed\n",
                ..c
            },
            Recipe {
                start_cmd: &["/usr/bin/server"],
                ..c
            },
            Recipe { extends: None, ..c },
        ];
        for r in changed {
            assert_ne!(base, r.hash_with_cas(1, cas), "{r:?}");
        }
        assert_ne!(base, c.hash_with_cas(1, b"CA"));
        assert_ne!(base, c.hash_with_cas(2, cas));
    }

    #[test]
    fn the_code_interpreter_extends_base() {
        assert_eq!(CODE_INTERPRETER.extends.map(|r| r.name), Some("base"));
        let packages = CODE_INTERPRETER.packages();
        assert_eq!(&packages[..BASE.packages().len()], BASE.packages());
        assert!(packages.contains(&"python3-ipykernel"));
        assert_eq!(
            CODE_INTERPRETER.customize_hooks()[0],
            BASE.customize,
            "base's hook runs first"
        );
        assert_eq!(
            CODE_INTERPRETER.start_cmd(),
            Some(vec![INTERPRETER_PATH.to_string()])
        );
        assert_eq!(
            builtin("code-interpreter-v1").map(|r| r.name),
            Some("code-interpreter-v1")
        );
        assert!(builtin("nope").is_none());
    }

    #[test]
    fn mmdebstrap_runs_every_hook_in_order() {
        let hooks = [PathBuf::from("/b/0.sh"), PathBuf::from("/b/1.sh")];
        let args = mmdebstrap_args(&child(), &Mirrors::default(), &hooks, Path::new("/cache"));
        assert!(args.contains(&"--include=a,b,c".to_string()));
        let at = |needle: &str| args.iter().position(|a| a.contains(needle)).unwrap();
        assert!(at("'/b/0.sh'") < at("'/b/1.sh'"));
        assert!(at("'/b/1.sh'") < at("sync-out"));
    }
}
