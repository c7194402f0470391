//! Rows measured through the official E2B Python SDKs (PyPI `e2b` 2.63.x,
//! and `e2b-code-interpreter` 2.11.x for the code-interpreter rows): a venv
//! (reused from the end-to-end suite when it has the right versions, else
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
/// The end-to-end suite's venv, relative to the repository root.
const E2E_VENV: &str = "tests/e2e/.venv";
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// A PyPI package the timing script imports, and the versions it accepts.
pub struct Package {
    name: &'static str,
    series: &'static str,
    requirement: &'static str,
}

pub const E2B: Package = Package {
    name: "e2b",
    series: "2.63.",
    requirement: "e2b~=2.63.0",
};

pub const CODE_INTERPRETER: Package = Package {
    name: "e2b-code-interpreter",
    series: "2.11.",
    requirement: "e2b-code-interpreter~=2.11.5",
};

#[derive(Deserialize)]
struct Output {
    samples_ms: Vec<f64>,
    sdk: String,
    /// The kernel modes: each sample's kernel memory (anonymous, MiB).
    #[serde(default)]
    memory_mib: Vec<f64>,
}

pub struct Python {
    bin: PathBuf,
    script: PathBuf,
}

async fn package_version(python: &Path, package: &str) -> Option<String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))",
            package,
        ])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The first of `packages` that `python` lacks or holds in another series,
/// with the version found.
async fn mismatch<'a>(
    python: &Path,
    packages: &[&'a Package],
) -> Option<(&'a Package, Option<String>)> {
    for &p in packages {
        match package_version(python, p.name).await {
            Some(v) if v.starts_with(p.series) => {}
            found => return Some((p, found)),
        }
    }
    None
}

