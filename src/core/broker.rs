//! The broker core: every admission, lease and authorisation rule, given `now`.
//!
//! `Broker` is what the transport calls. It is concurrent (any number of
//! connection tasks call it at once) but never reads a clock, sleeps, spawns
//! or does I/O. Durable changes follow plan → commit (by the caller) → apply,
//! so memory never runs ahead of the store.

use std::collections::BTreeMap;
use std::time::Duration;

use super::directory::{Directory, Principal};
use super::error::{Error, Result};
use super::id::{ConnId, Email, MachineId, Nonce, OfflineId, OrgName, SessionId};
use super::pool::{Figures, Pool, PoolId, PoolStatus, PoolUid};
use super::record::{AuditAction, AuditEntry, Change, Record};
use super::session::{EndReason, Ended, Holder, IdCipher, Renewed, SessionInfo, SessionTable};
use super::time::Millis;
use crate::sync::{Arc, AtomicU64, Mutex, Ordering, RwLock};

/// What the checkpoint last written held (`checkpoint_since`): each
/// pool's figures, and each tracked pool's last uses (their mark).
#[derive(Clone, Debug, Default)]
pub struct Checkpointed {
    figures: super::hash::FastMap<PoolUid, Figures>,
    uses: super::hash::FastMap<PoolUid, super::machines::UsesMark>,
}

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

/// Seats a restart holds for the previous run's runners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Seats held, over all pools.
    pub seats: u64,
    /// When the seats not re-attached by then come back.
    pub until: Millis,
    /// The record to commit before admitting anything, so the next restart
    /// honours this run's TTL and this hold.
    pub record: Record,
}

/// A registered machine, for `machine list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineInfo {
    /// The pool it is registered in.
    pub pool: PoolId,
    /// The machine.
    pub machine: MachineId,
    /// When it registered.
    pub registered: Millis,
}

/// What `Broker::harvest` hands the history.
#[derive(Debug, Default)]
pub struct Harvest {
    /// Closed minutes per pool (several shards' shares of a minute come
    /// separately; the history sums them).
    pub minutes: Vec<(OrgName, PoolId, super::usage::Closed)>,
    /// Every pool's numbers at the harvest.
    pub pools: Vec<PoolSample>,
    /// Closed minutes dropped because no harvest came for too long.
    pub dropped: u64,
}

