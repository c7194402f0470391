//! `sandbar-bench`: starts its own `sandbar serve` in a scratch data dir,
//! measures create-to-ready, the official SDK's create and exec, the
//! code-interpreter SDK's create and `run_code`, the edge proxy beside direct
//! access and nginx, WebSocket round trips, memory per
//! idle sandbox and density, and teardown; stops everything it started and
//! prints one table (markdown, or JSON with `--json`).

mod api;
mod create;
mod density;
mod egress;
mod envd;
mod http;
mod leftovers;
mod machine;
mod memory;
mod netns;
mod nginx;
mod persist;
mod proxy;
mod report;
mod sdk;
mod server;
mod stats;
mod teardown;
mod templates;
mod websocket;
mod wrk;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::api::Api;
use crate::http::Client;
use crate::machine::Machine;
use crate::report::{Report, Row};
use crate::server::{Sandbar, ServeOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Create,
    Exec,
    Sdk,
    Interpreter,
    Proxy,
    Websocket,
    Persist,
    Templates,
    Egress,
    Density,
    Teardown,
}

#[derive(Debug, Parser)]
#[command(
    name = "sandbar-bench",
    version,
    about = "Benchmarks a sandbar server it starts itself"
)]
struct Args {
    /// Tiny counts, every row, well under a minute: proves the bench works.
    #[arg(long)]
    smoke: bool,
    /// Print the report as JSON on stdout (the markdown table goes to stderr).
    #[arg(long)]
    json: bool,
    /// The `sandbar` binary; default: next to this executable.
    #[arg(long)]
    sandbar_bin: Option<PathBuf>,
    /// Existing template store the scratch server uses (linked, not copied).
    #[arg(long, default_value = "/var/lib/sandbar/templates")]
    templates_from: PathBuf,
    /// Template of every sandbox the bench creates over REST.
    #[arg(long, default_value = "base")]
    template: String,
    /// Idle sandboxes to try to hold at once (default 1000; smoke 20).
    #[arg(long)]
    density: Option<usize>,
    /// Seconds of each wrk run (default 10; smoke 2).
    #[arg(long)]
    duration: Option<u64>,
    /// A venv with PyPI `e2b` 2.63.x (and `e2b-code-interpreter` 2.11.x for
    /// the interpreter rows); default: tests/e2e/.venv when it has them, else
    /// a new venv in the scratch dir.
    #[arg(long)]
    python_venv: Option<PathBuf>,
    /// Subnet for the scratch server's sandboxes; default: a random /20 in 10.160.0.0/11.
    #[arg(long)]
    subnet: Option<String>,
    /// Only these sections (comma-separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Extra argument for `sandbar serve` (repeatable).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Keep the scratch dir (server log, nginx config) after the run.
    #[arg(long)]
    keep_scratch: bool,
}

/// How many of everything: full run or smoke.
struct Counts {
    create_plan: Vec<(usize, usize)>,
    sdk_create: usize,
    sdk_exec: usize,
    interpreter_create: usize,
    interpreter_exec: usize,
    wrk_seconds: u64,
    wrk_rounds: usize,
    ws_messages: usize,
    density: usize,
    teardown: usize,
    persist: persist::PersistCounts,
    templates: templates::TemplateCounts,
    egress: egress::EgressCounts,
}

impl Counts {
    fn for_args(a: &Args) -> Self {
        let mut c = if a.smoke {
            Self {
                create_plan: vec![(1, 3), (3, 1), (5, 1)],
                sdk_create: 2,
                sdk_exec: 10,
                interpreter_create: 1,
                interpreter_exec: 10,
                wrk_seconds: 2,
                wrk_rounds: 1,
                ws_messages: 20,
                density: 20,
                teardown: 3,
                persist: persist::PersistCounts {
                    rounds: 1,
                    big_write_mib: 128,
                },
                templates: templates::TemplateCounts { creates: 2 },
                egress: egress::EgressCounts {
                    round_trips: 20,
                    bulk_mib: 128,
                    rounds: 3,
                },
            }
        } else {
            Self {
                create_plan: vec![(1, 50), (10, 5), (50, 2)],
                sdk_create: 30,
                sdk_exec: 300,
                interpreter_create: 10,
                interpreter_exec: 300,
                wrk_seconds: 10,
                wrk_rounds: 3,
                ws_messages: 1000,
                density: 1000,
                teardown: 30,
                persist: persist::PersistCounts {
                    rounds: 10,
                    big_write_mib: 1024,
                },
                templates: templates::TemplateCounts { creates: 20 },
                egress: egress::EgressCounts {
                    round_trips: 500,
                    bulk_mib: 512,
                    rounds: 5,
                },
            }
        };
        if let Some(d) = a.density {
            c.density = d;
        }
        if let Some(s) = a.duration {
            c.wrk_seconds = s;
        }
        c
    }
}

