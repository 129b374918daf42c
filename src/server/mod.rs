//! The async shell: owns the socket, the tasks and the real clock, and moves
//! bytes between QUIC streams and the core.
//!
//! Reading order: `start` (here) binds and spawns the accept loop and the
//! expiry task → `connection` (one per QUIC connection) → `stream` (one per
//! request stream: framing, Hello, pipelining) → `handler` (one request →
//! core, and the store for durable changes).

mod checkpoint;
mod clock;
mod connection;
mod expiry;
mod gate;
mod handler;
pub(crate) mod latency;
mod paging;
mod reports;
mod socket;
mod stream;
mod tickets;
mod token;
mod waiting;
mod wire;

pub use socket::bind as bind_udp;

pub use clock::Clock;
pub use gate::GateLimits;
pub use stream::{MAX_STRANGER_REFUSALS, NOT_READING_CODE, STRANGER_REFUSALS_CODE};
pub(crate) use wire::denial_code;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::core::hash::FastSet;
use crate::core::{Broker, Change, Config, ConnId, Email, Ended, OrgName, Pending, Record, SessionId};
use crate::error::SetupError;
use crate::proto::{Notice, WireError};
use crate::store::{RedbStore, Store, StoreError};
use crate::tls::{self, TlsFiles};

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
    /// Runs the broker's clock this far ahead of the system's (for
    /// rehearsing and testing clock trouble; zero in production).
    pub clock_ahead: Duration,
    /// After a restart, seats stay held for the previous run's runners for
    /// one lease TTL plus this long, so they can reconnect and re-attach.
    pub restart_grace: Duration,
    /// Most runners one pool's wait queue holds.
    pub max_waiters: u32,
    /// Where to serve the ops endpoint (`/metrics`, `/healthz`), if anywhere.
    pub http: Option<SocketAddr>,
    /// A bearer token `/metrics` requires, if set.
    pub metrics_token: Option<String>,
    /// Connections the ops endpoint serves at once.
    pub http_connections: usize,
    /// How long one ops connection may stay open.
    pub http_lifetime: Duration,
    /// Limits on connections that have not authenticated yet.
    pub strangers: GateLimits,
    /// Keep the utilization history (`history.redb` in the data dir) for
    /// this long, or not at all (`None`).
    pub history: Option<crate::history::Retention>,
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
            clock_ahead: Duration::ZERO,
            restart_grace: Duration::from_secs(10),
            max_waiters: 10_000,
            http: None,
            metrics_token: None,
            http_connections: crate::http::MAX_CONNECTIONS,
            http_lifetime: crate::http::CONNECTION_LIFETIME,
            strangers: GateLimits::for_max_connections(10_000),
            history: Some(crate::history::Retention::default()),
        }
    }
}

/// What a cluster node hands the broker it runs for as long as its etcd
/// lease lasts (`cluster::node`): the records in etcd, which orgs it serves
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

