//! KSE licenses assigned versus activated over time, as the vendor's
//! utilization dashboard charts them: per KSE pool and day, the most users
//! granted it (Licensed Users) and the most licenses in use (node-locked
//! activations and offline licenses bound to machines, or floating
//! sessions at once), both from the history's per-minute rollups.
//!
//! Who may read it is `history::report`'s rule, as for the session-time
//! chart beside it.

use super::chart::Bars;
use crate::core::{Millis, OrgName, PoolId, Principal, Product, DAY_MS};
use crate::history::report::{self, ReportError};
use crate::history::History;
use crate::http::Web;

/// The chart over whole days `from..to`, for the KSE pools `pool` names
/// (every KSE pool if `None`); `None` when the org has none or nothing
/// was ever assigned or in use in the range.
pub(super) fn chart(
    web: &Web,
    h: &History,
    p: &Principal,
    org: &OrgName,
    pool: Option<PoolId>,
    (from, to): (Millis, Millis),
) -> Result<Option<String>, ReportError> {
    let series = report::usage(web.ops.core(), Some(h), p, org, pool, (from, to), DAY_MS)?.read(h)?;
    let mut counts = Bars::counts(from, to);
    for s in series.iter().filter(|s| s.pool.product == Product::Kse) {
        for pt in &s.points {
            let u = &pt.usage;
            counts.most(&format!("{} assigned", s.pool), pt.start, u64::from(u.assigned));
            counts.most(&format!("{} activated", s.pool), pt.start, u64::from(u.licenses_activated()));
        }
    }
    Ok((!counts.is_empty()).then(|| super::chart::lines(&counts)))
}