/// The main server's flag: no demand-sized warm pools.
const NO_DEMAND_POOLS: [&str; 2] = ["--warm-budget-mb", "0"];

fn random_subnet() -> String {
    let n: u16 = rand::random::<u16>() % 512;
    format!("10.{}.{}.0/20", 160 + n / 16, (n % 16) * 16)
}

fn default_sandbar_bin() -> Result<PathBuf> {
    Ok(std::env::current_exe()
        .context("finding this executable")?
        .with_file_name("sandbar"))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SANDBAR_BENCH_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sandbar-bench: starting tokio: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sandbar-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Ok(false): the bench ran but a row failed or something leaked.
async fn run(args: Args) -> Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("must run as root: sandbar makes namespaces, cgroups and nftables rules");
    }
    let machine = Machine::detect();
    let counts = Counts::for_args(&args);
    let started_at = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let scratch = tempfile::Builder::new()
        .prefix("sandbar-bench-")
        .tempdir()
        .context("making the scratch dir")?;
    let instance = format!("bn{:04x}", rand::random::<u16>());
    tracing::info!(scratch = %scratch.path().display(), %instance, "scratch dir and instance");
    // The egress rows' test host and zone, which the server must know of.
    let egress_host = if args.only.is_empty() || args.only.contains(&Section::Egress) {
        Some(egress::TestHost::start().context("starting the egress test host")?)
    } else {
        None
    };
    // The main server boots every sandbox it is asked for (the rows of
    // pooled creates have a server of their own).
    let mut serve_args: Vec<String> = NO_DEMAND_POOLS.map(String::from).into();
    serve_args.extend(args.serve_args.clone());
    if let Some(host) = &egress_host {
        serve_args.extend(host.serve_args());
    }
    let opts = ServeOptions {
        bin: args
            .sandbar_bin
            .clone()
            .map_or_else(default_sandbar_bin, Ok)?,
        data_dir: scratch.path().join("data"),
        templates_from: args.templates_from.clone(),
        instance: instance.clone(),
        subnet: args.subnet.clone().unwrap_or_else(random_subnet),
        extra_args: serve_args,
    };

    let mut sandbar = Sandbar::start(&opts).await?;
    let version = sandbar.version.clone();
    // Ctrl-C or SIGTERM ends the measurements; sandbar is stopped below
    // either way (it runs in its own process group, so the terminal's
    // signal reaches only the bench).
    let measured = tokio::select! {
        rows = measure(&args, &counts, &sandbar, &opts, scratch.path(), egress_host.as_ref()) => rows,
        signal = interrupted() => Err(signal),
    };
    let stopped = tokio::task::block_in_place(|| sandbar.stop());
    let load_at_end = machine::load_average();
    let leftovers = leftovers::find(&instance, &opts.data_dir);
    let serve_log = sandbar.log_tail();
    drop(sandbar);

    let mut rows = measured.unwrap_or_else(|e| vec![Row::error("the run", &e)]);
    if let Err(e) = stopped {
        rows.push(Row::error("sandbar shutdown", &e));
    }
    let report = Report {
        machine,
        mode: if args.smoke { "smoke" } else { "full" }.into(),
        started_at,
        sandbar_version: if version.is_empty() {
            "sandbar (version unknown)".into()
        } else {
            version
        },
        load_at_end,
        rows,
        leftovers,
    };
    let markdown = report.markdown();
    // A reader that went away (`| head`) is no reason to skip the cleanup below.
    let mut stdout = std::io::stdout().lock();
    let printed = if args.json {
        eprintln!("{markdown}");
        writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)
    } else {
        writeln!(stdout, "{markdown}")
    };
    drop(stdout);
    if let Err(e) = printed {
        tracing::warn!("writing the report to stdout: {e}");
    }
    let ok = !report.failed(args.smoke);
    if !ok {
        eprintln!("sandbar-bench: FAILED (see the errors above); last lines of sandbar's log:\n{serve_log}");
    }
    if args.keep_scratch || !report.leftovers.is_empty() {
        let kept = scratch.keep();
        eprintln!("scratch dir kept at {}", kept.display());
    }
    Ok(ok)
}