/// State shared by every task of one broker.
pub(crate) struct Shared {
    pub core: Broker,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    /// Serialises durable changes: plan, commit and apply happen as one step.
    pub writer: tokio::sync::Mutex<()>,
    /// Notice senders by connection, for pushing session ends and draining.
    pub notices: DashMap<ConnId, mpsc::Sender<Notice>>,
    /// Wakes the expiry task when a deadline earlier than its target appears.
    pub expiry_wake: Notify,
    /// The deadline (Unix ms) the expiry task is sleeping towards.
    pub expiry_target: AtomicU64,
    /// Set on shutdown: nothing new is admitted.
    pub draining: AtomicBool,
    pub next_conn: AtomicU64,
    pub open_conns: AtomicUsize,
    /// Signalled when the last open connection ends (shutdown waits on it).
    pub conns_gone: Notify,
    pub options: Options,
    /// Signs offline licenses (generated once into the data dir).
    pub signing: crate::offline::SigningKey,
    /// Rate limit of the failed-authentication log.
    pub auth_log: LogBudget,
    /// Request latencies by kind, for `/metrics`.
    pub latencies: latency::Latencies,
    /// Signs and checks session tokens.
    pub tokens: token::Tokens,
    /// Budgets connections that have not authenticated yet.
    pub gate: Arc<gate::Gate>,
    /// Serialises ceiling writes (raises and lowerings), so the durable
    /// ceiling is always the last value written and never below memory's.
    pub ceiling: tokio::sync::Mutex<()>,
    /// The utilization history, unless it is off.
    pub history: Option<Arc<crate::history::History>>,
    /// Signs the ops endpoint's sign-in cookies.
    pub signer: crate::http::auth::Signer,
    /// In a cluster: which orgs this node serves, and until when.
    pub cluster: Option<Arc<crate::cluster::Seat>>,
    /// In a cluster: the connections of each org's members, so that an org
    /// handed to another node has its connections closed (they reconnect
    /// and are redirected). Empty on a single broker.
    pub members: DashMap<ConnId, (OrgName, quinn::Connection)>,
    /// Dropped with the last handle on this state, after every field above
    /// (fields drop in order), so `Running::shutdown` knows the store is closed.
    pub _closed: oneshot::Sender<()>,
}

impl Shared {
    /// Commits a pending change durably (off the async threads) and settles
    /// it: applied on success, undone on failure. Sessions it ended are announced.
    pub async fn settle<T>(&self, pending: Pending<T>) -> Result<T, WireError> {
        let committed = match pending.changes() {
            [] => Ok(()),
            changes => {
                let (store, changes) = (self.store.clone(), changes.to_vec());
                tokio::task::spawn_blocking(move || store.commit(&changes))
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Backend(Box::new(e))))
            }
        };
        let (value, ended) = pending.settle(&self.core, committed, self.clock.now()).map_err(handler::store_failure)?;
        self.announce(ended);
        Ok(value)
    }

    /// Raises `org`/`pool`'s durable ceiling before admitting past it (a
    /// no-op if a concurrent raise already made room).
    pub async fn raise_ceiling(&self, org: &crate::core::OrgName, pool: crate::core::PoolId) -> Result<(), WireError> {
        let _ceiling = self.ceiling.lock().await;
        match self.core.plan_ceiling(org, pool) {
            Some(pending) => self.settle(pending).await,
            None => Ok(()),
        }
    }

    /// Tells each ended session's connection why it ended.
    pub fn announce(&self, ended: Vec<Ended>) {
        for e in ended {
            if let Some(tx) = self.notices.get(&e.conn) {
                // Notices are advisory: a full queue means the client is not
                // reading, and its next request will say the session is gone.
                let _ = tx.try_send(Notice::SessionEnded { session: e.info.session, reason: e.reason.into() });
            }
            self.ended(e);
        }
    }

    /// An Owner/Admin ends a session of their org: audited first, then
    /// ended (its holder gets a notice). QUIC's `KillSession` and the
    /// dashboard's Kill button both come here.
    pub async fn kill(
        &self,
        p: &crate::core::Principal,
        org: crate::core::OrgName,
        session: crate::core::SessionId,
    ) -> Result<(), WireError> {
        let _writer = self.writer.lock().await;
        let audit = self.core.plan_kill(p, &org, session, self.clock.now())?;
        self.settle(Pending::plan(audit, ())).await?;
        let ended = self.core.kill(p, &org, session, self.clock.now())?;
        self.announce(vec![ended]);
        Ok(())
    }

    /// Every session end passes here once: logged, and handed to the history.
    pub fn ended(&self, e: Ended) {
        let i = &e.info;
        let reason = e.reason.name();
        let (session, pool, machine, user, labels) = (&i.session, &i.pool, &i.machine, &i.user, &i.labels);
        tracing::debug!(%session, %pool, %machine, %user, %labels, reason, "session ended");
        if let Some(h) = &self.history {
            h.ended(e);
        }
    }

    /// Wakes the expiry task if `deadline` is earlier than what it waits for.
    pub fn deadline_added(&self, deadline: crate::core::Millis) {
        // Relaxed: a stale read only causes a spurious or a missed wake-up of
        // a task that re-reads the table's published deadlines anyway, and a
        // missed one is impossible: the task stores its target before sleeping.
        if deadline.0 < self.expiry_target.load(Ordering::Relaxed) {
            self.expiry_wake.notify_one();
        }
    }

    /// Resolves once no connection is open.
    async fn all_connections_gone(&self) {
        loop {
            let gone = self.conns_gone.notified();
            tokio::pin!(gone);
            // Registered before the check, so a close between the two still wakes us.
            gone.as_mut().enable();
            // Relaxed: paired with the Notify, which orders the wake-up.
            if self.open_conns.load(Ordering::Relaxed) == 0 {
                return;
            }
            gone.await;
        }
    }

    pub fn is_draining(&self) -> bool {
        // Relaxed: a request racing the start of a drain may go either way.
        self.draining.load(Ordering::Relaxed)
    }

    /// Waits for a turn to compute a report from the history (bounded
    /// memory: `history::READERS` at once); `None` when the history is off.
    pub async fn report_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match &self.history {
            Some(h) => h.reading().await,
            None => None,
        }
    }

    /// Refuses (`NOT_OWNER`) on a cluster node whose lease may have
    /// lapsed: it admits and renews nothing more, whatever its memory
    /// holds. Checked before every admission and renewal (docs/CLUSTER.md:
    /// the window); one monotonic clock read.
    pub fn valid(&self) -> Result<(), WireError> {
        match &self.cluster {
            Some(seat) if !seat.validity.valid() => Err(WireError::new(
                crate::proto::ErrorCode::NotOwner,
                "this node no longer serves (its etcd lease lapsed); reconnect: any node redirects to the one that does",
            )),
            _ => Ok(()),
        }
    }

    /// Refuses (`NOT_OWNER`) on a cluster node that does not serve `org`,
    /// or whose lease may have lapsed.
    pub fn owning(&self, org: Option<&OrgName>) -> Result<(), WireError> {
        let Some(seat) = &self.cluster else { return Ok(()) };
        self.valid()?;
        let not_owner = |why: String| Err(WireError::new(crate::proto::ErrorCode::NotOwner, why));
        match org {
            Some(org) if seat.fences.get(org).is_none() => match seat.served_at(org.as_str()) {
                Some(owner) => not_owner(format!(
                    "org {org} is served by node {} at {}: connect there (--server {})",
                    owner.node, owner.advertise, owner.advertise
                )),
                None => not_owner(format!("no node serves org {org} this instant (it is moving); retry shortly")),
            },
            _ => Ok(()),
        }
    }
}

