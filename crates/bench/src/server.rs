//! The bench's own `sandbar serve`: a scratch data dir (templates linked in
//! from an existing store), a unique instance name and subnet, loopback
//! ports; its `sandbar env`; and its shutdown, also when the bench fails.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::http::Endpoint;

/// First start makes a CA and a database; a busy 2-core machine needs time.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Shutdown kills every sandbox; with a thousand of them that takes a while.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct ServeOptions {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub templates_from: PathBuf,
    pub instance: String,
    pub subnet: String,
    pub extra_args: Vec<String>,
}

/// What `sandbar env` printed.
#[derive(Debug, Clone, Default)]
pub struct SandbarEnv {
    pub vars: Vec<(String, String)>,
}

impl SandbarEnv {
    pub fn parse(text: &str) -> Result<Self> {
        let mut vars = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let rest = line
                .strip_prefix("export ")
                .with_context(|| format!("unexpected line {line:?}"))?;
            let (k, v) = rest
                .split_once('=')
                .with_context(|| format!("no '=' in {line:?}"))?;
            vars.push((k.to_string(), unquote(v)));
        }
        Ok(Self { vars })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key)
            .with_context(|| format!("`sandbar env` printed no {key}"))
    }
}

/// Undoes POSIX shell quoting of one word: `'..'` (with `'\''`), `".."`, or bare.
fn unquote(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => out.extend(chars.next()),
                        c => out.push(c),
                    }
                }
            }
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

pub struct Sandbar {
    child: Option<Child>,
    pub instance: String,
    pub data_dir: PathBuf,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    pub env: SandbarEnv,
    pub api: Endpoint,
    pub version: String,
}

/// Free loopback ports, held until all are chosen so they differ.
fn free_ports<const N: usize>() -> Result<[SocketAddr; N]> {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("picking ports")?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<_>>()?;
    Ok(addrs.try_into().expect("N addresses"))
}

impl Sandbar {
    pub async fn start(opts: &ServeOptions) -> Result<Self> {
        if !opts.bin.is_file() {
            bail!("sandbar binary not found at {} (build it: cargo build -p sandbar, or pass --sandbar-bin)", opts.bin.display());
        }
        std::fs::create_dir_all(&opts.data_dir)?;
        let templates = opts.data_dir.join("templates");
        if !opts.templates_from.is_dir() {
            bail!(
                "no template store at {} (build one: sandbar template build base; or pass --templates-from)",
                opts.templates_from.display()
            );
        }
        std::os::unix::fs::symlink(&opts.templates_from, &templates).with_context(|| {
            format!(
                "linking {} to {}",
                templates.display(),
                opts.templates_from.display()
            )
        })?;

        let version = Command::new(&opts.bin)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();

        let [api, https, http] = free_ports::<3>()?;
        let log = opts.data_dir.join("serve.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&opts.bin);
        cmd.arg("--data-dir")
            .arg(&opts.data_dir)
            .arg("serve")
            .args(["--instance", &opts.instance, "--subnet", &opts.subnet])
            .args(["--api-listen", &api.to_string()])
            .args(["--https-listen", &https.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(&opts.extra_args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Its own group: a Ctrl-C in the terminal reaches the bench only,
            // which then stops sandbar in order.
            .process_group(0);
        tracing::info!(bin = %opts.bin.display(), instance = %opts.instance, %api, %https, %http, "starting sandbar serve");
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.bin.display()))?;
        let pid = child.id();
        let mut me = Self {
            child: Some(child),
            instance: opts.instance.clone(),
            data_dir: opts.data_dir.clone(),
            https,
            http,
            log,
            env: SandbarEnv::default(),
            api: Endpoint {
                addr: api,
                tls_name: None,
                authority: api.to_string(),
            },
            version,
        };

        let deadline = Instant::now() + START_TIMEOUT;
        let state_file = opts.data_dir.join("serve.json");
        loop {
            if let Some(status) = me.child.as_mut().expect("child").try_wait()? {
                bail!(
                    "sandbar serve exited at start ({status}); its log:\n{}",
                    me.log_tail()
                );
            }
            let announced = std::fs::read(&state_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v.get("pid").and_then(|p| p.as_u64()))
                == Some(u64::from(pid));
            if announced {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "sandbar serve did not come up within {START_TIMEOUT:?}; its log:\n{}",
                    me.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let out = Command::new(&opts.bin)
            .arg("--data-dir")
            .arg(&opts.data_dir)
            .arg("env")
            .output()
            .context("running sandbar env")?;
        if !out.status.success() {
            bail!(
                "sandbar env failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        me.env = SandbarEnv::parse(&String::from_utf8_lossy(&out.stdout))?;
        me.api = Endpoint::from_url(me.env.require("E2B_API_URL")?).await?;
        me.env.require("E2B_API_KEY")?;
        me.env.require("E2B_DOMAIN")?;
        Ok(me)
    }

    pub fn ca_files(&self) -> Vec<PathBuf> {
        ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"]
            .iter()
            .filter_map(|k| self.env.get(k))
            .map(PathBuf::from)
            .collect()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 30)
    }

    /// SIGTERM (sandbar kills its sandboxes and releases the network), then
    /// SIGKILL to the whole group if it does not finish in time.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Anything still in its group (helpers it started) goes too.
        let _ = killpg(pid, Signal::SIGKILL);
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!(
                "sandbar serve exited with {s} at shutdown; its log:\n{}",
                self.log_tail()
            ),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("sandbar serve did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it")
            }
        }
    }
}

impl Drop for Sandbar {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("{e:#}");
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_exports() {
        let env = SandbarEnv::parse(
            "export E2B_API_URL='http://127.0.0.1:1'\nexport E2B_DOMAIN=\"a.localhost:2\"\nexport X='it'\\''s'\n",
        )
        .unwrap();
        assert_eq!(env.get("E2B_API_URL"), Some("http://127.0.0.1:1"));
        assert_eq!(env.get("E2B_DOMAIN"), Some("a.localhost:2"));
        assert_eq!(env.get("X"), Some("it's"));
        assert!(env.require("E2B_API_KEY").is_err());
        assert!(SandbarEnv::parse("E2B=1").is_err());
    }

    #[test]
    fn free_ports_differ() {
        let [a, b, c] = free_ports::<3>().unwrap();
        assert!(a != b && b != c && a != c);
    }
}
