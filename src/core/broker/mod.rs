//! The broker core: every admission, lease and authorisation rule, given `now`.
//!
//! `Broker` is what the transport calls. It is concurrent (any number of
//! connection tasks call it at once) but never reads a clock, sleeps, spawns
//! or does I/O. Durable changes follow plan → commit (by the caller) → apply,
//! so memory never runs ahead of the store.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::directory::{Directory, Principal};
use crate::core::error::{Error, Result};
use crate::core::id::{ConnId, Email, MachineId, Nonce, OfflineId, OrgName, SessionId};
use crate::core::pool::{Pool, PoolId, PoolUid};
use crate::core::record::{AuditAction, AuditEntry, Change, Record};
use crate::core::session::{EndReason, Ended, Holder, IdCipher, Renewed, SessionTable};
use crate::core::time::Millis;
use crate::sync::{Arc, AtomicU64, Mutex, Ordering, RwLock};

mod figures;
mod holds;
mod reads;

pub use figures::{Checkpointed, Harvest, PoolSample};
pub use holds::Hold;
pub use reads::MachineInfo;

/// Tunables of the core.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// log2 of the session table's shard count.
    pub shard_bits: u32,
    /// First sequence number of this process's audit entries. The shell
    /// picks it at random so that entries written in the same millisecond
    /// by two runs of the broker never share a key.
    pub audit_seq_base: u64,
    /// Whether pools keep a durable session ceiling (see `pool::limit::Bounds`),
    /// so that a restart knows how many seats runners may still believe
    /// they hold. The shell turns it on; without it (the core's own tests)
    /// admission is bounded by the quota alone and `CeilingReached` never
    /// happens.
    pub ceilings: bool,
    /// How long after a restart, beyond one lease TTL, seats stay held for
    /// the previous run's runners to re-attach.
    pub restart_grace: Duration,
    /// Most runners one pool's wait queue holds (`QUEUE_FULL` past it).
    pub max_waiters: u32,
    /// Keys the permutation that makes session ids unpredictable (the
    /// shell draws one at random per run; see `session::ids`).
    pub session_id_key: u128,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            lease_ttl: Duration::from_secs(30),
            shard_bits: 6,
            audit_seq_base: 0,
            ceilings: false,
            restart_grace: Duration::from_secs(10),
            max_waiters: 10_000,
            session_id_key: 0,
        }
    }
}

/// The broker core.
pub struct Broker {
    pub(super) config: Config,
    /// Orgs, pools, users and keys; read on every Hello, written by admins.
    dir: RwLock<Directory>,
    /// Bumped after every applied change, so streams can cache a principal
    /// and re-resolve it only when something may have changed.
    version: AtomicU64,
    /// Live sessions and their deadlines.
    pub(crate) sessions: SessionTable,
    /// Source of pool uids (distinct per pool, never reused).
    pool_uids: AtomicU64,
    /// Active offline licenses by expiry: their seats come back then.
    /// Few (bounded by quotas) and touched only by admins and the expiry
    /// task, so a plain lock.
    offline_due: Mutex<BTreeMap<(Millis, OfflineId), Arc<Pool>>>,
    /// Orders audit entries written in the same millisecond.
    audit_seq: AtomicU64,
    /// The latest time a previous run recorded (`Record::Clock`), for the
    /// shell's check that the clock has not gone backwards.
    high_water: AtomicU64,
    /// Failed authentications since the broker was first started (this
    /// run's plus the count restored from the store).
    auth_failures: AtomicU64,
    /// The previous run's `Record::Leases` (TTL in ms, hold end), if any.
    previous_leases: Mutex<Option<(u64, Millis)>>,
    /// When seats held for the previous run's sessions come back (0: no hold).
    pub(super) hold_until: AtomicU64,
    /// In a cluster: orgs adopted from another node, and when the seats
    /// held for that node's runners come back. Few (one per takeover in
    /// progress) and touched by adoptions and the expiry task: a plain lock.
    pub(super) org_holds: Mutex<Vec<(Millis, OrgName)>>,
    /// Pools that track machine use (a machine policy, or an ephemeral
    /// registration): what the expiry task judges (see `machines`). Few,
    /// touched by their policy's apply and the expiry task: a plain lock.
    pub(super) tracked: Mutex<Vec<Arc<Pool>>>,
}

