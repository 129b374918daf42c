//! A license pool: what an org bought of one product, and its live counters.
//!
//! The pool owns the seat counter and the set of registered machines. It
//! never decides *who* may use it (that is `directory`) nor tracks sessions
//! (that is `session`).
//!
//! This file holds the `Pool` type and its seat word: taking and returning
//! seats, the subscription end, and the refusal a full word means. The rest
//! is by job: `limit` (what the word's limit is computed from: quota,
//! durable ceiling, durable holders, the restart reserve), `access`
//! (machine registrations and per-user caps), `labels` (caps by job label),
//! `lanes` (seats reserved by job label), `licensing` (KSE grants,
//! node-locked activations, offline licenses) and `stats` (counters,
//! refusals by reason, `status`), `idle`, `tenure` and `due` (the machine
//! policy: machines released when unused, indexed by when they come due). The wait queue's side is in `queue`.

mod access;
mod cap_hold;
mod due;
mod idle;
pub mod labels;
pub mod lanes;
mod licensing;
mod limit;
mod stats;
mod stop;
pub mod tenure;

pub use access::Registration;
pub use idle::MachineUse;
pub use labels::{LabelCap, LabelCaps};
pub use lanes::ReservationUse;
pub use licensing::OfflineEntry;
pub use limit::Held;
pub use stats::{Denial, Figures, PoolStatus};
pub use stop::{LabelCount, Stopped};
pub use tenure::{Policy, Tenure};

use super::error::{Error, Result};
use super::hash::FastMap;
use super::id::{MachineId, OrgName};
pub use super::pool_id::{Kind, PoolId, Product, Term};
use super::queue::WaitQueue;
use super::seats::{SeatCount, Seats};
use super::session::Counts;
use super::time::Millis;
use super::usage::Extremes;
use crate::sync::{AtomicU32, AtomicU64, Mutex, Ordering};
use access::Machine;
use licensing::Licensing;
use limit::Bounds;

/// A pool's identity within this process: distinct per pool, never reused,
/// so runner nonces (and the shard statistics) are keyed by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PoolUid(pub u64);

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
    /// Per-user caps (FlexNet's MAX) and caps by job label (`labels`):
    /// sessions counted and limited by a seat word of their own (see
    /// `admission`). Set rarely, by admins; read at ticket resolution, not
    /// per admission.
    caps: Mutex<labels::Caps>,
    /// Bumped when a user's cap is first created, or machines are given
    /// tenures (`idle`), before the sweep that counts the live sessions
    /// into them: an admission resolved before the bump checks again after
    /// inserting, so no session goes uncounted.
    cap_epoch: AtomicU64,
    /// The latest instant a session of the pool ended because its lease ran
    /// out. A seat it freed may be taken by a request stamped a moment
    /// earlier (a stream stamps a whole read once); `admitted_at` dates that
    /// admission no earlier, so no one is on record holding a dead runner's
    /// seat before its deadline.
    expired_to: AtomicU64,
    /// How long unused machines stay registered (`idle`). Read by
    /// registration and the expiry task, never per admission.
    policy: Mutex<tenure::Policy>,
    /// The tracked machines by when each may come due, so the machine
    /// task takes only those (`due`); shared with their tenures.
    due: crate::sync::Arc<due::Due>,
    /// Machines the broker released unused since the pool was created
    /// (restored from `Record::LastUses`).
    expired: AtomicU64,
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
    /// The previous run's runners come back during the hold, by nonce
    /// (`cap_hold`): `None` outside a hold.
    returned: Mutex<Option<super::hash::FastSet<u128>>>,
    /// Places caps hold for those runners, in all (`cap_hold`): read
    /// before its lock, so a re-attach without any takes no lock for them.
    places: AtomicU32,
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
    /// A queued runner's wait that is told of, in ms (0: none): read once
    /// per queued runner, after it joined (`core::alerts`).
    queue_alert_ms: AtomicU64,
    /// Busy minutes in a row that are told of (0: none): read by the
    /// history's harvest.
    busy_minutes: AtomicU32,
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

impl Pool {
    /// A new, empty pool.
    pub fn new(uid: PoolUid, org: OrgName, id: PoolId, quota: u32, not_after: Millis) -> Pool {
        Pool {
            uid,
            org,
            id,
            not_after: AtomicU64::new(not_after.0),
            removals: AtomicU64::new(0),
            caps: Mutex::new(labels::Caps::default()),
            cap_epoch: AtomicU64::new(0),
            expired_to: AtomicU64::new(0),
            policy: Mutex::new(tenure::Policy::default()),
            due: crate::sync::Arc::new(due::Due::default()),
            expired: AtomicU64::new(0),
            machines: Mutex::new(FastMap::default()),
            seats: Padded(SeatLine { seats: Seats::new(quota), extremes: Extremes::default() }),
            seat_ms_before: AtomicU64::new(0),
            queue: Mutex::new(WaitQueue::default()),
            bounds: Mutex::new(Bounds::new(quota)),
            quota: AtomicU32::new(quota),
            reserve: AtomicU32::new(0),
            returned: Mutex::new(None),
            places: AtomicU32::new(0),
            misses: AtomicU32::new(0),
            counted: Mutex::new(Counts::default()),
            denied: Mutex::new([0; Denial::ALL.len()]),
            queued: AtomicU64::new(0),
            licensing: Mutex::new(Licensing::default()),
            queue_alert_ms: AtomicU64::new(0),
            busy_minutes: AtomicU32::new(0),
        }
    }

