//! `sandbar serve`: the network, the runtime, the API and the edge proxy in
//! one process, and their orderly shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use sandbar_api::{Api, ApiConfig, LocalRuntime};
use sandbar_dashboard::{Dashboard, DashboardConfig};
use sandbar_net::{NetConfig, Network};
use sandbar_proxy::certs::{LocalCaFiles, ServerCert};
use sandbar_proxy::{api_service, Listener, Proxy};
use sandbar_runtime::{DemandPools, Runtime, RuntimeConfig, RuntimeOptions, WarmSpec};
use sandbar_store::Store;
use tokio_util::sync::CancellationToken;

use crate::layout::{write_private, DataDir, ServeState};

/// How long open connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// System roots, concatenated with the local CA into the client bundle.
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetMode {
    /// Node network: internet through NAT, DNS, isolation and egress rules.
    Node,
    /// Each sandbox alone with loopback; no internet (for hosts where the
    /// node network cannot be set up).
    Private,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Public sandbox domain: sandboxes are at `{port}-{id}.{domain}`.
    #[arg(long, env = "SANDBAR_DOMAIN", default_value = "sandbar.localhost")]
    pub domain: String,
    /// Plain-HTTP API listener (what `sandbar env` gives as E2B_API_URL). The
    /// API is also served at `https://api.{domain}` through the proxy.
    #[arg(long, env = "SANDBAR_API_LISTEN", default_value = "127.0.0.1:3049")]
    pub api_listen: SocketAddr,
    /// TLS listener of the edge proxy (`[::]` is dual-stack: `*.localhost`
    /// resolves to ::1 first, then 127.0.0.1).
    #[arg(long, env = "SANDBAR_HTTPS_LISTEN", default_value = "[::]:443")]
    pub https_listen: SocketAddr,
    /// Plain-HTTP listener of the edge proxy.
    #[arg(long, env = "SANDBAR_HTTP_LISTEN", default_value = "[::]:80")]
    pub http_listen: SocketAddr,
    /// Public port of the proxy's TLS listener when it differs from the one
    /// it binds (e.g. behind a port forward); default: the bound port.
    #[arg(long, env = "SANDBAR_PUBLIC_PORT")]
    pub public_port: Option<u16>,
    /// Short name ([a-z0-9], <= 6 chars) that prefixes every host object, so
    /// that several servers on one machine never collide.
    #[arg(long, env = "SANDBAR_INSTANCE", default_value = "sb")]
    pub instance: String,
    /// Range that sandboxes take their addresses from.
    #[arg(long, env = "SANDBAR_SUBNET", default_value = "10.201.0.0/16")]
    pub subnet: Ipv4Net,
    /// Longest sandbox timeout a client may ask for, in seconds.
    #[arg(long, env = "SANDBAR_MAX_TIMEOUT", default_value_t = 24 * 3600)]
    pub max_timeout: u64,
    /// Certificate chain (PEM) for `*.{domain}`, instead of the local CA's.
    #[arg(long, env = "SANDBAR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "SANDBAR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Database URL; default SQLite in the data dir. `postgres://...` to
    /// share one catalog between nodes.
    #[arg(long, env = "SANDBAR_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Boxed: keeps the CLI's command enum small.
    #[command(flatten)]
    pub binaries: Box<SandboxBinaries>,
    /// Host uid that root inside a sandbox maps to (65536 ids from there).
    #[arg(long, env = "SANDBAR_UID_BASE", default_value_t = 1_000_000)]
    pub uid_base: u32,
    /// How many ready network namespaces to keep.
    #[arg(long, env = "SANDBAR_POOL_SIZE", default_value_t = 32)]
    pub pool_size: usize,
    #[arg(long, env = "SANDBAR_NETWORK", value_enum, default_value = "node")]
    pub network: NetMode,
    /// Sandboxes to keep started ahead of demand, as `TEMPLATE=COUNT`
    /// (comma-separated); a create of that template then only hands one
    /// over. The code interpreter's kernel takes about a second to start,
    /// hence its default. `TEMPLATE=0` turns one off.
    #[arg(
        long,
        env = "SANDBAR_WARM",
        value_delimiter = ',',
        default_value = "code-interpreter-v1=1",
        value_parser = parse_warm
    )]
    pub warm: Vec<(String, usize)>,
    /// Memory the demand-sized warm pools may hold in all (MiB): every
    /// template created from keeps as many sandboxes booted ahead as the
    /// biggest burst of its creates (those within one second) in the last
    /// 30 s (at least one while it was used in the last 10 minutes), within
    /// this budget. 0 turns them off (the `--warm` floors stay).
    #[arg(long, env = "SANDBAR_WARM_BUDGET_MB", default_value_t = 1024)]
    pub warm_budget_mb: u64,
    /// A range to open out of what sandboxes never reach (private networks,
    /// link-local, ...: the IANA special-purpose blocks), for sandboxes
    /// whose `allowOut` covers it; repeatable. Sandboxes of this server stay
    /// apart whatever is opened.
    #[arg(
        long = "open-range",
        env = "SANDBAR_OPEN_RANGES",
        value_delimiter = ','
    )]
    pub open_ranges: Vec<Ipv4Net>,
    /// A special-purpose range that is part of the internet here (e.g. an
    /// egress proxy or package mirror on a documentation address): every
    /// sandbox reaches it; repeatable. `sandbar doctor` suggests it when
    /// this host's own way out lies in such a range.
    #[arg(
        long = "public-range",
        env = "SANDBAR_PUBLIC_RANGES",
        value_delimiter = ','
    )]
    pub public_ranges: Vec<Ipv4Net>,
    /// Resolvers the sandboxes' DNS forwarder asks (`IP` or `IP:port`,
    /// repeatable); default: the host's, from /etc/resolv.conf.
    #[arg(
        long = "dns-upstream",
        env = "SANDBAR_DNS_UPSTREAM",
        value_delimiter = ',',
        value_parser = parse_resolver
    )]
    pub dns_upstream: Vec<SocketAddr>,
    /// Size of the layer store's image (sandboxes' files, snapshots), made
    /// at first start in the data dir: bytes, or with a K/M/G/T suffix.
    /// Default: 80% of the free space there. The image is sparse.
    #[arg(long, env = "SANDBAR_STORE_SIZE", value_parser = parse_size)]
    pub store_size: Option<u64>,
    /// The criu binary that checkpoints sandboxes' processes: a stop of the
    /// server keeps them (resumed with their memory), snapshots and forks
    /// carry them. scripts/install-criu.sh puts it at the default path.
    /// `none` turns that off; a missing or failing criu leaves it off (said
    /// once in the log), with files kept as without it.
    #[arg(long, env = "SANDBAR_CRIU", default_value = "/usr/local/sbin/criu")]
    pub criu: String,
    /// A proxy or load balancer in front of sandbar (an address or CIDR)
    /// whose `X-Forwarded-For` is believed; from any other client the
    /// header is replaced with the client's address. Repeatable.
    #[arg(long = "trusted-proxy", env = "SANDBAR_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long metric samples (one per running sandbox every 5 s) are
    /// kept, in hours.
    #[arg(long, env = "SANDBAR_METRICS_RETENTION_HOURS", default_value_t = 7 * 24)]
    pub metrics_retention_hours: u64,
    /// Pull a registry's images from a mirror instead, as
    /// `registry=http(s)://host[:port]` (`docker.io` for Docker Hub), for
    /// template builds' `fromImage`. Repeatable.
    #[arg(long = "registry-mirror", env = "SANDBAR_REGISTRY_MIRRORS", value_delimiter = ',', value_parser = parse_mirror)]
    pub registry_mirrors: Vec<(String, String)>,
    /// How long template builds' cached steps, uploaded files and pulled
    /// images are kept after the last build used them, in hours.
    #[arg(long, env = "SANDBAR_BUILD_CACHE_HOURS", default_value_t = 7 * 24)]
    pub build_cache_hours: u64,
    /// Template builds one team may run at once (more answer 429).
    #[arg(long, env = "SANDBAR_MAX_BUILDS_PER_TEAM", default_value_t = 4)]
    pub max_builds_per_team: usize,
    /// Sandboxes the node starts at once; more creates wait their turn, in
    /// order, for at most --start-queue-secs, then answer 503 (Retry-After).
    #[arg(long, env = "SANDBAR_MAX_STARTING", default_value_t = 16)]
    pub max_starting: usize,
    #[arg(long, env = "SANDBAR_START_QUEUE_SECS", default_value_t = 10)]
    pub start_queue_secs: u64,
}

