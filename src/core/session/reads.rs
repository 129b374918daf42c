//! What the table shows and counts, apart from what admits and ends
//! sessions: live sessions listed or paged, their starts, a session's
//! view, each pool's counts and seat time, and the closed minutes it hands
//! the history (its harvest, which only moves them out).

use super::shard::{MAX_SLOTS, SHARD_ID_BITS};
use super::{Counts, SessionInfo, SessionTable};
use crate::core::id::{MachineId, SessionId};
use crate::core::pool::{Pool, PoolUid};
use crate::core::seats::Seats;
use crate::core::time::Millis;
use crate::sync::Arc;

impl SessionTable {
    /// Live sessions matching `pred`, sorted by id.
    pub fn list(&self, mut pred: impl FnMut(&Pool) -> bool) -> Vec<SessionInfo> {
        let mut out = Vec::new();
        for cell in self.shards.iter() {
            let shard = cell.lock.lock();
            out.extend(shard.iter().filter(|(_, s)| pred(shard.pool_of(s))).map(|(id, s)| shard.info(s, id)));
        }
        out.sort_by_key(|i| i.session);
        out
    }

    /// When each live session of the pool `uid` started, in no order: what
    /// a replay or an estimate needs, without building each `SessionInfo`.
    pub fn starts_of(&self, uid: PoolUid) -> Vec<Millis> {
        let mut out = Vec::new();
        for cell in self.shards.iter() {
            let shard = cell.lock.lock();
            out.extend(shard.iter().filter(|(_, s)| shard.pool_of(s).uid == uid).map(|(_, s)| s.started));
        }
        out
    }

    /// When each live session of the pool `uid` started, by the line its
    /// seat would go to when it ends: those on shared seats, then those on
    /// each of `lanes` (reservations' words). Sessions on seats of other
    /// reservations are left out: their ends free nothing for the asker.
    pub fn starts_by_line(&self, uid: PoolUid, lanes: &[Arc<Seats>]) -> (Vec<Millis>, Vec<Vec<Millis>>) {
        let (mut shared, mut by_lane) = (Vec::new(), vec![Vec::new(); lanes.len()]);
        for cell in self.shards.iter() {
            let shard = cell.lock.lock();
            for (_, s) in shard.iter().filter(|(_, s)| shard.pool_of(s).uid == uid) {
                match s.caps.lane().map(|w| lanes.iter().position(|l| Arc::ptr_eq(l, w))) {
                    None => shared.push(s.started),
                    Some(Some(i)) => by_lane[i].push(s.started),
                    Some(None) => {}
                }
            }
        }
        (shared, by_lane)
    }

    /// Up to `limit` live sessions matching `pred`, in table order (shard,
    /// then slot) after the position of `after` (an id from an earlier page,
    /// live or not: only the position it names matters), and whether any
    /// match follows. Every page costs the slots it walks, not the whole
    /// table, so paging through a million sessions is linear. Sessions
    /// admitted during the walk into slots already passed are not seen;
    /// those live throughout are seen exactly once.
    pub fn page(
        &self,
        after: Option<SessionId>,
        limit: usize,
        mut pred: impl FnMut(&Pool) -> bool,
    ) -> (Vec<SessionInfo>, bool) {
        let (first_shard, first_slot) = match after {
            None => (0, 0),
            Some(id) => {
                let (index, inner) = self.locate(id);
                (index, ((inner >> SHARD_ID_BITS) as usize & (MAX_SLOTS - 1)) + 1)
            }
        };
        let mut out = Vec::new();
        for (index, cell) in self.shards.iter().enumerate().skip(first_shard) {
            let shard = cell.lock.lock();
            let from = if index == first_shard { first_slot } else { 0 };
            for (id, s) in shard.iter_from(from).filter(|(_, s)| pred(shard.pool_of(s))) {
                if out.len() == limit {
                    return (out, true);
                }
                out.push(shard.info(s, id));
            }
        }
        (out, false)
    }

    /// Number of live sessions (all pools).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|c| c.lock.lock().len()).sum()
    }

    /// A live session's public view, if it is live and its pool passes `pred`.
    pub fn info(&self, id: SessionId, pred: impl FnOnce(&Pool) -> bool) -> Option<SessionInfo> {
        let (_, shard) = self.lock_for(id);
        shard.get(id).filter(|s| pred(shard.pool_of(s))).map(|s| shard.info(s, id))
    }

    /// The machine a live session runs on.
    pub fn machine_of(&self, id: SessionId) -> Option<MachineId> {
        self.lock_for(id).1.get(id).map(|s| s.machine.clone())
    }

    /// Admissions and quota refusals of a pool since start, summed over shards.
    pub fn counts(&self, pool: PoolUid) -> Counts {
        self.shards.iter().fold(Counts::default(), |sum, c| sum.plus(c.lock.lock().counts(pool)))
    }

    /// Every pool's counts, summed over shards, each shard locked once (a
    /// scrape or a checkpoint of ten thousand pools would otherwise lock
    /// every shard once per pool).
    pub fn all_counts(&self) -> crate::core::hash::FastMap<PoolUid, Counts> {
        let mut out = crate::core::hash::FastMap::default();
        for cell in self.shards.iter() {
            for (uid, c) in cell.lock.lock().all_counts() {
                let sum: &mut Counts = out.entry(uid).or_default();
                *sum = sum.plus(c);
            }
        }
        out
    }

    /// Closes every pool's minutes up to `now` in every shard (each locked
    /// once) and hands each (pool, closed minute) to `each`; returns how
    /// many closed minutes shards dropped since the last harvest.
    pub fn harvest(&self, now: Millis, mut each: impl FnMut(&Arc<Pool>, crate::core::usage::Closed)) -> u64 {
        self.shards.iter().map(|cell| cell.lock.lock().harvest(now, &mut each)).sum()
    }

    /// Seat-milliseconds every pool's sessions held this run up to `now`,
    /// each shard locked once.
    pub fn seat_ms(&self, now: Millis) -> crate::core::hash::FastMap<PoolUid, u64> {
        let mut out = crate::core::hash::FastMap::default();
        for cell in self.shards.iter() {
            for (uid, ms) in cell.lock.lock().seat_ms(now) {
                *out.entry(uid).or_default() += ms;
            }
        }
        out
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
