//! A license pool: what an org bought of one product, and its live counters.
//!
//! The pool owns the seat counter and the set of registered machines. It
//! never decides *who* may use it (that is `directory`) nor tracks sessions
//! (that is `session`).

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::hash::FastMap;
use super::id::{Email, MachineId, OfflineId, OrgName};
pub use super::pool_id::{Kind, PoolId, Product, Term};
use super::queue::WaitQueue;
use super::seats::{SeatCount, Seats, MAX_IN_USE};
use super::session::Counts;
use super::time::Millis;
use super::usage::Extremes;
use crate::sync::{Arc, AtomicU32, AtomicU64, Mutex, Ordering};

/// A pool's identity within this process: distinct per pool, never reused,
/// so runner nonces (and the shard statistics) are keyed by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PoolUid(pub u64);

/// Whether a machine registration added a machine or found it already there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Registration {
    /// The machine was already registered; nothing changed.
    Known,
    /// The machine took a new slot; its pending change persists it, or gives the slot back if the commit fails.
    New,
}

/// One pool's live state. Shared (behind `Arc`) by the directory and every
/// session holding one of its seats.
///
/// Laid out for two cores hammering one pool: the struct is aligned so the
/// `Arc`'s reference counts sit on a cache line of their own, and the seat
/// word gets its own line, so an admission on one
/// core does not evict the read-mostly fields another core is reading.
#[repr(align(128))]
pub struct Pool {
    /// Unique per pool within this process; keys runner nonces to their pool.
    pub uid: PoolUid,
    /// The org that bought it.
    pub org: OrgName,
    /// Its identity within the org.
    pub id: PoolId,
    /// The org's subscription end; nothing is admitted at or after it.
    not_after: AtomicU64,
    /// Bumped after every machine removal. An acquire that saw its machine
    /// registered at an older value checks again after inserting its
    /// session, so a removal's sweep can never miss a session it should end.
    removals: AtomicU64,
    /// Machine IDs and when each registered. Registration is rare (once per
    /// machine), so a plain lock keeps the cap check simple.
    machines: Mutex<FastMap<MachineId, Machine>>,
    /// Per-user caps (FlexNet's MAX): a user's sessions in this pool,
    /// counted and limited by a seat word of their own (see `admission`).
    /// Set rarely, by admins; read at ticket resolution, not per admission.
    caps: Mutex<FastMap<Email, Arc<Seats>>>,
    /// Bumped when a user's cap is first created, before the sweep that
    /// counts their live sessions: an admission resolved before the bump
    /// checks again after inserting, so no session goes uncounted.
    cap_epoch: AtomicU64,
    /// Admission limit, seats in use, and whether anyone waits; with the
    /// history's extremes on the same line (see `SeatLine`).
    pub(super) seats: Padded<SeatLine>,
    /// Seat-milliseconds held by sessions in earlier runs (from the store);
    /// the session table's shards count this run's.
    seat_ms_before: AtomicU64,
    /// Runners waiting for a seat, in arrival order (see `queue`).
    pub(super) queue: Mutex<WaitQueue>,
    /// What the limit is computed from. Every limit change happens under
    /// this lock; admissions never take it (they only CAS the seat word).
    bounds: Mutex<Bounds>,
    /// The quota, readable without the lock (to tell a full pool from a
    /// ceiling that must be raised, after a refusal).
    quota: AtomicU32,
    /// Seats held, after a restart, for the previous run's sessions until
    /// their runners re-attach or the hold ends (counted in `in_use`).
    reserve: AtomicU32,
    /// Admissions refused at the ceiling since the last raise: each waits
    /// for a raise, so the next raise makes room for all of them at once.
    misses: AtomicU32,
    /// Admissions and quota refusals counted before this process started
    /// (from the store); the session table's shards count the rest.
    counted: Mutex<Counts>,
    /// Admissions refused for other reasons than the quota, by `Denial`
    /// (this run's and, restored, earlier runs').
    denied: Mutex<[u64; Denial::ALL.len()]>,
    /// Runners that joined the wait queue this run (the history takes
    /// differences; joining is under the queue's lock, so no contention).
    pub(super) queued: AtomicU64,
    /// KSE grants, node-locked activations and offline licenses. Changed
    /// only by admin requests and activations, which the shell serialises,
    /// so a plain lock.
    licensing: Mutex<Licensing>,
}

