//! Per-day series as inline SVG (no script): total session time per
//! license type, as lines (one per pool) or bars stacked by pool; and
//! counts of licenses (KSE assigned and activated) as lines. Series names
//! are escaped here, since the SVG goes into the page as it is.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::core::{format_end_date, Millis, DAY_MS};
use crate::http::dashboard::view::esc;

/// A value per series (a pool) and day over a range of whole days:
/// seat-milliseconds, or a count of licenses.
pub struct Bars {
    from: u64,
    days: usize,
    by_pool: BTreeMap<String, Vec<u64>>,
    unit: Unit,
}

/// What a chart's values count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Seat-milliseconds, shown in hours.
    Hours,
    /// Licenses.
    Licenses,
}

/// The pools' colours, in order.
const COLOURS: [&str; 6] = ["#2563eb", "#c2410c", "#059669", "#7c3aed", "#db2777", "#475569"];

impl Bars {
    /// No time yet, over whole days `from..to`.
    pub fn new(from: Millis, to: Millis) -> Bars {
        let days = (to.0.saturating_sub(from.0) / DAY_MS).max(1) as usize;
        Bars { from: from.0, days, by_pool: BTreeMap::new(), unit: Unit::Hours }
    }

    /// No licenses counted yet, over whole days `from..to` (see `most`).
    pub fn counts(from: Millis, to: Millis) -> Bars {
        Bars { unit: Unit::Licenses, ..Bars::new(from, to) }
    }

    /// Raises `series`' value on the day holding `start` to `n`, if lower.
    pub fn most(&mut self, series: &str, start: u64, n: u64) {
        if let Some(d) = self.day(start) {
            let days = self.days;
            let v = &mut self.by_pool.entry(series.to_string()).or_insert_with(|| vec![0; days])[d];
            *v = (*v).max(n);
        }
    }

    /// Whether no series has a value yet.
    pub fn is_empty(&self) -> bool {
        self.by_pool.is_empty()
    }

    /// A value on the chart's scale, in words.
    fn label(&self, v: u64) -> String {
        match self.unit {
            Unit::Hours => hours(v),
            Unit::Licenses => v.to_string(),
        }
    }

    fn day(&self, t: u64) -> Option<usize> {
        let d = (t.checked_sub(self.from)? / DAY_MS) as usize;
        (d < self.days).then_some(d)
    }

    /// Adds `seat_ms` of `pool` to the day holding `start`.
    pub fn add(&mut self, pool: &str, start: u64, seat_ms: u64) {
        if let Some(d) = self.day(start) {
            let days = self.days;
            self.by_pool.entry(pool.to_string()).or_insert_with(|| vec![0; days])[d] += seat_ms;
        }
    }

    /// Adds a session of `pool` held over `start..end`, split over its days.
    pub fn add_span(&mut self, pool: &str, start: u64, end: u64) {
        let mut t = start;
        while t < end {
            let day_end = (t / DAY_MS + 1) * DAY_MS;
            self.add(pool, t, day_end.min(end) - t);
            t = day_end;
        }
    }

    /// Each pool's total, in hours.
    pub fn totals(&self) -> Vec<(String, String)> {
        self.by_pool.iter().map(|(p, v)| (p.clone(), hours(v.iter().sum()))).collect()
    }

    fn max(&self, stacked: bool) -> u64 {
        let per_day = |d: usize| self.by_pool.values().map(move |v| v[d]);
        let top = (0..self.days).map(|d| if stacked { per_day(d).sum() } else { per_day(d).max().unwrap_or(0) });
        let top = top.max().unwrap_or(0);
        match self.unit {
            Unit::Hours => top.max(3_600_000),
            // Whole licenses on each of the scale's four steps.
            Unit::Licenses => top.max(1).div_ceil(4) * 4,
        }
    }
}

/// The height of `ms` on a scale topping at `max`.
fn y_of(ms: u64, max: u64) -> f64 {
    H - (H - TOP) * ms as f64 / max as f64
}

fn hours(ms: u64) -> String {
    format!("{:.1} h", ms as f64 / 3_600_000.0)
}

const W: f64 = 900.0;
/// The plot's bottom; its top is `TOP`, leaving room for the scale's last label.
const H: f64 = 250.0;
const TOP: f64 = 10.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 24.0;

