//! The operations: one function per kind of request, behind both doors.
//!
//! A request, whichever door it came through (QUIC's `server::handler`,
//! the web's `http`), becomes a decision here: who may is the core's
//! question (every core call takes the caller), the rule is the core's,
//! and a durable change is planned by the core, committed to the store off
//! the async threads and settled (applied, or undone) in one place,
//! `settle`. The doors only decode, call one of these, and encode; a grant
//! from the console and a grant from the CLI are the same code path and
//! the same audit entry.
//!
//! Reading order: `Operations` (here: the state every act needs, commit and
//! settle, the cluster's gate) → `lease` (acquire, re-attach, renew,
//! release, register, activate, the wait queue) → `act` (the Owner's,
//! Admin's and operator's durable changes) → `read` (the audit trail, the
//! history's reports, where a key is served) → `events` (the event
//! stream's read) → `webhooks` (their acts) → the background tasks
//! `deliver` (the webhooks' deliveries), `notices` (before a subscription ends),
//! `expiry` and `checkpoint` (which looks for clock leaps: `leap`); and on
//! a cluster node the reports over every node's history (`gathered`,
//! merged by `merge`).
//!
//! Errors are the protocol's `WireError`: a documented code and a human
//! message, the one vocabulary of refusals both doors speak (the web door
//! maps codes to statuses). Nothing here knows sockets, frames or HTTP.

mod act;
mod check;
pub mod checkpoint;
pub mod deliver;
pub mod events;
pub mod expiry;
pub mod gathered;
pub mod leap;
mod lease;
pub mod machines;
mod merge;
pub mod notices;
mod read;
mod webhooks;

pub use check::availability_json;
pub use events::EventsPage;
pub use lease::TicketCache;
pub use read::SignIn;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::cluster::peer::Peers;
use crate::cluster::Seat;
use crate::core::{Broker, Change, Ended, Millis, OrgName, Pending, PoolId, Principal, Result as CoreResult};
use crate::events::Outbox;
use crate::history::History;
use crate::offline::SigningKey;
use crate::proto::{ErrorCode, WireError};
use crate::store::{Store, StoreError};

/// Who asks, and when: the caller authorised once per request by its door,
/// and the instant its door read for it (a pipelined batch of fast
/// requests shares one reading; a request that awaits the store reads its own).
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The authenticated principal.
    pub p: &'a Principal,
    /// The request's instant.
    pub now: Millis,
}

/// Whoever holds sessions on behalf of their runners: told when a session
/// ends for a reason its holder did not choose (expired, killed, revoked),
/// so it can tell the runner. The QUIC door implements it (a notice on the
/// holder's connection).
pub trait Holders: Send + Sync {
    /// `e`'s session ended.
    fn ended(&self, e: &Ended);
}

/// What `Operations::new` needs.
pub struct Parts {
    /// The core, rebuilt from the store.
    pub core: Arc<Broker>,
    /// Where durable changes are committed.
    pub store: Arc<dyn Store>,
    /// The shell's clock.
    pub clock: Clock,
    /// Signs offline licenses.
    pub signing: SigningKey,
    /// The utilization history, unless it is off.
    pub history: Option<Arc<History>>,
    /// In a cluster: which orgs this node serves, and until when.
    pub cluster: Option<Arc<Seat>>,
    /// In a cluster: the client of the other nodes' slices of the history.
    pub peers: Option<Arc<Peers>>,
    /// Told of sessions that ended.
    pub holders: Arc<dyn Holders>,
    /// Dropped with the operations, after the store: whoever holds its
    /// receiver learns that the store is closed (its file lock released).
    pub closed: tokio::sync::oneshot::Sender<()>,
    /// How webhooks are delivered (`serve --webhook-*`).
    pub delivery: crate::events::hooks::Settings,
}

