//! A broker's life: `start` binds, opens the data dir, builds the
//! operations both doors call, and spawns the QUIC accept loop, the web
//! door, the expiry, checkpoint and history tasks; `Running` is the handle
//! that hands orgs on (a cluster node), abandons or drains, and stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{oneshot, watch, Notify};

use super::connection::{self, Notices};
use super::datadir::{self, TICKET_KEY_FILE, TOKEN_KEY_FILE};
use super::options::{BootstrapKeys, ClusterSeat, HttpTls, Options};
use super::{gate, socket, tickets, token, Load, LogBudget, Shared};
use crate::clock::Clock;
use crate::core::{Change, ConnId, OrgName, Record};
use crate::error::SetupError;
use crate::history::History;
use crate::latency::Latencies;
use crate::operations::{checkpoint, expiry, Operations, Parts};
use crate::proto::Notice;
use crate::store::Store;
use crate::tls::{self, TlsFiles};

/// A running broker.
pub struct Running {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    /// Resolves when the last handle on the operations is gone (the store closed).
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

/// Where the QUIC door listens: a cluster node binds once for its whole
/// life (serving in turn on the same endpoint); a single broker binds here.
enum Listen {
    Given(quinn::Endpoint),
    Bound(std::net::UdpSocket),
}

/// As `start`, on a cluster's store when `seat` is given.
pub async fn start_with(options: Options, seat: Option<ClusterSeat>) -> Result<Running, SetupError> {
    let bind_error = |source| SetupError::Bind { addr: options.listen, source };
    let listen = match seat.as_ref().map(|s| s.endpoint.clone()) {
        Some(endpoint) => Listen::Given(endpoint),
        None => Listen::Bound(socket::bind(options.listen).map_err(bind_error)?),
    };
    let http = match options.http {
        Some(addr) => Some(bind_web(addr, options.http_default).await?),
        None => None,
    };
    let clock = Clock::ahead(options.clock_ahead);
    let cluster = seat.as_ref().map(|s| s.seat.clone());
    let may_bootstrap = seat.as_ref().is_none_or(|s| s.may_bootstrap);
    let store: Option<Arc<dyn Store>> = cluster.as_ref().map(|s| s.store() as Arc<dyn Store>);
    let (store, core, bootstrap) = datadir::open(&options, clock, store, may_bootstrap)?;
    // Every secret loaded (and the data dir made owner-only) before the
    // endpoint takes a handshake.
    let (server_config, cert_path) = server_config(&options)?;
    let signing = crate::offline::SigningKey::load_or_generate(&options.data_dir.join(datadir::SIGNING_KEY_FILE))?;
    let run = crate::keys::random_u128().map_err(|_| SetupError::Random)? as u64;
    let tokens = token::Tokens::load_or_generate(&options.data_dir.join(TOKEN_KEY_FILE), run)?;
    let peers = cluster.as_ref().map(|_| peers(&options)).transpose()?;
    datadir::restrict_tree(&options.data_dir)?;
    let endpoint = bind_endpoint(&options, listen, server_config)?;
    let addr = endpoint.local_addr().map_err(bind_error)?;
    let history = open_history(&options);
    let (closed_tx, closed) = oneshot::channel();
    let notices = Arc::new(Notices::default());
    let ops = Arc::new(Operations::new(Parts {
        core: Arc::new(core),
        store,
        clock,
        signing,
        history: history.clone(),
        cluster,
        peers,
        holders: notices.clone(),
        closed: closed_tx,
        delivery: options.webhooks,
    }));
    let shared = Arc::new(door(options, ops, notices, tokens));
    let web = match http {
        Some((listener, bound)) => Some((web(&shared, bound)?, listener)),
        None => None,
    };
    let (stop, tasks, http_addr) = (watch::channel(false).0, Vec::new(), None);
    let mut running =
        Running { addr, http_addr, shared, closed, endpoint, stop, tasks, history_task: None, bootstrap, cert_path };
    running.spawn(history, web);
    tracing::info!(%addr, lease_ttl = ?running.shared.options.lease_ttl, "broker listening");
    Ok(running)
}

/// The QUIC door's state over `ops`.
fn door(options: Options, ops: Arc<Operations>, notices: Arc<Notices>, tokens: token::Tokens) -> Shared {
    Shared {
        ops,
        notices,
        next_conn: 1.into(),
        // Latencies are recorded only when someone can read them.
        load: Arc::new(Load { open: 0.into(), latencies: Latencies::new(options.http.is_some()) }),
        conns_gone: Notify::new(),
        auth_log: LogBudget::default(),
        tokens,
        gate: Arc::new(gate::Gate::new(options.strangers)),
        members: DashMap::new(),
        options,
    }
}

/// The web door's listener, and the address it got. The default address's
/// port may be taken (it is the QUIC port's number, free for UDP, not
/// always for TCP): then any free port on the same address.
async fn bind_web(addr: SocketAddr, default: bool) -> Result<(tokio::net::TcpListener, SocketAddr), SetupError> {
    let what = || format!("binding the web door to {addr} (serve --http ADDR moves it, --no-http turns it off)");
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Err(e) if default && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(%addr, "the web door's default port is taken; taking another (serve --http ADDR sets one)");
            tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await
        }
        bound => bound,
    };
    let listener = listener.map_err(SetupError::io(what()))?;
    let bound = listener.local_addr().map_err(SetupError::io(what()))?;
    Ok((listener, bound))
}

