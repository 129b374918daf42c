//! One node of a cluster: shares the secrets, joins with an etcd lease of
//! its own, runs the broker for the orgs it serves, and every `POLL` places
//! orgs: it takes over the orgs nobody serves that prefer it (rendezvous
//! over the live nodes), hands on those that prefer a node that joined,
//! and drops any whose claim it lost. When its lease is lost it closes
//! everything and joins again with a new one; told to stop, it drains and
//! revokes its lease, so its orgs move at once.
//!
//! A takeover is a restart of one org on another node: the node loads the
//! org's records from etcd and holds each pool's durable ceiling for the
//! previous owner's runners until they re-attach (with tokens any node
//! verifies) or one lease TTL and the grace pass, exactly as a single
//! broker does after a crash (`Broker::adopt_org`).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::etcd::Etcd;
use super::membership::Membership;
use super::ownership::{self, Claimed, NodeLease, Owner, Validity};
use super::placement;
use super::seat::Seat;
use super::store::{EtcdStore, Fences, Layout};
use crate::core::OrgName;
use crate::error::SetupError;
use crate::server::{self, BootstrapKeys, ClusterSeat, Options, Running};

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
    pub tls: super::etcd::EtcdTls,
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

/// The node's two etcd clients: the placement loop's (short calls, short
/// bound) and the store's.
struct Clients {
    claim: Arc<Etcd>,
    store: Arc<Etcd>,
}

