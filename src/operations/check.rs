//! Preflight (`Req::Check`, `GET /api/v1/availability`, `license-broker
//! check`, `runner --check`): the core says how the pool stands and what
//! an acquire would meet (`core::availability`); this adds the estimate of
//! the wait, from the pool's mean session length over the last day as the
//! history recorded it (no history: no estimate), on the line the runner
//! would likely be served from first (the whole queue, or the lane of a
//! reservation its labels match: `Availability::wait`), and its place on it. Takes nothing, writes
//! nothing, counts no refusal.

use super::{Caller, Operations};
use crate::core::{Labels, MachineId, Millis, OrgName, PoolId, DAY_MS};
use crate::proto::{AvailabilityInfo, WireError};

/// A preflight's answer as JSON, the same from `GET /api/v1/availability`
/// and `check --json`.
pub fn availability_json(a: &AvailabilityInfo) -> serde_json::Value {
    let secs = |ms: Option<u64>| ms.map(|ms| ms as f64 / 1000.0);
    serde_json::json!({
        "pool": a.pool.to_string(), "quota": a.quota, "in_use": a.in_use, "waiting": a.waiting,
        "admitted": a.refusal.is_none(),
        "refusal": a.refusal.as_ref().map(|e| serde_json::json!({"code": e.code.name(), "message": e.message})),
        "worth_waiting": a.worth_waiting, "place": a.place,
        "wait_seconds": secs(a.wait_ms), "mean_session_seconds": secs(a.mean_ms),
    })
}

/// The span the mean session length is measured over.
const MEAN_OVER_MS: u64 = DAY_MS;

impl Operations {
    /// Whether an acquire by the caller on `machine` (none: a registered
    /// one) in `org`'s `pool`, carrying `labels`, would be admitted now
    /// and, if the pool is full, the place in its queue and the wait.
    pub async fn check(
        &self,
        c: Caller<'_>,
        (org, pool): (&OrgName, PoolId),
        machine: Option<&MachineId>,
        labels: &Labels,
    ) -> Result<AvailabilityInfo, WireError> {
        let a = self.core.availability(c.p, (org, pool), (machine, labels), c.now)?;
        let mean_ms = match a.worth_waiting {
            true => self.mean_session(org, pool, c.now).await,
            false => None,
        };
        let wait = a.wait(c.now, mean_ms);
        let wait_ms = match &a.refusal {
            None => Some(0),
            Some(_) if a.worth_waiting => wait.ms,
            Some(_) => None,
        };
        Ok(AvailabilityInfo {
            pool: a.pool,
            quota: a.quota,
            in_use: a.in_use,
            waiting: a.waiting,
            worth_waiting: a.worth_waiting,
            place: wait.place,
            refusal: a.refusal.map(WireError::from),
            wait_ms,
            mean_ms,
        })
    }

    /// The pool's mean session length over the last day: seat time over
    /// sessions admitted (Little's law), from the history's hourly rows (at
    /// most 25, read off the async threads; no report's turn is taken for
    /// so small a read). `None` without history or sessions.
    async fn mean_session(&self, org: &OrgName, pool: PoolId, now: Millis) -> Option<u64> {
        let h = self.history.clone()?;
        let (org, pool, from) = (org.to_string(), pool.to_string(), Millis(now.0.saturating_sub(MEAN_OVER_MS)));
        let points =
            tokio::task::spawn_blocking(move || h.usage(&org, &pool, from, now, 3_600_000)).await.ok()?.ok()?;
        let (seat_ms, admitted) = points.iter().fold((0, 0), |(s, n), p| (s + p.usage.seat_ms, n + p.usage.admitted));
        Some(seat_ms / admitted.max(1)).filter(|mean| *mean > 0)
    }
}