/// The web door over the same operations, bound to `bound`, showing this
/// door's load.
fn web(shared: &Shared, bound: SocketAddr) -> Result<Arc<crate::http::Web>, SetupError> {
    let o = &shared.options;
    let files = match &o.http_tls {
        HttpTls::Plain => None,
        HttpTls::Broker => Some(broker_tls(o)),
        HttpTls::Files(files) => Some(files.clone()),
    };
    let tls = files.as_ref().map(tls::http_server_config).transpose()?;
    let cert = files.as_ref().map(tls::leaf_certificate).transpose()?;
    let config = crate::http::Config {
        metrics_token: o.metrics_token.clone(),
        tls,
        limits: o.http_limits,
        hosts: o.http_hosts.clone(),
        listen: bound,
        cert,
    };
    let web = crate::http::Web::new(shared.ops.clone(), config, shared.load.clone());
    Ok(Arc::new(web.map_err(|_| SetupError::Random)?))
}

/// In a cluster, the client of the other nodes' slices of the history:
/// signing with the key derived from the session-token key every node
/// shares, trusting the certificate this node's web door presents (every
/// node's, when it is the cluster's generated one) and the system's roots.
fn peers(options: &Options) -> Result<Arc<crate::cluster::peer::Peers>, SetupError> {
    use crate::cluster::peer::{PeerKey, Peers};
    let path = options.data_dir.join(TOKEN_KEY_FILE);
    let key = std::fs::read(&path).map_err(SetupError::io(format!("reading {}", path.display())))?;
    let files = match &options.http_tls {
        HttpTls::Plain => None,
        HttpTls::Broker => Some(broker_tls(options)),
        HttpTls::Files(files) => Some(files.clone()),
    };
    let trusted = files.as_ref().map(tls::leaf_certificate).transpose()?;
    Peers::new(PeerKey::derive(&key), trusted).map(Arc::new).map_err(SetupError::Cluster)
}

/// The certificate and key the QUIC door presents: the given files, or the
/// data dir's own.
fn broker_tls(options: &Options) -> TlsFiles {
    options.tls.clone().unwrap_or_else(|| TlsFiles::in_data_dir(&options.data_dir))
}

/// The broker's TLS (the given files, or the data dir's own, generated on
/// first start), and the certificate clients should trust.
fn server_config(options: &Options) -> Result<(quinn::ServerConfig, PathBuf), SetupError> {
    let files = broker_tls(options);
    if options.tls.is_none() {
        tls::ensure_self_signed(&files)?;
    }
    let ticketer = tickets::Ticketer::load_or_generate(&options.data_dir.join(TICKET_KEY_FILE))?;
    let config = tls::server_config(&files, options.idle_timeout, tls::Limits::STRANGER, Some(Arc::new(ticketer)))?;
    Ok((config, files.cert))
}

