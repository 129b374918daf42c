//! The real clock, read only here: Unix milliseconds that never go backwards.
//!
//! Anchored to the wall clock once at start and advanced by tokio's
//! monotonic clock after that, so a wall-clock step (NTP, an operator) can
//! neither expire every lease at once nor keep dead ones alive, and a test
//! that pauses tokio's clock (`tokio::time::pause`) drives leases with
//! `tokio::time::advance` instead of sleeping on wall time. How far the
//! wall clock has moved from it (`wall_lead`) is watched, not followed: a
//! leap is logged and counted (`operations::leap`), and the next start
//! judges it (`--max-clock-leap`).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::core::Millis;

/// Source of `now` for the core.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_at_start: u64,
    start: Instant,
}

impl Clock {
    /// A clock anchored to the current wall time.
    pub fn new() -> Clock {
        Clock::ahead(std::time::Duration::ZERO)
    }

    /// A clock running `ahead` of the wall time (for rehearsing clock trouble).
    pub fn ahead(ahead: std::time::Duration) -> Clock {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Clock { wall_at_start: wall.saturating_add(ahead.as_millis() as u64), start: Instant::now() }
    }

    /// The current instant.
    pub fn now(&self) -> Millis {
        Millis(self.wall_at_start + self.start.elapsed().as_millis() as u64)
    }

    /// How far the wall clock reads ahead of this clock, in milliseconds
    /// (negative: behind). Constant while the wall clock keeps time; a
    /// step of the wall clock moves it by the step.
    pub fn wall_lead(&self) -> i64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        wall - self.now().0 as i64
    }

    /// The tokio instant at which `deadline` falls.
    pub fn instant_of(&self, deadline: Millis) -> tokio::time::Instant {
        let offset = deadline.0.saturating_sub(self.wall_at_start);
        // Cap at ten years: no lease is that long, and Instant + Duration must not overflow.
        let offset = std::time::Duration::from_millis(offset.min(10 * 365 * crate::core::DAY_MS));
        self.start + offset
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Tests drive the broker's time with tokio's paused clock: no sleeping
    /// on wall time, and leases fall due exactly when the test says.
    #[tokio::test(start_paused = true)]
    async fn follows_the_paused_tokio_clock() {
        let clock = Clock::new();
        let start = clock.now();
        let deadline = start.after(Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(clock.now().0 - start.0, 10_000);
        assert_eq!(clock.instant_of(deadline) - Instant::now(), Duration::from_secs(20));
        tokio::time::sleep_until(clock.instant_of(deadline)).await;
        assert_eq!(clock.now(), deadline, "the expiry task wakes exactly at a lease's deadline");
    }
}