/// The inputs of a pool's admission limit.
///
/// Sessions are not durable; the ceiling is. It bounds the seats that
/// sessions (and seats reserved for the previous run's sessions) may hold,
/// and the store always holds a ceiling at least as high as the one in
/// memory: it is raised durably before memory, and lowered in memory
/// before durably. After a crash the broker therefore knows how many
/// runners may still believe they hold a seat, without an fsync per lease.
/// Activations and offline licenses are durable records of their own and
/// do not count against it.
struct Bounds {
    /// Licenses bought.
    quota: u32,
    /// Most seats sessions may hold (`None`: not enforced, a broker without
    /// durable ceilings, as in the core's own tests).
    ceiling: Option<u32>,
    /// Seats held by activations and offline licenses.
    durable: u32,
    /// Lowering passes since the ceiling was last set: a pool is lowered
    /// only after `QUIET_PASSES` of them, so a busy pool whose use swings
    /// is not lowered and raised again (a durable write each) every pass.
    quiet: u32,
}

/// Lowering passes a ceiling must sit unchanged before it is lowered.
const QUIET_PASSES: u32 = 3;

impl Bounds {
    fn limit(&self) -> u32 {
        match self.ceiling {
            Some(c) => self.quota.min(c.saturating_add(self.durable)),
            None => self.quota,
        }
    }
}

/// How far a ceiling moves past the seats sessions hold: a quarter more
/// (at least one), so a pool filling up to a million seats raises it about
/// seventy times (each a durable write), and a crash holds back at most a
/// quarter more seats than were in use.
fn headroom(sessions: u32) -> u32 {
    (sessions / 4).max(1)
}

#[derive(Default)]
struct Licensing {
    /// Licensed users (KSE) and when each was granted.
    grants: FastMap<Email, Millis>,
    /// Node-locked activations: user → machine; each holds a seat.
    bindings: FastMap<Email, (MachineId, Millis)>,
    /// Every offline license created from the pool, expired ones included.
    offline: Vec<OfflineEntry>,
}

/// An offline license as the pool tracks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineEntry {
    /// Unique id.
    pub id: OfflineId,
    /// The machine it is bound to.
    pub machine: MachineId,
    /// When it was created.
    pub issued: Millis,
    /// When its seat comes back.
    pub expires: Millis,
    /// Who created it.
    pub created_by: Email,
    /// Whether it still holds its seat.
    pub active: bool,
}

/// A machine registration: it counts toward the cap from the moment it is
/// planned, but admits sessions only once its record is durable, so nobody
/// runs on a registration a crash could still lose.
#[derive(Clone, Copy, Debug)]
struct Machine {
    registered: Millis,
    committed: bool,
}

/// A pool's seat word and the history's extremes of it, on one cache line:
/// every change of the word reports its value right after its
/// compare-and-swap, while this core still owns the line, so the report
/// costs no transfer of its own.
pub(super) struct SeatLine {
    seats: Seats,
    /// The highest and lowest seats in use since the history's last harvest.
    pub extremes: Extremes,
}

impl std::ops::Deref for SeatLine {
    type Target = Seats;
    fn deref(&self) -> &Seats {
        &self.seats
    }
}