/// The SDK's exec path without the SDK: what sandbar (proxy and envd) adds.
async fn exec_row(api: &Api, sandbar: &Sandbar, n: usize) -> Row {
    const WHAT: &str = "Start 'true' round trip (raw Connect over HTTP/1.1, TLS proxy)";
    let run = async {
        let (created, _) = api.create().await?;
        let sandbox = envd::SandboxAddr {
            id: created.id.clone(),
            envd_token: created.envd_token,
            domain: sandbar.env.require("E2B_DOMAIN")?.to_string(),
        };
        let samples = envd::exec_round_trips(&api.client, sandbar.https, &sandbox, n).await;
        api.kill(&created.id).await?;
        samples
    };
    match run.await.and_then(|s| stats::Summary::of(&s).context("no samples")) {
        Ok(summary) => Row::new(
            WHAT,
            report::Measure::Distribution {
                unit: report::Unit::Ms,
                summary,
            },
        )
        .note("bash -l -c true as the SDK runs it, one keep-alive connection; no target of its own: it bounds what the SDK row can reach")
        .judged(),
        Err(e) => Row::error(WHAT, &e),
    }
}

async fn interrupted() -> anyhow::Error {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => anyhow::anyhow!("interrupted (SIGINT)"),
        _ = term.recv() => anyhow::anyhow!("terminated (SIGTERM)"),
    }
}