/// The state every operation needs, shared by both doors and the
/// background tasks of one broker.
pub struct Operations {
    /// Every rule; shared with the history's task (it harvests the core).
    core: Arc<Broker>,
    store: Arc<dyn Store>,
    clock: Clock,
    /// Serialises durable changes: plan, commit and apply happen as one step.
    writer: tokio::sync::Mutex<()>,
    /// Serialises ceiling writes (raises and lowerings), so the durable
    /// ceiling is always the last value written and never below memory's.
    /// Taken after `writer` by a path that holds both (an activation's
    /// raise, a reservation's change), never before it.
    ceiling: tokio::sync::Mutex<()>,
    signing: SigningKey,
    history: Option<Arc<History>>,
    cluster: Option<Arc<Seat>>,
    peers: Option<Arc<Peers>>,
    holders: Arc<dyn Holders>,
    /// Set on shutdown: nothing new is admitted.
    draining: AtomicBool,
    /// Leaps of the wall clock ahead of the broker's, seen at checkpoints.
    leaps: leap::Leaps,
    /// Wakes the expiry task when a deadline earlier than its target appears.
    expiry_wake: Notify,
    /// Wakes the machine task (`machines`).
    machines_wake: Notify,
    /// The deadline (Unix ms) the expiry task is sleeping towards.
    expiry_target: AtomicU64,
    /// Numbers the events of audited changes and commits them with them.
    outbox: Arc<Outbox>,
    /// Turns of the event stream's readers waiting at once (`events::MAX_WAITERS`).
    waiters: Arc<tokio::sync::Semaphore>,
    /// How webhooks are delivered.
    delivery: crate::events::hooks::Settings,
    /// How each webhook's deliveries go in this run.
    hooks: crate::events::hooks::Board,
    /// Events no change wrote (leases lost, refusals per minute, machine
    /// limits) on their way to the outbox (`events::write_queued`):
    /// bounded, so a mass expiry holds no more.
    queued: tokio::sync::mpsc::Sender<crate::core::Event>,
    /// The other end, taken by the task that writes them.
    queued_rx: parking_lot::Mutex<Option<tokio::sync::mpsc::Receiver<crate::core::Event>>>,
    /// Queued events that found the queue full (or failed to be written).
    queued_dropped: AtomicU64,
    /// The minute each pool's machine limit was last told (one event a minute).
    limits_told: parking_lot::Mutex<std::collections::HashMap<(OrgName, PoolId), u64>>,
    /// Dropped after every field above (fields drop in order): see `Parts::closed`.
    _closed: tokio::sync::oneshot::Sender<()>,
}

impl Operations {
    /// The operations over `parts`.
    pub fn new(parts: Parts) -> Operations {
        let Parts { core, store, clock, signing, history, cluster, peers, holders, closed, delivery } = parts;
        let (queued, queued_rx) = tokio::sync::mpsc::channel(events::QUEUE);
        if let Some(h) = &history {
            h.send_events_to(queued.clone());
        }
        Operations {
            core,
            store,
            clock,
            writer: tokio::sync::Mutex::new(()),
            ceiling: tokio::sync::Mutex::new(()),
            signing,
            history,
            cluster,
            peers,
            holders,
            draining: AtomicBool::new(false),
            leaps: leap::Leaps::new(&clock),
            expiry_wake: Notify::new(),
            machines_wake: Notify::new(),
            expiry_target: AtomicU64::new(u64::MAX),
            outbox: Arc::new(Outbox::default()),
            waiters: Arc::new(tokio::sync::Semaphore::new(crate::events::MAX_WAITERS)),
            delivery,
            hooks: Default::default(),
            queued,
            queued_rx: parking_lot::Mutex::new(Some(queued_rx)),
            queued_dropped: AtomicU64::new(0),
            limits_told: Default::default(),
            _closed: closed,
        }
    }

    /// The core, for the reads it answers by itself (each checks the
    /// caller: a door never decides who may see what).
    pub fn core(&self) -> &Broker {
        &self.core
    }

    /// The core, to share with a task of its own (the history's harvest).
    pub fn core_handle(&self) -> Arc<Broker> {
        self.core.clone()
    }

    /// The shell's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Leaps of the wall clock ahead of the broker's clock in this run.
    pub fn leaps(&self) -> &leap::Leaps {
        &self.leaps
    }

