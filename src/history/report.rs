//! The reports the dashboard, the JSON/CSV API and the CLI share: who may
//! read what, the bounds on a query, and the answers, in one place, so
//! HTTP and QUIC differ only in their encoding.

use crate::core::{Broker, Millis, OrgName, PoolId, Principal};

use super::filter::SessionFilter;
use super::{EndedRow, History, Point, SessionsPage, WhatIf};

/// Most points one usage answer holds (a year of hours is 8,760).
pub const MAX_POINTS: u64 = 10_000;

/// Most ended sessions one answer holds (the caller pages on).
pub const MAX_SESSIONS: usize = 100_000;

/// Why a report was refused.
#[derive(Debug)]
pub enum ReportError {
    /// A rule of the core: unknown org or pool, not a member.
    Core(crate::core::Error),
    /// The question is malformed or too large (the message says how).
    Invalid(String),
    /// The broker keeps no history (`serve --no-history`).
    Off,
    /// The history could not be read.
    Db(super::DbError),
    /// The task reading it failed (the broker's fault, logged).
    Task(String),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportError::Core(e) => write!(f, "{e}"),
            ReportError::Invalid(why) => f.write_str(why),
            ReportError::Off => f.write_str(
                "this broker keeps no utilization history (started with --no-history, or its history file \
                 could not be opened: see its log)",
            ),
            ReportError::Db(e) => write!(f, "{e}"),
            ReportError::Task(why) => write!(f, "reading the history failed: {why}"),
        }
    }
}

impl From<crate::core::Error> for ReportError {
    fn from(e: crate::core::Error) -> Self {
        ReportError::Core(e)
    }
}

impl From<super::DbError> for ReportError {
    fn from(e: super::DbError) -> Self {
        ReportError::Db(e)
    }
}

/// One pool's series.
#[derive(Clone, Debug)]
pub struct Series {
    /// The pool.
    pub pool: PoolId,
    /// Its quota now.
    pub quota: u32,
    /// One point per step with data, oldest first.
    pub points: Vec<Point>,
}

/// A time range `from..to` in ms, checked.
fn range(from: Millis, to: Millis) -> Result<(), ReportError> {
    match from < to {
        true => Ok(()),
        false => Err(ReportError::Invalid(format!(
            "the range is empty: from {} is not before to {}",
            crate::core::format_utc(from),
            crate::core::format_utc(to)
        ))),
    }
}

fn history(h: Option<&History>) -> Result<&History, ReportError> {
    h.ok_or(ReportError::Off)
}

/// A usage question, checked (who may ask, bounds) and ready to read.
#[derive(Clone, Debug)]
pub struct UsageAsk {
    org: OrgName,
    /// The pools asked about, with their quota now.
    pools: Vec<(PoolId, u32)>,
    range: (Millis, Millis),
    step_ms: u64,
}

/// Checks a usage question about `org`'s pools (or just `pool`) over
/// `from..to` in steps of `step_ms`. No I/O: `UsageAsk::read` reads.
pub fn usage(
    core: &Broker,
    h: Option<&History>,
    p: &Principal,
    org: &OrgName,
    pool: Option<PoolId>,
    (from, to): (Millis, Millis),
    step_ms: u64,
) -> Result<UsageAsk, ReportError> {
    let pools = core.status(p, Some(org))?;
    history(h)?;
    range(from, to)?;
    if step_ms < crate::core::usage::MINUTE_MS || !step_ms.is_multiple_of(crate::core::usage::MINUTE_MS) {
        return Err(ReportError::Invalid("the step must be a whole number of minutes".into()));
    }
    if (to.0 - from.0) / step_ms > MAX_POINTS {
        return Err(ReportError::Invalid(format!(
            "more than {MAX_POINTS} points: use a larger step or a shorter range"
        )));
    }
    if let Some(pool) = pool {
        if !pools.iter().any(|s| s.pool == pool) {
            return Err(crate::core::Error::not_found("pool", pool).into());
        }
    }
    let pools = pools.iter().filter(|s| pool.is_none_or(|p| p == s.pool)).map(|s| (s.pool, s.quota)).collect();
    Ok(UsageAsk { org: org.clone(), pools, range: (from, to), step_ms })
}

