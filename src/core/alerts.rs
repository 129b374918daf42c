//! A pool's alerts (docs/EVENTS.md, `queue.wait_exceeded`, `pool.busy`):
//! the settings an org's Owners and Admins (or the operator) give a pool
//! so that the broker tells, as events, of a runner waiting in its queue
//! longer than a threshold and of the pool kept at 90 % or more for a
//! number of minutes, and back.
//!
//! The settings are a record like any pool's (kept across restarts and
//! failovers) and live in the pool as two atomics, read where a runner
//! has already joined the queue and by the history's harvest: never by an
//! acquire, a renewal or a release. When a pool is busy is decided here,
//! sans clock, by `BusyRun`, from the minutes the history closes.

use std::time::Duration;

use super::audit::AuditAction;
use super::broker::Broker;
use super::error::{Error, Result};
use super::id::OrgName;
use super::pool::PoolId;
use super::record::{Change, Record};
use super::time::Millis;
use super::Principal;

/// Shortest queue wait that may be alerted on.
pub const MIN_QUEUE_ALERT: Duration = Duration::from_secs(1);

/// Longest queue wait that may be alerted on (a runner waits a day at most).
pub const MAX_QUEUE_ALERT: Duration = Duration::from_secs(86_400);

/// Most minutes a pool may have to stay busy before it is told (a day).
pub const MAX_BUSY_MINUTES: u32 = 1440;

/// A minute is busy when its mean seats in use are at least this percent
/// of the quota.
pub const BUSY_PERCENT: u32 = 90;

/// A busy pool is back once a minute's mean is below this percent: ten
/// points under `BUSY_PERCENT`, so a pool hovering at 90 % is not told
/// busy and back every few minutes.
pub const CALM_PERCENT: u32 = 80;

/// A pool's alerts; `None`: not alerted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Alerts {
    /// A runner queued this long is told of (`queue.wait_exceeded`).
    pub queue_wait: Option<Duration>,
    /// Busy this many minutes in a row, the pool is told of (`pool.busy`).
    pub busy_minutes: Option<u32>,
}

impl Broker {
    /// Plans a pool's alerts, set whole: the org's Owners and Admins, or
    /// the operator; the pool must exist. Audited (`AlertsSet`).
    pub fn plan_set_alerts(
        &self,
        p: &Principal,
        org: &OrgName,
        pool: PoolId,
        alerts: Alerts,
        now: Millis,
    ) -> Result<Vec<Change>> {
        if p.require_operator().is_err() {
            p.require_admin(org)?;
        }
        if alerts.queue_wait.is_some_and(|d| !(MIN_QUEUE_ALERT..=MAX_QUEUE_ALERT).contains(&d)) {
            return Err(Error::invalid("queue alert", "between 1 second and 1 day"));
        }
        if alerts.busy_minutes.is_some_and(|n| n == 0 || n > MAX_BUSY_MINUTES) {
            return Err(Error::invalid("busy alert", "between 1 minute and 1 day"));
        }
        self.with_dir(|dir| dir.pool(org, pool).map(|_| ()))?;
        let queue_wait_ms = alerts.queue_wait.map(|d| d.as_millis() as u64);
        let off = || "off".to_string();
        let detail = format!(
            "pool={pool} queue_alert={} busy_alert={}",
            queue_wait_ms.map_or_else(off, |ms| format!("{}s", ms / 1000)),
            alerts.busy_minutes.map_or_else(off, |n| format!("{n}m")),
        );
        Ok(vec![
            Change::Put(Record::PoolAlerts {
                org: org.clone(),
                pool,
                queue_wait_ms,
                busy_minutes: alerts.busy_minutes,
            }),
            self.audit(org, p, AuditAction::AlertsSet, detail, now),
        ])
    }
}

