//! `pool.busy` and `pool.busy_ended` (docs/EVENTS.md): the pools with a
//! busy alert, judged minute by minute on the rows a harvest closes (the
//! mean seats in use of each minute, from its seat time), off every
//! request's path. When a run of minutes makes a pool busy, and when it is
//! back, is the core's (`core::alerts::BusyRun`); this keeps each pool's
//! run between harvests (in memory: a restart starts every count afresh,
//! and a pool busy at a restart is told busy again, not back).

use std::collections::HashMap;

use super::Usage;
use crate::core::alerts::{level, BusyRun};
use crate::core::broker::PoolSample;
use crate::core::{Event, EventBody, Millis, OrgName, PoolId};

/// Each alerted pool's run.
pub(super) type Runs = HashMap<(OrgName, PoolId), BusyRun>;

/// The turns the rows of one harvest make (`rows` sorted by org, pool,
/// minute; `to`: the first minute not closed), as events at `now`.
pub(super) fn turns(
    runs: &mut Runs,
    rows: &[((String, String, u64), Usage)],
    pools: &[PoolSample],
    to: u64,
    now: Millis,
) -> Vec<Event> {
    let alerted: HashMap<(String, String), (&PoolSample, u32)> = pools
        .iter()
        .filter_map(|s| s.busy_minutes.map(|n| ((s.org.to_string(), s.pool.to_string()), (s, n))))
        .collect();
    runs.retain(|(org, pool), _| alerted.contains_key(&(org.to_string(), pool.to_string())));
    let mut out = Vec::new();
    let mut told = |s: &PoolSample, run: &mut BusyRun, minute: u64, level: u32, n: u32| {
        if let Some(t) = run.minute(minute, level, n) {
            let (busy, since, minute, level, quota) = (t.busy, t.since, t.minute, t.level, s.quota);
            let body = EventBody::PoolBusy { pool: s.pool, busy, since, minute, level, quota };
            out.push(Event { org: s.org.clone(), seq: 0, at: now, body });
        }
    };
    for ((org, pool, minute), u) in rows {
        let Some(&(s, n)) = alerted.get(&(org.clone(), pool.clone())) else { continue };
        let run = runs.entry((s.org.clone(), s.pool)).or_default();
        told(s, run, *minute, level(u.seat_ms, u.quota.max(s.quota)), n);
    }
    // The last closed minute, if it has no row, had no use: a run ends.
    for &(s, n) in alerted.values() {
        let run = runs.entry((s.org.clone(), s.pool)).or_default();
        if to > 0 {
            told(s, run, to - 1, 0, n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(busy_minutes: Option<u32>) -> PoolSample {
        PoolSample {
            org: OrgName::new("acme").unwrap(),
            pool: PoolId::KRE_DEFAULT,
            peak: 10,
            trough: 0,
            quota: 10,
            denied: Default::default(),
            queued: 0,
            assigned: 0,
            activated: 0,
            expired: 0,
            busy_minutes,
        }
    }

    fn rows(levels: &[(u64, u64)]) -> Vec<((String, String, u64), Usage)> {
        let key = |m| ("acme".to_string(), PoolId::KRE_DEFAULT.to_string(), m);
        levels
            .iter()
            .map(|&(m, seats)| (key(m), Usage { seat_ms: seats * 60_000, quota: 10, ..Usage::default() }))
            .collect()
    }

    fn kinds(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| format!("{}@{}", e.kind(), e.idempotency_key())).collect()
    }

    /// Two harvests: busy once its minutes in a row are seen, across the
    /// harvests; back at the first minute without use; pools without the
    /// alert are not judged.
    #[test]
    fn a_pool_is_told_busy_across_harvests_and_back_when_idle() {
        let mut runs = Runs::new();
        let first = turns(&mut runs, &rows(&[(100, 9), (101, 10)]), &[sample(Some(3))], 102, Millis(0));
        assert!(first.is_empty(), "two busy minutes of three");
        let second = turns(&mut runs, &rows(&[(102, 10)]), &[sample(Some(3))], 104, Millis(0));
        assert_eq!(
            kinds(&second),
            ["pool.busy@busy:acme:kre-floating-annual:100", "pool.busy_ended@busy_ended:acme:kre-floating-annual:100"],
            "busy at minute 102; minute 103 had no row: back"
        );
        let off = turns(&mut runs, &rows(&[(104, 10), (105, 10), (106, 10)]), &[sample(None)], 107, Millis(0));
        assert!(off.is_empty() && runs.is_empty(), "no alert: not judged, nothing kept");
    }
}
