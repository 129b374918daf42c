//! The usage history as tables and JSON: per-minute (or coarser) usage
//! points, ended sessions, and the what-if replay (`usage`). Its JSON for
//! an ended session is the history export's own (`history::export`), the
//! web API's too, so the two agree.

use license_broker::proto::{EndedSession, UsagePoint};
use license_broker::value::{format_utc, Millis};
use serde_json::{json, Value};

use super::printer::Printer;
use super::Listing;

impl Listing for UsagePoint {
    const KEY: &'static str = "points";
    const HEADER: &'static [&'static str] =
        &["POOL", "START", "PEAK", "AVERAGE", "TROUGH", "QUOTA", "ADMITTED", "DENIED"];
    fn json(&self) -> Value {
        json!({
            "pool": self.pool.to_string(), "start": format_utc(Millis(self.start_ms)), "peak": self.peak,
            "average": self.seat_ms as f64 / self.step_ms.max(1) as f64, "trough": self.trough, "quota": self.quota,
            "admitted": self.admitted, "denied": self.denied.iter().sum::<u64>(),
        })
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.pool.to_string(),
            format_utc(Millis(self.start_ms)),
            self.peak.to_string(),
            format!("{:.2}", self.seat_ms as f64 / self.step_ms.max(1) as f64),
            self.trough.to_string(),
            self.quota.to_string(),
            self.admitted.to_string(),
            self.denied.iter().sum::<u64>().to_string(),
        ]
    }
}

impl Listing for EndedSession {
    const KEY: &'static str = "sessions";
    const HEADER: &'static [&'static str] =
        &["SESSION", "POOL", "USER", "MACHINE", "START", "END", "SECONDS", "REASON"];
    fn json(&self) -> Value {
        let row = license_broker::history::EndedRow {
            pool: self.pool.clone(),
            user: self.user.clone(),
            machine: self.machine.clone(),
            start: self.start_ms,
            end: self.end_ms,
            reason: self.reason.clone(),
            labels: self.labels.clone(),
        };
        license_broker::history::export::session_json(self.session.0, &row)
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.session.to_string(),
            self.pool.clone(),
            self.user.clone(),
            self.machine.clone(),
            format_utc(Millis(self.start_ms)),
            format_utc(Millis(self.end_ms)),
            format!("{:.1}", self.end_ms.saturating_sub(self.start_ms) as f64 / 1000.0),
            self.reason.clone(),
        ]
    }
}

/// A usage series as a table: one line per pool and step.
pub fn usage_table(all: &[license_broker::history::report::Series]) {
    let mut p = Printer::new(false);
    for s in all {
        let points: Vec<UsagePoint> = s
            .points
            .iter()
            .map(|pt| UsagePoint {
                pool: s.pool,
                quota_now: s.quota,
                start_ms: pt.start,
                step_ms: pt.step_ms,
                peak: pt.usage.peak,
                trough: pt.usage.trough,
                quota: pt.usage.quota,
                seat_ms: pt.usage.seat_ms,
                admitted: pt.usage.admitted,
                denied: pt.usage.denied.clone(),
                ends: pt.usage.ends,
                queued: pt.usage.queued,
            })
            .collect();
        p.page(&points);
    }
    p.finish();
}

/// A what-if replay as a table.
pub fn what_if_table(w: &license_broker::history::WhatIf) {
    println!(
        "replayed {} sessions and {} refusals (as sessions of the median length, {:.0} s){}",
        w.sessions,
        w.refusals,
        w.median_ms as f64 / 1000.0,
        if w.truncated { "; the demand was cut short (too much of it)" } else { "" }
    );
    println!("{:<6}  {:>9}  {:>8}  {:>11}", "SEATS", "ADMITTED", "DENIED", "AT CAPACITY");
    for o in &w.outcomes {
        println!("{:<6}  {:>9}  {:>8}  {:>10.1}%", o.seats, o.admitted, o.denied, o.at_capacity() * 100.0);
    }
}
