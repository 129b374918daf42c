//! A pool's seat counter: the admission limit and seats in use packed into
//! one atomic word.
//!
//! Packing both halves into a single `AtomicU64` makes every admission a
//! single compare-and-swap that checks `in_use < limit` against the limit
//! *as of that same instant*: lowering the limit invalidates any admission
//! decided against the old value (its CAS fails and it re-reads). There is
//! no fetch_add-then-check window in which the pool is over its limit.
//!
//! The limit is the pool's quota, or less while its durable session
//! ceiling is lower (see `pool`): the pool computes it, the counter only
//! enforces it.
//!
//! One bit of the word says the pool's wait queue is not empty. A plain
//! acquire needs it clear, so while anyone waits no newcomer can take a
//! freed seat ahead of them: the seat and the queue are judged in the same
//! compare-and-swap. The bit changes only under the pool's queue lock.

use crate::sync::{AtomicU64, Ordering};

/// Limit (high 32 bits), the queue bit (bit 31) and seats in use (low 31 bits).
pub struct Seats {
    /// The packed word; the only shared state of a pool's admission.
    word: AtomicU64,
}

impl std::fmt::Debug for Seats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seats({:?})", self.count())
    }
}

/// A consistent reading of a pool's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeatCount {
    /// Most seats admission may fill: the quota, or the durable ceiling when lower.
    pub limit: u32,
    /// Seats held right now (sessions, activations, offline licenses,
    /// reserved seats, seats granted to waiters). At most `MAX_IN_USE`.
    pub in_use: u32,
    /// Someone waits in the pool's queue: plain acquires are refused.
    pub queued: bool,
}

/// Most seats the word can count (31 bits).
pub const MAX_IN_USE: u32 = (1 << 31) - 1;

const QUEUED: u64 = 1 << 31;

fn pack(c: SeatCount) -> u64 {
    (u64::from(c.limit) << 32) | if c.queued { QUEUED } else { 0 } | u64::from(c.in_use.min(MAX_IN_USE))
}

fn unpack(word: u64) -> SeatCount {
    SeatCount { limit: (word >> 32) as u32, in_use: (word as u32) & MAX_IN_USE, queued: word & QUEUED != 0 }
}

impl Seats {
    /// A counter admitting up to `limit` seats, none in use.
    pub fn new(limit: u32) -> Seats {
        Seats { word: AtomicU64::new(pack(SeatCount { limit, in_use: 0, queued: false })) }
    }

    /// Takes one seat if one is free under the limit and nobody waits for
    /// one; on refusal returns the count that refused it.
    pub fn try_acquire(&self) -> Result<SeatCount, SeatCount> {
        self.update(|c| (c.in_use < c.limit && !c.queued).then(|| SeatCount { in_use: c.in_use + 1, ..c }))
    }

    /// Gives `n` seats back and returns the count after: if its `queued`
    /// bit is set the caller must let the queue's head have the seat.
    /// Callers guarantee exactly one release per seat taken (the session
    /// table's single removal point, the reserve's single swap, a grant's
    /// single return).
    pub fn release(&self, n: u32) -> SeatCount {
        let released = self.update(|c| {
            // Invariant: a release always follows its acquire, so in_use >= n.
            // Saturate rather than borrow into the limit half if that is ever violated.
            debug_assert!(c.in_use >= n, "seat released twice");
            Some(SeatCount { in_use: c.in_use.saturating_sub(n), ..c })
        });
        // Invariant: the closure never refuses.
        released.unwrap_or_else(|c| c)
    }

    /// The one compare-and-swap loop every change goes through: `f` maps
    /// the current count to the next one, or refuses with `None` (then the
    /// count that refused is returned as the error). The pool changes the
    /// limit through it, under its bounds lock.
    pub fn update(&self, mut f: impl FnMut(SeatCount) -> Option<SeatCount>) -> Result<SeatCount, SeatCount> {
        // Acquire/AcqRel: a seat hand-off (release on one thread, acquire on
        // another) must order the releaser's session-table writes before the
        // acquirer's; the counter word itself is totally ordered by its RMWs.
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let c = unpack(current);
            let next = f(c).ok_or(c)?;
            match self.word.compare_exchange_weak(current, pack(next), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(next),
                Err(actual) => current = actual,
            }
        }
    }

    /// Quota and usage read together (one load, so never torn).
    pub fn count(&self) -> SeatCount {
        unpack(self.word.load(Ordering::Acquire))
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_quota_then_refuses() {
        let s = Seats::new(2);
        assert!(s.try_acquire().is_ok());
        assert!(s.try_acquire().is_ok());
        assert_eq!(s.try_acquire(), Err(SeatCount { limit: 2, in_use: 2, queued: false }));
        s.release(1);
        assert_eq!(s.try_acquire().unwrap().in_use, 2);
    }

    #[test]
    fn lowered_limit_admits_nothing_until_drained() {
        let s = Seats::new(3);
        for _ in 0..3 {
            s.try_acquire().unwrap();
        }
        let _ = s.update(|c| Some(SeatCount { limit: 1, ..c }));
        assert_eq!(s.count(), SeatCount { limit: 1, in_use: 3, queued: false });
        s.release(1);
        assert!(s.try_acquire().is_err());
        s.release(2);
        assert!(s.try_acquire().is_ok());
    }

    #[test]
    fn the_queue_bit_refuses_newcomers_and_survives_every_change() {
        let s = Seats::new(u32::MAX);
        let _ = s.update(|c| Some(SeatCount { queued: true, in_use: MAX_IN_USE - 1, ..c }));
        assert!(s.try_acquire().is_err(), "nobody overtakes a waiter");
        let after = s.release(1);
        assert_eq!(after, SeatCount { limit: u32::MAX, in_use: MAX_IN_USE - 2, queued: true });
        let _ = s.update(|c| Some(SeatCount { queued: false, ..c }));
        assert_eq!(s.try_acquire().unwrap().in_use, MAX_IN_USE - 1);
    }
}
