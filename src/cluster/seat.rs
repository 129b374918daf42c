//! What the broker on a cluster node asks of the cluster while it runs:
//! whether this node serves an org right now, where the org of a key it
//! does not know is served, and a claim on an org it is asked to create.
//! One `Seat` per node lease, shared by the broker (`server`) and the
//! node's placement loop (`node`), which fills the fences and the view.

use std::sync::Arc;

use super::etcd::Etcd;
use super::membership::Membership;
use super::ownership::{self, NodeLease, Owner, Validity};
use super::store::{EtcdStore, Fences, Layout};
use crate::core::{KeyHash, OrgName, Record};
use crate::store::StoreError;

/// etcd look-ups for `Hello`s of keys this node does not know, at once:
/// a stranger guessing keys costs etcd at most this many reads in flight
/// (and the usual failed-Hello budget); past it, `Route::Busy`.
pub const MAX_LOOKUPS: usize = 32;

/// How long a `Hello` of a key this node does not know waits for etcd to
/// say whose it is: a look-up takes a millisecond or two; past this etcd
/// is out of reach from here, and the client is told to ask again
/// (`Route::Busy`, an empty redirect) rather than kept waiting, so its
/// attempts on the other nodes go on.
pub const ROUTE_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Where a `Hello` whose key this node cannot welcome by itself goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// No such key, or it is revoked: the `Hello` fails as anywhere.
    Unknown,
    /// An operator key, as etcd holds it now (the broker refreshes its copy).
    Operator(Record),
    /// A key of an org another node serves: `HOST:PORT` to redirect to.
    Elsewhere(String),
    /// A key of an org no node serves this instant (it is moving, or this
    /// node is taking it over), or etcd is out of reach: try again shortly.
    Busy,
}

/// A node's place in its cluster, for the broker it runs. Its fields are
/// the node's (the placement loop fills the fences and the view); the
/// broker only asks.
pub struct Seat {
    store: Arc<EtcdStore>,
    validity: Arc<Validity>,
    fences: Arc<Fences>,
    view: Arc<Membership>,
    etcd: Arc<Etcd>,
    layout: Layout,
    me: Owner,
    lease: NodeLease,
    lookups: tokio::sync::Semaphore,
}

/// What a seat is made of: the node's state for one of its leases.
pub struct SeatParts {
    /// The records, an org's written under its fence.
    pub store: Arc<EtcdStore>,
    /// Until when the node's lease (and so its every claim) is known to last.
    pub validity: Arc<Validity>,
    /// The orgs this node serves, with their claims' revisions.
    pub fences: Arc<Fences>,
    /// The cluster as last read.
    pub view: Arc<Membership>,
    /// The placement loop's etcd client (claims of new orgs).
    pub etcd: Arc<Etcd>,
    /// Where the cluster's keys live in etcd.
    pub layout: Layout,
    /// This node.
    pub me: Owner,
    /// The node's lease.
    pub lease: NodeLease,
}

/// Why an org could not be claimed for its creation.
#[derive(Debug)]
pub enum ClaimError {
    /// Another node holds its claim, or its records exist already.
    Exists,
    /// etcd did not answer.
    Etcd(String),
}

impl Seat {
    /// The seat of a node holding `parts.lease`.
    pub fn new(parts: SeatParts) -> Seat {
        let SeatParts { store, validity, fences, view, etcd, layout, me, lease } = parts;
        let lookups = tokio::sync::Semaphore::new(MAX_LOOKUPS);
        Seat { store, validity, fences, view, etcd, layout, me, lease, lookups }
    }

    /// The records in etcd (the broker opens its store on them).
    pub fn store(&self) -> Arc<EtcdStore> {
        self.store.clone()
    }

    /// Whether the node's lease is known to last now (one monotonic clock read).
    pub fn valid(&self) -> bool {
        self.validity.valid()
    }

    /// The fence of `org`'s claim, if this node holds it.
    pub fn fence(&self, org: &OrgName) -> Option<i64> {
        self.fences.get(org)
    }

    /// A number that changes whenever an org is taken or handed on (a
    /// stream caches that its caller's org is served here until it moves).
    pub fn fences_version(&self) -> u64 {
        self.fences.version()
    }

    /// How many orgs this node serves.
    pub fn orgs_served(&self) -> usize {
        self.fences.all().len()
    }

    /// How many orgs the cluster has, as last read.
    pub fn orgs_known(&self) -> usize {
        self.view.org_count()
    }

