//! Where `sandbar` keeps its files in the data directory. Shared by `serve`
//! (which writes them) and the other commands (which read them).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub struct DataDir {
    pub root: PathBuf,
    /// Where templates live when not `<root>/templates` (several servers can
    /// share one built template store).
    pub templates: Option<PathBuf>,
}

impl DataDir {
    /// The operator's API key in clear (mode 0600); the database has only its hash.
    pub fn api_key_file(&self) -> PathBuf {
        self.root.join("api-key")
    }
    /// What a running (or the last) `sandbar serve` announced: URLs and CA paths.
    pub fn serve_state_file(&self) -> PathBuf {
        self.root.join("serve.json")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    /// System roots plus the local CA, for clients whose `SSL_CERT_FILE`
    /// replaces rather than extends the system store.
    pub fn ca_bundle(&self) -> PathBuf {
        self.tls_dir().join("ca-bundle.pem")
    }
    /// The files template builds copy in (`COPY` steps), per team.
    pub fn build_files_dir(&self) -> PathBuf {
        self.root.join("build-files")
    }

    pub fn templates_dir(&self) -> PathBuf {
        self.templates
            .clone()
            .unwrap_or_else(|| self.root.join("templates"))
    }

    pub fn read_api_key(&self) -> Result<String> {
        let path = self.api_key_file();
        let key = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (has `sandbar serve` run with this data dir?)",
                path.display()
            )
        })?;
        Ok(key.trim().to_string())
    }

    pub fn read_serve_state(&self) -> Result<ServeState> {
        let path = self.serve_state_file();
        let raw = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (has `sandbar serve` run with this data dir?)",
                path.display()
            )
        })?;
        serde_json::from_slice(&raw).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Written by `serve` on start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeState {
    pub api_url: String,
    /// The edge proxy's plain-HTTP listener, for local tools.
    #[serde(default)]
    pub proxy_http: Option<String>,
    /// The sandbox domain clients use, with `:port` when not 443.
    pub domain: String,
    /// CA certificate to trust; `None` with an operator's certificate.
    pub ca_cert: Option<PathBuf>,
    pub ca_bundle: Option<PathBuf>,
    pub instance: String,
    pub pid: u32,
}

/// Writes a file readable by its owner only, replacing it atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().ok();
    std::fs::rename(&tmp, path).with_context(|| format!("moving {} into place", path.display()))
}
