//! The `sandbar` binary: `serve` runs the whole server on one machine; the
//! other commands manage keys, sandboxes and templates, or print the
//! environment that points the E2B SDKs at it.

mod api_client;
mod dockerfile;
mod doctor;
mod env_cmd;
mod example_cmd;
mod exec_cmd;
mod keys_cmd;
mod layout;
mod sandbox_cmd;
mod serve;
mod shell_cmd;
mod template_cmd;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sandbar_store::Store;
use tracing_subscriber::EnvFilter;

use crate::layout::DataDir;
use crate::sandbox_cmd::{parse_pair, ApiClient};

#[derive(Debug, Parser)]
#[command(
    name = "sandbar",
    version,
    about = "Self-hosted sandboxes that speak the E2B API"
)]
struct Cli {
    /// Where sandbar keeps its database, keys, certificates, templates and sandboxes.
    #[arg(
        long,
        global = true,
        env = "SANDBAR_DATA_DIR",
        default_value = "/var/lib/sandbar"
    )]
    data_dir: PathBuf,
    /// Template store; default `<data-dir>/templates`.
    #[arg(long, global = true, env = "SANDBAR_TEMPLATES_DIR")]
    templates_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, the edge proxy and the sandbox runtime.
    Serve(serve::ServeArgs),
    /// Check that this host can run `sandbar serve` (same flags); prints each
    /// problem with its fix and exits 1 if there is one.
    Doctor(serve::ServeArgs),
    /// Print `export` lines that point the E2B SDKs at this server.
    Env,
    /// Print the README's example program (`js` or `python`), ready to run
    /// against this server.
    #[command(after_help = example_cmd::HOW)]
    Example {
        /// `js` or `python`
        language: String,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage teams: each key belongs to one and sees only its sandboxes.
    Teams {
        #[command(subcommand)]
        command: TeamsCommand,
    },
    /// Create, list and kill sandboxes through the API.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// Build and list templates.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key; prints it once.
    Create {
        /// A name to tell keys apart.
        #[arg(default_value = "cli")]
        name_arg: String,
        #[arg(long)]
        name: Option<String>,
        /// The team the key acts for.
        #[arg(long, default_value = sandbar_store::DEFAULT_TEAM)]
        team: String,
    },
    #[command(alias = "ls")]
    List {
        /// One JSON object per key.
        #[arg(long)]
        json: bool,
    },
    /// Revoke by id or by the prefix shown in `keys list`.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum TeamsCommand {
    /// Make a team, with limits if given.
    Create {
        name: String,
        #[command(flatten)]
        limits: keys_cmd::LimitArgs,
    },
    #[command(alias = "list")]
    Ls {
        /// One JSON object per team.
        #[arg(long)]
        json: bool,
    },
    /// Change a team's limits (the ones given; 0 removes a limit).
    Set {
        name: String,
        #[command(flatten)]
        limits: keys_cmd::LimitArgs,
    },
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Create a sandbox; prints its id.
    Create {
        #[arg(long, short, default_value = "base")]
        template: String,
        /// Seconds until it is killed (server default: 300).
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(long = "metadata", short = 'm', value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        #[arg(long = "env", short = 'e', value_parser = parse_pair)]
        envs: Vec<(String, String)>,
        /// Print the whole answer as JSON instead of the id.
        #[arg(long)]
        json: bool,
    },
    #[command(alias = "list")]
    Ls {
        /// Only sandboxes in these states (running, paused).
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
        /// One JSON object per sandbox, one per line.
        #[arg(long)]
        json: bool,
    },
    /// An interactive shell in a sandbox (a terminal on stdin); exits with
    /// the shell's status.
    Shell {
        id: String,
    },
    /// Pause a sandbox: frozen in place (processes and memory kept), or with
    /// `--files` only its files kept.
    Pause {
        id: String,
        #[arg(long)]
        files: bool,
    },
    /// Resume a paused sandbox (a running one is left as it is).
    Resume {
        id: String,
        /// Seconds it then runs until its timeout (server default: 300).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// A sandbox's CPU, memory and disk samples (every 5 s).
    Metrics {
        id: String,
        /// Only the last this many seconds.
        #[arg(long)]
        since: Option<u64>,
        /// One JSON object per sample, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Run a command (with bash) in a sandbox; exits with its status.
    Exec {
        id: String,
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
    Kill {
        id: String,
    },
    /// Print a sandbox's egress log: the names it asked for, the connections
    /// and flows it made, and what its network policy said of each.
    Logs {
        id: String,
        /// Only entries at this level or above (debug, info, warn, error).
        #[arg(long)]
        level: Option<String>,
        /// Print the entries as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// Build a built-in template (`base`, `code-interpreter-v1`) on this host
    /// unless current; or, with `--dockerfile` or `--definition`, a
    /// template of your team on the running server (each step and its
    /// output shown as it runs; unchanged steps are cached).
    Build {
        /// The template's name (`name` or `name:tag`).
        name: String,
        #[arg(long, env = "SANDBAR_UID_BASE", default_value_t = 1_000_000)]
        uid_base: u32,
        /// A Dockerfile (one FROM; RUN, COPY/ADD, ENV, ARG, WORKDIR, USER,
        /// CMD/ENTRYPOINT as the start command).
        #[arg(long, conflicts_with = "definition")]
        dockerfile: Option<PathBuf>,
        /// An SDK-style definition: the JSON `Template.toJSON()` prints.
        #[arg(long)]
        definition: Option<PathBuf>,
        /// Where COPY sources are read from.
        #[arg(long, default_value = ".")]
        context: PathBuf,
        #[arg(long)]
        cpu: Option<u32>,
        #[arg(long = "memory-mb")]
        memory_mb: Option<u64>,
        /// Command that says the start command is ready (exit 0).
        #[arg(long = "ready-cmd")]
        ready_cmd: Option<String>,
        /// Run every step again.
        #[arg(long)]
        skip_cache: bool,
    },
    /// The built-in templates here, and your team's on the server.
    #[command(alias = "list")]
    Ls {
        /// One JSON object per template.
        #[arg(long)]
        json: bool,
    },
    /// Remove one of your team's templates.
    Rm { name: String },
    /// List a template's tags; `--add` points tags at the build `--from`
    /// names, `--rm` removes tags.
    Tags {
        name: String,
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        #[arg(long, default_value = "default")]
        from: String,
        #[arg(long = "rm", value_delimiter = ',')]
        remove: Vec<String>,
        /// The tags as one JSON object each.
        #[arg(long)]
        json: bool,
    },
}

/// The API and key from the environment (as `sandbar env` exports them), or
/// from what `serve` left in the data dir.
fn api_client(data: &DataDir) -> Result<ApiClient> {
    let url = match std::env::var("E2B_API_URL") {
        Ok(u) => u,
        Err(_) => data.read_serve_state()?.api_url,
    };
    let key = match std::env::var("E2B_API_KEY") {
        Ok(k) => k,
        Err(_) => data.read_api_key()?,
    };
    ApiClient::new(&url, &key)
}

async fn open_store(data: &DataDir) -> Result<Store> {
    let url =
        std::env::var("SANDBAR_DATABASE_URL").unwrap_or_else(|_| Store::default_url(&data.root));
    Store::open(&url).await.context("opening the database")
}

fn main() -> std::process::ExitCode {
    // Must come first: the runtime re-executes this binary as its
    // single-threaded sandbox helper, before any thread exists.
    sandbar_runtime::init::main_if_requested();

    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // A client command piped into `head` should end quietly when the
        // pipe closes, as other Unix tools do (Rust ignores SIGPIPE, so a
        // print would panic instead). `serve` keeps it ignored: a closed
        // socket is an error to handle there, not a reason to exit.
        // SAFETY: no other thread exists yet; SIG_DFL has no handler to race.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, one line; no backtrace even when
            // RUST_BACKTRACE is set, as this is the operator's output.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // netlink-packet-route warns about every kernel attribute newer than
    // itself, and sqlx logs PostgreSQL's notices: noise for an operator.
    let filter = EnvFilter::try_from_env("SANDBAR_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,netlink_packet_route=error,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let data = DataDir {
        root: cli.data_dir,
        templates: cli.templates_dir,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(data, args).await,
            Command::Doctor(args) => {
                if !doctor::run(&data, &args).await? {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Env => env_cmd::run(&data),
            Command::Example { language } => example_cmd::run(&language),
            Command::Keys { command } => {
                let store = open_store(&data).await?;
                match command {
                    KeysCommand::Create {
                        name_arg,
                        name,
                        team,
                    } => {
                        keys_cmd::create(&store, name.as_deref().unwrap_or(&name_arg), &team).await
                    }
                    KeysCommand::List { json } => keys_cmd::list(&store, json).await,
                    KeysCommand::Revoke { id } => keys_cmd::revoke(&store, &id).await,
                }
            }
            Command::Teams { command } => {
                let store = open_store(&data).await?;
                match command {
                    TeamsCommand::Create { name, limits } => {
                        keys_cmd::team_create(&store, &name, &limits).await
                    }
                    TeamsCommand::Ls { json } => keys_cmd::team_list(&store, json).await,
                    TeamsCommand::Set { name, limits } => {
                        keys_cmd::team_set(&store, &name, &limits).await
                    }
                }
            }
            Command::Sandbox { command } => match command {
                SandboxCommand::Create {
                    template,
                    timeout,
                    metadata,
                    envs,
                    json,
                } => {
                    let new = sandbox_cmd::NewSandbox {
                        template: &template,
                        timeout,
                        metadata: &metadata,
                        envs: &envs,
                    };
                    sandbox_cmd::create(&api_client(&data)?, &new, json).await
                }
                SandboxCommand::Ls { state, json } => {
                    sandbox_cmd::list(&api_client(&data)?, &state, json).await
                }
                SandboxCommand::Shell { id } => {
                    let proxy = data
                        .read_serve_state()?
                        .proxy_http
                        .context("this server does not announce its HTTP listener; restart it")?;
                    let code = sandbox_cmd::shell(&api_client(&data)?, &proxy, &id).await?;
                    std::process::exit(code);
                }
                SandboxCommand::Pause { id, files } => {
                    sandbox_cmd::pause(&api_client(&data)?, &id, !files).await
                }
                SandboxCommand::Resume { id, timeout } => {
                    sandbox_cmd::resume(&api_client(&data)?, &id, timeout).await
                }
                SandboxCommand::Metrics { id, since, json } => {
                    sandbox_cmd::metrics(&api_client(&data)?, &id, since, json).await
                }
                SandboxCommand::Exec { id, command } => {
                    let proxy = data
                        .read_serve_state()?
                        .proxy_http
                        .context("this server does not announce its HTTP listener; restart it")?;
                    let code =
                        sandbox_cmd::exec(&api_client(&data)?, &proxy, &id, &command).await?;
                    if code != 0 {
                        std::process::exit(code);
                    }
                    Ok(())
                }
                SandboxCommand::Kill { id } => sandbox_cmd::kill(&api_client(&data)?, &id).await,
                SandboxCommand::Logs { id, level, json } => {
                    sandbox_cmd::logs(&api_client(&data)?, &id, level.as_deref(), json).await
                }
            },
            Command::Template { command } => match command {
                TemplateCommand::Build {
                    name,
                    uid_base,
                    dockerfile,
                    definition,
                    context,
                    cpu,
                    memory_mb,
                    ready_cmd,
                    skip_cache,
                } => {
                    if dockerfile.is_none() && definition.is_none() {
                        template_cmd::build(&data, &name, uid_base).await
                    } else {
                        let api = api_client(&data)?;
                        template_cmd::build_remote(
                            &api,
                            &template_cmd::RemoteBuild {
                                name: &name,
                                dockerfile: dockerfile.as_deref(),
                                definition: definition.as_deref(),
                                context: &context,
                                cpu_count: cpu,
                                memory_mb,
                                ready_cmd: ready_cmd.as_deref(),
                                skip_cache,
                            },
                        )
                        .await
                    }
                }
                TemplateCommand::Ls { json } => {
                    let api = api_client(&data).ok();
                    template_cmd::list_all(&data, api.as_ref(), json).await
                }
                TemplateCommand::Rm { name } => {
                    template_cmd::remove(&api_client(&data)?, &name).await
                }
                TemplateCommand::Tags {
                    name,
                    add,
                    from,
                    remove,
                    json,
                } => {
                    template_cmd::tags(&api_client(&data)?, &name, &add, &from, &remove, json).await
                }
            },
        }
    })
}
