//! The reports' JSON and CSV forms, shared by the HTTP API and the CLI so
//! both print the same columns. Times are RFC 3339 UTC; durations seconds.

use serde_json::{json, Map, Value};

use super::report::Series;
use super::{EndedRow, WhatIf};
use crate::core::{format_utc, EndReason, Millis};

/// The names of `Usage::denied`'s slots: the error codes.
pub fn denial_names() -> Vec<&'static str> {
    crate::proto::ErrorCode::DENIALS.iter().map(|c| c.name()).collect()
}

fn time(ms: u64) -> String {
    format_utc(Millis(ms))
}

/// Whether a usage report carries KSE's assigned and activated licenses:
/// the history's own reports do; one read over protocol version 1 (the
/// CLI's), whose usage points have no such fields, does not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Licenses {
    /// Say them for KSE pools.
    Said,
    /// Leave them out (the source does not carry them).
    Unknown,
}

/// Usage as JSON: `{org, from, to, step_seconds, pools: [{pool, quota, points: [...]}]}`.
pub fn usage_json(
    org: &str,
    (from, to): (Millis, Millis),
    step_ms: u64,
    series: &[Series],
    licenses: Licenses,
) -> Value {
    let names = denial_names();
    let pools: Vec<Value> = series
        .iter()
        .map(|s| {
            let points: Vec<Value> = s
                .points
                .iter()
                .map(|p| {
                    let u = &p.usage;
                    let denied: Map<String, Value> = names
                        .iter()
                        .zip(u.denied.iter().chain(std::iter::repeat(&0)))
                        .map(|(n, c)| (n.to_string(), json!(c)))
                        .collect();
                    let ends: Map<String, Value> =
                        EndReason::ALL.iter().zip(u.ends).map(|(r, c)| (r.name().to_string(), json!(c))).collect();
                    let mut point = json!({
                        "start": time(p.start),
                        "peak": u.peak,
                        "trough": u.trough,
                        "average": (p.average() * 1000.0).round() / 1000.0,
                        "quota": u.quota,
                        "seat_seconds": u.seat_ms as f64 / 1000.0,
                        "admitted": u.admitted,
                        "queued": u.queued,
                        "machines_expired": u.expired,
                        "denied": denied,
                        "ends": ends,
                    });
                    if licenses == Licenses::Said && s.pool.product == crate::core::Product::Kse {
                        point["assigned"] = json!(u.assigned);
                        point["activated"] = json!(u.licenses_activated());
                    }
                    point
                })
                .collect();
            json!({ "pool": s.pool.to_string(), "quota": s.quota, "points": points })
        })
        .collect();
    json!({ "org": org, "from": time(from.0), "to": time(to.0), "step_seconds": step_ms / 1000, "pools": pools })
}

/// Usage as CSV, one row per pool and step.
pub fn usage_csv(series: &[Series]) -> String {
    let names = denial_names();
    let mut out = String::from("pool,start,peak,trough,average,quota,seat_seconds,admitted,queued,denied");
    for n in &names {
        out.push_str(&format!(",denied_{n}"));
    }
    for r in EndReason::ALL {
        out.push_str(&format!(",ended_{}", r.name()));
    }
    out.push('\n');
    for s in series {
        for p in &s.points {
            let u = &p.usage;
            out.push_str(&format!(
                "{},{},{},{},{:.3},{},{:.3},{},{},{}",
                s.pool,
                time(p.start),
                u.peak,
                u.trough,
                p.average(),
                u.quota,
                u.seat_ms as f64 / 1000.0,
                u.admitted,
                u.queued,
                u.denials()
            ));
            for i in 0..names.len() {
                out.push_str(&format!(",{}", u.denied.get(i).copied().unwrap_or(0)));
            }
            for e in u.ends {
                out.push_str(&format!(",{e}"));
            }
            out.push('\n');
        }
    }
    out
}

