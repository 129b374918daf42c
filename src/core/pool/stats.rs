//! A pool's counters: admissions, refusals by reason, session ends and
//! seat time of earlier runs (restored from the store), and the `status`
//! view that adds this run's counts from the session table.
//!
//! Only statistics live here; nothing in this file decides an admission.

use super::Pool;
use crate::core::id::OrgName;
use crate::core::pool_id::PoolId;
use crate::core::record::Record;
use crate::core::session::Counts;
use crate::sync::Ordering;
pub use crate::value::Denial;

/// What the checkpoint writes of a pool (its counts, refusals and seat
/// time), compared with what it wrote last so an unchanged pool costs a
/// lookup rather than four records (ten thousand pools, every 5 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    /// Sessions admitted, refused for quota, and ended by reason.
    pub counts: Counts,
    /// Admissions refused for other reasons (`Denial::ALL` order).
    pub denied: [u64; Denial::ALL.len()],
    /// Seat-milliseconds held since the pool was created.
    pub seat_ms: u64,
}

impl Figures {
    /// The records that hold these figures for `org`'s `pool`.
    pub fn records(&self, org: &OrgName, pool: PoolId) -> [Record; 4] {
        let Counts { admitted, rejected, ends } = self.counts;
        [
            Record::Counters { org: org.clone(), pool, admitted, rejected },
            Record::Ends { org: org.clone(), pool, by_reason: ends },
            Record::Denials { org: org.clone(), pool, by_reason: self.denied.to_vec() },
            Record::SeatTime { org: org.clone(), pool, ms: self.seat_ms },
        ]
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
    /// Seats still held after a restart or a takeover for runners that
    /// have not re-attached yet (none once the hold ends); counted in
    /// `in_use` too.
    pub held: u32,
    /// Sessions ended since the pool was created, by reason (`EndReason::ALL` order).
    pub ends: [u64; 4],
    /// Admissions refused for other reasons than the quota since the pool
    /// was created (`Denial::ALL` order).
    pub denied: [u64; Denial::ALL.len()],
    /// Machines the broker released unused since the pool was created.
    pub machines_expired: u64,
    /// Seats reserved by job label (`pool reserve`), with sessions on them or not.
    pub reserved: u32,
    /// Of those, seats with no session on them: held for their label, not
    /// counted in `in_use`.
    pub reserved_free: u32,
}

impl Pool {
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

    /// What a checkpoint keeps of the pool, with the counts and the seat
    /// time the session table keeps for this run.
    pub fn figures(&self, this_run: Counts, seat_ms_this_run: u64) -> Figures {
        Figures {
            counts: self.counted.lock().plus(this_run),
            denied: self.denied(),
            seat_ms: self.seat_ms_before() + seat_ms_this_run,
        }
    }

    /// The pool's numbers for `status`, with the counts the session table
    /// keeps for this run.
    pub fn status(&self, this_run: Counts) -> PoolStatus {
        let Counts { admitted, rejected, ends } = self.counted.lock().plus(this_run);
        let reservations = self.reservations();
        let reserved = reservations.iter().map(|r| r.seats).sum();
        let reserved_free = reservations.iter().map(|r| r.held - r.in_use).sum();
        // A reservation's free seats are held in the seat word, but in use by nobody.
        let in_use = self.in_use().saturating_sub(reserved_free);
        let (grants, activations, offline) = self.licensing_counts();
        PoolStatus {
            org: self.org.clone(),
            pool: self.id,
            quota: self.quota(),
            in_use,
            machines: self.machine_count(),
            admitted,
            rejected,
            grants,
            activations,
            offline,
            waiting: self.waiting(),
            // Acquire: pairs with `hold_reserve`'s Release store.
            held: self.reserve.load(Ordering::Acquire),
            ends,
            denied: *self.denied.lock(),
            machines_expired: self.expired(),
            reserved,
            reserved_free,
        }
    }
}
