//! What a harvest of the core adds to the history: each pool's closed
//! minutes, the extremes and refusals since the last harvest, and an ended
//! session as a row. Pure (no I/O, no clock but the `now` it is given), so
//! the history's task only moves what this computes to the database.

use super::{EndedRow, Usage};
use crate::core::broker::Harvest;
use crate::core::usage::{minute_of, MINUTE_MS};
use crate::core::{Ended, Millis, OrgName, PoolId};

/// What the last harvest needs from the one before.
#[derive(Default)]
pub(super) struct State {
    /// The minute the last harvest closed up to (exclusive).
    pub(super) harvested_to: Option<u64>,
    /// Each pool's refusal counts and queue joins at the last harvest.
    denied: std::collections::HashMap<(OrgName, PoolId), (Vec<u64>, u64, u64)>,
    /// Each pool's run of busy minutes (`busy`).
    pub(super) busy: super::busy::Runs,
}

pub(super) fn row_of(e: Ended) -> (String, u64, EndedRow) {
    let i = e.info;
    let row = EndedRow {
        pool: i.pool.to_string(),
        user: i.user.to_string(),
        machine: i.machine.to_string(),
        start: i.started.0,
        end: e.at.0,
        reason: e.reason.name().to_string(),
        labels: i.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    (e.org.to_string(), i.session.0, row)
}

/// Most minutes one harvest writes for a pool whose sessions were held
/// through minutes without events (the harvest stalled, or the broker was
/// suspended): older ones are beyond any retention worth writing.
const MAX_IDLE_MINUTES: u64 = 35 * 1440;

/// The rows a harvest at `now` adds: each pool's closed minutes (the
/// shards' shares summed), idle minutes expanded, the peak and trough
/// since the last harvest on every minute since it, and the refusals
/// counted since then (other than the quota's, which the minutes carry),
/// the runners that joined the wait queue and the machines released
/// unused, on the last closed minute.
pub(super) fn rollup(h: &Harvest, now: Millis, state: &mut State) -> Vec<((String, String, u64), Usage)> {
    let to = minute_of(now);
    let from = state.harvested_to.unwrap_or(to.saturating_sub(1)).clamp(to.saturating_sub(1440), to);
    let mut rows = closed_minutes(h, to.saturating_sub(MAX_IDLE_MINUTES));
    for s in &h.pools {
        let (org, pool) = (s.org.to_string(), s.pool.to_string());
        let (newly, queued, expired) = since_last(state, s);
        for m in from..to {
            let key = (org.clone(), pool.clone(), m);
            // An idle pool's licenses (KSE grants, activations) are sampled
            // on the hour only: the chart is per day, and a pool with users
            // but no use must not cost a row a minute.
            let sampled = (s.assigned > 0 || s.activated > 0) && m.is_multiple_of(60);
            if s.peak == 0 && !sampled && !rows.contains_key(&key) {
                continue;
            }
            let u = rows.entry(key).or_insert_with(blank);
            u.peak = u.peak.max(s.peak);
            u.assigned = u.assigned.max(s.assigned);
            u.activated = u.activated.max(s.activated);
            u.trough = s.trough;
            u.quota = s.quota;
        }
        // Minutes the extremes do not cover (before the last harvest) still get the quota.
        for (_, u) in rows.range_mut((org.clone(), pool.clone(), 0)..(org.clone(), pool.clone(), from)) {
            u.quota = s.quota;
        }
        if (queued > 0 || expired > 0 || newly.iter().any(|n| *n > 0)) && to > 0 {
            let u = rows.entry((org, pool, to - 1)).or_insert_with(blank);
            u.quota = s.quota;
            for (d, n) in u.denied[1..].iter_mut().zip(newly) {
                *d += n;
            }
            u.queued += queued;
            u.expired += expired;
        }
    }
    state.harvested_to = Some(to);
    rows.into_iter().collect()
}

/// Rows keyed by (org, pool, minute).
type Rows = std::collections::BTreeMap<(String, String, u64), Usage>;

/// A minute's row with nothing in it yet.
fn blank() -> Usage {
    Usage { denied: vec![0; crate::proto::ErrorCode::DENIALS.len()], ..Usage::default() }
}

/// Each pool's closed minutes, the shards' shares summed, and the idle
/// minutes after each expanded (back to `oldest` at most).
fn closed_minutes(h: &Harvest, oldest: u64) -> Rows {
    let mut rows = Rows::new();
    for (org, pool, c) in &h.minutes {
        let key = |m: u64| (org.to_string(), pool.to_string(), m);
        let u = rows.entry(key(c.minute)).or_insert_with(blank);
        u.seat_ms += c.tally.seat_ms;
        u.admitted += c.tally.admitted;
        u.denied[0] += c.tally.rejected;
        for (e, n) in u.ends.iter_mut().zip(c.tally.ends) {
            *e += n;
        }
        for m in (c.minute + 1).max(oldest)..=c.minute + c.idle {
            let u = rows.entry(key(m)).or_insert_with(blank);
            u.seat_ms += c.held * MINUTE_MS;
            // Nothing changed in an idle minute: its level is what was held.
            u.peak = u.peak.max(c.held as u32);
            u.trough = u.peak;
        }
    }
    rows
}

/// A pool's refusals (by reason) and queue joins since the last harvest
/// (none at the first: its counts only seed the next difference).
fn since_last(state: &mut State, s: &crate::core::broker::PoolSample) -> (Vec<u64>, u64, u64) {
    let last = state.denied.insert((s.org.clone(), s.pool), (s.denied.to_vec(), s.queued, s.expired));
    match last {
        Some((last, queued, expired)) => (
            s.denied.iter().zip(last.iter().chain(std::iter::repeat(&0))).map(|(n, l)| n.saturating_sub(*l)).collect(),
            s.queued.saturating_sub(queued),
            s.expired.saturating_sub(expired),
        ),
        None => (vec![0; s.denied.len()], 0, 0),
    }
}
