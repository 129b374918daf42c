//! `license-broker serve`: run the broker until SIGINT/SIGTERM, then drain.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use license_broker::node::{ClusterOptions, Event};
use license_broker::server::{self, HttpTls, Options};
use license_broker::tls::TlsFiles;

/// Every option can also come from the environment (`LB_LISTEN`,
/// `LB_DATA_DIR`, `LB_LEASE_TTL`, ...) or a `--config` file; a flag wins
/// over the environment, which wins over the file.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML file of serve options; keys are the flag names without `--`
    /// (`listen = "0.0.0.0:4433"`, `lease-ttl = "30s"`,
    /// `allow-clock-rollback = true`). A flag or LB_* variable wins over it.
    #[arg(env = "LB_CONFIG", long)]
    config: Option<PathBuf>,
    /// Where the store, TLS files and keys live (created if missing).
    #[arg(env = "LB_DATA_DIR", long, default_value = "./broker-data")]
    data_dir: PathBuf,
    /// UDP address to listen on.
    #[arg(env = "LB_LISTEN", long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    /// How long a lease lives without a heartbeat (e.g. 30s, 2m).
    #[arg(env = "LB_LEASE_TTL", long, default_value = "30s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// PEM certificate chain (default: generated into DATA_DIR/tls/cert.pem).
    #[arg(env = "LB_TLS_CERT", long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key matching --tls-cert.
    #[arg(env = "LB_TLS_KEY", long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Connections beyond this are refused.
    #[arg(env = "LB_MAX_CONNECTIONS", long, default_value_t = 10_000)]
    max_connections: usize,
    /// Connections that have not authenticated yet (no welcomed Hello) that
    /// may be open at once (default: a quarter of --max-connections, at least 16).
    #[arg(env = "LB_MAX_UNAUTHENTICATED", long)]
    max_unauthenticated: Option<usize>,
    /// Unauthenticated connections one source address may hold at once.
    #[arg(env = "LB_MAX_UNAUTHENTICATED_PER_ADDRESS", long, default_value_t = 256)]
    max_unauthenticated_per_address: u32,
    /// New connections one source address may open per second.
    #[arg(env = "LB_MAX_HANDSHAKES_PER_ADDRESS", long, default_value_t = 1_000)]
    max_handshakes_per_address: u32,
    /// Failed Hellos (wrong or revoked keys) one source address may make
    /// per second; past it the failing connection is closed and the address
    /// gets no new connection until the next second.
    #[arg(env = "LB_MAX_FAILED_HELLOS_PER_ADDRESS", long, default_value_t = 100)]
    max_failed_hellos_per_address: u32,
    /// New connections per second from an address whose connection was
    /// closed for misbehaving before authenticating (no Hello in time, junk,
    /// repeated wrong keys, answers left unread), for 10 s after.
    #[arg(env = "LB_MAX_HANDSHAKES_PER_PENALIZED_ADDRESS", long, default_value_t = 10)]
    max_handshakes_per_penalized_address: u32,
    /// Close connections silent for this long.
    #[arg(env = "LB_IDLE_TIMEOUT", long, default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Async worker threads (default: one per CPU).
    #[arg(env = "LB_WORKERS", long)]
    pub workers: Option<usize>,
    /// Let webhooks reach the broker's own networks (loopback, private,
    /// link-local addresses): a receiver on this host or its LAN. Cloud
    /// metadata addresses stay refused.
    #[arg(env = "LB_WEBHOOK_ALLOW_PRIVATE", long)]
    webhook_allow_private: bool,
    /// How long an event is retried before its webhook is marked failing
    /// (it is retried on after, every 5 minutes).
    #[arg(env = "LB_WEBHOOK_RETRY_FOR", long, default_value = "1h", value_parser = humantime::parse_duration)]
    webhook_retry_for: Duration,
    /// How long shutdown waits for clients to leave.
    #[arg(env = "LB_DRAIN_GRACE", long, default_value = "1s", value_parser = humantime::parse_duration)]
    drain_grace: Duration,
    /// Close a connection that authenticates no stream (sends no valid
    /// Hello) within this long.
    #[arg(env = "LB_HELLO_TIMEOUT", long, default_value = "5s", value_parser = humantime::parse_duration)]
    hello_timeout: Duration,
    /// Drop a request stream whose started frame is not complete within this long.
    #[arg(env = "LB_FRAME_TIMEOUT", long, default_value = "10s", value_parser = humantime::parse_duration)]
    frame_timeout: Duration,
    /// Close a connection whose client does not read its answers (grants no
    /// flow-control credit) within this long.
    #[arg(env = "LB_WRITE_TIMEOUT", long, default_value = "10s", value_parser = humantime::parse_duration)]
    write_timeout: Duration,
    /// After a restart, seats stay held for the previous run's runners for
    /// one lease TTL plus this long, so they can reconnect and re-attach
    /// before anyone else takes their seats.
    #[arg(env = "LB_RESTART_GRACE", long, default_value = "10s", value_parser = humantime::parse_duration)]
    restart_grace: Duration,
    /// Where the web door (the console, the API, /metrics, /healthz)
    /// listens, over HTTPS (default: TCP on 127.0.0.1 at the --listen port,
    /// or a port the OS picks when that is 0). Keep it on loopback or an
    /// ops network.
    #[arg(env = "LB_HTTP", long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// No web door at all.
    #[arg(env = "LB_NO_HTTP", long, conflicts_with_all = ["http", "http_plain", "http_cert"])]
    no_http: bool,
    /// Serve the web door over plain HTTP, not HTTPS: API keys and cookies
    /// then cross the network in clear. For loopback, or behind a proxy
    /// that terminates TLS (warned about on any other address).
    #[arg(env = "LB_HTTP_PLAIN", long, conflicts_with = "http_cert")]
    http_plain: bool,
    /// PEM certificate chain of the web door (default: the broker's own,
    /// --tls-cert or DATA_DIR/tls/cert.pem).
    #[arg(env = "LB_HTTP_CERT", long, requires = "http_key")]
    http_cert: Option<PathBuf>,
    /// A `Host` name the web door serves (repeat, or comma-separate), besides
    /// its listen address, localhost and its certificate's names; requests
    /// naming any other host are refused (DNS rebinding).
    #[arg(env = "LB_HTTP_HOSTS", long = "http-host", value_name = "NAME", value_delimiter = ',')]
    http_hosts: Vec<String>,
    /// Connections one source address may hold open on the web door at once.
    #[arg(env = "LB_HTTP_MAX_CONNECTIONS_PER_ADDRESS", long, default_value_t = 16)]
    http_max_connections_per_address: u32,
    /// New web door connections one source address may open per second.
    #[arg(env = "LB_HTTP_MAX_NEW_CONNECTIONS_PER_ADDRESS", long, default_value_t = 64)]
    http_max_new_connections_per_address: u32,
    /// PEM private key matching --http-cert.
    #[arg(env = "LB_HTTP_KEY", long, requires = "http_cert")]
    http_key: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on /metrics. Prefer
    /// LB_METRICS_TOKEN or --metrics-token-file: a token on the command line
    /// is visible to other users of the host (warned about).
    #[arg(env = "LB_METRICS_TOKEN", long, hide_env_values = true, conflicts_with = "metrics_token_file")]
    metrics_token: Option<String>,
    /// A file whose first line is the token /metrics requires.
    #[arg(env = "LB_METRICS_TOKEN_FILE", long, value_name = "PATH")]
    metrics_token_file: Option<PathBuf>,
    /// Keep the per-minute utilization history (and the ended sessions) this long.
    #[arg(env = "LB_HISTORY_MINUTES", long, default_value = "35d", value_parser = humantime::parse_duration)]
    history_minutes: Duration,
    /// Keep the hourly rollups this long.
    #[arg(env = "LB_HISTORY_HOURS", long, default_value = "400d", value_parser = humantime::parse_duration)]
    history_hours: Duration,
    /// Keep the daily rollups this long ("forever": never delete them).
    #[arg(env = "LB_HISTORY_DAYS", long, default_value = "forever", value_parser = parse_forever)]
    history_days: Forever,
    /// Keep no utilization history at all (no history.redb; the dashboard
    /// and `usage` have nothing to show).
    #[arg(env = "LB_NO_HISTORY", long)]
    no_history: bool,
    /// Most runners one pool's wait queue holds (`runner --wait`); more are
    /// refused with QUEUE_FULL.
    #[arg(env = "LB_MAX_WAITERS", long, default_value_t = 10_000)]
    max_waiters: u32,
    /// Start even though the clock reads earlier than the latest time a
    /// previous run recorded (check the clock first).
    #[arg(env = "LB_ALLOW_CLOCK_ROLLBACK", long)]
    allow_clock_rollback: bool,
    /// The longest the broker can plausibly have been down: a start whose
    /// clock reads further ahead of the latest time a previous run
    /// recorded is refused (offline licenses would be freed early).
    #[arg(env = "LB_MAX_CLOCK_LEAP", long, default_value = "2days", value_parser = humantime::parse_duration)]
    max_clock_leap: Duration,
    /// Start even though the clock reads more than --max-clock-leap after
    /// the latest time a previous run recorded (the broker really was
    /// down that long: check the clock first).
    #[arg(env = "LB_ALLOW_CLOCK_LEAP", long)]
    allow_clock_leap: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", env = "LB_LOG_FORMAT")]
    log_format: LogFormat,
    /// Join a cluster of brokers on etcd (its client URLs,
    /// http://HOST:PORT[,...]): records live in etcd, one node serves at a
    /// time and the others redirect to it and take over when it goes
    /// (docs/CLUSTER.md). Needs --node-name and --advertise.
    #[arg(env = "LB_CLUSTER", long, value_delimiter = ',', requires_all = ["node_name", "advertise"])]
    cluster: Vec<String>,
    /// This node's name in the cluster (unique per node).
    #[arg(env = "LB_NODE_NAME", long, requires = "cluster")]
    node_name: Option<String>,
    /// HOST:PORT clients reach this node at (what other nodes redirect to).
    #[arg(env = "LB_ADVERTISE", long, requires = "cluster")]
    advertise: Option<String>,
    /// PEM of the CA that signed etcd's certificates, for https:// endpoints
    /// (system roots if absent).
    #[arg(env = "LB_ETCD_CA", long, requires = "cluster")]
    etcd_ca: Option<PathBuf>,
    /// PEM certificate this node presents to etcd (etcd --client-cert-auth).
    #[arg(env = "LB_ETCD_CERT", long, requires_all = ["cluster", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert.
    #[arg(env = "LB_ETCD_KEY", long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// Where in etcd the cluster keeps its keys (several clusters can share one etcd).
    #[arg(env = "LB_CLUSTER_PREFIX", long, default_value = license_broker::node::DEFAULT_PREFIX)]
    cluster_prefix: String,
    /// Run the broker's clock this far ahead (for rehearsing clock trouble).
    #[arg(long, hide = true, default_value = "0s", value_parser = humantime::parse_duration)]
    clock_ahead: Duration,
}

