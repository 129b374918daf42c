//! Right-sizing from the history: what a pool's recorded demand over a
//! range was (`Recorded`: its ended sessions and its refusals for want of
//! a seat, from one node's history or several merged) and what other seat
//! counts would have done with it (`Recorded::replay`, over `replay`).

use super::{db, minute_of, replay, DbError, EndedRow, History, Period, MINUTE_MS};
use crate::core::Millis;

/// What `what_if` found.
#[derive(Clone, Debug)]
pub struct WhatIf {
    /// One outcome per seat count asked for.
    pub outcomes: Vec<replay::Outcome>,
    /// Sessions replayed (ended in the range, or still live).
    pub sessions: u64,
    /// Refusals for want of a seat replayed.
    pub refusals: u64,
    /// The median session length the refusals were replayed with (ms).
    pub median_ms: u64,
    /// The demand was cut at `MAX_DEMAND` wishes (the rest of the range is not replayed).
    pub truncated: bool,
}

/// Most wishes one what-if replays.
pub const MAX_DEMAND: usize = 2_000_000;

/// Most seat counts one what-if replays.
pub const MAX_SEAT_COUNTS: usize = 256;

/// A pool's recorded demand over a range, as one node's history holds it
/// (or several nodes', merged): the sessions that ended in it, and the
/// refusals for want of a seat by minute.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    /// Each ended session's (start, end) in ms, at most `MAX_DEMAND`.
    pub sessions: Vec<(u64, u64)>,
    /// Refusals for want of a seat (`QUOTA_EXCEEDED`, `QUEUE_FULL`,
    /// `QUEUE_TIMEOUT`): (minute, how many), by minute.
    pub refusals: Vec<(u64, u64)>,
    /// The sessions were cut at `MAX_DEMAND`.
    pub truncated: bool,
}

impl Recorded {
    /// Adds another node's record of the same pool and range.
    pub fn merge(&mut self, other: Recorded) {
        self.sessions.extend(other.sessions);
        self.truncated |= other.truncated || self.sessions.len() > MAX_DEMAND;
        self.sessions.truncate(MAX_DEMAND);
        let mut by_minute: std::collections::BTreeMap<u64, u64> = self.refusals.drain(..).collect();
        for (minute, n) in other.refusals {
            *by_minute.entry(minute).or_default() += n;
        }
        self.refusals = by_minute.into_iter().collect();
    }

    /// Replays the record, with the live sessions' starts `live` (held
    /// until `to`), against each seat count in `seats` (see `replay`).
    pub fn replay(self, live: &[Millis], (from, to): (Millis, Millis), seats: std::ops::RangeInclusive<u32>) -> WhatIf {
        use replay::Demand;
        let Recorded { sessions, refusals: by_minute, mut truncated } = self;
        let mut demand: Vec<Demand> = sessions.into_iter().map(|(start, end)| Demand { start, end }).collect();
        demand.extend(live.iter().map(|s| Demand { start: s.0, end: to.0 }));
        let sessions = demand.len() as u64;
        let median_ms = replay::median_length(&demand);
        let mut refusals = 0u64;
        'minutes: for (minute, n) in by_minute {
            let at = minute * MINUTE_MS + MINUTE_MS / 2;
            for _ in 0..n {
                if demand.len() >= MAX_DEMAND {
                    truncated = true;
                    break 'minutes;
                }
                demand.push(Demand { start: at, end: at + median_ms });
                refusals += 1;
            }
        }
        demand.sort_unstable();
        let outcomes = seats.take(MAX_SEAT_COUNTS).map(|n| replay::replay(&demand, n, from.0, to.0)).collect();
        WhatIf { outcomes, sessions, refusals, median_ms, truncated }
    }
}

impl History {
    /// Replays `org`'s `pool` over `from..to` against each seat count in
    /// `seats` (see `replay`). `live` are the starts of the pool's sessions
    /// still live (they hold their seat until `to`).
    pub fn what_if(
        &self,
        org: &str,
        pool: &str,
        from: Millis,
        to: Millis,
        live: &[Millis],
        seats: std::ops::RangeInclusive<u32>,
    ) -> Result<WhatIf, DbError> {
        Ok(self.recorded(org, pool, (from, to))?.replay(live, (from, to), seats))
    }

    /// What this history recorded of `org`'s `pool` over `from..to`.
    pub fn recorded(&self, org: &str, pool: &str, (from, to): (Millis, Millis)) -> Result<Recorded, DbError> {
        let mut out = Recorded::default();
        let mut after = None;
        'pages: loop {
            let keep = |r: &EndedRow| r.pool == pool;
            let (page, next) = self.db.sessions(org, (from.0, to.0), after, (10_000, db::SCAN_MAX), &keep)?;
            for (_, row) in &page {
                if out.sessions.len() >= MAX_DEMAND {
                    out.truncated = true;
                    break 'pages;
                }
                out.sessions.push((row.start, row.end));
            }
            match next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        // Refusals for want of a seat: QUOTA_EXCEEDED, QUEUE_FULL, QUEUE_TIMEOUT.
        let seat_reasons =
            [0, 1 + crate::core::Denial::QueueFull as usize, 1 + crate::core::Denial::QueueTimeout as usize];
        for (minute, u) in self.db.usage(Period::Minute, org, pool, minute_of(from), to.0.div_ceil(MINUTE_MS))? {
            let n: u64 = seat_reasons.iter().map(|&i| u.denied.get(i).copied().unwrap_or(0)).sum();
            if n > 0 {
                out.refusals.push((minute, n));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_merge_their_sessions_and_sum_their_refusals_by_minute() {
        let mut a = Recorded { sessions: vec![(0, 10)], refusals: vec![(1, 2), (3, 1)], truncated: false };
        a.merge(Recorded { sessions: vec![(5, 20)], refusals: vec![(1, 1), (2, 4)], truncated: false });
        let merged =
            Recorded { sessions: vec![(0, 10), (5, 20)], refusals: vec![(1, 3), (2, 4), (3, 1)], truncated: false };
        assert_eq!(a, merged);
        let w = a.replay(&[], (Millis(0), Millis(600_000)), 1..=1);
        assert_eq!((w.sessions, w.refusals), (2, 8));
        let mut full = Recorded { sessions: vec![(0, 1); MAX_DEMAND], ..Recorded::default() };
        full.merge(Recorded { sessions: vec![(2, 3)], ..Recorded::default() });
        assert!(full.truncated && full.sessions.len() == MAX_DEMAND, "cut at the bound, and said");
    }
}