/// Keeps its contents on cache lines of their own.
#[repr(align(128))]
pub(super) struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A pool's numbers for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// The org that owns the pool.
    pub org: OrgName,
    /// Which pool.
    pub pool: PoolId,
    /// Licenses bought.
    pub quota: u32,
    /// Seats in use: live sessions, node-locked activations and live offline licenses.
    pub in_use: u32,
    /// Registered machine IDs.
    pub machines: u32,
    /// Sessions admitted since the broker started.
    pub admitted: u64,
    /// Acquires refused for quota since the broker started.
    pub rejected: u64,
    /// Licensed users (KSE grants).
    pub grants: u32,
    /// Node-locked activations (each holds a seat).
    pub activations: u32,
    /// Offline licenses holding a seat.
    pub offline: u32,
    /// Runners waiting in the pool's queue.
    pub waiting: u32,
    /// Sessions ended since the pool was created, by reason (`EndReason::ALL` order).
    pub ends: [u64; 4],
    /// Admissions refused for other reasons than the quota since the pool
    /// was created (`Denial::ALL` order).
    pub denied: [u64; Denial::ALL.len()],
}

/// Why an admission (acquire, checkout, activation) was refused, besides
/// the quota, which the session table counts itself (`rejected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The member is at their cap in the pool.
    UserLimit,
    /// The pool's queue (or the connection's share of waits) is full.
    QueueFull,
    /// No seat came within the wait.
    QueueTimeout,
    /// The machine is not registered in the pool.
    MachineNotRegistered,
    /// The org's subscription has ended.
    SubscriptionExpired,
    /// The member holds no grant for the KSE pool.
    NotLicensed,
    /// The member's node-locked license is bound to another machine.
    AlreadyActivated,
}

impl Denial {
    /// Every reason, in the order counts are kept and stored.
    pub const ALL: [Denial; 7] = [
        Denial::UserLimit,
        Denial::QueueFull,
        Denial::QueueTimeout,
        Denial::MachineNotRegistered,
        Denial::SubscriptionExpired,
        Denial::NotLicensed,
        Denial::AlreadyActivated,
    ];
}

impl Pool {
    /// A new, empty pool.
    pub fn new(uid: PoolUid, org: OrgName, id: PoolId, quota: u32, not_after: Millis) -> Pool {
        Pool {
            uid,
            org,
            id,
            not_after: AtomicU64::new(not_after.0),
            removals: AtomicU64::new(0),
            caps: Mutex::new(FastMap::default()),
            cap_epoch: AtomicU64::new(0),
            machines: Mutex::new(FastMap::default()),
            seats: Padded(SeatLine { seats: Seats::new(quota), extremes: Extremes::default() }),
            seat_ms_before: AtomicU64::new(0),
            queue: Mutex::new(WaitQueue::default()),
            bounds: Mutex::new(Bounds { quota, ceiling: None, durable: 0, quiet: 0 }),
            quota: AtomicU32::new(quota),
            reserve: AtomicU32::new(0),
            misses: AtomicU32::new(0),
            counted: Mutex::new(Counts::default()),
            denied: Mutex::new([0; Denial::ALL.len()]),
            queued: AtomicU64::new(0),
            licensing: Mutex::new(Licensing::default()),
        }
    }

    /// Takes a seat for a new session at `now`. (Admission statistics are
    /// counted by the session table's shards, under their locks, so that
    /// the only shared write of an admission is the seat word itself.)
    pub fn take_seat(&self, now: Millis) -> Result<SeatCount> {
        self.open_at(now)?;
        self.seats.try_acquire().map(|c| self.rose(c)).map_err(|c| self.refusal(c))
    }

    /// Reports a seat-word value just produced by a change that can only
    /// have raised it.
    pub(super) fn rose(&self, c: SeatCount) -> SeatCount {
        self.seats.extremes.rose(c.in_use);
        c
    }

    /// Reports a seat-word value just produced by any change.
    pub(super) fn seen(&self, c: SeatCount) -> SeatCount {
        self.seats.extremes.saw(c.in_use);
        c
    }

    /// The highest and lowest seats in use since the last call (see `usage::Extremes`).
    pub fn take_extremes(&self) -> (u32, u32) {
        // The level is read with a read-modify-write: it is the word's
        // latest value, and every change after it synchronises with it, so
        // that change's report lands after the swap (see `Extremes::take`).
        self.seats.extremes.take(|| self.seats.update(Some).unwrap_or_else(|c| c).in_use)
    }