/// State of one connection, shared by its streams: what the shell needs
/// to end the connection's sessions on a clean close.
pub(crate) struct ConnCtx {
    /// Identifies the connection to the core (session ownership).
    pub id: ConnId,
    /// Sessions acquired through this connection and not yet ended by it.
    pub sessions: parking_lot::Mutex<FastSet<SessionId>>,
    /// Signalled when a stream of this connection is welcomed (its `Hello`
    /// authenticated), which lifts the connection's Hello deadline.
    pub welcomed: Notify,
    /// `Hello`s of this connection that failed to authenticate.
    pub failed_hellos: std::sync::atomic::AtomicU32,
    /// Whether any stream of this connection has authenticated.
    pub authenticated: AtomicBool,
    /// Frames refused (undecodable, or a request before `Hello`) while no
    /// stream of this connection had authenticated.
    pub stranger_refusals: std::sync::atomic::AtomicU32,
    /// The connection itself, to close it from a stream.
    pub conn: quinn::Connection,
    /// Its `Checkout` requests still waiting (bounded, see `waiting`).
    pub waits: std::sync::atomic::AtomicU32,
}

impl Shared {
    /// A connection is being closed for misbehaving: if none of its streams
    /// authenticated, its address gets the gate's reduced handshake rate
    /// for a while (see `GateLimits::penalized_handshakes_per_address`).
    pub(crate) fn penalize(&self, ctx: &ConnCtx) {
        // Relaxed: a hint; a member's connection is never penalized once seen.
        if !ctx.authenticated.load(Ordering::Relaxed) {
            self.gate.penalize(ctx.conn.remote_address().ip(), self.clock.now().0 / 1000);
        }
    }
}

