//! How good the preflight's estimate of the wait (`core::wait_estimate`)
//! is on recorded demand: replays a day's sessions through a pool of
//! `seats` seats with a first-come-first-served queue (as `runner --wait`
//! is served), asks the estimate at each arrival that finds the pool full,
//! exactly as `check` would have been answered then, and pairs it with the
//! wait the replay then gave that arrival.
//!
//! Each session holds its seat for its recorded length from the moment
//! the replay admits it, so a queued one ends later than it did. The
//! estimate is given the mean it would have had: the caller passes the
//! mean session length of the day before. Pure: no I/O, no clock.

use std::collections::VecDeque;

use super::replay::Demand;
use crate::core::{wait_estimate, Millis};

/// One arrival that found the pool full: what the preflight would have
/// said, and what it then waited (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked {
    /// The estimate (`None`: none could be given).
    pub estimate: Option<u64>,
    /// The wait the replay gave it.
    pub waited: u64,
}

/// A seat held in the replay: (admitted at, held until).
type Held = (u64, u64);

/// Replays `demand` (sorted by start) on `seats` seats with a queue,
/// estimating with sessions of `mean` ms: every arrival that queued.
pub fn replay_queue(demand: &[Demand], seats: u32, mean: u64) -> Vec<Asked> {
    let mut held: Vec<Held> = Vec::with_capacity(seats as usize);
    // (arrived at, length, estimate) of each waiter, first come first.
    let mut queue: VecDeque<(u64, u64, Option<u64>)> = VecDeque::new();
    let mut asked = Vec::new();
    for d in demand {
        free_until(d.start, &mut held, &mut queue, &mut asked);
        let length = d.end.saturating_sub(d.start);
        if held.len() < seats as usize && queue.is_empty() {
            held.push((d.start, d.start + length));
            continue;
        }
        let starts: Vec<Millis> = held.iter().map(|h| Millis(h.0)).collect();
        let free = seats.saturating_sub(held.len() as u32);
        let estimate = wait_estimate(Millis(d.start), queue.len() as u32 + 1, free, &starts, mean);
        queue.push_back((d.start, length, estimate));
    }
    free_until(u64::MAX, &mut held, &mut queue, &mut asked);
    asked
}

/// Ends the held sessions due by `t`, in end order, each handing its seat
/// to the head waiter at that instant.
fn free_until(t: u64, held: &mut Vec<Held>, queue: &mut VecDeque<(u64, u64, Option<u64>)>, asked: &mut Vec<Asked>) {
    loop {
        let Some((i, &(_, end))) = held.iter().enumerate().min_by_key(|(_, h)| h.1) else {
            return;
        };
        if end > t {
            return;
        }
        held.swap_remove(i);
        if let Some((arrived, length, estimate)) = queue.pop_front() {
            asked.push(Asked { estimate, waited: end - arrived });
            held.push((end, end + length));
        }
    }
}

/// How close the estimates came: of the arrivals that queued, how many
/// got one, the median of |estimate - wait|, and the shares within a
/// minute and within a factor of two of the wait (both within a minute
/// when the wait was under one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accuracy {
    /// Arrivals that found the pool full.
    pub queued: usize,
    /// Of them, those given an estimate.
    pub estimated: usize,
    /// Median absolute error, ms.
    pub median_error_ms: u64,
    /// Median wait, ms.
    pub median_wait_ms: u64,
    /// Share of the estimates within a minute of the wait.
    pub within_minute: f64,
    /// Share within a factor of two (or a minute).
    pub within_double: f64,
    /// Share of the estimates shorter than the wait.
    pub short: f64,
}

/// Summarises `asked`.
pub fn accuracy(asked: &[Asked]) -> Accuracy {
    let pairs: Vec<(u64, u64)> = asked.iter().filter_map(|a| a.estimate.map(|e| (e, a.waited))).collect();
    let share = |ok: &dyn Fn(u64, u64) -> bool| match pairs.len() {
        0 => 0.0,
        n => pairs.iter().filter(|(e, w)| ok(*e, *w)).count() as f64 / n as f64,
    };
    let mut errors: Vec<u64> = pairs.iter().map(|(e, w)| e.abs_diff(*w)).collect();
    let mut waits: Vec<u64> = asked.iter().map(|a| a.waited).collect();
    Accuracy {
        queued: asked.len(),
        estimated: pairs.len(),
        median_error_ms: median(&mut errors),
        median_wait_ms: median(&mut waits),
        within_minute: share(&|e, w| e.abs_diff(w) <= 60_000),
        within_double: share(&|e, w| e.abs_diff(w) <= 60_000 || (e <= 2 * w && w <= 2 * e)),
        short: share(&|e, w| e < w),
    }
}

fn median(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable(mid).1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn d(start: u64, minutes: u64) -> Demand {
        Demand { start: start * MIN, end: (start + minutes) * MIN }
    }

    /// Sessions of exactly the mean: the estimate is the wait.
    #[test]
    fn sessions_of_the_mean_length_are_estimated_exactly() {
        // One seat; 10-minute jobs arriving at 0, 2 and 3.
        let asked = replay_queue(&[d(0, 10), d(2, 10), d(3, 10)], 1, 10 * MIN);
        assert_eq!(
            asked,
            [Asked { estimate: Some(8 * MIN), waited: 8 * MIN }, Asked { estimate: Some(17 * MIN), waited: 17 * MIN }]
        );
        let a = accuracy(&asked);
        assert_eq!((a.queued, a.estimated, a.median_error_ms, a.within_minute), (2, 2, 0, 1.0));
    }

    /// A job longer than the mean makes the next one wait longer than said.
    #[test]
    fn a_long_job_is_underestimated_and_said_so() {
        let asked = replay_queue(&[d(0, 30), d(1, 10)], 1, 10 * MIN);
        assert_eq!(asked, [Asked { estimate: Some(9 * MIN), waited: 29 * MIN }]);
        let a = accuracy(&asked);
        assert_eq!((a.median_error_ms, a.within_minute, a.within_double, a.short), (20 * MIN, 0.0, 0.0, 1.0));
    }

    #[test]
    fn nobody_queues_while_a_seat_is_free() {
        assert!(replay_queue(&[d(0, 10), d(1, 10)], 2, 10 * MIN).is_empty());
    }
}