    /// Seat-milliseconds held by sessions in earlier runs.
    pub fn seat_ms_before(&self) -> u64 {
        // Relaxed: a statistic, restored before anything reads it.
        self.seat_ms_before.load(Ordering::Relaxed)
    }

    /// Sets the seat time of earlier runs (a store record; idempotent).
    pub fn restore_seat_ms(&self, ms: u64) {
        // Relaxed: see `seat_ms_before`.
        self.seat_ms_before.store(ms, Ordering::Relaxed);
    }

    /// Refuses once the org's subscription has ended.
    pub fn open_at(&self, now: Millis) -> Result<()> {
        // Relaxed: the subscription end is an independent value; a change
        // racing an acquire may apply to it or not, either is correct.
        match now.0 >= self.not_after.load(Ordering::Relaxed) {
            true => Err(Error::SubscriptionExpired),
            false => Ok(()),
        }
    }

    /// Why a full seat word refused: the quota, or a ceiling to raise.
    fn refusal(&self, c: SeatCount) -> Error {
        // Relaxed: a quota change racing this refusal may be seen or not;
        // either answer was true an instant ago, and a retry re-reads.
        let quota = self.quota.load(Ordering::Relaxed);
        // Runners wait for the next seat: a newcomer is behind them.
        match c.in_use < quota && !c.queued {
            true => {
                // Relaxed: a sizing hint for the next raise, nothing more.
                self.misses.fetch_add(1, Ordering::Relaxed);
                Error::CeilingReached
            }
            false => Error::QuotaExceeded { quota },
        }
    }

    /// Returns a session's (or a grant's) seat; called exactly once per
    /// ended session. The head waiter, if any, gets it at once.
    pub fn return_seat(&self) {
        let after = self.seats.release(1);
        self.seats.extremes.fell(after.in_use);
        self.freed(after);
    }

    /// After a change that may have made room: hands it to the waiters.
    fn freed(&self, after: SeatCount) {
        if after.queued {
            self.pump();
        }
    }

    /// Seats in use.
    pub fn in_use(&self) -> u32 {
        self.seats.count().in_use
    }

    /// Licenses bought.
    pub fn quota(&self) -> u32 {
        // Relaxed: see `refusal`.
        self.quota.load(Ordering::Relaxed)
    }

    /// Changes the quota (operator only; checked by the caller).
    pub fn set_quota(&self, quota: u32) {
        let mut b = self.bounds.lock();
        b.quota = quota;
        self.quota.store(quota, Ordering::Relaxed);
        self.relimit(&b, 0);
    }

    /// Recomputes the seat word's limit from `b`, moving `in_use` by `delta`
    /// in the same step, and lets waiters have any room it made. Callers
    /// hold the bounds lock.
    fn relimit(&self, b: &Bounds, delta: i64) {
        let limit = b.limit();
        let after = self.seats.update(|c| {
            let in_use = (i64::from(c.in_use) + delta).clamp(0, i64::from(MAX_IN_USE)) as u32;
            Some(SeatCount { limit, in_use, ..c })
        });
        self.freed(self.seen(after.unwrap_or_else(|c| c)));
    }

    /// Takes a seat for a durable holder (activation, offline license)
    /// against the quota alone; `check: false` restores one the store
    /// already holds (it passed the check when it was made).
    fn take_durable(&self, check: bool) -> Result<()> {
        let mut b = self.bounds.lock();
        let quota = b.quota;
        b.durable += 1;
        let limit = b.limit();
        let taken = self.seats.update(|c| {
            (!check || c.in_use < quota).then(|| SeatCount { limit, in_use: c.in_use.saturating_add(1), ..c })
        });
        let taken = taken.map(|c| self.rose(c));
        if taken.is_err() {
            b.durable -= 1;
            return Err(Error::QuotaExceeded { quota });
        }
        Ok(())
    }

    /// Returns a durable holder's seat.
    fn return_durable(&self) {
        let mut b = self.bounds.lock();
        b.durable = b.durable.saturating_sub(1);
        self.relimit(&b, -1);
    }

