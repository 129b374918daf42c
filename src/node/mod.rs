//! One node of a cluster: shares the secrets, joins with an etcd lease of
//! its own, runs the broker for the orgs it serves, and every `POLL` places
//! orgs: it takes over the orgs nobody serves that prefer it (rendezvous
//! over the live nodes), hands on those that prefer a node that joined,
//! and drops any whose claim it lost. When its lease is lost it closes
//! everything and joins again with a new one; told to stop, it drains and
//! revokes its lease, so its orgs move at once.
//!
//! The supervisor sits above the broker it runs (`server::start_with`,
//! `Running`): the broker asks the cluster only through its `Seat`
//! (`cluster::seat`), never this module. `placer` decides which orgs this
//! node serves, pass by pass.
//!
//! A takeover is a restart of one org on another node: the node loads the
//! org's records from etcd and holds each pool's durable ceiling for the
//! previous owner's runners until they re-attach (with tokens any node
//! verifies) or one lease TTL and the grace pass, exactly as a single
//! broker does after a crash (`Broker::adopt_org`; the node writes its
//! hold's raised ceilings under its claim before it serves the org, or
//! gives the claim back: `placer`). A handover first writes each pool's
//! ceiling down to the sessions held, so the next node holds only those;
//! and an org is handed on only once its own
//! takeover's hold is over, so it never moves back while seats are held
//! for its runners. A node whose lease lapses stops at its valid-until
//! (the keeper and every placement pass race it), writes nothing, and
//! refuses connections until it has joined again.

mod placer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::etcd::{Etcd, EtcdTls};
use crate::cluster::membership::Membership;
use crate::cluster::ownership::{self, NodeLease, Owner, Validity};
use crate::cluster::seat::{Seat, SeatParts};
use crate::cluster::store::{self as etcd_store, EtcdStore, Fences, Layout};
use crate::core::OrgName;
use crate::error::SetupError;
use crate::server::{self, BootstrapKeys, ClusterSeat, Options, Running};
use placer::Placer;

/// How a node joins its cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// etcd's client URLs (`http://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// `HOST:PORT` clients reach this node at.
    pub advertise: String,
    /// Where in etcd the cluster keeps its keys.
    pub prefix: String,
    /// How to speak TLS to `https://` endpoints.
    pub tls: EtcdTls,
}

/// The prefix of a cluster's keys in etcd unless told otherwise.
pub const DEFAULT_PREFIX: &str = "/license-broker/";

/// How often a node reads the claims and the live nodes and places orgs.
/// A failover waits for the dead node's lease to lapse
/// (`ownership::LEASE_TTL`) plus at most this.
pub const POLL: Duration = Duration::from_millis(100);

/// How often a node re-reads the list of orgs (an org appears there when
/// it is created, and its creator claims it at once, so this only matters
/// for orgs whose creator died before the claim was placed).
pub const ORGS_EVERY: Duration = Duration::from_secs(2);

/// How long a node must have been live before orgs are handed to it: a
/// node that flaps (starts, dies, starts) does not move orgs back and forth.
pub const SETTLE: Duration = Duration::from_secs(3);

/// Orgs a node claims in one pass: a node joining a large cluster, or
/// taking over from a dead one, does so in steps, serving each step's
/// orgs as soon as they are loaded.
pub const CLAIM_BATCH: usize = 200;

/// How long a node that could not start its broker (etcd trouble while
/// loading) waits before joining again.
const REJOIN_AFTER: Duration = Duration::from_secs(1);

/// Bound of one etcd call of the placement loop; it tries again next pass.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// What a node tells whoever runs it.
#[derive(Debug)]
pub enum Event {
    /// This node joined (with a new lease) and runs its broker; the first
    /// node of an empty cluster also created its first keys (shown once).
    Joined(Option<BootstrapKeys>),
    /// This node took these orgs over.
    Took(Vec<OrgName>),
    /// This node handed these orgs on (another node should serve them).
    Gave(Vec<OrgName>),
    /// This node's lease was lost: it closed every connection and joins again.
    Lost,
}