/// Lets through at most `PER_SECOND` log lines a second, so a flood of
/// failures cannot flood the log.
#[derive(Default)]
pub(crate) struct LogBudget {
    /// (second, lines logged in it), packed as second << 16 | count.
    window: AtomicU64,
}

impl LogBudget {
    const PER_SECOND: u64 = 10;

    /// Whether one more line may be logged at `now`.
    pub fn allow(&self, now: crate::core::Millis) -> bool {
        let second = now.0 / 1000;
        // Relaxed: an approximate budget; a few lines more or less is fine.
        let prev = self.window.load(Ordering::Relaxed);
        let (s, n) = (prev >> 16, prev & 0xffff);
        let next = if s == second { (second << 16) | (n + 1).min(0xffff) } else { (second << 16) | 1 };
        let _ = self.window.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed);
        s != second || n < Self::PER_SECOND
    }
}

/// A running broker.
pub struct Running {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    /// Resolves when the last handle on `shared` is gone (the store closed).
    closed: oneshot::Receiver<()>,
    endpoint: quinn::Endpoint,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The history's task: let finish (it writes the last ended sessions), not aborted.
    history_task: Option<tokio::task::JoinHandle<()>>,
    /// Keys printed on first start, `None` on later starts.
    pub bootstrap: Option<BootstrapKeys>,
    /// The certificate clients should trust.
    pub cert_path: PathBuf,
}

/// Binds, opens the data dir (initialising it if empty), and starts serving.
/// Binding comes first: a broker that cannot listen leaves no data dir
/// behind, so the keys of a first start are never created unseen.
pub async fn start(options: Options) -> Result<Running, SetupError> {
    start_with(options, None).await
}

