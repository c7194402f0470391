//! Rows measured through the official E2B Python SDK (PyPI `e2b` 2.63.x):
//! a venv (reused from the end-to-end suite when it has the right SDK, else
//! made in the scratch dir) runs a small timing script.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tokio::process::Command;

use crate::report::{Measure, Row, Target, Unit};
use crate::server::SandbarEnv;
use crate::stats::Summary;

const SCRIPT: &str = include_str!("../assets/sdk_bench.py");
const SDK_REQUIREMENT: &str = "e2b~=2.63.0";
const SDK_SERIES: &str = "2.63.";
/// The end-to-end suite's venv, relative to the repository root.
const E2E_VENV: &str = "tests/e2e/.venv";
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
struct Output {
    samples_ms: Vec<f64>,
    sdk: String,
}

pub struct Python {
    bin: PathBuf,
    script: PathBuf,
}

async fn sdk_version(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('e2b'))",
        ])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Python {
    /// `explicit`, else the e2e venv when it holds e2b 2.63.x, else a new
    /// venv under `scratch`.
    pub async fn prepare(explicit: Option<&Path>, scratch: &Path) -> Result<Self> {
        let script = scratch.join("sdk_bench.py");
        std::fs::write(&script, SCRIPT).context("writing the SDK script")?;
        let candidates: Vec<PathBuf> = match explicit {
            Some(v) => vec![v.to_path_buf()],
            None => vec![PathBuf::from(E2E_VENV)],
        };
        for venv in &candidates {
            let bin = venv.join("bin/python");
            match sdk_version(&bin).await {
                Some(v) if v.starts_with(SDK_SERIES) => {
                    tracing::info!(venv = %venv.display(), sdk = %v, "using the existing venv");
                    return Ok(Self { bin, script });
                }
                found if explicit.is_some() => {
                    bail!(
                        "{} has e2b {found:?}, the bench needs {SDK_REQUIREMENT}",
                        venv.display()
                    )
                }
                _ => {}
            }
        }
        let venv = scratch.join("venv");
        tracing::info!(venv = %venv.display(), "making a venv with {SDK_REQUIREMENT}");
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .await
            .context("python3 -m venv")?;
        if !status.success() {
            bail!("python3 -m venv {} failed ({status})", venv.display());
        }
        let out = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                SDK_REQUIREMENT,
            ])
            .output()
            .await
            .context("pip install")?;
        if !out.status.success() {
            bail!(
                "pip install {SDK_REQUIREMENT} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Self {
            bin: venv.join("bin/python"),
            script,
        })
    }

    async fn run(&self, env: &SandbarEnv, mode: &str, n: usize) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(&self.script)
            .arg(mode)
            .arg(n.to_string())
            .kill_on_drop(true);
        for (k, v) in &env.vars {
            cmd.env(k, v);
        }
        cmd.env_remove("E2B_DEBUG").env_remove("E2B_SANDBOX_URL");
        let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
            .await
            .with_context(|| format!("the SDK script ({mode}) ran over {RUN_TIMEOUT:?}"))?
            .context("running the SDK script")?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(12).collect();
            bail!(
                "the SDK script ({mode}) failed: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .with_context(|| format!("parsing the SDK script's output {last:?}"))
    }
}

pub async fn rows(
    python: Result<Python>,
    env: &SandbarEnv,
    create_n: usize,
    exec_n: usize,
) -> Vec<Row> {
    const CREATE: &str = "create + first command (Python SDK)";
    const EXEC: &str = "commands.run('true') round trip (Python SDK)";
    let python = match python {
        Ok(p) => p,
        Err(e) => return vec![Row::error(CREATE, &e), Row::error(EXEC, &e)],
    };
    let mut rows = Vec::new();
    for (what, mode, n, target, note) in [
        (
            CREATE,
            "create-run",
            create_n,
            60.0,
            "Sandbox.create() then commands.run('true'), sync API, one at a time",
        ),
        (EXEC, "exec", exec_n, 5.0, "warm sandbox, sync API"),
    ] {
        rows.push(match python.run(env, mode, n).await {
            Ok(out) => match Summary::of(&out.samples_ms) {
                Some(summary) => Row::new(
                    what,
                    Measure::Distribution {
                        unit: Unit::Ms,
                        summary,
                    },
                )
                .target(Target::MedianAtMost(target))
                .note(format!("{note}; e2b {}", out.sdk))
                .judged(),
                None => Row::error(what, &anyhow::anyhow!("the SDK script reported no samples")),
            },
            Err(e) => Row::error(what, &e),
        });
    }
    rows
}