/// The QUIC endpoint serving `config`: a cluster node's own, or one bound here.
fn bind_endpoint(
    options: &Options,
    listen: Listen,
    config: quinn::ServerConfig,
) -> Result<quinn::Endpoint, SetupError> {
    match listen {
        Listen::Given(endpoint) => {
            endpoint.set_server_config(Some(config));
            Ok(endpoint)
        }
        Listen::Bound(socket) => {
            let runtime = Arc::new(quinn::TokioRuntime);
            quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, runtime)
                .map_err(|source| SetupError::Bind { addr: options.listen, source })
        }
    }
}

/// The utilization history, unless it is off. One that cannot be opened
/// costs the charts, never the broker: runners are admitted whatever state
/// the history file is in.
fn open_history(options: &Options) -> Option<Arc<History>> {
    let keep = options.history.as_ref()?;
    match History::open(&options.data_dir, keep.clone()) {
        Ok(h) => Some(Arc::new(h)),
        Err(e) => {
            tracing::error!(
                "the utilization history is off for this run: {e} (move {} away to start a new one)",
                options.data_dir.join(crate::history::FILE).display()
            );
            None
        }
    }
}

impl Running {
    /// Spawns the broker's tasks: the QUIC accept loop, the expiry,
    /// checkpoint, outbox-trimming and webhook-delivering tasks, the
    /// history's, and the web door if asked for.
    fn spawn(&mut self, history: Option<Arc<History>>, web: Option<(Arc<crate::http::Web>, tokio::net::TcpListener)>) {
        let (shared, ops) = (&self.shared, &self.shared.ops);
        let stop = self.stop.subscribe();
        self.tasks = vec![
            tokio::spawn(connection::accept_loop(shared.clone(), self.endpoint.clone(), stop.clone())),
            tokio::spawn(expiry::run(ops.clone(), stop.clone())),
            tokio::spawn(crate::operations::machines::run(ops.clone(), stop.clone())),
            tokio::spawn(checkpoint::run(ops.clone(), stop.clone())),
            tokio::spawn(crate::operations::events::trim(ops.clone(), stop.clone())),
            tokio::spawn(crate::operations::deliver::run(ops.clone(), stop.clone())),
            tokio::spawn(crate::operations::events::write_queued(ops.clone(), stop.clone())),
            tokio::spawn(crate::operations::notices::run(ops.clone(), stop.clone())),
        ];
        self.history_task =
            history.map(|h| tokio::spawn(crate::history::run(ops.core_handle(), ops.clock(), h, stop.clone())));
        if let Some((web, listener)) = web {
            self.http_addr = listener.local_addr().ok();
            let plain = !web.is_tls();
            self.tasks.push(tokio::spawn(crate::http::serve(web, listener, stop)));
            if let Some(addr) = self.http_addr.filter(|a| plain && !a.ip().is_loopback()) {
                tracing::warn!(
                    %addr,
                    "the web door speaks plain HTTP on a non-loopback address: API keys and sign-in cookies \
                     cross the network in clear (use it only behind a proxy that terminates TLS)"
                );
            }
            tracing::info!(
                url = self.http_url().unwrap_or_default(),
                "web door listening (console, API, /metrics, /healthz)"
            );
        }
    }

    /// In a cluster, takes over `org` in memory from its records (read
    /// from etcd after claiming it): its pools' durable ceilings are held
    /// for the previous owner's runners (`Broker::adopt_org`). Returns what
    /// the caller must commit under the org's claim before it sets the
    /// org's fence (nothing is admitted for it before then), or else
    /// forget the org (`drop_orgs`).
    pub fn adopt(&self, org: &OrgName, records: Vec<Record>) -> Vec<Change> {
        let ops = &self.shared.ops;
        let (seats, to_write) = ops.core().adopt_org(org, records, ops.clock().now());
        crate::operations::deliver::resume(ops, org);
        if seats > 0 {
            tracing::info!(%org, seats, "took the org over: holding seats for its runners to re-attach");
        }
        // The expiry task must wake for the hold's end.
        ops.wake_expiry();
        to_write
    }

    /// Writes `events` (facts of the cluster, as an org taken) to their
    /// orgs' outboxes, numbered as any; a failure is logged and counted.
    pub async fn tell(&self, events: Vec<crate::core::Event>) {
        crate::operations::events::append(&self.shared.ops, events).await
    }