    /// Seats sessions hold (reserved ones included), given a reading of the word.
    fn sessions_in(b: &Bounds, c: SeatCount) -> u32 {
        c.in_use.saturating_sub(b.durable)
    }

    /// The ceiling to write before admitting past the current one, or
    /// `None` when none is needed (another raise got there first, or the
    /// quota is what binds).
    pub fn ceiling_wanted(&self) -> Option<u32> {
        let b = self.bounds.lock();
        let current = b.ceiling?;
        let sessions = Self::sessions_in(&b, self.seats.count());
        if sessions < current || current >= b.quota {
            return None;
        }
        // Relaxed: see `refusal`.
        let waiting = self.misses.swap(0, Ordering::Relaxed).saturating_add(self.waiting());
        Some(b.quota.min(sessions.max(current).saturating_add(headroom(sessions).max(waiting))))
    }

    /// Sets the ceiling from a committed `Ceiling` record (at start, or a
    /// raise just written). Lowerings set memory in `lower_ceiling` instead.
    pub fn set_ceiling(&self, ceiling: u32) {
        let mut b = self.bounds.lock();
        b.ceiling = Some(ceiling);
        b.quiet = 0;
        self.relimit(&b, 0);
    }

    /// Lowers the ceiling in memory, if it is well above what sessions
    /// hold, and returns the new value for the caller to write. Memory
    /// first: from this instant admissions obey the lower value, so the
    /// durable one (still higher until the write) stays an upper bound.
    /// `tight` lowers it to exactly the sessions held (a draining broker,
    /// which admits nothing more, so that its restart holds no spare seat).
    pub fn lower_ceiling(&self, tight: bool) -> Option<u32> {
        let mut b = self.bounds.lock();
        let current = b.ceiling?;
        b.quiet = b.quiet.saturating_add(1);
        if !tight && b.quiet < QUIET_PASSES {
            return None;
        }
        let (quota, durable) = (b.quota, b.durable);
        let mut lowered = None;
        // Runners waiting: the pool is not quiet, whatever its sessions.
        // One CAS reads the sessions and sets the limit, so no admission
        // can slip in between the reading and the new limit.
        let _ = self.seats.update(|c| {
            let sessions = c.in_use.saturating_sub(durable);
            let (target, slack) = match tight {
                true => (sessions, 0),
                false => (sessions.saturating_add(headroom(sessions)), headroom(sessions)),
            };
            lowered = None;
            if c.queued || current <= target.saturating_add(slack) {
                return None;
            }
            lowered = Some(target);
            Some(SeatCount { limit: quota.min(target.saturating_add(durable)), ..c })
        });
        if let Some(target) = lowered {
            b.ceiling = Some(target);
            b.quiet = 0;
        }
        lowered
    }

    /// After a restart: holds `ceiling` seats (the durable ceiling, or for a
    /// pool that never had one, every seat not held durably) for the
    /// previous run's sessions. Returns how many.
    pub fn hold_reserve(&self) -> u32 {
        let mut b = self.bounds.lock();
        let held = b.ceiling.unwrap_or_else(|| b.quota.saturating_sub(b.durable));
        b.ceiling = Some(held);
        b.quiet = 0;
        self.reserve.store(held, Ordering::Release);
        self.relimit(&b, i64::from(held));
        held
    }