/// As `start`, on a cluster's store when `seat` is given.
pub async fn start_with(options: Options, seat: Option<ClusterSeat>) -> Result<Running, SetupError> {
    let bind_error = |source| SetupError::Bind { addr: options.listen, source };
    // A cluster node binds once for its whole life (standing by and
    // serving in turn on the same endpoint); a single broker binds here.
    enum Listen {
        Given(quinn::Endpoint),
        Bound(std::net::UdpSocket),
    }
    let listen = match seat.as_ref().map(|s| s.endpoint.clone()) {
        Some(endpoint) => Listen::Given(endpoint),
        None => Listen::Bound(socket::bind(options.listen).map_err(bind_error)?),
    };
    let http = match options.http {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| SetupError::Bind { addr, source })?)
        }
        None => None,
    };
    let clock = Clock::ahead(options.clock_ahead);
    let cluster = seat.as_ref().map(|s| s.seat.clone());
    let may_bootstrap = seat.as_ref().is_none_or(|s| s.may_bootstrap);
    let store: Option<Arc<dyn Store>> = seat.map(|s| s.seat.store.clone() as Arc<dyn Store>);
    let (store, core, bootstrap) = open(&options, clock, store, may_bootstrap)?;
    let files = match &options.tls {
        Some(f) => f.clone(),
        None => {
            let f = TlsFiles::in_data_dir(&options.data_dir);
            tls::ensure_self_signed(&f)?;
            f
        }
    };
    let ticketer = tickets::Ticketer::load_or_generate(&options.data_dir.join(TICKET_KEY_FILE))?;
    let server_config =
        tls::server_config(&files, options.idle_timeout, tls::Limits::STRANGER, Some(Arc::new(ticketer)))?;
    let signing = crate::offline::SigningKey::load_or_generate(&options.data_dir.join(SIGNING_KEY_FILE))?;
    let run = crate::keys::random_u128().map_err(|_| SetupError::Random)? as u64;
    let tokens = token::Tokens::load_or_generate(&options.data_dir.join(TOKEN_KEY_FILE), run)?;
    restrict_tree(&options.data_dir)?;
    let endpoint = match listen {
        Listen::Given(endpoint) => {
            endpoint.set_server_config(Some(server_config));
            endpoint
        }
        Listen::Bound(socket) => {
            let runtime = Arc::new(quinn::TokioRuntime);
            quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server_config), socket, runtime)
                .map_err(bind_error)?
        }
    };
    let addr = endpoint.local_addr().map_err(bind_error)?;

    // A history that cannot be opened costs the charts, never the broker:
    // runners are admitted whatever state the history file is in.
    let history = match &options.history {
        Some(keep) => match crate::history::History::open(&options.data_dir, keep.clone()) {
            Ok(h) => Some(Arc::new(h)),
            Err(e) => {
                tracing::error!(
                    "the utilization history is off for this run: {e} (move {} away to start a new one)",
                    options.data_dir.join(crate::history::FILE).display()
                );
                None
            }
        },
        None => None,
    };
    let gate = Arc::new(gate::Gate::new(options.strangers));
    let (closed_tx, closed) = oneshot::channel();
    let metrics_served = options.http.is_some();
    let shared = Arc::new(Shared {
        core,
        store,
        clock,
        writer: tokio::sync::Mutex::new(()),
        notices: DashMap::new(),
        expiry_wake: Notify::new(),
        expiry_target: AtomicU64::new(u64::MAX),
        draining: AtomicBool::new(false),
        next_conn: AtomicU64::new(1),
        open_conns: AtomicUsize::new(0),
        conns_gone: Notify::new(),
        options,
        signing,
        auth_log: LogBudget::default(),
        // Recorded only when someone can read them.
        latencies: latency::Latencies::new(metrics_served),
        tokens,
        gate,
        ceiling: tokio::sync::Mutex::new(()),
        history: history.clone(),
        signer: crate::http::auth::Signer::new().map_err(|_| SetupError::Random)?,
        cluster,
        members: DashMap::new(),
        _closed: closed_tx,
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(connection::accept_loop(shared.clone(), endpoint.clone(), stop_rx.clone())),
        tokio::spawn(expiry::run(shared.clone(), stop_rx.clone())),
        tokio::spawn(checkpoint::run(shared.clone(), stop_rx.clone())),
    ];
    let history_task = history.map(|h| tokio::spawn(crate::history::run(shared.clone(), h, stop_rx.clone())));
    let http_addr = match http {
        Some(listener) => {
            let local = listener.local_addr().ok();
            tasks.push(tokio::spawn(crate::http::serve(shared.clone(), listener, stop_rx)));
            tracing::info!(addr = ?local, "ops endpoint listening (/metrics, /healthz)");
            local
        }
        None => None,
    };
    tracing::info!(%addr, lease_ttl = ?shared.options.lease_ttl, "broker listening");
    Ok(Running {
        addr,
        http_addr,
        shared,
        closed,
        endpoint,
        stop,
        tasks,
        history_task,
        bootstrap,
        cert_path: files.cert,
    })
}

/// A data dir opened: its store, the core rebuilt from it, and the keys of
/// a first start (to show once).
type Opened = (Arc<dyn Store>, Broker, Option<BootstrapKeys>);

