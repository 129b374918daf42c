//! How to run a broker: the options a command line or a config file
//! sets, and what a cluster node hands the broker it runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::GateLimits;
use crate::tls::TlsFiles;

/// How to run a broker.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the store and the generated TLS files live.
    pub data_dir: PathBuf,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Lease lifetime without a heartbeat.
    pub lease_ttl: Duration,
    /// Certificate and key; `None` uses (and first generates) `DATA_DIR/tls/`.
    pub tls: Option<TlsFiles>,
    /// Connections beyond this are refused.
    pub max_connections: usize,
    /// Concurrent request streams per connection.
    pub max_streams: u32,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// How long a shutdown waits for clients to leave.
    pub drain_grace: Duration,
    /// A connection that authenticates no stream within this is closed.
    pub hello_timeout: Duration,
    /// A frame whose first bytes arrived must be complete within this.
    pub frame_timeout: Duration,
    /// Answers must be taken (read) by the client within this, or its
    /// connection is closed.
    pub write_timeout: Duration,
    /// Start even if the clock is behind the latest time a previous run
    /// recorded (the operator has checked the clock).
    pub allow_clock_rollback: bool,
    /// Start even if the clock reads further ahead of the latest time a
    /// previous run recorded than `max_clock_leap` (the operator has
    /// checked the clock: the broker really was down that long).
    pub allow_clock_leap: bool,
    /// The longest a broker can plausibly have been down: a start whose
    /// clock reads further ahead of the last recorded time is refused
    /// (offline licenses and activations would be freed early).
    pub max_clock_leap: Duration,
    /// Runs the broker's clock this far ahead of the system's (for
    /// rehearsing and testing clock trouble; zero in production).
    pub clock_ahead: Duration,
    /// After a restart, seats stay held for the previous run's runners for
    /// one lease TTL plus this long, so they can reconnect and re-attach.
    pub restart_grace: Duration,
    /// Most runners one pool's wait queue holds.
    pub max_waiters: u32,
    /// Where to serve the web door (console, API, `/metrics`, `/healthz`),
    /// if anywhere (`serve` puts it on loopback unless told otherwise).
    pub http: Option<SocketAddr>,
    /// Whether `http` is only the default (`serve` without `--http`): when
    /// its port is taken, the door takes another on the same address (and
    /// `serve` prints where) rather than the broker not starting.
    pub http_default: bool,
    /// How the web door speaks: TLS (the broker's certificate or its own),
    /// or plain HTTP when asked for explicitly.
    pub http_tls: HttpTls,
    /// A bearer token `/metrics` requires, if set.
    pub metrics_token: Option<String>,
    /// The web door's budgets and deadlines for strangers.
    pub http_limits: crate::http::Limits,
    /// `Host` names the web door serves besides its listen address,
    /// `localhost` and its certificate's names.
    pub http_hosts: Vec<String>,
    /// Limits on connections that have not authenticated yet.
    pub strangers: GateLimits,
    /// Keep the utilization history (`history.redb` in the data dir) for
    /// this long, or not at all (`None`).
    pub history: Option<crate::history::Retention>,
    /// How webhooks are delivered: which addresses they may reach, how
    /// long an event is retried before its webhook is marked failing.
    pub webhooks: crate::events::hooks::Settings,
}

impl Options {
    /// Defaults with the given data dir and listen address.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Options {
        Options {
            data_dir,
            listen,
            lease_ttl: Duration::from_secs(30),
            tls: None,
            max_connections: 10_000,
            max_streams: 16,
            idle_timeout: Duration::from_secs(30),
            drain_grace: Duration::from_secs(1),
            hello_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            allow_clock_rollback: false,
            allow_clock_leap: false,
            max_clock_leap: DEFAULT_MAX_CLOCK_LEAP,
            clock_ahead: Duration::ZERO,
            restart_grace: Duration::from_secs(10),
            max_waiters: 10_000,
            http: None,
            http_default: false,
            http_tls: HttpTls::Broker,
            metrics_token: None,
            http_limits: crate::http::Limits::default(),
            http_hosts: Vec::new(),
            strangers: GateLimits::for_max_connections(10_000),
            history: Some(crate::history::Retention::default()),
            webhooks: crate::events::hooks::Settings::default(),
        }
    }
}

/// How the web door speaks.
#[derive(Clone, Debug)]
pub enum HttpTls {
    /// TLS with the certificate the QUIC door presents (`Options::tls`, or
    /// the data dir's own).
    Broker,
    /// TLS with a certificate of its own (`--http-cert`, `--http-key`).
    Files(TlsFiles),
    /// Plain HTTP (`--http-plain`): for loopback, or behind a proxy that
    /// terminates TLS.
    Plain,
}

/// What a cluster node hands the broker it runs for as long as its etcd
/// lease lasts (`crate::node`): the records in etcd, which orgs it serves
/// and how long it may. Without it the broker is a single node on its
/// redb file.
pub struct ClusterSeat {
    /// The node's place in the cluster.
    pub seat: Arc<crate::cluster::Seat>,
    /// The node's endpoint, bound once: the broker serves on it while the
    /// node's lease lasts, and hands it back when it is lost.
    pub endpoint: quinn::Endpoint,
    /// Whether this node may create an empty cluster's first records (it
    /// holds the claim of the `default` org they create): of nodes joining
    /// an empty cluster at once, only one does.
    pub may_bootstrap: bool,
}

/// `--max-clock-leap`'s default: two days, a long weekend's outage.
pub const DEFAULT_MAX_CLOCK_LEAP: Duration = Duration::from_secs(2 * 86_400);

/// How far behind the clock recorded by a previous run a cluster node's
/// clock may read and still start: the run before was most likely another
/// node, whose clock is never exactly this one's.
pub const CLUSTER_CLOCK_SKEW: Duration = Duration::from_secs(2);

/// Keys created when a data dir is initialised; shown once.
#[derive(Clone, Debug)]
pub struct BootstrapKeys {
    /// The operator's key (creates orgs, sets quotas).
    pub operator: String,
    /// The Owner key of the `default` org.
    pub owner: String,
}