    /// Takes one reserved seat for a re-attaching runner; false when none is left.
    pub fn take_reserved(&self) -> bool {
        // AcqRel: pairs with `release_reserve`'s swap; exactly one of them gets each seat.
        self.reserve.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1)).is_ok()
    }

    /// Ends the hold: seats still reserved go back.
    pub fn release_reserve(&self) {
        let n = self.reserve.swap(0, Ordering::AcqRel);
        if n > 0 {
            let after = self.seats.release(n);
            self.seats.extremes.fell(after.in_use);
            self.freed(after);
        }
    }

    /// Changes the subscription end.
    pub fn set_not_after(&self, not_after: Millis) {
        // Relaxed: see take_seat.
        self.not_after.store(not_after.0, Ordering::Relaxed);
    }

    /// Plans a machine's registration unless the pool's machine count is at
    /// its quota: the machine takes its slot now, and admits sessions once
    /// `restore_machine` applies its committed record. Re-registering a known
    /// machine is idempotent and always allowed.
    pub fn register_machine(&self, machine: &MachineId, now: Millis) -> Result<Registration> {
        let mut machines = self.machines.lock();
        // A pending registration of the same machine is in flight under the
        // shell's writer lock; reporting it as known takes no second slot.
        if machines.contains_key(machine) {
            return Ok(Registration::Known);
        }
        let quota = self.quota();
        if quota == 0 {
            // No licenses at all: say so, rather than "machine limit".
            return Err(Error::QuotaExceeded { quota });
        }
        if machines.len() >= quota as usize {
            return Err(Error::MachineLimit { quota });
        }
        machines.insert(machine.clone(), Machine { registered: now, committed: false });
        Ok(Registration::New)
    }

    /// Removes a machine registration; returns whether it was there.
    pub fn forget_machine(&self, machine: &MachineId) -> bool {
        let removed = self.machines.lock().remove(machine).is_some();
        if removed {
            // Release: pairs with the Acquire in `machine_epoch`; the mutexes
            // around the machine set and the session shards already order the
            // removal, the sweep and a racing acquire (see Broker::admit).
            self.removals.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// `email`'s cap in this pool, if one was ever set.
    pub fn cap_of(&self, email: &Email) -> Option<Arc<Seats>> {
        self.caps.lock().get(email).cloned()
    }

    /// How many caps were created (see `cap_epoch`).
    pub fn cap_epoch(&self) -> u64 {
        // Acquire: pairs with the AcqRel in `set_cap`.
        self.cap_epoch.load(Ordering::Acquire)
    }

    /// Sets `email`'s cap to `max` (`None`: unlimited). Returns the cap if
    /// it is new, for the caller to count the user's live sessions into it.
    /// Lowering a cap ends nothing: like a lowered quota, no new session is
    /// admitted until the user is below it.
    pub fn set_cap(&self, email: &Email, max: Option<u32>) -> Option<Arc<Seats>> {
        let limit = max.unwrap_or(u32::MAX);
        let mut caps = self.caps.lock();
        if let Some(cap) = caps.get(email) {
            let _ = cap.update(|c| Some(SeatCount { limit, ..c }));
            return None;
        }
        let cap = Arc::new(Seats::new(limit));
        caps.insert(email.clone(), cap.clone());
        // AcqRel: the new cap is in the map before any reader sees the bump.
        self.cap_epoch.fetch_add(1, Ordering::AcqRel);
        Some(cap)
    }

    /// Every user cap: (user, max, sessions counted).
    pub fn caps(&self) -> Vec<(Email, u32, u32)> {
        let mut out: Vec<_> =
            self.caps.lock().iter().map(|(e, c)| (e.clone(), c.count().limit, c.count().in_use)).collect();
        out.sort();
        out
    }

    /// How many machine removals this pool has seen.
    pub fn machine_epoch(&self) -> u64 {
        // Acquire: pairs with the Release in `forget_machine`.
        self.removals.load(Ordering::Acquire)
    }

    /// Applies a committed registration (at startup, or after its commit):
    /// no cap check, the store only ever holds registrations that passed it.
    pub fn restore_machine(&self, machine: MachineId, registered: Millis) {
        self.machines.lock().insert(machine, Machine { registered, committed: true });
    }

    /// Whether the machine is registered durably (and so may run sessions).
    pub fn has_machine(&self, machine: &MachineId) -> bool {
        self.machines.lock().get(machine).is_some_and(|m| m.committed)
    }

    /// Registered machines with their registration times, sorted by id.
    pub fn machines(&self) -> Vec<(MachineId, Millis)> {
        let machines = self.machines.lock();
        let mut v: Vec<_> =
            machines.iter().filter(|(_, m)| m.committed).map(|(id, m)| (id.clone(), m.registered)).collect();
        v.sort();
        v
    }

    /// Whether `email` holds a grant (KSE licensed user).
    pub fn has_grant(&self, email: &Email) -> bool {
        self.licensing.lock().grants.contains_key(email)
    }

    /// Licensed users: email, when granted, and the machine a node-locked
    /// activation bound them to.
    pub fn grants(&self) -> Vec<(Email, Millis, Option<MachineId>)> {
        let l = self.licensing.lock();
        let mut v: Vec<_> =
            l.grants.iter().map(|(e, t)| (e.clone(), *t, l.bindings.get(e).map(|(m, _)| m.clone()))).collect();
        v.sort();
        v
    }

    /// How many users hold a grant.
    pub fn grant_count(&self) -> usize {
        self.licensing.lock().grants.len()
    }

    /// Records a grant (idempotent).
    pub fn restore_grant(&self, email: &Email, at: Millis) {
        self.licensing.lock().grants.entry(email.clone()).or_insert(at);
    }

    /// Drops a grant; returns whether it was there.
    pub fn forget_grant(&self, email: &Email) -> bool {
        self.licensing.lock().grants.remove(email).is_some()
    }

    /// The machine a user's node-locked license is activated on.
    pub fn binding(&self, email: &Email) -> Option<MachineId> {
        self.licensing.lock().bindings.get(email).map(|(m, _)| m.clone())
    }

    /// Users whose node-locked license is activated on `machine`.
    pub fn bound_to(&self, machine: &MachineId) -> Vec<Email> {
        self.licensing.lock().bindings.iter().filter(|(_, (m, _))| m == machine).map(|(e, _)| e.clone()).collect()
    }

    /// Activates a user's license on a machine, taking a seat.
    pub fn bind(&self, email: &Email, machine: &MachineId, at: Millis) -> Result<()> {
        let mut l = self.licensing.lock();
        if l.bindings.contains_key(email) {
            return Ok(());
        }
        self.take_durable(true)?;
        l.bindings.insert(email.clone(), (machine.clone(), at));
        Ok(())
    }

    /// Restores a persisted activation at start (idempotent; no quota check:
    /// it passed one when it was made).
    pub fn restore_binding(&self, email: &Email, machine: &MachineId, at: Millis) {
        let mut l = self.licensing.lock();
        if !l.bindings.contains_key(email) {
            let _ = self.take_durable(false);
            l.bindings.insert(email.clone(), (machine.clone(), at));
        }
    }

    /// Frees a user's activation and its seat; returns the machine it was on.
    pub fn unbind(&self, email: &Email) -> Option<MachineId> {
        let (machine, _) = self.licensing.lock().bindings.remove(email)?;
        self.return_durable();
        Some(machine)
    }

    /// The expiry of the active offline license bound to `machine`, if any.
    pub fn active_offline_for(&self, machine: &MachineId) -> Option<Millis> {
        self.licensing.lock().offline.iter().find(|o| o.active && &o.machine == machine).map(|o| o.expires)
    }

    /// Records a new offline license, taking a seat.
    pub fn reserve_offline(&self, entry: OfflineEntry) -> Result<()> {
        let mut l = self.licensing.lock();
        self.take_durable(true)?;
        l.offline.push(entry);
        Ok(())
    }

    /// Restores a persisted offline license (idempotent): it holds a seat
    /// until the broker's first expiry pass finds it expired. Returns
    /// whether it was new to memory.
    pub fn restore_offline(&self, entry: OfflineEntry) -> bool {
        let mut l = self.licensing.lock();
        if l.offline.iter().any(|o| o.id == entry.id) {
            return false;
        }
        if entry.active {
            let _ = self.take_durable(false);
        }
        l.offline.push(entry);
        true
    }

    /// Undoes `reserve_offline` whose commit failed (the pending change's undo).
    pub fn cancel_offline(&self, id: OfflineId) {
        let mut l = self.licensing.lock();
        if let Some(i) = l.offline.iter().position(|o| o.id == id) {
            if l.offline.remove(i).active {
                self.return_durable();
            }
        }
    }

    /// Returns an offline license's seat at its expiry (once).
    pub fn expire_offline(&self, id: OfflineId) -> bool {
        let mut l = self.licensing.lock();
        match l.offline.iter_mut().find(|o| o.id == id && o.active) {
            Some(o) => {
                o.active = false;
                self.return_durable();
                true
            }
            None => false,
        }
    }

    /// Every offline license of the pool, oldest first.
    pub fn offline(&self) -> Vec<OfflineEntry> {
        self.licensing.lock().offline.clone()
    }

    /// Sets the admission counts of earlier runs (a store record; idempotent).
    pub fn restore_counts(&self, admitted: u64, rejected: u64) {
        let mut c = self.counted.lock();
        (c.admitted, c.rejected) = (admitted, rejected);
    }

    /// Sets the session-end counts of earlier runs (a store record; idempotent).
    pub fn restore_ends(&self, ends: [u64; 4]) {
        self.counted.lock().ends = ends;
    }

    /// Counts an admission refused for `why`.
    pub fn deny(&self, why: Denial) {
        self.denied.lock()[why as usize] += 1;
    }

    /// Runners that joined the pool's wait queue since this run started.
    pub fn queued(&self) -> u64 {
        // Relaxed: a statistic.
        self.queued.load(Ordering::Relaxed)
    }

    /// Admissions refused for other reasons than the quota, since the pool
    /// was created (`Denial::ALL` order).
    pub fn denied(&self) -> [u64; Denial::ALL.len()] {
        *self.denied.lock()
    }

    /// Sets the refusal counts of earlier runs (a store record; idempotent).
    /// Counts of reasons this build does not know are dropped.
    pub fn restore_denials(&self, by_reason: &[u64]) {
        let mut d = self.denied.lock();
        for (slot, n) in d.iter_mut().zip(by_reason) {
            *slot = *n;
        }
    }

    /// The pool's numbers for `status`, with the counts the session table
    /// keeps for this run.
    pub fn status(&self, this_run: Counts) -> PoolStatus {
        let Counts { admitted, rejected, ends } = self.counted.lock().plus(this_run);
        let in_use = self.in_use();
        let (grants, activations, offline) = {
            let l = self.licensing.lock();
            (l.grants.len() as u32, l.bindings.len() as u32, l.offline.iter().filter(|o| o.active).count() as u32)
        };
        PoolStatus {
            org: self.org.clone(),
            pool: self.id,
            quota: self.quota(),
            in_use,
            machines: self.machines.lock().values().filter(|m| m.committed).count() as u32,
            admitted,
            rejected,
            grants,
            activations,
            offline,
            waiting: self.waiting(),
            ends,
            denied: *self.denied.lock(),
        }
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;

    fn pool(quota: u32) -> Pool {
        Pool::new(PoolUid(1), OrgName::new("acme").unwrap(), PoolId::KRE_DEFAULT, quota, Millis::MAX)
    }

    #[test]
    fn machines_capped_by_quota_and_idempotent() {
        let p = pool(2);
        let m = |s: &str| MachineId::new(s).unwrap();
        assert_eq!(p.register_machine(&m("a"), Millis(1)), Ok(Registration::New));
        assert_eq!(p.register_machine(&m("a"), Millis(2)), Ok(Registration::Known));
        assert_eq!(p.register_machine(&m("b"), Millis(3)), Ok(Registration::New));
        assert_eq!(p.register_machine(&m("c"), Millis(4)), Err(Error::MachineLimit { quota: 2 }));
        assert!(p.forget_machine(&m("a")));
        assert_eq!(p.register_machine(&m("c"), Millis(5)), Ok(Registration::New));
    }

    #[test]
    fn nothing_admitted_after_subscription_end() {
        let p = Pool::new(PoolUid(1), OrgName::new("acme").unwrap(), PoolId::KRE_DEFAULT, 5, Millis(100));
        assert!(p.take_seat(Millis(99)).is_ok());
        assert_eq!(p.take_seat(Millis(100)), Err(Error::SubscriptionExpired));
    }
}