    /// Sets the pool's alerts.
    pub fn set_alerts(&self, alerts: super::alerts::Alerts) {
        let ms = alerts.queue_wait.map_or(0, |d| d.as_millis() as u64);
        // Relaxed: settings read on their own; no other memory depends on them.
        self.queue_alert_ms.store(ms, Ordering::Relaxed);
        self.busy_minutes.store(alerts.busy_minutes.unwrap_or(0), Ordering::Relaxed);
    }

    /// The pool's alerts.
    pub fn alerts(&self) -> super::alerts::Alerts {
        let ms = self.queue_alert_ms.load(Ordering::Relaxed);
        let n = self.busy_minutes.load(Ordering::Relaxed);
        super::alerts::Alerts {
            queue_wait: (ms > 0).then(|| std::time::Duration::from_millis(ms)),
            busy_minutes: (n > 0).then_some(n),
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

    /// Refuses once the org's subscription has ended.
    pub fn open_at(&self, now: Millis) -> Result<()> {
        // Relaxed: the subscription end is an independent value; a change
        // racing an acquire may apply to it or not, either is correct.
        match now.0 >= self.not_after.load(Ordering::Relaxed) {
            true => Err(Error::SubscriptionExpired),
            false => Ok(()),
        }
    }

    /// Why a full seat word refused: the quota, or a ceiling to raise
    /// (counted as a miss, for the next raise's size).
    fn refusal(&self, c: SeatCount) -> Error {
        let why = self.refusal_of(c);
        if why == Error::CeilingReached {
            // Relaxed: a sizing hint for the next raise, nothing more.
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        why
    }

    /// `refusal`'s answer, counting nothing.
    fn refusal_of(&self, c: SeatCount) -> Error {
        // Relaxed: a quota change racing this refusal may be seen or not;
        // either answer was true an instant ago, and a retry re-reads.
        let quota = self.quota.load(Ordering::Relaxed);
        // Runners wait for the next seat: a newcomer is behind them.
        match c.in_use < quota && !c.queued {
            true => Error::CeilingReached,
            false => Error::QuotaExceeded { quota },
        }
    }

    /// What `take_seat` at `now` would answer, taking and counting nothing
    /// (the preflight): a ceiling below the quota counts as room, since the
    /// acquire that meets it has it raised.
    pub fn would_take_seat(&self, now: Millis) -> Result<()> {
        self.open_at(now)?;
        let c = self.seats.count();
        match c.in_use < c.limit && !c.queued {
            true => Ok(()),
            false => match self.refusal_of(c) {
                Error::CeilingReached => Ok(()),
                why => Err(why),
            },
        }
    }

    /// What `bind`'s seat would meet, taking nothing (the preflight).
    pub fn would_bind_seat(&self) -> Result<()> {
        match self.seats.count().in_use < self.quota() {
            true => Ok(()),
            false => Err(Error::QuotaExceeded { quota: self.quota() }),
        }
    }

    /// Before a seat freed by a lease that ran out at `at` is returned.
    pub fn note_expiry(&self, at: Millis) {
        // Relaxed: published by the seat's return (a release) after it.
        self.expired_to.fetch_max(at.0, Ordering::Relaxed);
    }

    /// When a session admitted at `now` on a seat just taken starts: not
    /// before the expiry that may have freed that seat (see `expired_to`).
    pub fn admitted_at(&self, now: Millis) -> Millis {
        // Relaxed: the seat was taken by an acquiring read of the word whose
        // release followed `note_expiry`, so this sees that value or later.
        now.max(Millis(self.expired_to.load(Ordering::Relaxed)))
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

    /// Changes the subscription end.
    pub fn set_not_after(&self, not_after: Millis) {
        // Relaxed: see take_seat.
        self.not_after.store(not_after.0, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;

    #[test]
    fn nothing_admitted_after_subscription_end() {
        let p = Pool::new(PoolUid(1), OrgName::new("acme").unwrap(), PoolId::KRE_DEFAULT, 5, Millis(100));
        assert!(p.take_seat(Millis(99)).is_ok());
        assert_eq!(p.take_seat(Millis(100)), Err(Error::SubscriptionExpired));
    }
}