/// Binds the node's endpoint, once for its whole life: each run of its
/// broker (one per lease) serves on it in turn, so a node never lets go of
/// its address (a rebind would wait for the old endpoint's connections to
/// drain).
pub fn bind(listen: SocketAddr) -> Result<quinn::Endpoint, SetupError> {
    let bind_error = |source| SetupError::Bind { addr: listen, source };
    let socket = crate::server::bind_udp(listen).map_err(bind_error)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime).map_err(bind_error)
}

/// A node: its etcd clients, its name, and the cluster as it last read it.
struct Node {
    /// The placement loop's client (short calls, short bound).
    etcd: Arc<Etcd>,
    /// The store's client (pages of records: a longer bound).
    store_etcd: Arc<Etcd>,
    layout: Layout,
    me: Owner,
    view: Arc<Membership>,
}

/// How one lease's term ended.
enum Term {
    /// The lease was lost: join again on the endpoint handed back.
    Lost(quinn::Endpoint),
    /// etcd trouble while the broker loaded: join again after a pause.
    Retry(quinn::Endpoint),
    /// Told to stop: drained, lease revoked.
    Stopped,
}

/// Runs a node until `stop` turns true: then it drains and revokes its
/// lease (its orgs move at once).
pub async fn run(
    options: Options,
    cluster: ClusterOptions,
    mut stop: watch::Receiver<bool>,
    events: impl Fn(Event),
) -> Result<(), SetupError> {
    let node = Node::new(&cluster)?;
    // etcd may be starting too (or briefly unreachable): retry with a
    // bounded backoff until it answers or the node is told to stop.
    let mut backoff = crate::client::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    if !node.share_secrets(&options, &mut stop, &mut backoff).await? {
        return Ok(());
    }
    let mut endpoint = bind(options.listen)?;
    loop {
        // Between terms no broker serves here: connections are refused at
        // once (clients go on to the other nodes) rather than left waiting.
        let refusing = tokio::spawn(refuse(endpoint.clone()));
        let validity = Arc::new(Validity::default());
        let joined = node.join(&validity, &mut stop, &mut backoff).await;
        refusing.abort();
        let _ = refusing.await;
        let Some(lease) = joined else { return Ok(()) };
        match node.term(&options, (lease, validity), endpoint, &mut stop, &events).await? {
            Term::Lost(e) => endpoint = e,
            Term::Retry(e) => {
                let refusing = tokio::spawn(refuse(e.clone()));
                tokio::time::sleep(REJOIN_AFTER).await;
                refusing.abort();
                let _ = refusing.await;
                endpoint = e;
            }
            Term::Stopped => return Ok(()),
        }
    }
}

impl Node {
    fn new(cluster: &ClusterOptions) -> Result<Node, SetupError> {
        let client = |timeout| {
            Etcd::with_tls(&cluster.endpoints, timeout, Some(&cluster.tls))
                .map(Arc::new)
                .map_err(|e| SetupError::Cluster(format!("--cluster: {e}")))
        };
        Ok(Node {
            etcd: client(CALL_TIMEOUT)?,
            store_etcd: client(etcd_store::CALL_TIMEOUT)?,
            layout: Layout::new(&cluster.prefix),
            me: Owner { node: cluster.node.clone(), advertise: cluster.advertise.clone() },
            view: Arc::new(Membership::default()),
        })
    }