/// A pool's mean use of a minute, in percent of its quota (0 with no quota).
pub fn level(seat_ms: u64, quota: u32) -> u32 {
    match quota {
        0 => 0,
        q => (seat_ms.saturating_mul(100) / (60_000 * u64::from(q))).min(u64::from(u32::MAX)) as u32,
    }
}

/// A pool turning busy or back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Turn {
    /// Busy (true) or back (false).
    pub busy: bool,
    /// The first busy minute of the run (Unix minutes): names the run.
    pub since: u64,
    /// The minute that decided it: the run's `n`th busy minute, or the first calm one.
    pub minute: u64,
    /// That minute's level, in percent.
    pub level: u32,
}

/// One pool's run of busy minutes, fed the minutes in order.
#[derive(Clone, Copy, Debug, Default)]
pub struct BusyRun {
    /// The last minute fed.
    last: Option<u64>,
    /// Busy minutes in a row so far, and the first of them.
    run: u32,
    start: u64,
    /// Told busy, for the run that began then.
    on: Option<u64>,
}

impl BusyRun {
    /// Feeds `minute` at `level` percent (`n`: the busy minutes in a row
    /// that make the pool busy). A minute skipped since the last one fed
    /// had no use at all (the history writes no row for it). Minutes
    /// already fed are ignored. Returns a turn, if this minute makes one.
    pub fn minute(&mut self, minute: u64, level: u32, n: u32) -> Option<Turn> {
        if self.last.is_some_and(|l| minute <= l) {
            return None;
        }
        let gap = self.last.filter(|l| minute > l + 1).map(|l| l + 1);
        self.last = Some(minute);
        if gap.is_some() {
            self.run = 0;
        }
        let calm = match (self.on, gap) {
            (Some(since), Some(empty)) => Some(Turn { busy: false, since, minute: empty, level: 0 }),
            (Some(since), None) if level < CALM_PERCENT => Some(Turn { busy: false, since, minute, level }),
            (Some(_), None) => return None,
            (None, _) => None,
        };
        if calm.is_some() {
            self.on = None;
        }
        if level < BUSY_PERCENT {
            self.run = 0;
            return calm;
        }
        self.run += 1;
        if self.run == 1 {
            self.start = minute;
        }
        if calm.is_some() || self.run < n {
            return calm;
        }
        self.on = Some(self.start);
        Some(Turn { busy: true, since: self.start, minute, level })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(levels: &[(u64, u32)], n: u32) -> Vec<Turn> {
        let mut run = BusyRun::default();
        levels.iter().filter_map(|&(m, l)| run.minute(m, l, n)).collect()
    }

    #[test]
    fn busy_after_n_minutes_in_a_row_and_back_below_80_percent() {
        let turns = feed(&[(10, 95), (11, 90), (12, 99), (13, 85), (14, 91), (15, 79), (16, 95)], 3);
        assert_eq!(
            turns,
            [
                Turn { busy: true, since: 10, minute: 12, level: 99 },
                Turn { busy: false, since: 10, minute: 15, level: 79 },
            ],
            "85 % keeps a busy pool busy (hysteresis); 79 % ends it; one busy minute is no new run"
        );
    }

    #[test]
    fn a_dip_restarts_the_count_and_an_empty_minute_ends_a_run() {
        assert_eq!(feed(&[(1, 95), (2, 89), (3, 95), (4, 95)], 3), [], "89 % restarts the count");
        let turns = feed(&[(1, 95), (2, 95), (5, 95)], 2);
        assert_eq!(
            turns,
            [Turn { busy: true, since: 1, minute: 2, level: 95 }, Turn { busy: false, since: 1, minute: 3, level: 0 },],
            "minutes 3 and 4 had no row: no use"
        );
        assert_eq!(feed(&[(7, 95), (7, 95), (6, 95)], 2), [], "a minute fed twice counts once");
    }

    #[test]
    fn level_is_the_minutes_mean_over_the_quota() {
        assert_eq!(level(9 * 60_000, 10), 90);
        assert_eq!(level(60_000, 0), 0);
    }
}