/// Runs a node until `stop` turns true: then it drains and revokes its
/// lease (its orgs move at once).
pub async fn run(
    options: Options,
    cluster: ClusterOptions,
    mut stop: watch::Receiver<bool>,
    events: impl Fn(Event),
) -> Result<(), SetupError> {
    let client = |timeout| {
        Etcd::with_tls(&cluster.endpoints, timeout, Some(&cluster.tls))
            .map(Arc::new)
            .map_err(|e| SetupError::Cluster(format!("--cluster: {e}")))
    };
    // The store's calls get a longer bound than the placement's (pages of records).
    let clients = Clients { claim: client(CALL_TIMEOUT)?, store: client(super::store::CALL_TIMEOUT)? };
    let etcd = clients.claim.clone();
    let layout = Layout::new(&cluster.prefix);
    let me = Owner { node: cluster.node.clone(), advertise: cluster.advertise.clone() };
    // etcd may be starting too (or briefly unreachable): retry with a
    // bounded backoff until it answers or the node is told to stop.
    let mut backoff = crate::client::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let files = server::secret_files(&options);
    loop {
        let shared =
            super::secrets::share(&etcd, &layout, &options.data_dir, &files, || server::ensure_secrets(&options));
        match shared.await {
            Ok(()) => break,
            Err(SetupError::Cluster(why)) => {
                tracing::warn!("{why}; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    let view = Arc::new(Membership::default());
    let mut endpoint = bind(options.listen)?;
    loop {
        // Joining, with a new lease.
        let validity = Arc::new(Validity::default());
        let lease = match ownership::join(&etcd, &layout, &me, &validity).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!("joining the cluster: {e}; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = stop.changed() => return Ok(()),
                }
            }
        };
        let mut keeper = {
            let (etcd, validity) = (etcd.clone(), validity.clone());
            tokio::spawn(async move { ownership::keep(&etcd, lease, &validity).await })
        };
        let fences = Arc::new(Fences::default());
        // An empty cluster's first records are the `default` org's: whoever
        // claims it first creates them (the others find the keys when they load).
        let default = OrgName::new("default").map_err(|e| SetupError::Cluster(e.to_string()))?;
        let mut may_bootstrap = false;
        if let Ok(Some(fence)) = ownership::claim(&etcd, &layout, default.as_str(), &me, lease).await {
            fences.set(&default, fence);
            may_bootstrap = true;
        }
        let store = Arc::new(
            EtcdStore::new(clients.store.clone(), layout.clone(), fences.clone())
                .map_err(|source| SetupError::Store { what: "opening the cluster's store", source })?,
        );
        let seat = Arc::new(Seat::new(
            store.clone(),
            validity.clone(),
            fences.clone(),
            view.clone(),
            etcd.clone(),
            layout.clone(),
            me.clone(),
            lease,
        ));
        let leave = |why: &str| {
            keeper.abort();
            validity.lose();
            fences.clear();
            tracing::warn!(node = %me.node, "{why}");
        };
        let running = match server::start_with(
            options.clone(),
            Some(ClusterSeat { seat, endpoint: endpoint.clone(), may_bootstrap }),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                leave("could not start the broker");
                let _ = etcd.revoke(lease.0).await;
                // etcd trouble (a leader election, a timeout) while loading:
                // join again after a pause. Anything else (TLS files, a
                // clock behind the cluster's) will not mend by itself.
                if let SetupError::Store { .. } = e {
                    tracing::warn!(node = %me.node, "{e}; joining again");
                    tokio::time::sleep(REJOIN_AFTER).await;
                    continue;
                }
                return Err(e);
            }
        };
        let bootstrapped = running.bootstrap.is_some();
        events(Event::Joined(running.bootstrap.clone()));
        let mut placer = Placer {
            etcd: etcd.clone(),
            layout: layout.clone(),
            me: me.clone(),
            lease,
            store,
            fences: fences.clone(),
            view: view.clone(),
            orgs: BTreeSet::new(),
            orgs_read: None,
            first_seen: HashMap::new(),
            last_read: None,
        };
        // `default`, claimed above but created before this start: taken over like any org.
        if !bootstrapped {
            if let Some(fence) = fences.remove(&default) {
                let took = placer.adopt(&running, vec![(default.clone(), fence)]).await;
                if !took.is_empty() {
                    events(Event::Took(took));
                }
            }
        }
        loop {
            tokio::select! {
                _ = &mut keeper => {
                    validity.lose();
                    fences.clear();
                    endpoint = running.abandon().await;
                    events(Event::Lost);
                    break;
                }
                _ = stop.changed() => {
                    keeper.abort();
                    running.shutdown().await;
                    validity.lose();
                    fences.clear();
                    // Hand over now rather than when the lease lapses.
                    if let Err(e) = etcd.revoke(lease.0).await {
                        tracing::warn!("revoking this node's lease (it lapses by itself within {:?}): {e}", ownership::LEASE_TTL);
                    }
                    return Ok(());
                }
                _ = tokio::time::sleep(POLL) => {
                    let (took, gave) = placer.pass(&running).await;
                    if !took.is_empty() {
                        events(Event::Took(took));
                    }
                    if !gave.is_empty() {
                        events(Event::Gave(gave));
                    }
                }
            }
        }
    }
}

/// Decides which orgs this node serves, pass by pass.
struct Placer {
    etcd: Arc<Etcd>,
    layout: Layout,
    me: Owner,
    lease: NodeLease,
    store: Arc<EtcdStore>,
    fences: Arc<Fences>,
    view: Arc<Membership>,
    /// Every org of the cluster, as last listed (and any seen claimed since).
    orgs: BTreeSet<OrgName>,
    /// When the orgs were last listed.
    orgs_read: Option<Instant>,
    /// When each live node was first seen live (by name and lease).
    first_seen: HashMap<(String, i64), Instant>,
    /// The last read of the nodes and claims, and etcd's revision before it.
    last_read: Option<(i64, ClusterRead)>,
}

/// The live nodes (and their leases) and every org's claim, as read.
type ClusterRead = (Vec<(Owner, i64)>, HashMap<String, Claimed>);

impl Placer {
    /// One pass: reads the live nodes and the claims, drops the orgs whose
    /// claim this node lost, takes the orgs nobody serves that prefer it,
    /// and hands on those that prefer another node settled in the cluster.
    /// Returns the orgs taken and given. An etcd error ends the pass early
    /// (the next one retries); nothing is given or taken on a partial view.
    async fn pass(&mut self, running: &Running) -> (Vec<OrgName>, Vec<OrgName>) {
        // Fences set before the claims are read are fences of claims the read sees.
        let before = self.fences.all();
        let Some(((nodes, claims), changed)) = self.read().await else {
            return (Vec::new(), Vec::new());
        };
        if changed && self.orgs_read.is_none_or(|at| at.elapsed() >= ORGS_EVERY) {
            let store = self.store.clone();
            if let Ok(Ok(orgs)) = tokio::task::spawn_blocking(move || store.org_names()).await {
                self.orgs = orgs;
                self.orgs_read = Some(Instant::now());
            }
        }
        self.orgs.extend(claims.keys().filter_map(|o| OrgName::new(o).ok()));
        let now = Instant::now();
        self.first_seen.retain(|k, _| nodes.iter().any(|(n, l)| (&n.node, *l) == (&k.0, k.1)));
        for (n, l) in &nodes {
            self.first_seen.entry((n.node.clone(), *l)).or_insert(now);
        }
        let live: Vec<String> = nodes.iter().map(|(n, _)| n.node.clone()).collect();
        let settled: Vec<String> = self
            .first_seen
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= SETTLE)
            .map(|((n, _), _)| n.clone())
            .collect();
        self.view.update(nodes, claims.clone(), self.orgs.len());

        // Lost: a claim this node held is gone or is another's (its lease
        // lapsed; its validity lapsed before).
        let mut lost = Vec::new();
        for (org, fence) in before {
            if claims.get(org.as_str()).map(|c| c.fence) != Some(fence) && self.fences.remove(&org).is_some() {
                tracing::warn!(%org, "this node lost the org's claim");
                lost.push(org);
            }
        }
        running.drop_orgs(lost).await;

        // Taken: orgs nobody serves that prefer this node.
        let mine = |org: &OrgName| placement::preferred(org.as_str(), &live) == Some(self.me.node.as_str());
        let wanted: Vec<OrgName> = self
            .orgs
            .iter()
            .filter(|o| !claims.contains_key(o.as_str()) && mine(o))
            .take(CLAIM_BATCH)
            .cloned()
            .collect();
        // All at once (each claim is its own create-if-absent transaction).
        let mut calls = tokio::task::JoinSet::new();
        for org in wanted {
            let (etcd, layout, me, lease) = (self.etcd.clone(), self.layout.clone(), self.me.clone(), self.lease);
            calls.spawn(async move {
                let claimed = ownership::claim(&etcd, &layout, org.as_str(), &me, lease).await;
                (org, claimed)
            });
        }
        let mut claimed = Vec::new();
        while let Some(done) = calls.join_next().await {
            match done {
                Ok((org, Ok(Some(fence)))) => claimed.push((org, fence)),
                Ok((_, Ok(None))) => {}
                Ok((org, Err(e))) => tracing::debug!(%org, "claiming: {e}"),
                Err(e) => tracing::debug!("claiming: {e}"),
            }
        }
        let took = self.adopt(running, claimed).await;

        // Given: orgs that prefer another live node, once it has settled:
        // fences first (nothing more is admitted for them here), then their
        // connections and memory, then their claims.
        let mut gave = Vec::new();
        for (org, fence) in self.fences.all() {
            let Some(to) = placement::preferred(org.as_str(), &live) else { continue };
            let seen = claims.get(org.as_str()).map(|c| c.fence) == Some(fence);
            if to != self.me.node && seen && settled.iter().any(|n| n == to) {
                self.fences.remove(&org);
                gave.push((org, fence));
            }
        }
        running.drop_orgs(gave.iter().map(|(o, _)| o.clone()).collect()).await;
        for (org, fence) in &gave {
            if let Err(e) = ownership::release(&self.etcd, &self.layout, org.as_str(), *fence).await {
                tracing::warn!(%org, "releasing the org's claim (it lapses with this node's lease otherwise): {e}");
            }
        }
        (took, gave.into_iter().map(|(o, _)| o).collect())
    }

    /// The live nodes and every claim, and whether anything changed since
    /// the last pass. etcd's revision moves with every write (a lease's
    /// expiry too): while it stands still, the last read is reused, so an
    /// idle cluster costs etcd one small read per node per pass whatever
    /// its number of orgs. `None` on an etcd error.
    async fn read(&mut self) -> Option<(ClusterRead, bool)> {
        let revision = ownership::revision(&self.etcd, &self.layout)
            .await
            .map_err(|e| tracing::debug!("reading the cluster: {e}"))
            .ok()?;
        if let Some((at, read)) = &self.last_read {
            if *at == revision {
                return Some((read.clone(), false));
            }
        }
        let (nodes, claims) =
            match tokio::join!(ownership::nodes(&self.etcd, &self.layout), ownership::claims(&self.etcd, &self.layout))
            {
                (Ok(n), Ok(c)) => (n, c.into_iter().collect::<HashMap<String, Claimed>>()),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!("reading the cluster: {e}");
                    return None;
                }
            };
        // Read after the revision: a change in between shows at the next pass.
        let read = (nodes, claims);
        self.last_read = Some((revision, read.clone()));
        Some((read, true))
    }

    /// Loads the records of orgs just claimed and serves them; on etcd
    /// trouble gives the claims back (another pass, here or elsewhere,
    /// takes them again). Returns the orgs now served.
    async fn adopt(&self, running: &Running, claimed: Vec<(OrgName, i64)>) -> Vec<OrgName> {
        if claimed.is_empty() {
            return Vec::new();
        }
        let names: Vec<OrgName> = claimed.iter().map(|(o, _)| o.clone()).collect();
        let store = self.store.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load_orgs(&names)).await;
        match loaded {
            Ok(Ok(loaded)) => {
                let fences: HashMap<OrgName, i64> = claimed.into_iter().collect();
                let mut took = Vec::new();
                for (org, records) in loaded {
                    running.adopt(&org, records);
                    if let Some(fence) = fences.get(&org) {
                        self.fences.set(&org, *fence);
                        took.push(org);
                    }
                }
                took
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(_)) => String::new(),
                };
                tracing::warn!("loading the records of orgs claimed: {why}; giving the claims back");
                for (org, fence) in claimed {
                    let _ = ownership::release(&self.etcd, &self.layout, org.as_str(), fence).await;
                }
                Vec::new()
            }
        }
    }
}
