//! Right-sizing: replays recorded demand against a different seat count.
//!
//! The demand is every session the pool held in the range (its start and
//! end, from the ended-session rows and the sessions still live) plus
//! every admission refused for want of a seat (`QUOTA_EXCEEDED`,
//! `QUEUE_FULL`, `QUEUE_TIMEOUT`), replayed as a session of the pool's
//! median length starting in the middle of the minute it was refused in.
//! For a seat count N the replay admits each arrival if fewer than N
//! seats are held and refuses it otherwise, and reports the refusals and
//! the share of the range spent with all N seats held.
//!
//! What it cannot know, and says in its docs: a refused runner that
//! retried shows up once per retry (so demand above the quota that was is
//! an upper bound), and a session refused in the replay does not come
//! back later (so below the quota that was, refusals are a lower bound).
//! Pure: no I/O, no clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One wish for a seat, from `start` to `end` (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Demand {
    /// When the seat was wanted.
    pub start: u64,
    /// When it would have been given back.
    pub end: u64,
}

/// What `seats` seats would have done with the demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The seat count replayed.
    pub seats: u32,
    /// Wishes granted.
    pub admitted: u64,
    /// Wishes refused.
    pub denied: u64,
    /// Time with every seat held, in ms.
    pub at_capacity_ms: u64,
    /// The range's length, in ms.
    pub span_ms: u64,
}

impl Outcome {
    /// Share of the range spent at capacity (0 to 1).
    pub fn at_capacity(&self) -> f64 {
        match self.span_ms {
            0 => 0.0,
            span => self.at_capacity_ms as f64 / span as f64,
        }
    }
}

/// The median length of the sessions (for replaying refusals); one minute
/// when there are none.
pub fn median_length(sessions: &[Demand]) -> u64 {
    let mut lengths: Vec<u64> = sessions.iter().map(|d| d.end.saturating_sub(d.start)).collect();
    if lengths.is_empty() {
        return 60_000;
    }
    let mid = lengths.len() / 2;
    *lengths.select_nth_unstable(mid).1
}

/// Replays `demand` (sorted by start) within `from..to` against `seats`.
pub fn replay(demand: &[Demand], seats: u32, from: u64, to: u64) -> Outcome {
    let mut out = Outcome { seats, admitted: 0, denied: 0, at_capacity_ms: 0, span_ms: to.saturating_sub(from) };
    let mut held: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    let mut last = from;
    // Moves the replay's clock to `t`, counting the time spent full.
    let advance = |t: u64, busy: usize, last: &mut u64, out: &mut Outcome| {
        let t = t.clamp(*last, to);
        if busy == seats as usize {
            out.at_capacity_ms += t - *last;
        }
        *last = t;
    };
    for d in demand {
        let start = d.start.max(from);
        if start >= to {
            break;
        }
        while let Some(&Reverse(end)) = held.peek() {
            if end > start {
                break;
            }
            advance(end, held.len(), &mut last, &mut out);
            held.pop();
        }
        advance(start, held.len(), &mut last, &mut out);
        if held.len() < seats as usize {
            held.push(Reverse(d.end.min(to).max(start)));
            out.admitted += 1;
        } else {
            out.denied += 1;
        }
    }
    while let Some(Reverse(end)) = held.pop() {
        advance(end, held.len() + 1, &mut last, &mut out);
    }
    advance(to, 0, &mut last, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(start: u64, end: u64) -> Demand {
        Demand { start, end }
    }

    #[test]
    fn fewer_seats_refuse_the_overlap_and_more_refuse_nothing() {
        // Three sessions overlapping from 20 to 30, two from 10 to 40.
        let demand = [d(0, 40), d(10, 50), d(20, 30)];
        let two = replay(&demand, 2, 0, 100);
        assert_eq!((two.admitted, two.denied), (2, 1));
        // Full (2 held) from 10 to 40.
        assert_eq!(two.at_capacity_ms, 30);
        let three = replay(&demand, 3, 0, 100);
        assert_eq!((three.admitted, three.denied, three.at_capacity_ms), (3, 0, 10));
        let one = replay(&demand, 1, 0, 100);
        assert_eq!((one.admitted, one.denied, one.at_capacity_ms), (1, 2, 40));
        let none = replay(&demand, 0, 0, 100);
        assert_eq!((none.admitted, none.denied, none.at_capacity_ms), (0, 3, 100));
    }

    #[test]
    fn a_freed_seat_at_the_instant_of_an_arrival_is_free() {
        let demand = [d(0, 10), d(10, 20)];
        let one = replay(&demand, 1, 0, 20);
        assert_eq!((one.admitted, one.denied, one.at_capacity_ms), (2, 0, 20));
    }

    #[test]
    fn the_range_clips_the_demand() {
        let demand = [d(0, 1_000), d(500, 600)];
        let one = replay(&demand, 1, 100, 300);
        assert_eq!((one.admitted, one.denied, one.at_capacity_ms, one.span_ms), (1, 0, 200, 200));
        assert_eq!(one.at_capacity(), 1.0);
    }

    #[test]
    fn the_median_of_the_lengths() {
        assert_eq!(median_length(&[d(0, 10), d(0, 30), d(5, 25)]), 20);
        assert_eq!(median_length(&[]), 60_000);
    }
}