    /// The cluster's nodes, as last read.
    pub fn nodes(&self) -> Vec<crate::proto::NodeInfo> {
        self.view.nodes()
    }

    /// Whether this node may admit and renew for `org` now: its lease is
    /// known to last, and it holds the org's claim.
    pub fn serves(&self, org: &OrgName) -> bool {
        self.validity.valid() && self.fences.get(org).is_some()
    }

    /// Where `org` is served, for a client sent elsewhere: the node holding
    /// its claim, else the live node that should take it; `None` when that
    /// is this node (it is taking the org over), when no node is known, or
    /// when that node's lease was not renewed lately (it may be cut off
    /// from etcd and about to stop serving: a client sent there would wait
    /// on it for nothing, so it is told to ask again instead).
    pub fn served_at(&self, org: &str) -> Option<Owner> {
        let (owner, lease) = match self.view.claim_of(org) {
            Some(claim) if claim.owner.node == self.me.node && claim.lease == self.lease.0 => return None,
            Some(claim) => (claim.owner, claim.lease),
            None => self.view.preferred(org)?,
        };
        (owner.node != self.me.node && self.view.renewed_lately(lease)).then_some(owner)
    }

    /// Reads a key this node cannot welcome by itself from etcd, and says
    /// where its `Hello` goes; within `ROUTE_WITHIN`, and at once when
    /// this node's own lease may have lapsed (it knows nothing current).
    pub async fn route(&self, hash: KeyHash) -> Route {
        if !self.validity.valid() {
            return Route::Busy;
        }
        let Ok(_turn) = self.lookups.try_acquire() else {
            return Route::Busy;
        };
        let read = EtcdStore::read_key(&self.etcd, &self.layout, &hash);
        let record = match tokio::time::timeout(ROUTE_WITHIN, read).await {
            Ok(Ok(Some(record))) => record,
            Ok(Ok(None)) => return Route::Unknown,
            Ok(Err(e)) => {
                tracing::warn!("reading a key's record from etcd: {e}");
                return Route::Busy;
            }
            Err(_) => return Route::Busy,
        };
        match &record {
            // Revoked or not: the broker applies it, then authenticates.
            Record::Key { org: None, .. } => Route::Operator(record),
            Record::Key { revoked: true, .. } => Route::Unknown,
            Record::Key { org: Some(org), .. } => match self.served_at(org.as_str()) {
                Some(owner) => Route::Elsewhere(owner.advertise),
                None => Route::Busy,
            },
            _ => Route::Unknown,
        }
    }

    /// The other nodes to ask for their slice of an org's history: those
    /// live within `reach` (`Membership::peer_targets`).
    pub fn peers(&self, reach: std::time::Duration) -> Vec<super::peer::Target> {
        self.view.peer_targets(&self.me.node, reach)
    }

    /// The console of the node clients reach at `advertise`, if it said.
    pub fn console_at(&self, advertise: &str) -> Option<String> {
        self.view.console_at(advertise)
    }

    /// Claims a new org for its creation on this node: the fence is set
    /// (the creation's commit is fenced on it) unless another node holds
    /// the claim or the org's records exist already.
    pub async fn claim_new(&self, org: &OrgName) -> Result<(), ClaimError> {
        let etcd_error = |e: super::etcd::EtcdError| ClaimError::Etcd(e.to_string());
        let fence = ownership::claim(&self.etcd, &self.layout, org.as_str(), &self.me, self.lease)
            .await
            .map_err(etcd_error)?
            .ok_or(ClaimError::Exists)?;
        // The claim keeps anyone else from creating it now; was it created before?
        let store = self.store.clone();
        let name = org.clone();
        let exists = tokio::task::spawn_blocking(move || store.has_org(&name))
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(Box::new(e))));
        match exists {
            Ok(false) => {
                self.fences.set(org, fence);
                Ok(())
            }
            other => {
                let _ = ownership::release(&self.etcd, &self.layout, org.as_str(), fence).await;
                match other {
                    Ok(_) => Err(ClaimError::Exists),
                    Err(e) => Err(ClaimError::Etcd(e.to_string())),
                }
            }
        }
    }

    /// Gives up the claim of an org whose creation failed.
    pub async fn unclaim(&self, org: &OrgName) {
        if let Some(fence) = self.fences.remove(org) {
            let _ = ownership::release(&self.etcd, &self.layout, org.as_str(), fence).await;
        }
    }
}