/// Opens the store in the data dir, replays it into a new core, and
/// initialises it (with keys to show once) if it was empty.
fn open(
    options: &Options,
    clock: Clock,
    cluster: Option<Arc<dyn Store>>,
    may_bootstrap: bool,
) -> Result<Opened, SetupError> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(SetupError::io(format!("creating data dir {}", options.data_dir.display())))?;
    // Owner-only before anything is written into it, whatever the umask.
    restrict(&options.data_dir, 0o700)?;
    let store_error = |what| move |source| SetupError::Store { what, source };
    let clustered = cluster.is_some();
    let skew = if clustered { CLUSTER_CLOCK_SKEW } else { Duration::ZERO };
    let store: Arc<dyn Store> = match cluster {
        Some(store) => store,
        None => {
            Arc::new(RedbStore::open(&options.data_dir.join(STORE_FILE)).map_err(store_error("opening the store"))?)
        }
    };
    let audit_base = crate::keys::random_u128().map_err(|_| SetupError::Random)? as u64 >> 1;
    let core = Broker::new(Config {
        lease_ttl: options.lease_ttl,
        audit_seq_base: audit_base,
        ceilings: true,
        restart_grace: options.restart_grace,
        max_waiters: options.max_waiters,
        session_id_key: crate::keys::random_u128().map_err(|_| SetupError::Random)?,
        ..Config::default()
    });
    // (In a cluster, only the broker's own records: each org's are loaded
    // when this node takes it over.)
    let records = store.load().map_err(store_error("loading the store"))?;
    let recorded_ttl = records.iter().find_map(|r| match r {
        Record::Leases { ttl_ms, .. } => Some(*ttl_ms),
        _ => None,
    });
    // Bootstrap writes every first record in one commit: no key, no bootstrap yet.
    let fresh = may_bootstrap && !records.iter().any(|r| matches!(r, Record::Key { .. }));
    core.apply(&records.into_iter().map(Change::Put).collect::<Vec<_>>(), clock.now());
    let (now, high_water) = (clock.now(), core.high_water());
    if now.after(skew) < high_water && !options.allow_clock_rollback {
        return Err(SetupError::ClockBehind { now, high_water });
    }
    // Record this start's time at once: a crash from here on still leaves
    // a mark. With it, before anything is admitted, the hold of the
    // previous run's seats, so that a crash during the hold still honours
    // it; and on a fresh store the first records, in the same commit: if
    // it fails, the next start is fresh again and shows its own keys (keys
    // committed but never shown would be lost to everyone).
    let mut marks = vec![Change::Put(Record::Clock { high_water: now })];
    if let Some(mut hold) = core.hold_reserves(now) {
        if hold.seats > 0 {
            let until = crate::core::format_utc(hold.until);
            tracing::info!(seats = hold.seats, %until, "holding seats for the previous run's runners to re-attach");
        }
        // In a cluster, the longest TTL any node has run with: a node taking
        // over an org holds its seats for that long (`Broker::adopt_org`),
        // whichever node admitted its runners.
        if let (true, Record::Leases { ttl_ms, .. }) = (clustered, &mut hold.record) {
            *ttl_ms = (*ttl_ms).max(recorded_ttl.unwrap_or(0));
        }
        marks.push(Change::Put(hold.record));
    }
    let bootstrap = match fresh {
        true => {
            let (keys, changes) = bootstrap(&core, clock)?;
            marks.extend(changes.iter().cloned());
            Some((keys, changes))
        }
        false => None,
    };
    store.commit(&marks).map_err(store_error("initialising the store"))?;
    let bootstrap = bootstrap.map(|(keys, changes)| {
        core.apply(&changes, now);
        keys
    });
    Ok((store, core, bootstrap))
}

/// Mints a new operator key straight into a data dir, for an operator who
/// lost theirs: whoever can read and write the data dir owns the broker
/// anyway. Refused while a broker has the store open (its file is locked).
pub fn mint_operator_key(data_dir: &std::path::Path) -> Result<String, SetupError> {
    let path = data_dir.join(STORE_FILE);
    if !path.exists() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no broker store here");
        return Err(SetupError::Io { what: format!("opening {}", path.display()), source });
    }
    let store = RedbStore::open(&path).map_err(|source| SetupError::Store { what: "opening the store", source })?;
    let (key, hash) = crate::keys::generate().map_err(|_| SetupError::Random)?;
    let change = Broker::new(Config::default()).plan_operator_key(hash, Clock::new().now());
    store.commit(&[change]).map_err(|source| SetupError::Store { what: "writing the key", source })?;
    Ok(key)
}