/// The create rows of a second server that keeps demand-sized warm pools
/// (started and stopped here, checked for leftovers like the main one,
/// which keeps none: every other row measures sandboxes that booted).
async fn pooled_create_rows(
    args: &Args,
    counts: &Counts,
    main: &ServeOptions,
    scratch: &Path,
) -> Vec<Row> {
    const WHAT: &str = "create → ready with a warm pool";
    let mut subnet = random_subnet();
    while subnet == main.subnet {
        subnet = random_subnet();
    }
    let instance = format!("bw{:04x}", rand::random::<u16>());
    // The main server's arguments but the first (its pools turned off).
    let extra_args = main.extra_args[NO_DEMAND_POOLS.len()..].to_vec();
    let opts = ServeOptions {
        data_dir: scratch.join("pooled-data"),
        instance: instance.clone(),
        subnet,
        extra_args,
        ..main.clone()
    };
    let mut pooled = match Sandbar::start(&opts).await {
        Ok(s) => s,
        Err(e) => return vec![Row::error(WHAT, &e)],
    };
    let measured = async {
        let ca_files = pooled.ca_files();
        let client = Client::new(&ca_files.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
        let api = Api::new(
            client,
            pooled.api.clone(),
            pooled.env.require("E2B_API_KEY")?.to_string(),
            args.template.clone(),
        );
        let mut rows = create::rows(&api, &counts.create_plan, true).await;
        if !args.smoke {
            rows.push(create::burst_row(&api, 200).await);
        }
        Ok::<_, anyhow::Error>(rows)
    }
    .await;
    let stopped = tokio::task::block_in_place(|| pooled.stop());
    let left = leftovers::find(&instance, &opts.data_dir);
    let mut rows = measured.unwrap_or_else(|e| vec![Row::error(WHAT, &e)]);
    if let Err(e) = stopped {
        rows.push(Row::error("the pooled server's shutdown", &e));
    }
    if !left.is_empty() {
        rows.push(Row::error(
            "the pooled server's leftovers",
            &anyhow::anyhow!("{left:?}"),
        ));
    }
    rows
}

async fn measure(
    args: &Args,
    counts: &Counts,
    sandbar: &Sandbar,
    opts: &ServeOptions,
    scratch: &Path,
    egress_host: Option<&egress::TestHost>,
) -> Result<Vec<Row>> {
    let wants = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let ca_files = sandbar.ca_files();
    let client = Client::new(&ca_files.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    let api = Api::new(
        client.clone(),
        sandbar.api.clone(),
        sandbar.env.require("E2B_API_KEY")?.to_string(),
        args.template.clone(),
    );
    let mut rows = Vec::new();

    if wants(Section::Create) {
        tracing::info!("create-to-ready, no warm pool");
        rows.extend(create::rows(&api, &counts.create_plan, false).await);
        tracing::info!("create-to-ready with a warm pool (a second server)");
        rows.extend(pooled_create_rows(args, counts, opts, scratch).await);
    }
    if wants(Section::Exec) {
        tracing::info!("raw Connect Start round trip");
        rows.push(exec_row(&api, sandbar, counts.sdk_exec).await);
    }
    if wants(Section::Sdk) || wants(Section::Interpreter) {
        let mut packages = vec![&sdk::E2B];
        if wants(Section::Interpreter) {
            packages.push(&sdk::CODE_INTERPRETER);
        }
        let python = sdk::Python::prepare(args.python_venv.as_deref(), scratch, &packages).await;
        if wants(Section::Sdk) {
            tracing::info!("official Python SDK");
            rows.extend(sdk::rows(&python, &sandbar.env, counts.sdk_create, counts.sdk_exec).await);
        }
        if wants(Section::Interpreter) {
            tracing::info!("official Python code-interpreter SDK");
            rows.extend(
                sdk::interpreter_rows(
                    &python,
                    &sandbar.env,
                    counts.interpreter_create,
                    counts.interpreter_exec,
                    &args.templates_from,
                )
                .await,
            );
        }
    }
    if wants(Section::Proxy) || wants(Section::Websocket) {
        tracing::info!("edge proxy");
        match proxy::prepare(&api, sandbar).await {
            Ok(target) => {
                if wants(Section::Proxy) {
                    rows.extend(
                        proxy::throughput_rows(
                            &target,
                            sandbar,
                            scratch,
                            counts.wrk_seconds,
                            counts.wrk_rounds,
                        )
                        .await,
                    );
                }
                if wants(Section::Websocket) {
                    rows.extend(
                        proxy::websocket_rows(&target, &client, sandbar, counts.ws_messages).await,
                    );
                }
                let id = target.sandbox.id.clone();
                drop(target);
                if let Err(e) = api.kill(&id).await {
                    rows.push(Row::error("killing the proxy bench's sandbox", &e));
                }
            }
            Err(e) => rows.push(Row::error(
                "edge proxy: preparing the sandbox and its server",
                &e,
            )),
        }
    }
    if wants(Section::Persist) {
        tracing::info!("pause, resume, snapshots, fork, auto-resume");
        let edge = persist::Edge {
            https: sandbar.https,
            domain: sandbar.env.require("E2B_DOMAIN")?.to_string(),
            instance: sandbar.instance.clone(),
        };
        rows.extend(persist::rows(&api, &edge, &counts.persist).await);
    }
    if wants(Section::Templates) {
        tracing::info!("template builds");
        let edge = persist::Edge {
            https: sandbar.https,
            domain: sandbar.env.require("E2B_DOMAIN")?.to_string(),
            instance: sandbar.instance.clone(),
        };
        rows.extend(templates::rows(&api, &edge, &counts.templates).await);
    }
    if let Some(host) = egress_host.filter(|_| wants(Section::Egress)) {
        tracing::info!("egress by name");
        rows.extend(egress::rows(&api, &sandbar.instance, host, &counts.egress).await);
    }
    if wants(Section::Density) {
        tracing::info!(target = counts.density, "idle memory and density");
        rows.extend(density::rows(&api, &sandbar.instance, counts.density).await);
    }
    if wants(Section::Teardown) {
        tracing::info!("teardown");
        rows.extend(
            teardown::rows(&api, &sandbar.instance, &sandbar.data_dir, counts.teardown).await,
        );
    }
    Ok(rows)
}
