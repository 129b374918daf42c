//! Waiting between retries: capped exponential backoff with jitter, so a
//! client never spins and a fleet of them does not reconnect in lockstep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The next delay to wait before a retry: doubling from `first` up to
/// `max`, each drawn uniformly from its upper half ("equal jitter").
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    /// xorshift state; quality is irrelevant, only spreading matters.
    rng: u64,
}

impl Backoff {
    /// Starts at `first`, never waits longer than `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, next: first, rng: seed() }
    }

    /// The default for reconnecting to a broker: 100 ms, doubling to 5 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The delay before the next attempt (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = ceiling / 2;
        half + below(&mut self.rng, half)
    }

    /// Starts over from `first` (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// A seed for `below` that differs between processes and between
/// clients of one process.
pub(super) fn seed() -> u64 {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    // Mix in the address of the stack frame so processes started in the same nanosecond differ.
    let salt = &seed as *const u64 as u64;
    (seed ^ salt.rotate_left(32)) | 1
}

/// A duration drawn uniformly from `[0, d]`, advancing the xorshift
/// state `rng` (quality is irrelevant, only spreading matters).
pub(super) fn below(rng: &mut u64, d: Duration) -> Duration {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let spread = d.as_nanos() as u64;
    Duration::from_nanos(if spread == 0 { 0 } else { *rng % (spread + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_jitter_and_stays_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
        for ms in ceilings {
            let d = b.next_delay();
            let cap = Duration::from_millis(ms);
            assert!(d >= cap / 2 && d <= cap, "{d:?} outside [{:?}, {cap:?}]", cap / 2);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