/// The chart's frame: axes, the hour scale and the first and last day.
fn frame(b: &Bars, max: u64, out: &mut String) {
    let (class, what) = match b.unit {
        Unit::Hours => ("usage", "session hours per day by license type"),
        Unit::Licenses => ("licenses", "KSE licenses assigned and activated per day"),
    };
    let _ = write!(out, r#"<svg class="{class}" viewBox="0 0 {W} {}" role="img" aria-label="{what}">"#, H + BOTTOM);
    for i in 0u32..=4 {
        let y = H - (H - TOP) * f64::from(i) / 4.0;
        let label = b.label(max * u64::from(i) / 4);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{W}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="2" y="{:.1}">{label}</text>"#,
            y + 4.0
        );
    }
    let last = Millis(b.from + b.days as u64 * DAY_MS);
    let _ = write!(
        out,
        r#"<text class="axis" x="{LEFT}" y="{}">{}</text><text class="axis" x="{}" y="{}" text-anchor="end">{}</text>"#,
        H + 18.0,
        format_end_date(Millis(b.from + DAY_MS)),
        W,
        H + 18.0,
        format_end_date(last)
    );
}

fn legend(b: &Bars, out: &mut String) {
    out.push_str(r#"<p class="legend">"#);
    for (i, pool) in b.by_pool.keys().enumerate() {
        let _ = write!(out, r#"<span><i style="background:{}"></i>{}</span>"#, COLOURS[i % COLOURS.len()], esc(pool));
    }
    out.push_str("</p>");
}

/// One line per pool.
pub fn lines(b: &Bars) -> String {
    let max = b.max(false);
    let mut out = String::new();
    frame(b, max, &mut out);
    let step = (W - LEFT) / b.days as f64;
    for (i, (_, v)) in b.by_pool.iter().enumerate() {
        let points: Vec<(f64, f64)> =
            v.iter().enumerate().map(|(d, ms)| (LEFT + step * (d as f64 + 0.5), y_of(*ms, max))).collect();
        let colour = COLOURS[i % COLOURS.len()];
        let line: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            out,
            r#"<polyline class="line" fill="none" stroke-width="1.8" stroke="{colour}" points="{}"/>"#,
            line.join(" ")
        );
        // A dot per day while days are few: a single day draws no line.
        for (x, y) in points.iter().filter(|_| b.days <= 62) {
            let _ = write!(out, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#);
        }
    }
    out.push_str("</svg>");
    legend(b, &mut out);
    out
}

/// Bars stacked by pool, one per day.
pub fn stacked(b: &Bars) -> String {
    let max = b.max(true);
    let mut out = String::new();
    frame(b, max, &mut out);
    let step = (W - LEFT) / b.days as f64;
    let mut base = vec![0u64; b.days];
    for (i, (_, v)) in b.by_pool.iter().enumerate() {
        for (d, ms) in v.iter().enumerate().filter(|(_, ms)| **ms > 0) {
            let (y0, y1) = (y_of(base[d], max), y_of(base[d] + ms, max));
            let _ = write!(
                out,
                r#"<rect class="bar" x="{:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                LEFT + step * d as f64 + step * 0.1,
                step * 0.8,
                y0 - y1,
                COLOURS[i % COLOURS.len()]
            );
            base[d] += ms;
        }
    }
    out.push_str("</svg>");
    legend(b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_split_over_the_days_it_spans_and_clipped_to_the_range() {
        let mut b = Bars::new(Millis(0), Millis(3 * DAY_MS));
        b.add_span("kre", DAY_MS - 3_600_000, DAY_MS + 7_200_000);
        b.add_span("kre", 2 * DAY_MS + 1, 5 * DAY_MS);
        assert_eq!(b.by_pool["kre"], vec![3_600_000, 7_200_000, DAY_MS - 1]);
        assert_eq!(b.totals(), vec![("kre".to_string(), hours(3_600_000 + 7_200_000 + DAY_MS - 1))]);
    }

    #[test]
    fn pool_names_are_escaped_in_the_svg() {
        let mut b = Bars::new(Millis(0), Millis(DAY_MS));
        b.add("<script>", 0, 1);
        for svg in [lines(&b), stacked(&b)] {
            assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"), "{svg}");
        }
    }
}