    /// The request's instant, for a caller.
    pub fn caller<'a>(&self, p: &'a Principal) -> Caller<'a> {
        Caller { p, now: self.clock.now() }
    }

    /// The utilization history, unless it is off.
    pub fn history(&self) -> Option<&History> {
        self.history.as_deref()
    }

    /// The key peer reads are signed with, on a cluster node (the web door
    /// checks a peer's request with it).
    pub fn peer_key(&self) -> Option<&crate::cluster::peer::PeerKey> {
        self.peers.as_deref().map(Peers::key)
    }

    /// The node's place in its cluster, on a cluster node.
    pub fn cluster(&self) -> Option<&Seat> {
        self.cluster.as_deref()
    }

    /// Commits a pending change durably (off the async threads) and settles
    /// it: applied on success, undone on failure. Sessions it ended are announced.
    pub async fn settle<T>(&self, pending: Pending<T>) -> Result<T, WireError> {
        let committed = match pending.changes() {
            [] => Ok(()),
            changes => self.commit(changes.to_vec()).await,
        };
        let (value, ended) = pending.settle(&self.core, committed, self.clock.now()).map_err(store_failure)?;
        self.announce(ended);
        Ok(value)
    }

    /// Writes `changes` to the store off the async threads, with an event
    /// in its org's outbox for each audit entry among them (`events::outbox`).
    async fn commit(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let (store, outbox, seat) = (self.store.clone(), self.outbox.clone(), self.cluster.clone());
        let fence = move |org: &OrgName| seat.as_ref().and_then(|s| s.fence(org));
        tokio::task::spawn_blocking(move || outbox.commit(&*store, changes, fence))
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(Box::new(e))))
    }

    /// Plan → commit → apply, as one step with respect to other durable changes.
    async fn mutate(&self, plan: impl FnOnce(&Broker) -> CoreResult<Vec<Change>>) -> Result<(), WireError> {
        let _writer = self.writer.lock().await;
        let pending = Pending::plan(plan(&self.core)?, ());
        self.settle(pending).await
    }

    /// Raises `org`/`pool`'s durable ceiling before admitting past it (a
    /// no-op if a concurrent raise already made room).
    async fn raise_ceiling(&self, org: &OrgName, pool: PoolId) -> Result<(), WireError> {
        let _ceiling = self.ceiling.lock().await;
        match self.core.plan_ceiling(org, pool) {
            Some(pending) => self.settle(pending).await,
            None => Ok(()),
        }
    }

    /// Tells each ended session's holder why it ended, and hands it on.
    pub fn announce(&self, ended: Vec<Ended>) {
        for e in ended {
            self.holders.ended(&e);
            self.ended(e);
        }
    }

    /// Every session end passes here once: logged, handed to the history,
    /// and, if its runner lost it, to the outbox (`events::QUEUE`).
    pub fn ended(&self, e: Ended) {
        let i = &e.info;
        let reason = e.reason.name();
        let (session, pool, machine, user, labels) = (&i.session, &i.pool, &i.machine, &i.user, &i.labels);
        tracing::debug!(%session, %pool, %machine, %user, %labels, reason, "session ended");
        if e.machine_unheld {
            // Its machine may be due now (ephemeral): let the machine task judge it.
            self.wake_machines();
        }
        self.lease_lost(&e);
        if let Some(h) = &self.history {
            h.ended(e);
        }
    }

    /// Wakes the expiry task if `deadline` is earlier than what it waits for.
    pub fn deadline_added(&self, deadline: Millis) {
        // Relaxed: a stale read only causes a spurious or a missed wake-up of
        // a task that re-reads the table's published deadlines anyway, and a
        // missed one is impossible: the task stores its target before sleeping.
        if deadline.0 < self.expiry_target.load(Ordering::Relaxed) {
            self.expiry_wake.notify_one();
        }
    }

    /// Wakes the expiry task whatever it waits for (a hold's end appeared),
    /// and the machine task (no machine is judged during a hold).
    pub fn wake_expiry(&self) {
        self.expiry_wake.notify_one();
        self.machines_wake.notify_one();
    }

    /// Wakes the machine task (a machine may be due: its last session
    /// ended, a policy changed).
    pub fn wake_machines(&self) {
        self.machines_wake.notify_one();
    }

    /// Stops admitting (a shutdown); readers waiting for events are answered.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.outbox.wake();
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        // Relaxed: a request racing the start of a drain may go either way.
        self.draining.load(Ordering::Relaxed)
    }

    /// Refuses (`NOT_OWNER`) on a cluster node whose lease may have
    /// lapsed: it admits and renews nothing more, whatever its memory
    /// holds. Checked before every admission and renewal (docs/CLUSTER.md:
    /// the window); one monotonic clock read.
    pub fn valid(&self) -> Result<(), WireError> {
        match &self.cluster {
            Some(seat) if !seat.valid() => Err(WireError::new(
                ErrorCode::NotOwner,
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
        let not_owner = |why: String| Err(WireError::new(ErrorCode::NotOwner, why));
        match org {
            Some(org) if seat.fence(org).is_none() => match seat.served_at(org.as_str()) {
                Some(owner) => not_owner(format!(
                    "org {org} is served by node {} at {}: connect there (--server {})",
                    owner.node, owner.advertise, owner.advertise
                )),
                None => not_owner(format!("no node serves org {org} this instant (it is moving); retry shortly")),
            },
            _ => Ok(()),
        }
    }

    /// Refuses new seats while the broker drains or its node's lease may
    /// have lapsed.
    pub fn admitting(&self) -> Result<(), WireError> {
        self.valid()?;
        match self.is_draining() {
            true => Err(WireError::new(
                ErrorCode::Draining,
                "the broker is shutting down; retry against the restarted broker",
            )),
            false => Ok(()),
        }
    }
}

/// A failed commit as the client sees it; logged, since it is the broker's fault.
pub fn store_failure(e: StoreError) -> WireError {
    if let StoreError::Fenced = e {
        return WireError::new(
            ErrorCode::NotOwner,
            format!("{e}; reconnect: any node redirects to the one that serves"),
        );
    }
    tracing::error!("{e}");
    WireError::new(ErrorCode::StoreFailure, format!("{e}; nothing was changed"))
}

/// The system's randomness failed (a key or an id could not be made).
fn random_failure(e: crate::keys::RandomUnavailable) -> WireError {
    WireError::new(ErrorCode::Internal, e.to_string())
}
