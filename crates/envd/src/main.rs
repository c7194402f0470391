//! envd: the agent inside every sandbox. It serves E2B's `process.Process` and
//! `filesystem.Filesystem` Connect services and the plain-HTTP `/files`,
//! `/envs`, `/health` and `/init` endpoints on one port (49983).
//!
//! Owns: everything a client does inside one sandbox. Must not touch: anything
//! outside the machine it runs on; it knows nothing of the control plane and
//! depends on no other sandbar crate but the generated protos.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

// The modules live in the library target (see lib.rs for why there is one).
use envd::server;
use envd::state::{EnvdState, InitRequest, StartCommand};
use envd::{ProcessService, Reaper};

#[derive(Debug, Parser)]
#[command(name = "envd", version, about = "The agent inside a sandbox")]
struct Args {
    /// TCP port to serve on (0.0.0.0 and ::).
    #[arg(long, default_value_t = 49983)]
    port: u16,
    /// JSON file with an `/init` body (access token, env vars, default user
    /// and workdir) applied before serving.
    #[arg(long)]
    init_file: Option<PathBuf>,
    /// Inherited pipe: envd writes one byte to it and closes it once it listens.
    #[arg(long)]
    ready_fd: Option<RawFd>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENVD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let state = Arc::new(EnvdState::default());
    let mut start_cmd = None;
    if let Some(path) = &args.init_file {
        let body =
            std::fs::read(path).with_context(|| format!("reading init file {}", path.display()))?;
        let mut init: InitRequest = serde_json::from_slice(&body)
            .with_context(|| format!("parsing init file {}", path.display()))?;
        start_cmd = init.start_cmd.take();
        state.apply_init(init);
    }
    // SAFETY: the fd was handed to us by our parent for exactly this use and
    // nothing else in envd refers to it.
    let ready = args.ready_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });

    let reaper = Reaper::start().context("starting the child reaper")?;
    // One thread serves everything: envd's work is I/O and short syscalls,
    // and each extra worker costs memory in every idle sandbox.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run(args.port, state, reaper, ready, start_cmd))
}

async fn run(
    port: u16,
    state: Arc<EnvdState>,
    reaper: Reaper,
    ready: Option<OwnedFd>,
    start_cmd: Option<StartCommand>,
) -> anyhow::Result<()> {
    let process = Arc::new(ProcessService::new(state.clone(), reaper));
    let app = server::app(state, process.clone());
    let listeners = server::bind(port).with_context(|| format!("binding port {port}"))?;
    let addrs: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    tracing::info!(?addrs, "envd listening");
    if let Some(fd) = ready {
        let mut pipe = std::fs::File::from(fd);
        pipe.write_all(b"1")
            .context("signalling readiness on --ready-fd")?;
    }
    // After readiness: the sandbox is usable while its service starts, and
    // clients of the service retry until it listens.
    if let Some(cmd) = &start_cmd {
        match process.start_command(cmd) {
            Ok(pid) => tracing::info!(pid, cmd = %cmd.cmd, "start command running"),
            Err(e) => tracing::error!(cmd = %cmd.cmd, error = %e, "start command failed to start"),
        }
    }

    tokio::select! {
        _ = server::serve(listeners, app) => Ok(()),
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down: killing the processes envd started");
            process.kill_all();
            Ok(())
        }
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