/// One pool at a harvest.
#[derive(Debug, Clone)]
pub struct PoolSample {
    /// Its org.
    pub org: OrgName,
    /// Which pool.
    pub pool: PoolId,
    /// Highest seats in use since the last harvest.
    pub peak: u32,
    /// Lowest seats in use since the last harvest.
    pub trough: u32,
    /// Its quota now.
    pub quota: u32,
    /// Refusals for other reasons than the quota, since the pool was
    /// created (`Denial::ALL` order): the history takes differences.
    pub denied: [u64; super::pool::Denial::ALL.len()],
    /// Runners that joined the wait queue this run (differences, too).
    pub queued: u64,
    /// Users granted the pool now (KSE's Licensed Users).
    pub assigned: u32,
    /// Node-locked activations and live offline licenses now.
    pub activated: u32,
    /// Machines released unused since the pool was created (differences, too).
    pub expired: u64,
    /// Busy minutes in a row that are told of (`core::alerts`; none: not told).
    pub busy_minutes: Option<u32>,
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
    pub fn authenticate(&self, key: &super::id::KeyHash) -> Result<Principal> {
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
    /// re-attached after a restart got a new, unlabelled session).
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

    /// After a restart, before admitting anything: every pool holds its
    /// durable ceiling's worth of seats for the previous run's sessions,
    /// until their runners re-attach or one lease TTL of the run that
    /// admitted them, plus the restart grace, has passed since `now` (or
    /// until an earlier run's hold ends, if later). `None` when ceilings
    /// are off.
    pub fn hold_reserves(&self, now: Millis) -> Option<Hold> {
        if !self.config.ceilings {
            return None;
        }
        let previous = *self.previous_leases.lock();
        // A store without the record predates ceilings (or is new): this
        // run's TTL is the best estimate of the last run's.
        let ttl = previous.map_or(self.config.lease_ttl, |(ms, _)| Duration::from_millis(ms));
        let until = now.after(ttl + self.config.restart_grace).max(previous.map_or(Millis(0), |(_, h)| h));
        let seats = self.with_dir(|dir| {
            dir.orgs.values().flat_map(|o| o.pools.values()).map(|p| u64::from(p.hold_reserve())).sum::<u64>()
        });
        if seats > 0 {
            // Release: pairs with the Acquire in `next_deadline`.
            self.hold_until.store(until.0, Ordering::Release);
        }
        let record = Record::Leases { ttl_ms: self.config.lease_ttl.as_millis() as u64, hold_until: until };
        Some(Hold { seats, until, record })
    }

    /// In a cluster, taking over `org` from another node: applies its
    /// records (read from the cluster's store) and, with ceilings on, holds
    /// every pool's durable ceiling for the previous owner's runners until
    /// they re-attach or one lease TTL (the longest any node has recorded)
    /// plus the restart grace has passed since `now`. Returns the seats held.
    /// The same rule as a restart (`hold_reserves`), for one org.
    pub fn adopt_org(&self, org: &OrgName, records: Vec<Record>, now: Millis) -> u64 {
        self.apply(&records.into_iter().map(Change::Put).collect::<Vec<_>>(), now);
        if !self.config.ceilings {
            return 0;
        }
        let previous = self.previous_leases.lock().map_or(Duration::ZERO, |(ms, _)| Duration::from_millis(ms));
        let until = now.after(self.config.lease_ttl.max(previous) + self.config.restart_grace);
        let seats = self.with_dir(|dir| {
            dir.orgs.get(org).map_or(0, |o| o.pools.values().map(|p| u64::from(p.hold_reserve())).sum::<u64>())
        });
        if seats > 0 {
            self.org_holds.lock().push((until, org.clone()));
        }
        seats
    }

    /// In a cluster, handing orgs to other nodes: forgets them entirely
    /// (their pools, members and keys, their live sessions without ending
    /// them, since their runners re-attach at the next owner, and any
    /// hold), in one pass over the sessions whatever their number (a node
    /// that joins takes many orgs at once). The shell has already stopped
    /// admitting for them and writing their records.
    pub fn forget_orgs(&self, orgs: &[OrgName], now: Millis) {
        let gone: std::collections::HashSet<&OrgName> = orgs.iter().collect();
        let removed = {
            let mut dir = self.dir.write();
            dir.keys.retain(|_, k| k.org.as_ref().is_none_or(|o| !gone.contains(o)));
            orgs.iter().filter(|o| dir.orgs.remove(*o).is_some()).count()
        };
        // Release: pairs with the Acquire in `version` (cached principals of the orgs go stale).
        self.version.fetch_add(1, Ordering::Release);
        if removed == 0 {
            return;
        }
        self.offline_due.lock().retain(|_, pool| !gone.contains(&pool.org));
        self.org_holds.lock().retain(|(_, o)| !gone.contains(o));
        self.tracked.lock().retain(|pool| !gone.contains(&pool.org));
        // Not ends: nobody released these seats; the next owner holds them,
        // and counts their ends (the history counts each session's end once
        // across the nodes: its seat time here, its end where it ends).
        self.sessions.hand_on_where(now, |p, _, _| gone.contains(&p.org));
    }

    /// The orgs in memory (in a cluster: the orgs this node serves).
    pub fn org_names(&self) -> Vec<OrgName> {
        self.with_dir(|dir| dir.orgs.keys().cloned().collect())
    }

    /// Returns the seats still held for the previous run once the hold is due.
    fn end_hold(&self, now: Millis) {
        self.end_org_holds(now);
        // Relaxed pre-check; the swap below decides who ends it.
        let until = self.hold_until.load(Ordering::Relaxed);
        if until == 0 || now.0 < until || self.hold_until.swap(0, Ordering::AcqRel) == 0 {
            return;
        }
        self.with_dir(|dir| {
            for pool in dir.orgs.values().flat_map(|o| o.pools.values()) {
                pool.release_reserve();
            }
        });
    }

    /// Returns the seats held for adopted orgs whose hold is due.
    fn end_org_holds(&self, now: Millis) {
        let due: Vec<OrgName> = {
            let mut holds = self.org_holds.lock();
            if holds.iter().all(|(at, _)| *at > now) {
                return;
            }
            let (due, later) = std::mem::take(&mut *holds).into_iter().partition(|(at, _)| *at <= now);
            *holds = later;
            due.into_iter().map(|(_, org): (Millis, OrgName)| org).collect()
        };
        self.with_dir(|dir| {
            for pool in due.iter().filter_map(|o| dir.orgs.get(o)).flat_map(|o| o.pools.values()) {
                pool.release_reserve();
            }
        });
    }

    /// The ceiling record to commit before `org`/`pool` admits past its
    /// current ceiling, or `None` if none is needed any more (a concurrent
    /// raise got there, seats were freed, or the quota is what binds).
    /// The shell serialises ceiling writes; committing and settling the
    /// change raises the ceiling in memory.
    pub fn plan_ceiling(&self, org: &OrgName, pool: PoolId) -> Option<super::pending::Pending<()>> {
        let handle = self.with_dir(|dir| dir.pool(org, pool).ok().cloned())?;
        let seats = handle.ceiling_wanted()?;
        let record = Record::Ceiling { org: org.clone(), pool, seats };
        Some(super::pending::Pending::plan(vec![Change::Put(record)], ()))
    }

    /// Lowers, in memory, the ceilings of pools whose sessions hold far
    /// fewer seats (`tight`: any fewer, to exactly what they hold), and
    /// returns the records the shell must then write (serialised with
    /// raises; they need no applying).
    pub fn lower_ceilings(&self, tight: bool) -> Vec<Record> {
        self.with_dir(|dir| {
            let mut out = Vec::new();
            for (org, entry) in &dir.orgs {
                for pool in entry.pools.values() {
                    if let Some(seats) = pool.lower_ceiling(tight) {
                        out.push(Record::Ceiling { org: org.clone(), pool: pool.id, seats });
                    }
                }
            }
            out
        })
    }

    /// In a cluster, before handing `orgs` on: lowers each of their pools'
    /// ceilings to the sessions they hold (`Pool::ceiling_to_sessions`)
    /// and returns the records the shell must write under the orgs' fences
    /// before it lets them go, so the next node holds only the seats that
    /// runners may still believe in.
    pub fn ceilings_to_sessions(&self, orgs: &[OrgName]) -> Vec<Record> {
        self.with_dir(|dir| {
            let mut out = Vec::new();
            for (org, entry) in orgs.iter().filter_map(|o| dir.orgs.get(o).map(|e| (o, e))) {
                for pool in entry.pools.values() {
                    if let Some(seats) = pool.ceiling_to_sessions() {
                        out.push(Record::Ceiling { org: org.clone(), pool: pool.id, seats });
                    }
                }
            }
            out
        })
    }

    /// Whether seats are still held for the runners of `org`'s previous
    /// node (a takeover's hold, `adopt_org`, not yet over).
    pub fn holding(&self, org: &OrgName) -> bool {
        self.org_holds.lock().iter().any(|(_, o)| o == org)
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

    /// Live sessions of an org (Owner/Admin).
    pub fn sessions(&self, p: &Principal, org: &OrgName) -> Result<Vec<SessionInfo>> {
        self.require_session_reader(p, org)?;
        Ok(self.sessions.list(|pool| &pool.org == org))
    }

    /// Refuses unless `p` may see `org`'s sessions, live or ended, with who
    /// held them (user, machine, labels): the org's Owners and Admins. The
    /// one rule for every door (QUIC lists, the API, the CLI, the page);
    /// Users and the operator read the numbers and charts, not who.
    pub fn require_session_reader(&self, p: &Principal, org: &OrgName) -> Result<()> {
        p.require_admin(org)?;
        self.dir.read().org(org).map(|_| ())
    }

    /// When each live session of `org`'s `pool` started, for replaying
    /// demand (no identities, so any member may read it).
    pub fn live_starts(&self, p: &Principal, org: &OrgName, pool: PoolId) -> Result<Vec<Millis>> {
        p.require_reader(org)?;
        let uid = self.dir.read().pool(org, pool)?.uid;
        Ok(self.sessions.starts_of(uid))
    }

    /// Owner/Admin: one page of the org's live sessions (see `SessionTable::page`).
    pub fn sessions_page(
        &self,
        p: &Principal,
        org: &OrgName,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<(Vec<SessionInfo>, bool)> {
        self.require_session_reader(p, org)?;
        Ok(self.sessions.page(after, limit, |pool| &pool.org == org))
    }

    /// Registered machines of an org (Owner/Admin).
    pub fn machines(&self, p: &Principal, org: &OrgName) -> Result<Vec<MachineInfo>> {
        p.require_admin(org)?;
        let dir = self.dir.read();
        let mut pools: Vec<_> = dir.org(org)?.pools.values().cloned().collect();
        pools.sort_by_key(|p| p.id);
        Ok(pools
            .iter()
            .flat_map(|pool| {
                pool.machines().into_iter().map(|(machine, registered)| MachineInfo {
                    pool: pool.id,
                    machine,
                    registered,
                })
            })
            .collect())
    }

    /// Every pool's numbers and every org's subscription end, for the ops
    /// views (whoever serves them decides who may read them).
    pub fn census(&self) -> (Vec<PoolStatus>, Vec<(OrgName, Millis)>) {
        let counts = self.sessions.all_counts();
        let dir = self.dir.read();
        let subscriptions = dir.orgs.iter().map(|(name, e)| (name.clone(), e.subscription_end)).collect();
        let this_run = |p: &Pool| counts.get(&p.uid).copied().unwrap_or_default();
        let pools = dir.orgs.values().flat_map(|e| e.pools.values()).map(|p| p.status(this_run(p))).collect();
        (pools, subscriptions)
    }

    /// When `org`'s subscription ends (midnight UTC after its last day):
    /// the operator and the org's members may read it.
    pub fn subscription_end(&self, p: &Principal, org: &OrgName) -> Result<Millis> {
        p.require_reader(org)?;
        self.dir.read().org(org).map(|o| o.subscription_end)
    }

    /// Pool numbers: the operator sees every org, members see their own.
    pub fn status(&self, p: &Principal, org: Option<&OrgName>) -> Result<Vec<PoolStatus>> {
        let dir = self.dir.read();
        let wanted: Vec<&OrgName> = match (org, &p.org) {
            (Some(o), _) => {
                if p.role != super::id::Role::Operator {
                    p.require_member(o)?;
                }
                vec![dir.orgs.get_key_value(o).ok_or_else(|| Error::not_found("org", o))?.0]
            }
            (None, Some(mine)) => vec![mine],
            (None, None) => dir.orgs.keys().collect(),
        };
        let mut out: Vec<PoolStatus> = wanted
            .into_iter()
            .filter_map(|o| dir.orgs.get(o))
            .flat_map(|e| e.pools.values().map(|p| p.status(self.sessions.counts(p.uid))))
            .collect();
        out.sort_by(|a, b| (&a.org, a.pool).cmp(&(&b.org, b.pool)));
        Ok(out)
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
    pub fn note_denial(&self, org: &OrgName, pool: PoolId, why: super::pool::Denial) {
        if let Ok(p) = self.dir.read().pool(org, pool) {
            p.deny(why);
        }
    }

    /// Failed authentications since the broker was first started.
    pub fn auth_failures(&self) -> u64 {
        // Relaxed: a statistic.
        self.auth_failures.load(Ordering::Relaxed)
    }

    /// The latest time a previous run recorded (0 if none).
    pub fn high_water(&self) -> Millis {
        // Relaxed: see `apply`.
        Millis(self.high_water.load(Ordering::Relaxed))
    }

    /// Records that keep what must outlive this run but is not a durable
    /// change of its own: every pool's admission counts, and the clock's
    /// high-water mark `now`. The shell writes them to the store now and
    /// then; they are never applied back to this run's memory.
    pub fn checkpoint(&self, now: Millis) -> Vec<Record> {
        self.checkpoint_since(now, &Checkpointed::default()).0
    }

    /// `checkpoint`, less the pools whose figures are those of `last` (the
    /// figures of the checkpoint last written); with every pool's figures
    /// now, to pass as `last` once these records are written.
    pub fn checkpoint_since(&self, now: Millis, last: &Checkpointed) -> (Vec<Record>, Checkpointed) {
        // Relaxed: a statistic.
        let auth_failures = self.auth_failures.load(Ordering::Relaxed);
        let mut out = vec![Record::Clock { high_water: now }, Record::AuthFailures { count: auth_failures }];
        let (uses, marks) = self.last_use_records(&last.uses);
        out.extend(uses);
        let counts = self.sessions.all_counts();
        let seat_ms = self.sessions.seat_ms(now);
        let dir = self.dir.read();
        let mut figures = super::hash::FastMap::with_capacity_and_hasher(last.figures.len(), Default::default());
        for pool in dir.orgs.values().flat_map(|entry| entry.pools.values()) {
            let this_run = counts.get(&pool.uid).copied().unwrap_or_default();
            let f = pool.figures(this_run, seat_ms.get(&pool.uid).copied().unwrap_or(0));
            if last.figures.get(&pool.uid) != Some(&f) {
                out.extend(f.records(&pool.org, pool.id));
            }
            figures.insert(pool.uid, f);
        }
        (out, Checkpointed { figures, uses: marks })
    }

    /// Seat-milliseconds every pool's sessions have held up to `now`, since
    /// the pool was created (survives restarts through `checkpoint`): the
    /// integral of seats in use, so its rate over the quota is utilization.
    pub fn seat_ms(&self, now: Millis) -> Vec<(OrgName, PoolId, u64)> {
        let this_run = self.sessions.seat_ms(now);
        let dir = self.dir.read();
        dir.orgs
            .values()
            .flat_map(|e| e.pools.values())
            .map(|p| (p.org.clone(), p.id, p.seat_ms_before() + this_run.get(&p.uid).copied().unwrap_or(0)))
            .collect()
    }

    /// Closes every pool's minutes up to `now` (see `usage`) for the
    /// history: each pool's closed minutes, its seats-in-use extremes since
    /// the last harvest, and how many closed minutes were dropped.
    pub fn harvest(&self, now: Millis) -> Harvest {
        let mut minutes = Vec::new();
        let dropped = self.sessions.harvest(now, |pool, closed| minutes.push((pool.org.clone(), pool.id, closed)));
        let dir = self.dir.read();
        let pools = dir
            .orgs
            .values()
            .flat_map(|e| e.pools.values())
            .map(|p| {
                let (peak, trough) = p.take_extremes();
                let (assigned, bound, offline) = p.licensing_counts();
                PoolSample {
                    org: p.org.clone(),
                    pool: p.id,
                    peak,
                    trough,
                    quota: p.quota(),
                    denied: p.denied(),
                    queued: p.queued(),
                    assigned,
                    activated: bound + offline,
                    expired: p.expired(),
                    busy_minutes: p.alerts().busy_minutes,
                }
            })
            .collect();
        Harvest { minutes, pools, dropped }
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