/// A duration, or `forever` (`None`).
#[derive(Clone, Copy, Debug)]
pub struct Forever(Option<Duration>);

fn parse_forever(s: &str) -> Result<Forever, humantime::DurationError> {
    match s {
        "forever" => Ok(Forever(None)),
        _ => humantime::parse_duration(s).map(|d| Forever(Some(d))),
    }
}

/// How `serve` writes its log lines (to stderr).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs to stderr at `RUST_LOG` (default `info`): `debug` adds a line per
/// session start and end.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

pub async fn run(mut a: ServeArgs) -> Result<ExitCode> {
    init_logs(a.log_format);
    if a.lease_ttl < Duration::from_millis(100) {
        bail!("--lease-ttl must be at least 100ms");
    }
    let mut options = Options::new(a.data_dir.clone(), a.listen);
    options.lease_ttl = a.lease_ttl;
    options.tls = a.tls_cert.take().zip(a.tls_key.take()).map(|(cert, key)| TlsFiles { cert, key });
    options.max_connections = a.max_connections;
    options.strangers = server::GateLimits {
        strangers: a
            .max_unauthenticated
            .unwrap_or(server::GateLimits::for_max_connections(a.max_connections).strangers),
        strangers_per_address: a.max_unauthenticated_per_address,
        handshakes_per_address: a.max_handshakes_per_address,
        failed_hellos_per_address: a.max_failed_hellos_per_address,
        penalized_handshakes_per_address: a.max_handshakes_per_penalized_address,
    };
    options.idle_timeout = a.idle_timeout;
    options.drain_grace = a.drain_grace;
    options.webhooks.allow_private = a.webhook_allow_private;
    options.webhooks.retry_for = a.webhook_retry_for;
    options.hello_timeout = a.hello_timeout;
    options.frame_timeout = a.frame_timeout;
    options.write_timeout = a.write_timeout;
    options.allow_clock_rollback = a.allow_clock_rollback;
    options.allow_clock_leap = a.allow_clock_leap;
    options.max_clock_leap = a.max_clock_leap;
    options.clock_ahead = a.clock_ahead;
    options.restart_grace = a.restart_grace;
    options.max_waiters = a.max_waiters;
    web_options(&mut options, &mut a)?;
    options.history = (!a.no_history).then_some(license_broker::history::Retention {
        minutes: a.history_minutes,
        hours: a.history_hours,
        days: a.history_days.0,
    });
    if let (false, Some(node), Some(advertise)) = (a.cluster.is_empty(), a.node_name, a.advertise) {
        if options.lease_ttl < MIN_CLUSTER_LEASE_TTL {
            tracing::warn!(
                lease_ttl = ?options.lease_ttl,
                "in a cluster a lease should outlast a failover (about 2.7 s) after its last heartbeat \
                 (a third of the TTL before): use --lease-ttl 6s or more, or runners may lose their seats \
                 when the serving node dies (docs/CLUSTER.md)"
            );
        }
        let tls = license_broker::cluster::etcd::EtcdTls { ca: a.etcd_ca, identity: a.etcd_cert.zip(a.etcd_key) };
        let cluster = ClusterOptions { endpoints: a.cluster, node, advertise, prefix: a.cluster_prefix, tls };
        return run_node(options, cluster).await;
    }
    let running = server::start(options).await?;
    show_start(running.bootstrap.as_ref(), running.http_url().as_deref())?;
    tracing::info!(cert = %running.cert_path.display(), "clients trust this certificate with --ca");
    wait_for_signal().await?;
    tracing::info!("signal received: draining");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The web door's options: where (on loopback by default), how it speaks
/// (TLS unless asked otherwise), its limits and its metrics token.
fn web_options(options: &mut Options, a: &mut ServeArgs) -> Result<()> {
    options.http = (!a.no_http).then(|| a.http.unwrap_or_else(|| default_http(a.listen)));
    options.http_default = a.http.is_none();
    options.http_hosts = std::mem::take(&mut a.http_hosts);
    options.http_limits.per_address = a.http_max_connections_per_address;
    options.http_limits.new_per_address = a.http_max_new_connections_per_address;
    options.http_tls = match (a.http_plain, a.http_cert.take().zip(a.http_key.take())) {
        (true, _) => HttpTls::Plain,
        (false, Some((cert, key))) => HttpTls::Files(TlsFiles { cert, key }),
        (false, None) => HttpTls::Broker,
    };
    options.metrics_token = metrics_token(a.metrics_token.take(), a.metrics_token_file.as_deref())?;
    Ok(())
}

/// The shortest lease TTL that outlasts a failover after the last
/// heartbeat (TTL/3 + 2.7 s < TTL).
const MIN_CLUSTER_LEASE_TTL: Duration = Duration::from_secs(6);

/// Org names for a log line (the first few, and how many more).
fn names(orgs: &[license_broker::core::OrgName]) -> String {
    let mut out: Vec<&str> = orgs.iter().take(10).map(|o| o.as_str()).collect();
    let more = orgs.len().saturating_sub(10).to_string() + " more";
    if orgs.len() > 10 {
        out.push(&more);
    }
    out.join(",")
}

/// The token `/metrics` requires: given (warned about when it came on the
/// command line, where `ps` shows it), or read from a file's first line.
fn metrics_token(given: Option<String>, file: Option<&std::path::Path>) -> Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading --metrics-token-file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() {
            bail!("--metrics-token-file {} holds no token on its first line", path.display());
        }
        return Ok(Some(token));
    }
    if std::env::args().any(|a| a == "--metrics-token" || a.starts_with("--metrics-token=")) {
        tracing::warn!(
            "a metrics token on the command line is visible to other users of this host; \
             use LB_METRICS_TOKEN or --metrics-token-file"
        );
    }
    Ok(given)
}