/// `100G`, `512M`, `1T` or plain bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        other => return Err(format!("'{s}': unknown unit '{other}' (use K, M, G or T)")),
    };
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// A CIDR, or an address meaning just itself.
fn parse_mirror(s: &str) -> Result<(String, String), String> {
    sandbar_api::parse_registry_mirror(s)
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{s}' is neither a CIDR nor an IP address"))
}

/// A resolver: `IP:port`, or an IP meaning port 53.
fn parse_resolver(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("'{s}' is neither IP nor IP:port"))
}

fn parse_warm(s: &str) -> Result<(String, usize), String> {
    let (template, count) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected TEMPLATE=COUNT"))?;
    let count = count
        .trim()
        .parse()
        .map_err(|_| format!("'{s}': COUNT must be a number"))?;
    Ok((template.trim().to_string(), count))
}

/// Host binaries that sandboxes run, bind-mounted read-only.
#[derive(Debug, clap::Args)]
pub struct SandboxBinaries {
    /// The envd binary put into every sandbox; default: `envd` next to this
    /// executable.
    #[arg(long, env = "SANDBAR_ENVD")]
    pub envd: Option<PathBuf>,
    /// The code-interpreter server put into sandboxes of templates that start
    /// it (`code-interpreter-v1`); default: `sandbar-interpreter` next to this
    /// executable, when it is there.
    #[arg(long, env = "SANDBAR_INTERPRETER")]
    pub interpreter: Option<PathBuf>,
}