fn labels_json(labels: &[(String, String)]) -> Value {
    Value::Object(labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// One ended session as JSON.
pub fn session_json(id: u64, r: &EndedRow) -> Value {
    json!({
        "session": crate::core::SessionId(id).to_string(),
        "pool": r.pool,
        "user": r.user,
        "machine": r.machine,
        "start": time(r.start),
        "end": time(r.end),
        "duration_seconds": r.end.saturating_sub(r.start) as f64 / 1000.0,
        "reason": r.reason,
        "labels": labels_json(&r.labels),
    })
}

/// The CSV header of ended sessions.
pub const SESSIONS_CSV_HEADER: &str = "session,pool,user,machine,start,end,duration_seconds,reason,pipeline,job\n";

/// A CSV text cell: quoted when it must be, and neutralised when a
/// spreadsheet would read it as a formula (it starts with `=`, `+`, `-`,
/// `@`, a tab or a CR: OWASP's rule for CSV injection): a leading `'`
/// makes it text, and the cell is quoted. Runner labels and emails come
/// from anyone with a key, so every text cell goes through here.
fn field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    match (formula, s.contains([',', '"', '\n', '\r'])) {
        (true, _) => format!("\"'{}\"", s.replace('"', "\"\"")),
        (false, true) => format!("\"{}\"", s.replace('"', "\"\"")),
        (false, false) => s.to_string(),
    }
}

/// One ended session as a CSV line (with its newline).
pub fn session_csv(id: u64, r: &EndedRow) -> String {
    let label = |k: &str| r.labels.iter().find(|(key, _)| key == k).map(|(_, v)| field(v)).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{:.3},{},{},{}\n",
        crate::core::SessionId(id),
        field(&r.pool),
        field(&r.user),
        field(&r.machine),
        time(r.start),
        time(r.end),
        r.end.saturating_sub(r.start) as f64 / 1000.0,
        r.reason,
        label("pipeline"),
        label("job"),
    )
}

/// A what-if replay as JSON.
pub fn what_if_json(org: &str, pool: &str, (from, to): (Millis, Millis), w: &WhatIf) -> Value {
    let outcomes: Vec<Value> = w
        .outcomes
        .iter()
        .map(|o| {
            json!({
                "seats": o.seats,
                "admitted": o.admitted,
                "denied": o.denied,
                "at_capacity": (o.at_capacity() * 10_000.0).round() / 10_000.0,
            })
        })
        .collect();
    json!({
        "org": org,
        "pool": pool,
        "from": time(from.0),
        "to": time(to.0),
        "sessions": w.sessions,
        "refusals": w.refusals,
        "median_session_seconds": w.median_ms as f64 / 1000.0,
        "truncated": w.truncated,
        "outcomes": outcomes,
    })
}

/// A what-if replay as CSV.
pub fn what_if_csv(w: &WhatIf) -> String {
    let mut out = String::from("seats,admitted,denied,at_capacity\n");
    for o in &w.outcomes {
        out.push_str(&format!("{},{},{},{:.4}\n", o.seats, o.admitted, o.denied, o.at_capacity()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, job: &str) -> EndedRow {
        EndedRow {
            pool: "kre-floating-annual".into(),
            user: user.into(),
            machine: "ci-01".into(),
            start: 0,
            end: 1_000,
            reason: "released".into(),
            labels: vec![("pipeline".into(), "main".into()), ("job".into(), job.into())],
        }
    }

    /// The cells of one CSV line, as a spreadsheet splits them.
    fn cells(line: &str) -> Vec<String> {
        let (mut out, mut cell, mut quoted) = (Vec::new(), String::new(), false);
        let mut chars = line.trim_end_matches('\n').chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cell.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => out.push(std::mem::take(&mut cell)),
                (c, _) => cell.push(c),
            }
        }
        out.push(cell);
        out
    }

    #[test]
    fn a_cell_a_spreadsheet_would_run_as_a_formula_is_exported_as_text() {
        for hostile in ["=HYPERLINK(\"http://x\",\"y\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            let line = session_csv(7, &row("=owner@acme", hostile));
            let c = cells(&line);
            assert_eq!(c.len(), 10, "{line}");
            for cell in &c {
                assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "cell {cell:?} of {line}");
            }
            assert_eq!(c[2], "'=owner@acme", "the user's text survives, marked as text");
            assert_eq!(c[9], format!("'{hostile}"), "{line}");
        }
        // Ordinary cells are untouched; commas and quotes are still quoted.
        let c = cells(&session_csv(7, &row("dev@acme", "build, \"nightly\"")));
        assert_eq!((c[2].as_str(), c[8].as_str(), c[9].as_str()), ("dev@acme", "main", "build, \"nightly\""));
    }
}