    /// Adopts the cluster's secrets (or publishes this node's). False when
    /// told to stop first.
    async fn share_secrets(
        &self,
        options: &Options,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut crate::client::Backoff,
    ) -> Result<bool, SetupError> {
        let files = server::secret_files(options);
        loop {
            let ensure = || server::ensure_secrets(options);
            match crate::cluster::secrets::share(&self.etcd, &self.layout, &options.data_dir, &files, ensure).await {
                Ok(()) => return Ok(true),
                Err(SetupError::Cluster(why)) => {
                    tracing::warn!("{why}; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.changed() => return Ok(false),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Joins with a new lease; `None` when told to stop first.
    async fn join(
        &self,
        validity: &Arc<Validity>,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut crate::client::Backoff,
    ) -> Option<NodeLease> {
        loop {
            match ownership::join(&self.etcd, &self.layout, &self.me, validity).await {
                Ok(lease) => return Some(lease),
                Err(e) => tracing::warn!("joining the cluster: {e}; trying again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = stop.changed() => return None,
            }
        }
    }

    /// One lease's term: the broker started on the cluster's store, orgs
    /// placed every `POLL`, until the lease is lost or the node is told to stop.
    async fn term(
        &self,
        options: &Options,
        (lease, validity): (NodeLease, Arc<Validity>),
        endpoint: quinn::Endpoint,
        stop: &mut watch::Receiver<bool>,
        events: &impl Fn(Event),
    ) -> Result<Term, SetupError> {
        let mut keeper = {
            let (etcd, validity) = (self.etcd.clone(), validity.clone());
            tokio::spawn(async move { ownership::keep(&etcd, lease, &validity).await })
        };
        let fences = Arc::new(Fences::default());
        let (store, default, may_bootstrap) = self.claim_default(lease, &fences).await?;
        let seat = Arc::new(self.seat(&store, (lease, &validity), &fences));
        let started =
            server::start_with(options.clone(), Some(ClusterSeat { seat, endpoint: endpoint.clone(), may_bootstrap }))
                .await;
        let running = match started {
            Ok(r) => r,
            Err(e) => {
                keeper.abort();
                self.leave(&validity, &fences);
                return self.failed_start(lease, e, endpoint).await;
            }
        };
        events(Event::Joined(running.bootstrap.clone()));
        self.announce_console(&running, lease).await;
        let mut placer = Placer::new(self, lease, store, fences.clone());
        // `default`, claimed above but created before this start: taken over like any org.
        if running.bootstrap.is_none() {
            if let Some(fence) = fences.remove(&default) {
                took(events, placer.adopt(&running, vec![(default, fence)]).await);
            }
        }
        Ok(match self.place(&running, &mut placer, &mut keeper, stop, events).await {
            None => {
                self.leave(&validity, &fences);
                let endpoint = running.abandon().await;
                events(Event::Lost);
                Term::Lost(endpoint)
            }
            // Drained while still serving (its last checkpoint is fenced
            // on its claims), then handed over at once.
            Some(()) => {
                running.shutdown().await;
                self.leave(&validity, &fences);
                self.revoke(lease).await;
                Term::Stopped
            }
        })
    }

    /// Says where this node's console is, so that the other nodes send
    /// the people of the orgs this node serves here. Best effort: a node
    /// whose console is not announced still serves; the others then name
    /// its broker's address instead.
    async fn announce_console(&self, running: &Running, lease: NodeLease) {
        let Some(url) = console_url(running, &self.me.advertise) else { return };
        if let Err(e) = ownership::announce_console(&self.etcd, &self.layout, &self.me.node, &url, lease).await {
            tracing::warn!(node = %self.me.node, "announcing the console at {url}: {e}");
        }
    }

    /// The broker of this term could not start: the lease is given up.
    /// etcd trouble (a leader election, a timeout) while loading: join
    /// again after a pause. Anything else (TLS files, a clock behind the
    /// cluster's) will not mend by itself.
    async fn failed_start(
        &self,
        lease: NodeLease,
        e: SetupError,
        endpoint: quinn::Endpoint,
    ) -> Result<Term, SetupError> {
        tracing::warn!(node = %self.me.node, "could not start the broker");
        let _ = self.etcd.revoke(lease.0).await;
        match e {
            SetupError::Store { .. } => {
                tracing::warn!(node = %self.me.node, "{e}; joining again");
                Ok(Term::Retry(endpoint))
            }
            e => Err(e),
        }
    }

    /// Places orgs every `POLL` until the lease is lost (`None`: its
    /// keeper ended) or the node is told to stop (the keeper is aborted).
    async fn place(
        &self,
        running: &Running,
        placer: &mut Placer,
        keeper: &mut tokio::task::JoinHandle<()>,
        stop: &mut watch::Receiver<bool>,
        events: &impl Fn(Event),
    ) -> Option<()> {
        loop {
            tokio::select! {
                _ = &mut *keeper => return None,
                _ = stop.changed() => {
                    keeper.abort();
                    return Some(());
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            // The pass races the keeper: a pass waiting on an etcd that
            // does not answer must not keep the node serving past its
            // valid-until (cut short, it leaves nothing that the lease's
            // end does not undo: its claims lapse with the lease, and the
            // node forgets every org). A stop waits for the pass to end,
            // so the drain never finds an org half handed on.
            tokio::select! {
                _ = &mut *keeper => return None,
                (taken, gave) = placer.pass(running) => {
                    took(events, taken);
                    if !gave.is_empty() {
                        events(Event::Gave(gave));
                    }
                }
            }
        }
    }

    /// An empty cluster's first records are the `default` org's: whoever
    /// claims it first creates them (the others find the keys when they
    /// load). The store, `default`'s name, and whether this node claimed it.
    async fn claim_default(
        &self,
        lease: NodeLease,
        fences: &Arc<Fences>,
    ) -> Result<(Arc<EtcdStore>, OrgName, bool), SetupError> {
        let default = OrgName::new("default").map_err(|e| SetupError::Cluster(e.to_string()))?;
        let mut may_bootstrap = false;
        if let Ok(Some(fence)) = ownership::claim(&self.etcd, &self.layout, default.as_str(), &self.me, lease).await {
            fences.set(&default, fence);
            may_bootstrap = true;
        }
        let store = EtcdStore::new(self.store_etcd.clone(), self.layout.clone(), fences.clone())
            .map_err(|source| SetupError::Store { what: "opening the cluster's store", source })?;
        Ok((Arc::new(store), default, may_bootstrap))
    }

    /// What the broker of this term asks of the cluster.
    fn seat(
        &self,
        store: &Arc<EtcdStore>,
        (lease, validity): (NodeLease, &Arc<Validity>),
        fences: &Arc<Fences>,
    ) -> Seat {
        Seat::new(SeatParts {
            store: store.clone(),
            validity: validity.clone(),
            fences: fences.clone(),
            view: self.view.clone(),
            etcd: self.etcd.clone(),
            layout: self.layout.clone(),
            me: self.me.clone(),
            lease,
        })
    }

    /// The term is over: nothing more is served under its lease.
    fn leave(&self, validity: &Validity, fences: &Fences) {
        validity.lose();
        fences.clear();
    }

    /// Hands over now rather than when the lease lapses.
    async fn revoke(&self, lease: NodeLease) {
        if let Err(e) = self.etcd.revoke(lease.0).await {
            tracing::warn!("revoking this node's lease (it lapses by itself within {:?}): {e}", ownership::LEASE_TTL);
        }
    }
}

/// Refuses every connection that comes in (a node between two terms,
/// joining again): the client hears at once that nobody serves here.
async fn refuse(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        incoming.refuse();
    }
}

/// Tells of orgs taken over, if any.
fn took(events: &impl Fn(Event), orgs: Vec<OrgName>) {
    if !orgs.is_empty() {
        events(Event::Took(orgs));
    }
}

/// The console's address as people elsewhere reach it: the web door's,
/// with the node's advertised host when the door listens on every address.
/// None for a door on loopback unless clients reach the node on loopback
/// too (a cluster on one machine): another machine's browser would land on
/// its own loopback.
fn console_url(running: &Running, advertise: &str) -> Option<String> {
    let addr = running.http_addr()?;
    let advertised_loopback = advertise
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| advertise.starts_with("localhost:"));
    if addr.ip().is_loopback() && !advertised_loopback {
        return None;
    }
    let url = running.http_url()?;
    let scheme = url.split_once("://")?.0;
    let host = match addr.ip().is_unspecified() {
        true => advertise.rsplit_once(':')?.0.to_string(),
        false => match addr {
            std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
            std::net::SocketAddr::V4(a) => a.ip().to_string(),
        },
    };
    Some(format!("{scheme}://{host}:{}/", addr.port()))
}
