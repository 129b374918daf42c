//! A shard's share of each pool's numbers: admissions, refusals and ends
//! counted where they happen (under the shard's lock, no shared counter
//! on the admission path), the open minute's accrual, and the closed
//! minutes waiting for the history's harvest.

use super::{Shard, ShardPool};
use crate::core::error::{Error, Result};
use crate::core::pool::{Pool, PoolUid};
use crate::core::time::Millis;
use crate::core::usage::{Accrual, Closed};
use crate::sync::Arc;

/// Most closed minutes a shard keeps for the harvest: a harvest a minute
/// finds at most one per pool the shard saw, so this is only reached when
/// the harvest is stuck (then the history's gap is counted, not grown).
const MAX_CLOSED: usize = 1 << 16;

impl Shard {
    /// Takes a seat in `pool` for a new session, counting the outcome (a
    /// quota refusal only if `count_refusal`); when the session starts (see
    /// `Pool::admitted_at`).
    pub fn admit(&mut self, pool: &Arc<Pool>, now: Millis, count_refusal: bool) -> Result<Millis> {
        let (entry, mut out) = self.entry(pool);
        match pool.take_seat(now) {
            Ok(_) => {
                let at = pool.admitted_at(now);
                entry.admitted += 1;
                entry.accrual.start(at, true, &mut out);
                Ok(at)
            }
            Err(e) => {
                if count_refusal && matches!(e, Error::QuotaExceeded { .. }) {
                    entry.rejected += 1;
                    entry.accrual.reject(now, &mut out);
                }
                Err(e)
            }
        }
    }

    /// Counts the admission at `now` of a session whose seat the wait
    /// queue granted, or a reservation held (already counted in the seat
    /// word); when it starts.
    pub fn admit_granted(&mut self, pool: &Arc<Pool>, now: Millis) -> Millis {
        let at = pool.admitted_at(now);
        let (entry, mut out) = self.entry(pool);
        entry.admitted += 1;
        entry.accrual.start(at, true, &mut out);
        at
    }

    /// Registers a session starting at `now` on a reserved seat (already
    /// counted, and not a new admission).
    pub fn adopt(&mut self, pool: &Arc<Pool>, now: Millis) {
        let (entry, mut out) = self.entry(pool);
        entry.accrual.start(now, false, &mut out);
    }

    /// The shard's entry for `pool` (made on first use), and where its
    /// closed minutes go.
    fn entry(&mut self, pool: &Arc<Pool>) -> (&mut ShardPool, impl FnMut(Closed) + '_) {
        let Shard { pools, closed, dropped, .. } = self;
        let entry = pools.entry(pool.uid).or_insert_with(|| ShardPool {
            pool: pool.clone(),
            admitted: 0,
            rejected: 0,
            ends: [0; 4],
            accrual: Accrual::default(),
        });
        (entry, keep(closed, dropped, pool.uid))
    }

    /// Closes every pool's minutes up to `now` and hands over (pool, closed
    /// minute) for each, with how many were dropped since the last harvest.
    pub fn harvest(&mut self, now: Millis, mut each: impl FnMut(&Arc<Pool>, Closed)) -> u64 {
        let Shard { pools, closed, dropped, .. } = self;
        for (uid, entry) in pools.iter_mut() {
            entry.accrual.roll(now, &mut keep(closed, dropped, *uid));
        }
        for (uid, c) in closed.drain(..) {
            if let Some(entry) = pools.get(&uid) {
                each(&entry.pool, c);
            }
        }
        std::mem::take(dropped)
    }

    /// Seat-milliseconds each pool's sessions in this shard held up to `now`.
    pub fn seat_ms(&self, now: Millis) -> impl Iterator<Item = (PoolUid, u64)> + '_ {
        self.pools.iter().map(move |(uid, p)| (*uid, p.accrual.seat_ms(now)))
    }

    /// Every pool's counts in this shard.
    pub fn all_counts(&self) -> impl Iterator<Item = (PoolUid, super::super::Counts)> + '_ {
        self.pools
            .iter()
            .map(|(uid, p)| (*uid, super::super::Counts { admitted: p.admitted, rejected: p.rejected, ends: p.ends }))
    }

    pub fn counts(&self, pool: PoolUid) -> super::super::Counts {
        self.pools.get(&pool).map_or_else(Default::default, |p| super::super::Counts {
            admitted: p.admitted,
            rejected: p.rejected,
            ends: p.ends,
        })
    }
}

/// Where an accrual of `pool` puts the minutes it closes: the shard's
/// outbox, or the dropped count once that is full.
pub(super) fn keep<'a>(
    closed: &'a mut Vec<(PoolUid, Closed)>,
    dropped: &'a mut u64,
    pool: PoolUid,
) -> impl FnMut(Closed) + 'a {
    move |c| match closed.len() < MAX_CLOSED {
        true => closed.push((pool, c)),
        false => *dropped += 1,
    }
}
