//! When a runner heartbeats: every third of the lease TTL, less up to a
//! fifth of that, drawn afresh for each beat.
//!
//! Runners that acquired together (a nightly matrix started by one
//! trigger, a fleet re-attaching after a broker restart) would otherwise
//! renew within the same millisecond for as long as they run, and the
//! broker would answer them as one burst every beat. Drawn afresh each
//! time, their heartbeats spread over a fifth of a beat at the first one
//! and further apart with each. Only ever earlier than a third of the
//! TTL: a lease keeps at least two thirds of its TTL in hand, as before.

use std::time::Duration;

use super::backoff::{below, seed};

/// The heartbeats of one lease.
#[derive(Clone, Debug)]
pub struct Beats {
    third: Duration,
    rng: u64,
}

impl Beats {
    /// For a lease of `ttl_ms` (at least one millisecond between beats).
    pub fn for_ttl(ttl_ms: u64) -> Beats {
        Beats { third: Duration::from_millis((ttl_ms / 3).max(1)), rng: seed() }
    }

    /// A third of the TTL: how long a heartbeat's answer may take before
    /// the broker counts as gone.
    pub fn third(&self) -> Duration {
        self.third
    }

    /// How long to wait before the next heartbeat: within
    /// `[4/5, 1] × third`.
    pub fn next_delay(&mut self) -> Duration {
        let fifth = self.third / 5;
        self.third - below(&mut self.rng, fifth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_fall_within_the_last_fifth_of_a_third_and_spread() {
        let mut b = Beats::for_ttl(30_000);
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        let (lo, hi) = (Duration::from_secs(8), Duration::from_secs(10));
        assert!(delays.iter().all(|d| (lo..=hi).contains(d)), "{delays:?}");
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*max - *min > Duration::from_secs(1), "not spread: {min:?}..{max:?}");
    }

    #[test]
    fn a_tiny_ttl_still_waits() {
        let mut b = Beats::for_ttl(1);
        assert_eq!(b.third(), Duration::from_millis(1));
        assert!(b.next_delay() > Duration::ZERO);
    }
}