/// The web door's default address: TCP on loopback at the QUIC port's
/// number (so a second broker on another port gets another one, and port
/// 0 lets the OS pick both).
fn default_http(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        ip if ip.is_loopback() => ip,
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, listen.port())
}

/// Prints the keys of a first start (once), then the console's address (on
/// every start), on stdout, in one write: a reader that takes the key
/// lines and leaves finds the rest in the pipe, not a broken one.
fn show_start(keys: Option<&server::BootstrapKeys>, console: Option<&str>) -> std::io::Result<()> {
    let mut text = String::new();
    if let Some(keys) = keys {
        text += &format!("operator api key: {}\nowner api key: {}\n", keys.operator, keys.owner);
    }
    if let Some(url) = console {
        text += &format!("console: {url}\n");
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // The keys are shown once: not printing them is a failed start.
        Err(e) if keys.is_some() => Err(e),
        Err(e) => {
            tracing::warn!("printing the console's address: {e}");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Runs one node of a cluster until SIGINT/SIGTERM.
async fn run_node(options: Options, cluster: ClusterOptions) -> Result<ExitCode> {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let node = cluster.node.clone();
    let events = move |e: Event| match e {
        Event::Joined(keys) => {
            tracing::info!(node = %node, "joined the cluster: serving the orgs placed on this node");
            if let Some(keys) = keys {
                if let Err(e) = show_start(Some(&keys), None) {
                    tracing::error!("printing the first keys: {e}");
                }
            }
        }
        Event::Took(orgs) => tracing::info!(node = %node, orgs = %names(&orgs), "took orgs over"),
        Event::Gave(orgs) => tracing::info!(node = %node, orgs = %names(&orgs), "handed orgs on"),
        Event::Lost => {
            tracing::warn!(node = %node, "lost this node's etcd lease: closed every connection; joining again")
        }
    };
    let run = license_broker::node::run(options, cluster, stop_rx, events);
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => { r?; return Ok(ExitCode::SUCCESS); }
        r = wait_for_signal() => r?,
    }
    tracing::info!("signal received: leaving the cluster");
    let _ = stop.send(true);
    run.await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
