//! What a scenario measured and checked: latency percentiles (hdrhistogram),
//! throughput, errors by code, invariant checks; printed as a table or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use license_broker::client::ClientError;
use serde::Serialize;

/// Latencies of one kind of operation, in microseconds.
#[derive(Clone)]
pub struct Lat(Histogram<u64>);

impl Lat {
    pub fn new() -> Lat {
        // 1 µs .. 1 h, 3 significant figures. Invariant: constant bounds
        // that hdrhistogram accepts (low ≥ 1, high ≥ 2 × low, sigfig ≤ 5).
        Lat(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid"))
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.0.record(us);
    }

    pub fn record_us(&mut self, us: u64) {
        let _ = self.0.record(us.clamp(1, 3_600_000_000));
    }

    pub fn merge(&mut self, other: &Lat) {
        let _ = self.0.add(&other.0);
    }

    pub fn stats(&self) -> OpStats {
        let h = &self.0;
        OpStats {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

impl Default for Lat {
    fn default() -> Lat {
        Lat::new()
    }
}

/// Percentiles of one operation.
#[derive(Clone, Debug, Serialize)]
pub struct OpStats {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// One invariant and whether it held.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Counts of errors by code.
#[derive(Clone, Default, Debug)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, e: &ClientError) {
        let key = match e.code() {
            Some(c) => c.name().to_string(),
            None => match e {
                ClientError::Closed(_) => "CLOSED".into(),
                ClientError::Connect { .. } => "CONNECT".into(),
                _ => "CLIENT".into(),
            },
        };
        *self.0.entry(key).or_default() += 1;
    }

    pub fn add_named(&mut self, name: &str) {
        *self.0.entry(name.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    pub fn count(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }
}

/// A scenario's report.
#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub duration_s: f64,
    pub params: BTreeMap<String, serde_json::Value>,
    pub throughput: BTreeMap<String, f64>,
    pub latency_us: BTreeMap<String, OpStats>,
    pub errors: BTreeMap<String, u64>,
    pub invariants: Vec<Check>,
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Report {
    pub fn new(scenario: &str, target: &str) -> Report {
        Report { scenario: scenario.into(), target: target.into(), ..Report::default() }
    }

    pub fn param(&mut self, k: &str, v: impl Serialize) {
        self.params.insert(k.into(), serde_json::to_value(v).unwrap_or_default());
    }

    pub fn extra(&mut self, k: &str, v: impl Serialize) {
        self.extra.insert(k.into(), serde_json::to_value(v).unwrap_or_default());
    }

    pub fn latency(&mut self, op: &str, lat: &Lat) {
        if !lat.0.is_empty() {
            self.latency_us.insert(op.into(), lat.stats());
        }
    }

    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.invariants.push(Check { name: name.into(), ok, detail: detail.into() });
    }

    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|c| c.ok)
    }

    /// Prints as a human table.
    pub fn print_human(&self) {
        println!("== {} against {} ({:.1}s)", self.scenario, self.target, self.duration_s);
        if !self.params.is_empty() {
            let p: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("   {}", p.join(" "));
        }
        for (k, v) in &self.throughput {
            println!("   {k:<28} {v:>14.0}");
        }
        if !self.latency_us.is_empty() {
            println!(
                "   {:<12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "latency µs", "count", "p50", "p90", "p99", "p99.9", "max"
            );
            for (op, s) in &self.latency_us {
                println!(
                    "   {op:<12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    s.count, s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us
                );
            }
        }
        for (k, v) in &self.extra {
            println!("   {k:<28} {v}");
        }
        if !self.errors.is_empty() {
            let e: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("   errors: {}", e.join(" "));
        }
        for c in &self.invariants {
            println!("   [{}] {} — {}", if c.ok { "ok" } else { "FAILED" }, c.name, c.detail);
        }
    }
}

/// A progress bar for runs longer than a few seconds (hidden when stderr is not a terminal).
pub fn progress(duration: Duration, label: &str) -> indicatif::ProgressBar {
    let bar = if duration >= Duration::from_secs(3) {
        indicatif::ProgressBar::new(duration.as_secs())
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len}s")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_string());
    bar
}

/// Ticks `bar` once a second until `deadline`.
pub async fn tick(bar: indicatif::ProgressBar, deadline: tokio::time::Instant) {
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
}