/// Sets `path`'s permission bits to `mode`.
fn restrict(path: &std::path::Path, mode: u32) -> Result<(), SetupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(SetupError::io(format!("restricting {}", path.display())))
}

/// Makes the data dir owner-only: every directory 0700, every file 0600
/// (the store, the TLS key, the signing key: secrets or what guards them).
fn restrict_tree(dir: &std::path::Path) -> Result<(), SetupError> {
    let entries = std::fs::read_dir(dir).map_err(SetupError::io(format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(SetupError::io(format!("reading {}", dir.display())))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(SetupError::io(format!("reading {}", path.display())))?;
        if kind.is_dir() {
            restrict(&path, 0o700)?;
            restrict_tree(&path)?;
        } else if kind.is_file() {
            restrict(&path, 0o600)?;
        }
    }
    Ok(())
}

/// The store's file inside the data dir.
pub const STORE_FILE: &str = "broker.redb";

/// The TLS ticket secret inside the data dir (see `tickets`).
pub const TICKET_KEY_FILE: &str = "tls/ticket.key";

/// The session-token key inside the data dir (32 bytes; whoever has it can
/// forge leases for a restarted broker, so owner-only like the rest).
pub const TOKEN_KEY_FILE: &str = "session-token.key";

/// Makes every secret of the data dir a broker needs (TLS files unless
/// given, session-token key, offline signing key, TLS ticket key) that is
/// not there yet. A cluster node calls it between adopting the cluster's
/// secrets and publishing its own (`cluster::secrets`).
pub(crate) fn ensure_secrets(options: &Options) -> Result<(), SetupError> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(SetupError::io(format!("creating data dir {}", options.data_dir.display())))?;
    restrict(&options.data_dir, 0o700)?;
    if options.tls.is_none() {
        tls::ensure_self_signed(&TlsFiles::in_data_dir(&options.data_dir))?;
    }
    tickets::Ticketer::load_or_generate(&options.data_dir.join(TICKET_KEY_FILE))?;
    crate::offline::SigningKey::load_or_generate(&options.data_dir.join(SIGNING_KEY_FILE))?;
    token::Tokens::load_or_generate(&options.data_dir.join(TOKEN_KEY_FILE), 0)?;
    Ok(())
}

/// The files `ensure_secrets` makes, as paths inside the data dir; the TLS
/// pair only when the broker generates its own.
pub(crate) fn secret_files(options: &Options) -> Vec<&'static str> {
    let mut files = vec![TOKEN_KEY_FILE, SIGNING_KEY_FILE, TICKET_KEY_FILE];
    if options.tls.is_none() {
        files.extend(["tls/cert.pem", "tls/key.pem"]);
    }
    files
}

/// The offline-license signing key inside the data dir.
pub const SIGNING_KEY_FILE: &str = "offline/signing-key.pem";

/// The first records of a fresh store (an operator key, the `default`
/// org and its Owner's key) and the keys to show once; committed by the
/// caller with the start's marks.
fn bootstrap(core: &Broker, clock: Clock) -> Result<(BootstrapKeys, Vec<Change>), SetupError> {
    let random = |_: crate::keys::RandomUnavailable| SetupError::Random;
    let (operator, operator_hash) = crate::keys::generate().map_err(random)?;
    let (owner, owner_hash) = crate::keys::generate().map_err(random)?;
    // Invariant: a literal that satisfies the email rules (core tests use it too).
    let owner_email = Email::new("owner@default").expect("valid email");
    let changes = core.plan_bootstrap(operator_hash, &owner_email, owner_hash, clock.now());
    Ok((BootstrapKeys { operator, owner }, changes))
}

