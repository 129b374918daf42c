//! One node of a cluster: shares the secrets, then alternates between
//! standing by (answering `Hello`s with a redirect to the owner, watching
//! the claim) and serving (the whole broker, on the etcd store, fenced on
//! its claim) until told to stop.
//!
//! A takeover is a restart of the broker on another node: it loads the
//! records from etcd and holds each pool's durable ceiling for the previous
//! owner's runners until they re-attach (with tokens any node verifies) or
//! one lease TTL and the grace pass, exactly as a single broker does after
//! a crash.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::etcd::Etcd;
use super::ownership::{self, Campaign, Owner, Validity};
use super::redirect::{self, Redirector};
use super::store::{EtcdStore, Fence, Layout};
use crate::error::SetupError;
use crate::server::{self, BootstrapKeys, ClusterSeat, Options};
use crate::tls::TlsFiles;

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

/// How often a standby reads the claim. A failover waits for the claim's
/// lease to lapse (`ownership::LEASE_TTL`) plus at most this.
pub const POLL: Duration = Duration::from_millis(100);

/// How long a node that failed to take over (etcd trouble while loading)
/// waits before campaigning again, so it does not hold the claim in a loop.
const TAKEOVER_RETRY: Duration = Duration::from_secs(1);

/// Bound of one etcd call; a standby tries again after `POLL`.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// What a node tells whoever runs it.
#[derive(Debug)]
pub enum Event {
    /// This node serves now (the first owner of an empty cluster also
    /// created its first keys: shown once).
    Serving(Option<BootstrapKeys>),
    /// This node stands by; the owner, if known.
    StandingBy(Option<Owner>),
}

/// Runs a node until `stop` turns true: then a serving node drains and
/// hands over at once (revokes its claim), a standby just leaves.
pub async fn run(
    options: Options,
    cluster: ClusterOptions,
    mut stop: watch::Receiver<bool>,
    events: impl Fn(Event),
) -> Result<(), SetupError> {
    let etcd = Arc::new(
        Etcd::with_tls(&cluster.endpoints, CALL_TIMEOUT, Some(&cluster.tls))
            .map_err(|e| SetupError::Cluster(format!("--cluster: {e}")))?,
    );
    // The store's calls get a longer bound than the claim's (pages of records).
    let store_etcd = Arc::new(
        Etcd::with_tls(&cluster.endpoints, super::store::CALL_TIMEOUT, Some(&cluster.tls))
            .map_err(|e| SetupError::Cluster(format!("--cluster: {e}")))?,
    );
    let clients = Clients { claim: etcd.clone(), store: store_etcd };
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
    // Announced whatever the role, until the node leaves.
    let membership = Arc::new(super::Membership::default());
    let presence_lease = Arc::new(Mutex::new(0i64));
    let presence = tokio::spawn(super::membership::announce(
        etcd.clone(),
        layout.clone(),
        me.clone(),
        membership.clone(),
        presence_lease.clone(),
    ));
    let result = serve(&options, &clients, &layout, &me, &membership, &mut stop, &events).await;
    presence.abort();
    let lease = *presence_lease.lock();
    if lease != 0 {
        let _ = etcd.revoke(lease).await;
    }
    result
}

/// The node's two etcd clients: the claim's (short calls, short bound)
/// and the store's.
struct Clients {
    claim: Arc<Etcd>,
    store: Arc<Etcd>,
}

