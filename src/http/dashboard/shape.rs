//! What the org page's charts show of a pool's rollups: the week's heatmap
//! (peak by weekday and hour) and the time at each level. Pure: series in,
//! cells out.

use crate::core::usage::MINUTE_MS;
use crate::history::report;

/// Peak by UTC weekday and hour as a share of `quota`, from hourly points.
pub(super) fn heat(hours: &report::Series, quota: u32) -> [[Option<f64>; 24]; 7] {
    let mut cells = [[None; 24]; 7];
    for pt in &hours.points {
        let h = (pt.start / 3_600_000) as usize;
        // 1970-01-01 was a Thursday (Monday = 0).
        let (day, hour) = ((h / 24 + 3) % 7, h % 24);
        let share = f64::from(pt.usage.peak) / f64::from(quota.max(pt.usage.quota).max(1));
        let c: &mut Option<f64> = &mut cells[day][hour];
        *c = Some(c.unwrap_or(0.0).max(share));
    }
    cells
}

/// Minutes at each level of average seats in use (rounded), over a range
/// of `span` ms read in steps of `step`; steps with no row held 0 seats.
pub(super) fn levels(points: &report::Series, span: u64, step: u64) -> Vec<(u32, u64)> {
    let mut by: std::collections::BTreeMap<u32, u64> = Default::default();
    let per = step / MINUTE_MS;
    for pt in &points.points {
        *by.entry(pt.average().round() as u32).or_default() += per;
    }
    let counted: u64 = by.values().sum();
    let total = span / MINUTE_MS;
    if total > counted {
        *by.entry(0).or_default() += total - counted;
    }
    by.into_iter().collect()
}
