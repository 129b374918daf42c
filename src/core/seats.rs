//! A pool's seat counter: quota and seats in use packed into one atomic word.
//!
//! Packing both halves into a single `AtomicU64` makes every admission a
//! single compare-and-swap that checks `in_use < quota` against the quota
//! *as of that same instant*: lowering the quota invalidates any admission
//! decided against the old value (its CAS fails and it re-reads). There is
//! no fetch_add-then-check window in which the pool is over quota.

use crate::sync::{AtomicU64, Ordering};

/// Quota (high 32 bits) and seats in use (low 32 bits).
pub struct Seats {
    /// The packed word; the only shared state of a pool's admission.
    word: AtomicU64,
}

/// A consistent reading of a pool's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeatCount {
    /// Licenses bought.
    pub quota: u32,
    /// Sessions holding a seat right now.
    pub in_use: u32,
}

fn pack(quota: u32, in_use: u32) -> u64 {
    (u64::from(quota) << 32) | u64::from(in_use)
}

fn unpack(word: u64) -> SeatCount {
    SeatCount { quota: (word >> 32) as u32, in_use: word as u32 }
}

impl Seats {
    /// A counter with `quota` seats, none in use.
    pub fn new(quota: u32) -> Seats {
        Seats { word: AtomicU64::new(pack(quota, 0)) }
    }

    /// Takes one seat if one is free; on refusal returns the quota that refused it.
    pub fn try_acquire(&self) -> Result<SeatCount, u32> {
        self.update(|c| (c.in_use < c.quota).then(|| SeatCount { in_use: c.in_use + 1, ..c })).map_err(|c| c.quota)
    }

    /// Gives one seat back. Callers guarantee exactly one release per
    /// successful acquire (the session table's single removal point).
    pub fn release(&self) {
        let _ = self.update(|c| {
            // Invariant: a release always follows its acquire, so in_use > 0.
            // Saturate rather than borrow into the quota half if that is ever violated.
            debug_assert!(c.in_use > 0, "seat released twice");
            Some(SeatCount { in_use: c.in_use.saturating_sub(1), ..c })
        });
    }

    /// Takes a seat without the quota check: only for restoring, at start,
    /// holders the store says already hold one (an activation, an offline
    /// license), which were admitted under the check when they were made.
    pub fn force_take(&self) {
        let _ = self.update(|c| Some(SeatCount { in_use: c.in_use.saturating_add(1), ..c }));
    }

    /// Changes the quota. Seats in use above a lowered quota stay until they
    /// are released; nothing new is admitted until usage is below it.
    pub fn set_quota(&self, quota: u32) {
        let _ = self.update(|c| Some(SeatCount { quota, ..c }));
    }

    /// The one compare-and-swap loop every change goes through: `f` maps
    /// the current count to the next one, or refuses with `None` (then the
    /// count that refused is returned as the error).
    fn update(&self, mut f: impl FnMut(SeatCount) -> Option<SeatCount>) -> Result<SeatCount, SeatCount> {
        // Acquire/AcqRel: a seat hand-off (release on one thread, acquire on
        // another) must order the releaser's session-table writes before the
        // acquirer's; the counter word itself is totally ordered by its RMWs.
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let c = unpack(current);
            let next = f(c).ok_or(c)?;
            match self.word.compare_exchange_weak(
                current,
                pack(next.quota, next.in_use),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
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
        assert_eq!(s.try_acquire(), Err(2));
        s.release();
        assert_eq!(s.try_acquire().unwrap().in_use, 2);
    }

    #[test]
    fn lowered_quota_admits_nothing_until_drained() {
        let s = Seats::new(3);
        for _ in 0..3 {
            s.try_acquire().unwrap();
        }
        s.set_quota(1);
        assert_eq!(s.count(), SeatCount { quota: 1, in_use: 3 });
        s.release();
        assert_eq!(s.try_acquire(), Err(1));
        s.release();
        s.release();
        assert!(s.try_acquire().is_ok());
    }
}