impl Running {
    /// In a cluster, takes over `org` from its records (read from etcd after
    /// claiming it): its pools' durable ceilings are held for the previous
    /// owner's runners (`Broker::adopt_org`). The caller sets the org's
    /// fence after this, so nothing is admitted for it before the hold.
    /// Returns the seats held.
    pub fn adopt(&self, org: &OrgName, records: Vec<Record>) -> u64 {
        let now = self.shared.clock.now();
        let seats = self.shared.core.adopt_org(org, records, now);
        if seats > 0 {
            tracing::info!(%org, seats, "took the org over: holding seats for its runners to re-attach");
        }
        // The expiry task must wake for the hold's end.
        self.shared.expiry_wake.notify_one();
        seats
    }

    /// In a cluster, hands orgs on: closes their members' connections (they
    /// reconnect and are redirected to the next owner, where their runners
    /// re-attach) and forgets them, in one pass over the sessions, off the
    /// async threads. The caller has removed their fences first, so nothing
    /// more was admitted or renewed for them here.
    pub async fn drop_orgs(&self, orgs: Vec<OrgName>) {
        if orgs.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let moving: std::collections::HashSet<&OrgName> = orgs.iter().collect();
        let gone: Vec<ConnId> =
            shared.members.iter().filter(|e| moving.contains(&e.value().0)).map(|e| *e.key()).collect();
        for id in gone {
            if let Some((_, (_, conn))) = shared.members.remove(&id) {
                conn.close(
                    quinn::VarInt::from_u32(connection::NOT_SERVING_CODE),
                    b"org moved to another node; reconnect",
                );
            }
        }
        let forget = tokio::task::spawn_blocking(move || {
            shared.core.forget_orgs(&orgs, shared.clock.now());
            orgs
        });
        match forget.await {
            Ok(orgs) => tracing::info!(orgs = orgs.len(), "handed orgs on"),
            Err(e) => tracing::error!("forgetting the orgs handed on: {e}"),
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ops endpoint's address, if `--http` was given.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Live sessions right now (for tests and logs).
    pub fn live_sessions(&self) -> usize {
        self.shared.core.live_sessions()
    }

    /// Stops at once without a last checkpoint: a cluster node whose lease
    /// lapsed (its writes would be refused anyway). Every connection is
    /// closed (runners reconnect, are redirected to the node that serves
    /// their org now, and re-attach there with their tokens), but not the
    /// endpoint: it is handed back for the node's next run, once it has
    /// joined again.
    pub async fn abandon(self) -> quinn::Endpoint {
        self.shared.draining.store(true, Ordering::Relaxed);
        // Every connection task closes its connection on this.
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.shared.all_connections_gone()).await;
        for t in self.tasks.into_iter().chain(self.history_task) {
            t.abort();
            let _ = t.await;
        }
        drop(self.shared);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.closed).await;
        tracing::info!("broker stopped serving (claim lost)");
        self.endpoint
    }

    /// Drains: admits nothing new, tells every client, waits up to the grace
    /// period for them to leave, then closes the endpoint.
    pub async fn shutdown(self) {
        let shared = &self.shared;
        shared.draining.store(true, Ordering::Relaxed);
        let grace = shared.options.drain_grace;
        for entry in shared.notices.iter() {
            let _ = entry.value().try_send(Notice::Draining { grace_ms: grace.as_millis() as u64 });
        }
        let _ = tokio::time::timeout(grace, shared.all_connections_gone()).await;
        let _ = self.stop.send(true);
        self.endpoint.close(quinn::VarInt::from_u32(0), b"broker shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        if let Some(t) = self.history_task {
            // It writes what it still holds, then returns; bounded all the same.
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t).await.is_err() {
                abort.abort();
            }
        }
        // The last counts and the clock, so a restart continues from here,
        // and ceilings down to the sessions still held (nothing is admitted
        // any more), so the restart holds seats only for runners that may
        // still be running.
        checkpoint::write(&self.shared, checkpoint::Written::default(), true).await;
        // Connection and stream tasks end as the endpoint's close reaches
        // them, dropping their handles on the shared state; wait for the
        // last one, so the store is closed (and its file lock released)
        // when this returns.
        drop(self.shared);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.closed).await;
        tracing::info!("broker stopped");
    }
}