impl UsageAsk {
    /// The org asked about.
    pub fn org(&self) -> &OrgName {
        &self.org
    }

    /// The pools asked about.
    pub fn pools(&self) -> impl Iterator<Item = PoolId> + '_ {
        self.pools.iter().map(|(p, _)| *p)
    }

    /// The range and the step (ms).
    pub fn span(&self) -> ((Millis, Millis), u64) {
        (self.range, self.step_ms)
    }

    /// Reads the answer: one series per pool.
    pub fn read(&self, h: &History) -> Result<Vec<Series>, ReportError> {
        let (from, to) = self.range;
        let mut out = Vec::new();
        for &(pool, quota) in &self.pools {
            let points = h.usage(self.org.as_str(), &pool.to_string(), from, to, self.step_ms)?;
            out.push(Series { pool, quota, points });
        }
        Ok(out)
    }
}

/// A question about ended sessions, checked.
#[derive(Clone, Debug)]
pub struct SessionsAsk {
    org: OrgName,
    range: (Millis, Millis),
    after: Option<(u64, u64)>,
    limit: usize,
    filter: SessionFilter,
}

/// Checks a question about sessions of `org` that ended in `from..to`,
/// at most `limit`, after the cursor (end ms, session id). The org's
/// Owners and Admins only (`Broker::require_session_reader`).
pub fn sessions(
    core: &Broker,
    h: Option<&History>,
    p: &Principal,
    org: &OrgName,
    (from, to): (Millis, Millis),
    after: Option<(u64, u64)>,
    limit: usize,
) -> Result<SessionsAsk, ReportError> {
    // Who held a session is for the org's Owners and Admins, as live lists are.
    core.require_session_reader(p, org)?;
    history(h)?;
    range(from, to)?;
    let filter = SessionFilter::default();
    Ok(SessionsAsk { org: org.clone(), range: (from, to), after, limit: limit.clamp(1, MAX_SESSIONS), filter })
}

impl SessionsAsk {
    /// The org asked about.
    pub fn org(&self) -> &OrgName {
        &self.org
    }

    /// The range, the cursor and the most rows asked for.
    pub fn span(&self) -> ((Millis, Millis), Option<(u64, u64)>, usize) {
        (self.range, self.after, self.limit)
    }

    /// The filter.
    pub fn filter(&self) -> &SessionFilter {
        &self.filter
    }

    /// The same question, keeping only the sessions `filter` keeps.
    pub fn filtered(self, filter: SessionFilter) -> SessionsAsk {
        SessionsAsk { filter, ..self }
    }

    /// Reads the page, and the cursor of the next one if any.
    pub fn read(&self, h: &History) -> Result<SessionsPage, ReportError> {
        let keep = |r: &EndedRow| self.filter.keeps(r);
        Ok(h.sessions(self.org.as_str(), self.range, self.after, self.limit, &keep)?)
    }
}

/// A what-if question, checked, with the live sessions' starts gathered.
#[derive(Clone, Debug)]
pub struct WhatIfAsk {
    org: OrgName,
    pool: PoolId,
    range: (Millis, Millis),
    live: Vec<Millis>,
    seats: std::ops::RangeInclusive<u32>,
}

/// Checks a replay of `org`'s `pool`'s demand over `from..to` against
/// `seats` (see `replay`); any member of the org, or the operator.
pub fn what_if(
    core: &Broker,
    h: Option<&History>,
    p: &Principal,
    (org, pool): (&OrgName, PoolId),
    (from, to): (Millis, Millis),
    seats: std::ops::RangeInclusive<u32>,
) -> Result<WhatIfAsk, ReportError> {
    let live = core.live_starts(p, org, pool)?;
    history(h)?;
    range(from, to)?;
    if seats.is_empty() || seats.clone().count() > super::MAX_SEAT_COUNTS {
        return Err(ReportError::Invalid(format!(
            "seats must be N or N..M (N at most M) with at most {} counts",
            super::MAX_SEAT_COUNTS
        )));
    }
    Ok(WhatIfAsk { org: org.clone(), pool, range: (from, to), live, seats })
}