fn instance_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 6
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The `domain` clients get: with the port unless it is 443.
fn public_domain(domain: &str, port: u16) -> String {
    if port == 443 {
        domain.to_string()
    } else {
        format!("{domain}:{port}")
    }
}

/// `http://` URL a local client uses to reach a listener.
fn api_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", listen.port())
}

/// Reuses the operator key kept in the data dir while the database still
/// accepts it; otherwise makes one and prints it (once).
async fn operator_key(data: &DataDir, store: &Store) -> Result<()> {
    if let Ok(key) = data.read_api_key() {
        if store.verify_api_key(&key).await?.is_some() {
            return Ok(());
        }
        tracing::warn!(
            "the stored operator key is unknown to the database or revoked; making a new one"
        );
    }
    let k = store.create_api_key("operator").await?;
    write_private(&data.api_key_file(), format!("{}\n", k.key).as_bytes())?;
    println!(
        "API key (also kept in {}): {}",
        data.api_key_file().display(),
        k.key
    );
    Ok(())
}

fn write_ca_bundle(data: &DataDir, ca: &std::path::Path) -> Result<PathBuf> {
    let mut bundle = Vec::new();
    if let Some(roots) = SYSTEM_ROOTS.iter().find_map(|p| std::fs::read(p).ok()) {
        bundle.extend(roots);
        bundle.push(b'\n');
    } else {
        tracing::warn!("no system CA bundle found; the client bundle holds only the local CA");
    }
    bundle.extend(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    let path = data.ca_bundle();
    std::fs::write(&path, bundle).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    Ok(())
}

pub async fn run(data: DataDir, args: ServeArgs) -> Result<()> {
    if !instance_ok(&args.instance) {
        bail!(
            "--instance must be 1 to 6 characters of [a-z0-9], got '{}'",
            args.instance
        );
    }
    std::fs::create_dir_all(&data.root)
        .with_context(|| format!("creating {}", data.root.display()))?;
    let started = std::time::Instant::now();
    // Before anything records a metric: every crate's figures reach it.
    sandbar_api::telemetry::install();

    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| Store::default_url(&data.root));
    let store = Store::open(&db_url).await.context("opening the database")?;
    operator_key(&data, &store).await?;

    let (cert, ca_cert) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (
            ServerCert::from_pem_files(c, k).context("loading --tls-cert/--tls-key")?,
            None,
        ),
        _ => {
            let files = LocalCaFiles::new(data.tls_dir());
            let cert = ServerCert::local(&files, &args.domain)
                .context("making the local CA and certificate")?;
            let ca = cert.ca_cert_path.clone();
            (cert, ca)
        }
    };
    let tls = cert
        .server_config()
        .context("building the TLS configuration")?;
    let ca_bundle = ca_cert
        .as_deref()
        .map(|ca| write_ca_bundle(&data, ca))
        .transpose()?;

    // Bind every listener before starting sandboxes, so a taken port fails fast.
    let api_listener = tokio::net::TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("binding the API listener {}", args.api_listen))?;
    let https = sandbar_proxy::bind(args.https_listen)
        .await
        .with_context(|| format!("binding the HTTPS listener {}", args.https_listen))?;
    let http = sandbar_proxy::bind(args.http_listen)
        .await
        .with_context(|| format!("binding the HTTP listener {}", args.http_listen))?;
    let https_port = args.public_port.unwrap_or(https.local_addr()?.port());

    let run_dir = PathBuf::from("/run/sandbar").join(&args.instance);
    let net = match args.network {
        NetMode::Node => Some(
            Network::new(NetConfig {
                instance: args.instance.clone(),
                subnet: args.subnet,
                state_dir: run_dir.clone(),
                pool_size: args.pool_size,
                dns_upstream: args.dns_upstream.clone(),
                open_ranges: args.open_ranges.clone(),
                public_ranges: args.public_ranges.clone(),
            })
            .await
            .context("setting up the sandbox network (`--network private` runs sandboxes without internet)")?,
        ),
        NetMode::Private => {
            tracing::warn!("--network private: sandboxes get loopback only, no internet");
            None
        }
    };

    let envd_bin = match &args.binaries.envd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("envd"),
    };
    let interpreter_bin = match &args.binaries.interpreter {
        Some(p) => {
            if !p.is_file() {
                bail!("--interpreter: {} is not a file", p.display());
            }
            Some(p.clone())
        }
        None => {
            let beside = std::env::current_exe()?.with_file_name("sandbar-interpreter");
            if beside.is_file() {
                Some(beside)
            } else {
                tracing::warn!(
                    path = %beside.display(),
                    "no sandbar-interpreter binary: sandboxes of code-interpreter templates cannot start"
                );
                None
            }
        }
    };
    let runtime_config = RuntimeConfig {
        instance: args.instance.clone(),
        data_dir: data.root.clone(),
        templates_dir: data.templates_dir(),
        envd_bin,
        interpreter_bin,
        uid_base: args.uid_base,
    };
    // Warm sandboxes have the resources every create gets (the API's defaults).
    let defaults = ApiConfig::new(String::new());
    let options = RuntimeOptions {
        store_size: args.store_size,
        criu: (args.criu != "none").then(|| PathBuf::from(&args.criu)),
        warm: args
            .warm
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(template, count)| WarmSpec {
                template: template.clone(),
                count: *count,
                cpu_count: defaults.default_cpu_count,
                memory_mb: defaults.default_memory_mb,
                disk_mb: defaults.default_disk_mb,
            })
            .collect(),
        demand_pools: (args.warm_budget_mb > 0).then_some(DemandPools {
            budget_mb: args.warm_budget_mb,
            cpu_count: defaults.default_cpu_count,
            memory_mb: defaults.default_memory_mb,
            disk_mb: defaults.default_disk_mb,
        }),
        sandbox_client: Some(sandbox_client()),
        ..RuntimeOptions::default()
    };
    let runtime = match Runtime::start_with(runtime_config, net.clone(), options).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(net) = &net {
                net.shutdown().await.ok();
            }
            return Err(e).context("starting the sandbox runtime");
        }
    };

    let mut api_config = ApiConfig::new(public_domain(&args.domain, https_port));
    api_config.metrics_retention = Duration::from_secs(args.metrics_retention_hours * 3600);
    api_config.max_timeout = Duration::from_secs(args.max_timeout);
    api_config.build_files_dir = Some(data.build_files_dir());
    api_config.data_dir = Some(data.root.clone());
    api_config.registry_mirrors = args.registry_mirrors.clone();
    api_config.build_cache_retention = Duration::from_secs(args.build_cache_hours * 3600);
    api_config.max_builds_per_team = args.max_builds_per_team.max(1);
    api_config.max_starting = args.max_starting.max(1);
    api_config.start_queue_wait = Duration::from_secs(args.start_queue_secs);
    api_config.default_timeout = api_config.default_timeout.min(api_config.max_timeout);
    let api = match Api::start(
        api_config,
        store.clone(),
        Arc::new(LocalRuntime::new(runtime.clone(), net.clone())),
    )
    .await
    {
        Ok(api) => api,
        Err(e) => {
            runtime.shutdown().await;
            if let Some(net) = &net {
                net.shutdown().await.ok();
            }
            return Err(e).context("starting the API");
        }
    };
    let router = api.router();
    // The dashboard goes through the API router in-process, with the key of
    // each signed-in session; served at https://{domain}/ and /dashboard/.
    let dashboard = Dashboard::new(
        router.clone(),
        DashboardConfig::new(public_domain(&args.domain, https_port)),
    );

    let shutdown = CancellationToken::new();
    let api_server = tokio::spawn({
        let shutdown = shutdown.clone();
        let router = dashboard.beside(router.clone());
        async move {
            axum::serve(api_listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .map_err(|e| e.to_string())
        }
    });
    let catalog = api.proxy_catalog(runtime.clone());
    let proxy = Proxy::new(&args.domain, catalog, Some(api_service(router)))
        .trusting(args.trusted_proxies.clone())
        .with_dashboard(api_service(dashboard.router()));
    let proxy_server = tokio::spawn({
        let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
        async move {
            sandbar_proxy::serve(
                proxy,
                vec![Listener::Tls(https, tls), Listener::Plain(http)],
                shutdown,
            )
            .await;
            Ok::<(), String>(())
        }
    });

    let state = ServeState {
        api_url: api_url(args.api_listen),
        proxy_http: Some(api_url(args.http_listen)),
        domain: public_domain(&args.domain, https_port),
        ca_cert,
        ca_bundle,
        instance: args.instance.clone(),
        pid: std::process::id(),
    };
    std::fs::write(data.serve_state_file(), serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("writing {}", data.serve_state_file().display()))?;
    tracing::info!(
        api = %state.api_url,
        domain = %state.domain,
        https = %args.https_listen,
        http = %args.http_listen,
        ready_ms = started.elapsed().as_millis() as u64,
        "sandbar is serving"
    );
    eprintln!(
        "sandbar is serving: API {} , sandboxes at https://{{port}}-{{id}}.{}",
        state.api_url, state.domain
    );
    eprintln!(
        "run `eval \"$(sandbar env --data-dir {})\"` to point the E2B SDKs here",
        data.root.display()
    );
    eprintln!(
        "the dashboard is at https://{}/ (and {}/dashboard/); sign in with an API key",
        state.domain, state.api_url
    );

    let signal = shutdown_signal().await;

    // Stop taking requests first so no sandbox is created while we tear down.
    shutdown.cancel();
    proxy.close_tunnels();
    for (what, task) in [("API", api_server), ("proxy", proxy_server)] {
        match tokio::time::timeout(DRAIN, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "{what} server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "{what} server task failed"),
            Err(_) => tracing::warn!("{what} server did not drain within {DRAIN:?}"),
        }
    }
    runtime.shutdown().await;
    if let Err(e) = api.shutdown().await {
        tracing::warn!(error = %e, "recording the sandboxes as gone failed");
    }
    if let Some(net) = &net {
        net.shutdown()
            .await
            .context("releasing the sandbox network")?;
    }
    store.close().await;
    tracing::info!("sandbar stopped cleanly");
    signal
}

