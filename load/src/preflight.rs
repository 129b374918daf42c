//! `preflight`: how good `check`'s estimate of the wait is, on two
//! synthetic CI days (no broker: the estimate is a pure function, the
//! same `core::wait_estimate` the broker answers with). Jobs arrive as a
//! Poisson process whose rate follows a working day (quiet at night, a
//! peak from 9:00 to 18:00 above what the seats can serve), each holding
//! its seat for a log-normal time (median 10 min); the load offered is
//! `OFFERED` times what the seats can serve, hour by hour (past 1 at the
//! two peaks, so the queue fills there and drains after); day one gives the mean
//! session length, day two is replayed through a first-come-first-served
//! queue of `--quota` seats (`history::preflight`), the estimate asked at
//! each arrival that found the pool full and set against the wait it got.
//! It fails unless at least 80 % of the estimates are within a factor of
//! two of the wait and the median error is at most a quarter of the
//! median wait.

use license_broker::history::preflight::{accuracy, replay_queue};
use license_broker::history::replay::Demand;

use crate::report::Report;

const MIN: u64 = 60_000;
const DAY: u64 = 1440 * MIN;

/// The load offered at each hour of the day, as a share of what the
/// seats serve (jobs per hour per seat × mean job length): quiet at
/// night, 0.9 through the working day, 1.3 at the 10:00 and 14:00 peaks.
const OFFERED: [f64; 24] = [
    0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.3, 1.3, 0.9, 0.9, 1.3, 1.3, 0.9, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1,
    0.1,
];

/// The median job, ms.
const MEDIAN_JOB: f64 = 10.0 * MIN as f64;

/// A seeded generator (xorshift64*): the same days every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Log-normal with median `median` ms and shape `sigma`.
    fn job(&mut self, median: f64, sigma: f64) -> u64 {
        let normal = (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
        (median * (sigma * normal).exp()) as u64
    }
}

/// One day of demand from `from` (ms) for a pool of `seats`.
fn day(rng: &mut Rng, from: u64, seats: u32, sigma: f64) -> Vec<Demand> {
    let mean_job = MEDIAN_JOB * (sigma * sigma / 2.0).exp();
    let mut out = Vec::new();
    let mut t = 0f64;
    while (t as u64) < DAY {
        let rate = OFFERED[(t as u64 / (60 * MIN)) as usize % 24] * f64::from(seats) / mean_job;
        t += -rng.unit().ln() / rate;
        let start = from + t as u64;
        out.push(Demand { start, end: start + rng.job(MEDIAN_JOB, sigma) });
    }
    out.pop();
    out
}

pub fn run(seats: u32) -> Report {
    let mut report = Report::new("preflight", "synthetic CI days (no broker)");
    report.param("seats", seats);
    for (name, sigma) in [("steady_jobs", 0.5), ("mixed_jobs", 1.0)] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let before = day(&mut rng, 0, seats, sigma);
        let mean = before.iter().map(|d| d.end - d.start).sum::<u64>() / before.len().max(1) as u64;
        let a = accuracy(&replay_queue(&day(&mut rng, DAY, seats, sigma), seats, mean));
        report.extra(&format!("{name}_sigma"), sigma);
        report.extra(&format!("{name}_mean_session_s"), mean / 1000);
        report.extra(&format!("{name}_queued"), a.queued);
        report.extra(&format!("{name}_estimated"), a.estimated);
        report.extra(&format!("{name}_median_wait_s"), a.median_wait_ms / 1000);
        report.extra(&format!("{name}_median_error_s"), a.median_error_ms / 1000);
        report.extra(&format!("{name}_within_a_minute"), (a.within_minute * 1000.0).round() / 1000.0);
        report.extra(&format!("{name}_within_double"), (a.within_double * 1000.0).round() / 1000.0);
        report.extra(&format!("{name}_short"), (a.short * 1000.0).round() / 1000.0);
        report.check(&format!("{name}: runners queued"), a.queued > 0, format!("{} of the day's jobs", a.queued));
        let near = a.within_double >= 0.8;
        report.check(&format!("{name}: ≥ 80 % within a factor of two"), near, format!("{:.3}", a.within_double));
        let median = a.median_error_ms * 4 <= a.median_wait_ms;
        let said = format!("{} s on a median wait of {} s", a.median_error_ms / 1000, a.median_wait_ms / 1000);
        report.check(&format!("{name}: median error ≤ 25 % of the median wait"), median, said);
    }
    report
}