/// Whether `p` is the user holding the session (in the session's org).
fn held_by(h: Holder<'_>, p: &Principal) -> bool {
    Some(&h.pool.org) == p.org.as_ref() && h.user == &p.email
}

impl Broker {
    /// An empty broker; `apply` the store's records to fill it.
    pub fn new(config: Config) -> Broker {
        let audit_seq_base = config.audit_seq_base;
        Broker {
            sessions: SessionTable::new(config.shard_bits, IdCipher::new(config.session_id_key)),
            config,
            dir: RwLock::new(Directory::default()),
            version: AtomicU64::new(1),
            pool_uids: AtomicU64::new(1),
            offline_due: Mutex::new(BTreeMap::new()),
            audit_seq: AtomicU64::new(audit_seq_base),
            high_water: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            previous_leases: Mutex::new(None),
            hold_until: AtomicU64::new(0),
            org_holds: Mutex::new(Vec::new()),
            tracked: Mutex::new(Vec::new()),
        }
    }

    /// Whether pools keep durable session ceilings.
    pub fn ceilings(&self) -> bool {
        self.config.ceilings
    }

    /// The lease TTL runners should heartbeat against.
    pub fn lease_ttl(&self) -> Duration {
        self.config.lease_ttl
    }

    /// The directory version; a cached principal is valid while it is unchanged.
    pub fn version(&self) -> u64 {
        // Acquire pairs with the Release in `apply`: a reader that sees the
        // new version also sees the directory change behind it.
        self.version.load(Ordering::Acquire)
    }

    /// Resolves an API key hash to the caller.
    pub fn authenticate(&self, key: &crate::core::id::KeyHash) -> Result<Principal> {
        self.dir.read().principal(key)
    }

    /// Heartbeat: extends a live session the caller holds. Anyone else's
    /// session looks ended (`SESSION_EXPIRED`): a session id grants nothing
    /// to whoever guesses it.
    pub fn renew(&self, p: &Principal, session: SessionId, now: Millis) -> Result<Millis> {
        self.renew_with(p, session, now, |r| r.deadline)
    }