/// The node's life after joining: standing by and serving, in turn, until
/// told to stop.
async fn serve(
    options: &Options,
    clients: &Clients,
    layout: &Layout,
    me: &Owner,
    membership: &Arc<super::Membership>,
    stop: &mut watch::Receiver<bool>,
    events: &impl Fn(Event),
) -> Result<(), SetupError> {
    let etcd = &clients.claim;
    let tls = options.tls.clone().unwrap_or_else(|| TlsFiles::in_data_dir(&options.data_dir));
    let mut endpoint = redirect::bind(options.listen)?;
    loop {
        // Standing by.
        let target = Arc::new(Mutex::new(String::new()));
        let redirector = Redirector::start(endpoint, &tls, target.clone())?;
        // The ops address answers while standing by too: healthy, and not serving.
        let standby_http = match options.http {
            Some(addr) => {
                let listener =
                    tokio::net::TcpListener::bind(addr).await.map_err(|source| SetupError::Bind { addr, source })?;
                let limits = (options.metrics_token.clone(), options.http_connections, options.http_lifetime);
                Some(tokio::spawn(crate::http::serve_standby(listener, limits, me.node.clone(), target.clone())))
            }
            None => None,
        };
        let stop_http = |task: Option<tokio::task::JoinHandle<()>>| async move {
            if let Some(t) = task {
                // Its listener is closed once the task is gone: the broker binds the address next.
                t.abort();
                let _ = t.await;
            }
        };
        let validity = Arc::new(Validity::default());
        let mut last_seen: Option<Option<Owner>> = None;
        let claim = loop {
            if *stop.borrow() {
                stop_http(standby_http).await;
                redirector.stop().await.close(quinn::VarInt::from_u32(0), b"node leaving");
                return Ok(());
            }
            let seen = match ownership::owner(etcd, layout).await {
                Ok(None) => match ownership::campaign(etcd, layout, me, &validity).await {
                    Ok(Campaign::Won(claim)) => break claim,
                    Ok(Campaign::Held(owner)) => Some(owner),
                    Err(e) => {
                        tracing::warn!("claiming the cluster: {e}");
                        None
                    }
                },
                Ok(Some(owner)) => Some(Some(owner)),
                Err(e) => {
                    tracing::warn!("reading the cluster's owner: {e}");
                    None
                }
            };
            if let Some(owner) = seen {
                // A claim in this node's own name is a previous run's (killed
                // before its lease lapsed): nobody serves until it does.
                let serving = owner.as_ref().filter(|o| o.node != me.node);
                *target.lock() = serving.map(|o| o.advertise.clone()).unwrap_or_default();
                if last_seen.as_ref() != Some(&owner) {
                    events(Event::StandingBy(owner.clone()));
                    last_seen = Some(owner);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        };
        stop_http(standby_http).await;
        let standby_endpoint = redirector.stop().await;

        // Serving.
        tracing::info!(node = %me.node, fence = claim.fence, "this node holds the claim: serving");
        let fence = Arc::new(Fence::default());
        fence.set(claim.fence);
        let store: Arc<dyn crate::store::Store> = Arc::new(
            EtcdStore::new(clients.store.clone(), layout.clone(), fence.clone())
                .map_err(|source| SetupError::Store { what: "opening the cluster's store", source })?,
        );
        // Renewing from the moment of the win: loading the records takes time.
        let mut keeper = {
            let (etcd, validity) = (etcd.clone(), validity.clone());
            tokio::spawn(async move { ownership::keep(&etcd, claim, &validity).await })
        };
        let seat = ClusterSeat {
            store,
            validity: validity.clone(),
            membership: membership.clone(),
            endpoint: standby_endpoint.clone(),
        };
        let running = match server::start_with(options.clone(), Some(seat)).await {
            Ok(r) => r,
            Err(e) => {
                keeper.abort();
                validity.lose();
                fence.set(0);
                let _ = etcd.revoke(claim.lease).await;
                // etcd trouble (a leader election, a timeout) while loading:
                // hand the claim back and stand by; another node, or this
                // one after a pause, takes over. Anything else (TLS files, a
                // clock behind the cluster's) will not mend by itself.
                if let SetupError::Store { .. } = e {
                    tracing::warn!(node = %me.node, "could not take over: {e}; standing by");
                    endpoint = standby_endpoint;
                    tokio::time::sleep(TAKEOVER_RETRY).await;
                    continue;
                }
                return Err(e);
            }
        };
        events(Event::Serving(running.bootstrap.clone()));
        tokio::select! {
            _ = &mut keeper => {
                validity.lose();
                fence.set(0);
                endpoint = running.abandon().await;
                tracing::warn!(node = %me.node, "claim lost: standing by");
            }
            _ = stop.changed() => {
                keeper.abort();
                running.shutdown().await;
                validity.lose();
                fence.set(0);
                // Hand over now rather than when the lease lapses.
                if let Err(e) = etcd.revoke(claim.lease).await {
                    tracing::warn!("releasing the claim (it lapses by itself within {:?}): {e}", ownership::LEASE_TTL);
                }
                return Ok(());
            }
        }
    }
}