impl Python {
    /// `explicit`, else the e2e venv when it holds every one of `packages`
    /// in the right series, else a new venv under `scratch`.
    pub async fn prepare(
        explicit: Option<&Path>,
        scratch: &Path,
        packages: &[&Package],
    ) -> Result<Self> {
        let script = scratch.join("sdk_bench.py");
        std::fs::write(&script, SCRIPT).context("writing the SDK script")?;
        let candidates: Vec<PathBuf> = match explicit {
            Some(v) => vec![v.to_path_buf()],
            None => vec![PathBuf::from(E2E_VENV)],
        };
        for venv in &candidates {
            let bin = venv.join("bin/python");
            match mismatch(&bin, packages).await {
                None => {
                    tracing::info!(venv = %venv.display(), "using the existing venv");
                    return Ok(Self { bin, script });
                }
                Some((p, found)) if explicit.is_some() => {
                    bail!(
                        "{} has {} {found:?}, the bench needs {}",
                        venv.display(),
                        p.name,
                        p.requirement
                    )
                }
                Some((p, found)) => {
                    tracing::info!(venv = %venv.display(), package = p.name, ?found, "not using the e2e venv");
                }
            }
        }
        let venv = scratch.join("venv");
        let requirements: Vec<&str> = packages.iter().map(|p| p.requirement).collect();
        tracing::info!(venv = %venv.display(), ?requirements, "making a venv");
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
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(&requirements)
            .output()
            .await
            .context("pip install")?;
        if !out.status.success() {
            bail!(
                "pip install {} failed: {}",
                requirements.join(" "),
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

/// One row the timing script measures.
struct Spec {
    what: &'static str,
    mode: &'static str,
    n: usize,
    target: Option<Target>,
    note: &'static str,
}

async fn measured_rows(python: &Result<Python>, env: &SandbarEnv, specs: &[Spec]) -> Vec<Row> {
    let python = match python {
        Ok(p) => p,
        Err(e) => return specs.iter().map(|s| Row::error(s.what, e)).collect(),
    };
    let mut rows = Vec::new();
    for s in specs {
        rows.push(match python.run(env, s.mode, s.n).await {
            Ok(out) => match Summary::of(&out.samples_ms) {
                Some(summary) => {
                    let mut row = Row::new(
                        s.what,
                        Measure::Distribution {
                            unit: Unit::Ms,
                            summary,
                        },
                    )
                    .note(format!("{}; {}", s.note, out.sdk));
                    if let Some(t) = s.target {
                        row = row.target(t);
                    }
                    row.judged()
                }
                None => Row::error(
                    s.what,
                    &anyhow::anyhow!("the SDK script reported no samples"),
                ),
            },
            Err(e) => Row::error(s.what, &e),
        });
    }
    rows
}

/// The base SDK: create + first command, and a warm `commands.run`.
pub async fn rows(
    python: &Result<Python>,
    env: &SandbarEnv,
    create_n: usize,
    exec_n: usize,
) -> Vec<Row> {
    measured_rows(
        python,
        env,
        &[
            Spec {
                what: "create + first command (Python SDK)",
                mode: "create-run",
                n: create_n,
                target: Some(Target::MedianAtMost(60.0)),
                note: "Sandbox.create() then commands.run('true'), sync API, one at a time",
            },
            Spec {
                what: "commands.run('true') round trip (Python SDK)",
                mode: "exec",
                n: exec_n,
                target: Some(Target::MedianAtMost(5.0)),
                note: "warm sandbox, sync API",
            },
        ],
    )
    .await
}

/// The code-interpreter SDK (template `code-interpreter-v1`, its kernel
/// server on port 49999): create to the first result, a warm `run_code`,
/// the first `run_code` of each language in a warm sandbox, each kernel's
/// start and memory, and the template's size in `templates`.
pub async fn interpreter_rows(
    python: &Result<Python>,
    env: &SandbarEnv,
    create_n: usize,
    exec_n: usize,
    templates: &Path,
) -> Vec<Row> {
    let mut rows = base_interpreter_rows(python, env, create_n, exec_n).await;
    rows.extend(language_rows(python, env, create_n).await);
    rows.push(template_size_row(templates, CODE_INTERPRETER_TEMPLATE));
    rows
}

async fn base_interpreter_rows(
    python: &Result<Python>,
    env: &SandbarEnv,
    create_n: usize,
    exec_n: usize,
) -> Vec<Row> {
    measured_rows(
        python,
        env,
        &[
            Spec {
                what: "create → first run_code('1+1') result, warm sandbox ready (Python code-interpreter SDK)",
                mode: "interpreter-create-run",
                n: create_n,
                target: None,
                note: "Sandbox.create() then run_code('1+1') until its result, sync API; each sample waits 3 s first, so the warm code-interpreter-v1 sandbox sandbar serve keeps (--warm, default 1) is ready with its kernel: the usual case",
            },
            Spec {
                what: "create → first run_code('1+1') result, no warm sandbox (Python code-interpreter SDK)",
                mode: "interpreter-create-run-cold",
                n: create_n,
                target: None,
                note: "a second Sandbox.create() right after one took the warm sandbox, so this one boots its kernel: what a burst beyond the pool pays",
            },
            Spec {
                what: "run_code('1+1') round trip (Python code-interpreter SDK)",
                mode: "interpreter-exec",
                n: exec_n,
                target: Some(Target::MedianAtMost(10.0)),
                note: "warm sandbox and kernel, default context, sync API",
            },
        ],
    )
    .await
}

const CODE_INTERPRETER_TEMPLATE: &str = "code-interpreter-v1";

/// Languages whose kernel starts with the sandbox (the interpreter's
/// defaults): their first run must not wait for a kernel to boot.
const DEFAULT_LANGUAGES: [&str; 2] = ["python", "javascript"];

/// A kernel boot takes over a second on a 2-core machine; a first run above
/// this waited for one.
const WARM_FIRST_RUN_MS: f64 = 250.0;

/// Per language: the first `run_code` in a warm sandbox, and each kernel's
/// start (`create_code_context`, which answers once the kernel does) and
/// anonymous memory after one cell.
async fn language_rows(python: &Result<Python>, env: &SandbarEnv, n: usize) -> Vec<Row> {
    let python = match python {
        Ok(p) => p,
        Err(e) => return vec![Row::error("code-interpreter languages", e)],
    };
    let mut rows = Vec::new();
    for language in ["python", "javascript", "r", "java"] {
        let what =
            format!("first run_code in {language}, warm sandbox (Python code-interpreter SDK)");
        let default = DEFAULT_LANGUAGES.contains(&language);
        rows.push(
            match python
                .run(env, &format!("interpreter-first-run-{language}"), n)
                .await
            {
                Ok(out) => {
                    let row = Row::millis(&what, &out.samples_ms).note(format!(
                    "{}; {}",
                    if default {
                        "a default kernel, started with the sandbox: the run does not wait for it"
                    } else {
                        "started on first use: the run includes the kernel's start"
                    },
                    out.sdk
                ));
                    if default {
                        row.target(Target::MedianAtMost(WARM_FIRST_RUN_MS)).judged()
                    } else {
                        row.judged()
                    }
                }
                Err(e) => Row::error(&what, &e),
            },
        );
    }
    for language in ["python", "javascript", "r", "java", "bash"] {
        let start = format!("{language} kernel start (create_code_context)");
        let memory = format!("{language} kernel memory after one cell (anonymous, Pss_Anon)");
        match python
            .run(env, &format!("interpreter-kernel-{language}"), n)
            .await
        {
            Ok(out) => {
                rows.push(
                    Row::millis(&start, &out.samples_ms)
                        .note(format!(
                            "POST /contexts returns once the kernel answers; {}",
                            out.sdk
                        ))
                        .judged(),
                );
                rows.push(match Summary::of(&out.memory_mib) {
                    Some(summary) => Row::new(
                        &memory,
                        Measure::Distribution {
                            unit: Unit::MiB,
                            summary,
                        },
                    )
                    .note("read by the kernel from /proc/self/smaps_rollup; file-backed pages (its binary, shared with other sandboxes) not counted")
                    .judged(),
                    None => Row::error(&memory, &anyhow::anyhow!("the SDK script reported no memory")),
                });
            }
            Err(e) => {
                rows.push(Row::error(&start, &e));
                rows.push(Row::error(&memory, &e));
            }
        }
    }
    rows
}

/// The disk a built template's root filesystem takes (blocks allocated,
/// hard links once), as `du` counts it.
fn template_size_row(templates: &Path, template: &str) -> Row {
    let what = format!("{template} template size on disk");
    let rootfs = templates.join(template).join("rootfs");
    match disk_usage(&rootfs) {
        Ok(bytes) => Row::new(
            what,
            Measure::Value {
                unit: "MiB".into(),
                value: (bytes as f64 / (1024.0 * 1024.0)).round(),
            },
        )
        .note(format!("{}, blocks allocated", rootfs.display()))
        .judged(),
        Err(e) => Row::error(what, &e),
    }
}

fn disk_usage(root: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let meta = std::fs::symlink_metadata(&dir)
            .with_context(|| format!("reading {}", dir.display()))?;
        total += meta.blocks() * 512;
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_knows_every_mode_a_row_asks_for() {
        for mode in [
            "create-run",
            "exec",
            "interpreter-create-run",
            "interpreter-create-run-cold",
            "interpreter-exec",
        ] {
            assert!(
                SCRIPT.contains(&format!("\"{mode}\": (")),
                "sdk_bench.py has no mode {mode}"
            );
        }
        // The per-language modes are made in a loop over these.
        for language in ["python", "javascript", "r", "java", "bash"] {
            assert!(SCRIPT.contains(&format!("\"{language}\": (")), "{language}");
        }
        assert!(SCRIPT.contains("MODES[f\"interpreter-first-run-{_language}\"]"));
        assert!(SCRIPT.contains("MODES[f\"interpreter-kernel-{_language}\"]"));
    }

    #[test]
    fn disk_usage_counts_blocks_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("sub/b")).unwrap();
        let once = disk_usage(dir.path()).unwrap();
        assert!(once >= 64 * 1024, "{once}");
        std::fs::write(dir.path().join("c"), vec![1u8; 64 * 1024]).unwrap();
        assert!(disk_usage(dir.path()).unwrap() >= once + 64 * 1024);
        assert!(disk_usage(&dir.path().join("missing")).is_err());
    }
}
