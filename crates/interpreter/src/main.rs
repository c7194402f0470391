//! sandbar-interpreter: the code-interpreter server inside `code-interpreter-v1`
//! sandboxes (port 49999). It speaks E2B's `/execute` and `/contexts` API and
//! drives Jupyter kernels directly over their ZeroMQ protocol.
//!
//! Why no Jupyter server in between: it is a second Python process per
//! sandbox (tens of MiB and about a second to start) and a WebSocket hop on
//! every message; talking ZeroMQ to the kernels keeps a run's round trip
//! and each sandbox's memory small.
//!
//! Owns: kernels and contexts inside one sandbox. Must not touch: anything
//! outside the sandbox; like envd it stands alone (no other sandbar crate).

mod api;
mod contexts;
mod envvars;
mod kernel;
mod kernelspec;
mod output;
mod sandbox_env;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

use crate::contexts::Contexts;
use crate::kernelspec::KernelSpecs;

#[derive(Debug, Parser)]
#[command(
    name = "sandbar-interpreter",
    version,
    about = "Code-interpreter server for Jupyter kernels"
)]
struct Args {
    /// TCP port to serve on (all addresses).
    #[arg(long, default_value_t = 49999)]
    port: u16,
    /// Where to look for kernelspecs (`<dir>/<kernel>/kernel.json`); repeatable.
    #[arg(long = "kernels-dir")]
    kernels_dirs: Vec<PathBuf>,
    /// Where kernels' connection files go (private to root).
    #[arg(long, default_value = "/run/sandbar-interpreter")]
    run_dir: PathBuf,
    /// Working directory of contexts that name none.
    #[arg(long, default_value = "/home/user")]
    cwd: String,
    /// Do not start the default kernels (Python, JavaScript) until their
    /// first request.
    #[arg(long)]
    lazy: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDBAR_INTERPRETER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    // One thread: the work is relaying messages; the kernels do the computing.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dirs = if args.kernels_dirs.is_empty() {
        kernelspec::DEFAULT_DIRS.iter().map(PathBuf::from).collect()
    } else {
        args.kernels_dirs.clone()
    };
    let specs = KernelSpecs::discover(&dirs);
    tracing::info!(languages = ?specs.languages(), "kernels found");
    create_private_dir(&args.run_dir)?;
    let contexts = Arc::new(Contexts::new(specs, args.run_dir.clone(), args.cwd.clone()));
    if !args.lazy {
        // The default kernels start with the sandbox, so the first runCode
        // does not pay for them.
        contexts.start_defaults().await;
    }

    let listener = bind(args.port).await?;
    tracing::info!(addr = ?listener.local_addr().ok(), "code interpreter listening");
    let app = api::router(contexts.clone());
    // Output lines are small writes spread over time: without NODELAY each
    // waits for the client's delayed ACK (up to 40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "TCP_NODELAY not set");
        }
    });
    let served = axum::serve(listener, app).with_graceful_shutdown(async {
        shutdown_signal().await;
    });
    let result = served.await.context("serving");
    contexts.shut_down().await;
    let _ = std::fs::remove_dir_all(&args.run_dir);
    result
}

/// Dual-stack when the sandbox has IPv6, IPv4 otherwise.
async fn bind(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    match tokio::net::TcpListener::bind(v6).await {
        Ok(l) => Ok(l),
        Err(_) => {
            let v4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port));
            tokio::net::TcpListener::bind(v4)
                .await
                .with_context(|| format!("binding port {port}"))
        }
    }
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