    /// In a cluster, before handing `orgs` on: their ceilings written down
    /// to the sessions held, then `unfence` (`checkpoint::hand_on`).
    pub async fn write_down(&self, orgs: &[OrgName], unfence: impl FnOnce()) -> usize {
        checkpoint::hand_on(&self.shared.ops, orgs, unfence).await
    }

    /// Whether seats are still held for the runners of `org`'s previous
    /// node (its takeover's hold is not over).
    pub fn holding(&self, org: &OrgName) -> bool {
        self.shared.ops.core().holding(org)
    }

    /// In a cluster, hands orgs on: closes their members' connections (they
    /// reconnect and are redirected to the next owner, where their runners
    /// re-attach) and forgets them, in one pass over the sessions, off the
    /// async threads. The caller has removed their fences first, so nothing
    /// more was admitted or renewed for them here (or never set them: a
    /// takeover whose hold could not be written).
    pub async fn drop_orgs(&self, orgs: Vec<OrgName>) {
        if orgs.is_empty() {
            return;
        }
        self.close_members(&orgs);
        let ops = self.shared.ops.clone();
        let forget = tokio::task::spawn_blocking(move || {
            ops.core().forget_orgs(&orgs, ops.clock().now());
            orgs
        });
        match forget.await {
            Ok(orgs) => tracing::info!(orgs = orgs.len(), "forgot orgs no longer served here"),
            Err(e) => tracing::error!("forgetting orgs no longer served here: {e}"),
        }
    }

    /// Closes the connections of the members of `orgs`.
    fn close_members(&self, orgs: &[OrgName]) {
        let members = &self.shared.members;
        let moving: std::collections::HashSet<&OrgName> = orgs.iter().collect();
        let gone: Vec<ConnId> = members.iter().filter(|e| moving.contains(&e.value().0)).map(|e| *e.key()).collect();
        for id in gone {
            if let Some((_, (_, conn))) = members.remove(&id) {
                conn.close(
                    quinn::VarInt::from_u32(connection::NOT_SERVING_CODE),
                    b"org moved to another node; reconnect",
                );
            }
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The web door's address, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The web door's URL for a browser on this host (`https://ADDR/`, or
    /// `http://` when plain); an unspecified address (0.0.0.0) is shown as
    /// loopback.
    pub fn http_url(&self) -> Option<String> {
        let mut addr = self.http_addr?;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = match self.shared.options.http_tls {
            HttpTls::Plain => "http",
            _ => "https",
        };
        Some(format!("{scheme}://{addr}/"))
    }

    /// Live sessions right now (for tests and logs).
    pub fn live_sessions(&self) -> usize {
        self.shared.ops.core().live_sessions()
    }

    /// Stops at once without a last checkpoint: a cluster node whose lease
    /// lapsed (its writes would be refused anyway). Every connection is
    /// closed (runners reconnect, are redirected to the node that serves
    /// their org now, and re-attach there with their tokens), but not the
    /// endpoint: it is handed back for the node's next run, once it has
    /// joined again.
    pub async fn abandon(self) -> quinn::Endpoint {
        self.shared.ops.drain();
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
        shared.ops.drain();
        let grace = shared.options.drain_grace;
        shared.notices.tell_all(Notice::Draining { grace_ms: grace.as_millis() as u64 });
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
        // Every webhook's cursor as delivered: a restart sends nothing again.
        let ops = &self.shared.ops;
        crate::operations::deliver::write_cursors(ops, &ops.core().org_names()).await;
        // The last counts and the clock, so a restart continues from here,
        // and ceilings down to the sessions still held (nothing is admitted
        // any more), so the restart holds seats only for runners that may
        // still be running.
        checkpoint::write(&self.shared.ops, checkpoint::Written::default(), true).await;
        // Connection and stream tasks end as the endpoint's close reaches
        // them, dropping their handles on the shared state; wait for the
        // last one, so the store is closed (and its file lock released)
        // when this returns.
        drop(self.shared);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.closed).await;
        tracing::info!("broker stopped");
    }
}