    /// `renew`, handing the renewed lease (what the shell signs into its new
    /// token) to `then`.
    pub fn renew_with<R>(
        &self,
        p: &Principal,
        session: SessionId,
        now: Millis,
        then: impl FnOnce(Renewed<'_>) -> R,
    ) -> Result<R> {
        self.sessions.renew(session, now, self.config.lease_ttl, |h| held_by(h, p), then)
    }

    /// Ends a session the caller holds, on the runner's request. (Owners and
    /// Admins end other people's sessions with `kill`.)
    pub fn release(&self, p: &Principal, session: SessionId, now: Millis) -> Result<Ended> {
        self.sessions.end(session, EndReason::Released, now, |h| held_by(h, p))
    }

    /// Sets the labels of a session the caller holds (a runner that
    /// re-attached after a restart with a version 2 to 6 `Reattach` got a
    /// new, unlabelled session).
    pub fn label(&self, p: &Principal, session: SessionId, labels: crate::value::Labels) -> Result<()> {
        self.sessions.label(session, labels, |h| held_by(h, p))
    }

    /// Ends a live session unconditionally (an undo, a failed re-check).
    pub(crate) fn end_session(&self, session: SessionId, reason: EndReason, now: Millis) -> Result<Ended> {
        self.sessions.end(session, reason, now, |_| true)
    }

    /// An Owner/Admin ends a session of their org.
    pub fn kill(&self, p: &Principal, org: &OrgName, session: SessionId, now: Millis) -> Result<Ended> {
        p.require_admin(org)?;
        self.sessions
            .end(session, EndReason::Revoked, now, |h| &h.pool.org == org)
            .map_err(|_| Error::not_found("session", session))
    }

    /// A connection closed cleanly: end the sessions it still holds.
    pub fn close_connection(
        &self,
        conn: ConnId,
        sessions: impl IntoIterator<Item = SessionId>,
        now: Millis,
    ) -> Vec<Ended> {
        sessions
            .into_iter()
            .filter_map(|id| self.sessions.end(id, EndReason::ConnectionClosed, now, |h| h.conn == conn).ok())
            .collect()
    }

    /// The earliest lease deadline, for the expiry task's sleep.
    pub fn next_deadline(&self) -> Option<Millis> {
        let offline = self.offline_due.lock().keys().next().map(|(at, _)| *at);
        // Acquire: pairs with the Release in `hold_reserves`.
        let hold = Some(Millis(self.hold_until.load(Ordering::Acquire))).filter(|h| h.0 != 0);
        let org_hold = self.org_holds.lock().iter().map(|(at, _)| *at).min();
        [self.sessions.next_deadline(), offline, hold, org_hold].into_iter().flatten().min()
    }

    /// Ends every lease whose deadline is at or before `now`, returns the
    /// seats of offline licenses that expired, and ends a restart's hold
    /// when it is due.
    pub fn expire(&self, now: Millis) -> Vec<Ended> {
        self.expire_offline(now);
        self.end_hold(now);
        self.sessions.expire(now)
    }

    fn expire_offline(&self, now: Millis) {
        let due: Vec<((Millis, OfflineId), Arc<Pool>)> = {
            let mut map = self.offline_due.lock();
            let later = map.split_off(&(Millis(now.0.saturating_add(1)), OfflineId(0)));
            std::mem::replace(&mut *map, later).into_iter().collect()
        };
        for ((_, id), pool) in due {
            pool.expire_offline(id);
        }
    }

    /// Tracks an active offline license for expiry.
    pub(crate) fn track_offline(&self, pool: Arc<Pool>, id: OfflineId, expires: Millis) {
        self.offline_due.lock().insert((expires, id), pool);
    }

    /// Forgets an offline license's expiry (its reservation was cancelled).
    pub(crate) fn untrack_offline(&self, id: OfflineId, expires: Millis) {
        self.offline_due.lock().remove(&(expires, id));
    }

    /// A new audit line for `org`.
    pub(crate) fn audit(
        &self,
        org: &OrgName,
        p: &Principal,
        action: AuditAction,
        detail: String,
        now: Millis,
    ) -> Change {
        // Relaxed: ordering within a millisecond only needs distinct values.
        // (Wrapping is harmless: the base leaves 2^63 values before it.)
        let seq = self.audit_seq.fetch_add(1, Ordering::Relaxed);
        Change::Put(Record::Audit(AuditEntry {
            org: org.clone(),
            at: now,
            seq,
            actor: p.email.clone(),
            action,
            detail,
        }))
    }

    /// Applies changes committed at `now` to memory; returns sessions
    /// ended as a consequence (a removed machine's sessions are revoked).
    pub fn apply(&self, changes: &[Change], now: Millis) -> Vec<Ended> {
        {
            let mut dir = self.dir.write();
            for change in changes {
                self.apply_own(change);
                let restored = dir.apply(change, now, |org, id, quota, end| {
                    // Relaxed: uniqueness only; no other memory depends on it.
                    let uid = PoolUid(self.pool_uids.fetch_add(1, Ordering::Relaxed));
                    Arc::new(Pool::new(uid, org.clone(), id, quota, end))
                });
                if let Some((pool, entry)) = restored {
                    self.track_offline(pool, entry.id, entry.expires);
                }
            }
        }
        // Release: pairs with the Acquire in `version`.
        self.version.fetch_add(1, Ordering::Release);
        changes.iter().flat_map(|change| self.follow(change, now)).collect()
    }

    /// Applies the records the broker keeps outside the directory.
    fn apply_own(&self, change: &Change) {
        match change {
            Change::Put(Record::Clock { high_water }) => {
                // Relaxed: read only by the shell at start, after loading.
                self.high_water.store(high_water.0, Ordering::Relaxed);
            }
            Change::Put(Record::Leases { ttl_ms, hold_until }) => {
                *self.previous_leases.lock() = Some((*ttl_ms, *hold_until));
            }
            Change::Put(Record::AuthFailures { count }) => {
                // Relaxed: a statistic; restored before anything counts.
                self.auth_failures.store(*count, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// What an applied change does to live sessions: ends those it revokes
    /// (returned), counts those a new cap covers.
    fn follow(&self, change: &Change, now: Millis) -> Vec<Ended> {
        self.track(change);
        let revoked =
            |f: &dyn Fn(&Pool, &MachineId, &Email) -> bool| self.sessions.end_where(EndReason::Revoked, now, f);
        match change {
            Change::RemoveMachine { org, pool, machine } => {
                revoked(&|p, m, _| &p.org == org && p.id == *pool && m == machine)
            }
            Change::RemoveGrant { org, pool, email } => {
                revoked(&|p, _, u| &p.org == org && p.id == *pool && u == email)
            }
            Change::RemoveUser { org, email } => revoked(&|p, _, u| &p.org == org && u == email),
            Change::Put(Record::UserLimit { org, pool, email, .. }) => {
                // Count the user's live sessions into the cap (after the
                // epoch bump: see `admit_from`); counted ones are skipped.
                let cap = self.with_dir(|dir| dir.pool(org, *pool).map(|p| p.cap_of(email))).ok().flatten();
                if let Some(cap) = cap {
                    self.sessions.adopt_where(&cap, |p, u| &p.org == org && p.id == *pool && u == email);
                }
                Vec::new()
            }
            Change::Put(Record::LabelLimit { org, pool, key, value, .. }) => {
                // As a user cap: the live sessions carrying the label, after the bump.
                if let Ok(p) = self.with_dir(|dir| dir.pool(org, *pool).cloned()) {
                    let caps = p.label_caps();
                    for cap in caps.iter().flat_map(|c| c.iter()).filter(|c| &c.key == key && &c.value == value) {
                        self.sessions.adopt_label_where(p.uid, cap);
                    }
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Counts a failed authentication (an unknown or revoked key).
    pub fn note_auth_failure(&self) {
        // Relaxed: a statistic.
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an admission to `org`'s `pool` refused for `why` (nothing
    /// if the pool does not exist: a made-up name names no pool to count).
    pub fn note_denial(&self, org: &OrgName, pool: PoolId, why: crate::core::pool::Denial) {
        if let Ok(p) = self.dir.read().pool(org, pool) {
            p.deny(why);
        }
    }

    /// Failed authentications since the broker was first started.
    pub fn auth_failures(&self) -> u64 {
        // Relaxed: a statistic.
        self.auth_failures.load(Ordering::Relaxed)
    }

    /// Runs `f` on the directory for read-only planning (admin module).
    pub(crate) fn with_dir<T>(&self, f: impl FnOnce(&Directory) -> T) -> T {
        f(&self.dir.read())
    }

    /// The session-table shard a nonce lands on in a pool (for loom models,
    /// which need acquires that do or do not share a lock).
    pub fn session_shard(&self, org: &OrgName, pool: PoolId, nonce: Nonce) -> Option<usize> {
        let handle = self.dir.read().pool(org, pool).ok()?.clone();
        Some(self.sessions.shard_of_nonce(&handle, nonce))
    }

    /// Number of live sessions across all pools.
    pub fn live_sessions(&self) -> usize {
        self.sessions.len()
    }
}