impl WhatIfAsk {
    /// Replays.
    pub fn read(&self, h: &History) -> Result<WhatIf, ReportError> {
        let (from, to) = self.range;
        Ok(h.what_if(self.org.as_str(), &self.pool.to_string(), from, to, &self.live, self.seats.clone())?)
    }

    /// The org, the pool and the range asked about.
    pub fn span(&self) -> (&OrgName, PoolId, (Millis, Millis)) {
        (&self.org, self.pool, self.range)
    }

    /// What `h` recorded of the pool over the range (one node's part).
    pub fn recorded(&self, h: &History) -> Result<super::Recorded, ReportError> {
        Ok(h.recorded(self.org.as_str(), &self.pool.to_string(), self.range)?)
    }

    /// Replays `recorded` (every node's, merged).
    pub fn replay(&self, recorded: super::Recorded) -> WhatIf {
        recorded.replay(&self.live, self.range, self.seats.clone())
    }
}

/// Parses a point in time for a report: `now`; a duration back from now
/// (`7d`, `90m`); a date (`2026-11-28`, its start, UTC); an RFC 3339 time
/// (`2026-11-28T12:00:00Z`); or Unix seconds.
pub fn parse_when(s: &str, now: Millis) -> Result<Millis, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Millis(secs.saturating_mul(1000)));
    }
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(Millis(now.0.saturating_sub(ago.as_millis() as u64)));
    }
    if let Ok(end) = crate::core::parse_end_of_date(s) {
        return Ok(Millis(end.0 - crate::core::DAY_MS));
    }
    match humantime::parse_rfc3339_weak(s) {
        Ok(t) => Ok(Millis(t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))),
        Err(_) => Err(format!(
            "`{s}` is not a time: use now, a duration back from now (7d), a date (2026-11-28), \
             an RFC 3339 time (2026-11-28T12:00:00Z) or Unix seconds"
        )),
    }
}

/// Parses a step (`1m`, `5m`, `1h`, `1d`).
pub fn parse_step(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s.trim())
        .map(|d| d.as_millis() as u64)
        .map_err(|_| format!("`{s}` is not a step: use a duration such as 1m, 15m, 1h, 1d"))
}

/// Parses `N` or `N..M`.
pub fn parse_seats(s: &str) -> Result<std::ops::RangeInclusive<u32>, String> {
    let bad = || format!("seats must be N or N..M (numbers), not `{s}`");
    match s.split_once("..") {
        Some((a, b)) => Ok(a.trim().parse().map_err(|_| bad())?..=b.trim().parse().map_err(|_| bad())?),
        None => {
            let n = s.trim().parse().map_err(|_| bad())?;
            Ok(n..=n)
        }
    }
}

/// A step giving a few hundred points over `span_ms`: 1 minute up to 6
/// hours, 5 minutes up to 2 days, 1 hour up to 3 weeks, 1 day beyond.
pub fn auto_step(span_ms: u64) -> u64 {
    const MIN: u64 = 60_000;
    match span_ms {
        s if s <= 6 * 60 * MIN => MIN,
        s if s <= 2 * 1440 * MIN => 5 * MIN,
        s if s <= 21 * 1440 * MIN => 60 * MIN,
        _ => 1440 * MIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_documented_form() {
        let now = Millis(1_800_000_000_000);
        assert_eq!(parse_when("now", now), Ok(now));
        assert_eq!(parse_when("7d", now), Ok(Millis(now.0 - 7 * 86_400_000)));
        assert_eq!(parse_when("1700000000", now), Ok(Millis(1_700_000_000_000)));
        assert_eq!(parse_when("2026-11-28", now), Ok(Millis::from_civil_date(2026, 11, 28).unwrap()));
        let noon = Millis::from_civil_date(2026, 11, 28).unwrap().0 + 12 * 3_600_000;
        assert_eq!(parse_when("2026-11-28T12:00:00Z", now), Ok(Millis(noon)));
        assert!(parse_when("yesterday-ish", now).unwrap_err().contains("is not a time"));
        assert_eq!(parse_step("15m"), Ok(900_000));
        assert_eq!(auto_step(86_400_000), 300_000);
    }
}
