//! KSE licenses assigned versus activated over time, as the vendor's
//! utilization dashboard charts them: per KSE pool and day, the most users
//! granted it (Licensed Users) and the most licenses in use (node-locked
//! activations and offline licenses bound to machines, or floating
//! sessions at once), both from the history's per-minute rollups.
//!
//! Who may read it is `history::report`'s rule, as for the session-time
//! chart beside it.

use super::chart::Bars;
use crate::core::{Millis, Product};
use crate::history::report::Series;

/// The chart over whole days `from..to` of the KSE pools among `series`
/// (the day rollups the usage page read, over every node of a cluster);
/// `None` when the org has none or nothing was ever assigned or in use in
/// the range.
pub(super) fn chart(series: &[Series], (from, to): (Millis, Millis)) -> Option<String> {
    let mut counts = Bars::counts(from, to);
    for s in series.iter().filter(|s| s.pool.product == Product::Kse) {
        for pt in &s.points {
            let u = &pt.usage;
            counts.most(&format!("{} assigned", s.pool), pt.start, u64::from(u.assigned));
            counts.most(&format!("{} activated", s.pool), pt.start, u64::from(u.licenses_activated()));
        }
    }
    (!counts.is_empty()).then(|| super::chart::lines(&counts))
}
