//! Inline SVG for the dashboard: a time chart, a weekday × hour heatmap
//! and a horizontal bar histogram. Plain strings, no scripts, no fonts
//! beyond the page's own, so the page works offline and prints.

use std::fmt::Write;

use super::view::esc;

/// One series of a time chart.
pub struct Line<'a> {
    /// Its CSS class (`peak`, `average`, `quota`).
    pub class: &'a str,
    /// Its name, for the legend and the chart's title.
    pub name: &'a str,
    /// (time ms, value), in time order.
    pub points: Vec<(u64, f64)>,
    /// Drawn as steps (a value holds until the next point).
    pub steps: bool,
}

/// Chart geometry.
const W: f64 = 880.0;
const H: f64 = 220.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// A time chart of `lines` over `from..to`, with red marks at `marks`
/// (time ms, how many: refusals) and y from 0 to the largest value.
pub fn time_chart(title: &str, (from, to): (u64, u64), lines: &[Line<'_>], marks: &[(u64, u64)]) -> String {
    let span = to.saturating_sub(from).max(1) as f64;
    let max = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).fold(1.0f64, f64::max).ceil();
    let top = max * 1.1;
    let x = |t: u64| LEFT + (t.saturating_sub(from) as f64 / span).min(1.0) * (W - LEFT - 4.0);
    let y = |v: f64| TOP + (1.0 - v / top) * (H - TOP - BOTTOM);
    let mut s = String::with_capacity(4096 + lines.iter().map(|l| l.points.len() * 24).sum::<usize>());
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    // Horizontal grid: 0, half, top.
    for v in [0.0, (max / 2.0).round(), max] {
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - 4.0,
            LEFT - 4.0,
            y(v) + 4.0,
            (v * 10.0).round() / 10.0,
            y = y(v)
        );
    }
    for (i, t) in [from, from + (to - from) / 2, to].into_iter().enumerate() {
        let anchor = ["start", "middle", "end"][i];
        let label = crate::core::format_utc(crate::core::Millis(t));
        let _ = write!(
            s,
            r#"<text class="axis" x="{:.1}" y="{}" text-anchor="{anchor}">{}</text>"#,
            x(t),
            H - 6.0,
            esc(&label[..16.min(label.len())])
        );
    }
    for l in lines {
        if l.points.is_empty() {
            continue;
        }
        let d = path(l, &x, &y, to);
        let _ = write!(s, r#"<path class="line {}" d="{d}"><title>{}</title></path>"#, esc(l.class), esc(l.name));
    }
    for &(t, n) in marks {
        let r = 2.5 + (n as f64).log2().max(0.0);
        let _ = write!(
            s,
            r#"<circle class="denial" cx="{:.1}" cy="{:.1}" r="{r:.1}"><title>{n} refused</title></circle>"#,
            x(t),
            H - BOTTOM - 4.0
        );
    }
    s.push_str("</svg>");
    s
}

/// A line's SVG path data: straight segments, or steps held until `to`.
fn path(l: &Line<'_>, x: &impl Fn(u64) -> f64, y: &impl Fn(f64) -> f64, to: u64) -> String {
    let mut d = String::with_capacity(l.points.len() * 24);
    for (i, &(t, v)) in l.points.iter().enumerate() {
        let (px, py) = (x(t), y(v));
        match (i, l.steps) {
            (0, _) => _ = write!(d, "M{px:.1},{py:.1}"),
            (_, true) => _ = write!(d, "H{px:.1}V{py:.1}"),
            (_, false) => _ = write!(d, "L{px:.1},{py:.1}"),
        }
    }
    if l.steps {
        let _ = write!(d, "H{:.1}", x(to));
    }
    d
}

/// A weekday × hour grid: `cells[day][hour]` is a share (0 to 1) or
/// `None` (no data); day 0 is Monday.
pub fn heatmap(title: &str, cells: &[[Option<f64>; 24]; 7]) -> String {
    const CELL: f64 = 30.0;
    const LEFT: f64 = 40.0;
    let mut s = String::with_capacity(16 * 1024);
    let _ = write!(
        s,
        r#"<svg class="heatmap" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>"#,
        LEFT + 24.0 * CELL,
        7.0 * CELL + 20.0,
        esc(title),
        esc(title)
    );
    for (d, name) in ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].iter().enumerate() {
        let yy = d as f64 * CELL;
        let _ = write!(s, r#"<text class="axis" x="0" y="{:.0}">{name}</text>"#, yy + CELL * 0.65);
        for (h, cell) in cells[d].iter().enumerate() {
            let xx = LEFT + h as f64 * CELL;
            match cell {
                Some(v) => {
                    let _ = write!(
                        s,
                        r#"<rect class="cell" x="{xx:.0}" y="{yy:.0}" width="{w}" height="{w}" fill-opacity="{:.2}"><title>{name} {h:02}:00 peak {:.0}%</title></rect>"#,
                        0.08 + 0.92 * v.clamp(0.0, 1.0),
                        v * 100.0,
                        w = CELL - 2.0
                    );
                }
                None => {
                    let _ = write!(
                        s,
                        r#"<rect class="empty" x="{xx:.0}" y="{yy:.0}" width="{w}" height="{w}"/>"#,
                        w = CELL - 2.0
                    );
                }
            }
        }
    }
    for h in (0..24).step_by(3) {
        let _ = write!(
            s,
            r#"<text class="axis" x="{:.0}" y="{:.0}">{h:02}</text>"#,
            LEFT + h as f64 * CELL,
            7.0 * CELL + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars: (label, share 0 to 1).
pub fn bars(title: &str, rows: &[(String, f64)]) -> String {
    const ROW: f64 = 18.0;
    let mut s = String::with_capacity(256 + rows.len() * 200);
    let _ = write!(
        s,
        r#"<svg class="bars" viewBox="0 0 600 {}" role="img" aria-label="{}"><title>{}</title>"#,
        rows.len() as f64 * ROW + 4.0,
        esc(title),
        esc(title)
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let yy = i as f64 * ROW;
        let _ = write!(
            s,
            r#"<text class="axis" x="0" y="{:.0}">{}</text><rect class="bar" x="80" y="{:.0}" width="{:.1}" height="{}"><title>{} {:.1}%</title></rect><text class="axis" x="{:.1}" y="{:.0}">{:.1}%</text>"#,
            yy + 13.0,
            esc(label),
            yy + 2.0,
            (v * 440.0).max(0.5),
            ROW - 4.0,
            esc(label),
            v * 100.0,
            86.0 + v * 440.0,
            yy + 13.0,
            v * 100.0
        );
    }
    s.push_str("</svg>");
    s
}
