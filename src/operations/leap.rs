//! Watches the wall clock against the broker's own, which is anchored to
//! the wall clock at start and advanced by the monotonic clock after that
//! (`crate::clock`). A running broker never follows a step of the wall
//! clock, so a leap forward frees nothing early (no lease, offline license
//! or subscription ends before its time); this module says that one
//! happened: a warning, a count (`lbroker_clock_leaps_total`) and how far
//! the wall clock now reads ahead (`lbroker_clock_wall_ahead_seconds`).
//! The next start judges the wall clock against the last recorded time,
//! which is the broker's own: beyond `--max-clock-leap` it is refused
//! until an operator confirms the time (`--allow-clock-leap`). Read at
//! each checkpoint, off the hot path.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::clock::Clock;

/// A gain of the wall clock on the broker's this large between two
/// checkpoints is a leap (a step, not drift or slewing).
pub const LEAP: Duration = Duration::from_secs(60);

/// Leaps seen, and the wall clock's lead at the last look.
#[derive(Debug)]
pub struct Leaps {
    /// Leaps forward seen in this run.
    count: AtomicU64,
    /// The wall clock's lead over the broker's clock at the last look, ms.
    lead_ms: AtomicI64,
}

impl Leaps {
    /// Starts watching from the wall clock's lead now (`--clock-ahead`
    /// makes it negative; only changes of it count).
    pub fn new(clock: &Clock) -> Leaps {
        Leaps { count: AtomicU64::new(0), lead_ms: AtomicI64::new(clock.wall_lead()) }
    }

    /// Looks at the wall clock again; true (logged and counted) when it
    /// gained at least `LEAP` on the broker's since the last look.
    pub fn observe(&self, clock: &Clock) -> bool {
        let lead = clock.wall_lead();
        // Relaxed: one task looks; scrapes read a recent value, nothing is ordered by it.
        let gained = lead - self.lead_ms.swap(lead, Relaxed);
        if gained < LEAP.as_millis() as i64 {
            return false;
        }
        self.count.fetch_add(1, Relaxed);
        tracing::warn!(
            leap_s = gained / 1000,
            wall_ahead_s = lead / 1000,
            "the wall clock leapt ahead of the broker's: the broker keeps its own time, so nothing expires early; \
             a restart on this clock is refused past --max-clock-leap unless started with --allow-clock-leap"
        );
        true
    }

    /// Leaps seen in this run.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// How far the wall clock read ahead of the broker's at the last look, ms.
    pub fn wall_ahead_ms(&self) -> i64 {
        self.lead_ms.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that starts `behind` the wall clock reads as the wall clock
    /// having leapt by that much when looked at again.
    #[test]
    fn a_gain_of_a_minute_is_a_leap_and_is_counted_once() {
        let clock = Clock::new();
        let leaps = Leaps::new(&clock);
        assert!(!leaps.observe(&clock), "a clock keeping time has not leapt");
        // The broker's clock an hour behind its wall clock: as if the wall leapt an hour.
        leaps.lead_ms.fetch_sub(3_600_000, Relaxed);
        assert!(leaps.observe(&clock));
        assert!(!leaps.observe(&clock), "the same leap is not counted again");
        assert_eq!(leaps.count(), 1);
        assert!(leaps.wall_ahead_ms().abs() < 1_000);
    }
}