/// The runtime's way to envd's `/init` and `/health` and the interpreter's
/// readiness: HTTP, which the runtime does not speak itself.
fn sandbox_client() -> sandbar_runtime::SandboxClient {
    sandbar_runtime::SandboxClient::new(|stream, r| {
        Box::pin(async move {
            sandbar_sandbox_client::send(stream, r.method, &r.path, r.body, r.token.as_deref())
                .await
                .map(|a| sandbar_runtime::InnerAnswer {
                    status: a.status,
                    body: a.body,
                })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::parse_warm;

    #[test]
    fn sizes_take_units() {
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert_eq!(super::parse_size("100G"), Ok(100 << 30));
        assert_eq!(super::parse_size("512MiB"), Ok(512 << 20));
        assert!(super::parse_size("12X").is_err());
        assert!(super::parse_size("G").is_err());
        assert!(super::parse_size("99999999999T").is_err());
    }

    #[test]
    fn warm_pools_are_template_equals_count() {
        assert_eq!(
            parse_warm("code-interpreter-v1=2"),
            Ok(("code-interpreter-v1".to_string(), 2))
        );
        assert_eq!(parse_warm(" base = 0 "), Ok(("base".to_string(), 0)));
        assert!(parse_warm("base").unwrap_err().contains("TEMPLATE=COUNT"));
        assert!(parse_warm("base=many").unwrap_err().contains("number"));
    }
}
