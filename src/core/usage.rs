//! Seat time and per-minute activity, tallied where the events happen.
//!
//! Utilization history must be exact and must cost the hot path nothing it
//! can measure, so it is not sampled and not sent anywhere per event: each
//! session-table shard keeps, per pool and under the lock it already holds
//! for the session, an `Accrual` of the current minute (admissions,
//! refusals, ends by reason, and seat-milliseconds). A minute closes lazily,
//! when the first event (or the history's harvest) of a later minute
//! arrives, so every event lands in the minute its own `now` names and seat
//! time is split at the exact minute boundary. The shell harvests the
//! closed minutes once a minute and sums the shards' shares.
//!
//! Seat time is kept without visiting live sessions: the accrual counts
//! the live sessions and the sum of their start offsets into the current
//! minute, so the minute's seat time at its end is `live × 60 s − Σ
//! offsets` plus what sessions ended during it held. An `Extremes` pair per
//! pool keeps the highest and lowest seats-in-use value the pool's counter
//! took since the last harvest (the one cross-shard quantity: the maximum
//! of a sum is not the sum of maxima).

use crate::core::time::Millis;
use crate::sync::{AtomicU32, Ordering};

/// A minute, in milliseconds.
pub const MINUTE_MS: u64 = 60_000;

/// The minute (since 1970) an instant falls in.
pub fn minute_of(t: Millis) -> u64 {
    t.0 / MINUTE_MS
}

/// What a pool did in one minute (or the share of it one shard saw).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Seat-milliseconds held by sessions during the minute.
    pub seat_ms: u64,
    /// Sessions admitted.
    pub admitted: u64,
    /// Acquires refused for the quota.
    pub rejected: u64,
    /// Sessions ended, by reason (`EndReason::ALL` order).
    pub ends: [u64; 4],
}

impl Tally {
    /// Nothing happened and no seat was held.
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }

    /// Adds `o` in.
    pub fn add(&mut self, o: &Tally) {
        self.seat_ms += o.seat_ms;
        self.admitted += o.admitted;
        self.rejected += o.rejected;
        for (e, n) in self.ends.iter_mut().zip(o.ends) {
            *e += n;
        }
    }
}

/// Minutes an accrual closed: `minute` with `tally`, then `idle` more
/// minutes in which nothing happened but `held` seats stayed in use
/// throughout (each of those minutes held `held × 60 s` of seat time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The first minute closed.
    pub minute: u64,
    /// What happened in it.
    pub tally: Tally,
    /// Minutes after it with no event.
    pub idle: u64,
    /// Sessions live through each of those.
    pub held: u64,
}

/// One pool's open minute as one shard sees it (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Accrual {
    /// The open minute.
    minute: u64,
    /// Sessions of the pool live in this shard.
    live: u64,
    /// Σ over live sessions of how far into the open minute each started
    /// (0 for those older than it), in ms.
    offsets: u64,
    /// The open minute's activity so far (seat time of ended sessions only).
    open: Tally,
    /// Seat-milliseconds of every minute closed so far (a counter).
    closed_ms: u64,
}

impl Accrual {
    /// How far into the open minute `t` is, clamped to it (a clock read
    /// on another core a moment earlier may name the minute before).
    fn offset(&self, t: Millis) -> u64 {
        t.0.saturating_sub(self.minute * MINUTE_MS).min(MINUTE_MS)
    }

    /// Closes the open minute (and any idle ones after it) if `now` is in
    /// a later one, handing what closed to `out`.
    pub fn roll(&mut self, now: Millis, out: &mut impl FnMut(Closed)) {
        let m = minute_of(now);
        if m <= self.minute {
            return;
        }
        let mut tally = self.open;
        // Each offset is at most a minute, so this never saturates; if the
        // books were ever off, a short minute beats a panic or a wrap.
        tally.seat_ms += (self.live * MINUTE_MS).saturating_sub(self.offsets);
        let idle = m - self.minute - 1;
        self.closed_ms += tally.seat_ms + idle * self.live * MINUTE_MS;
        if !tally.is_empty() || (idle > 0 && self.live > 0) {
            out(Closed { minute: self.minute, tally, idle: if self.live > 0 { idle } else { 0 }, held: self.live });
        }
        self.minute = m;
        self.offsets = 0;
        self.open = Tally::default();
    }

    /// A session started at `now` (`admitted`: a new admission, not a seat
    /// reserved for it before a restart).
    pub fn start(&mut self, now: Millis, admitted: bool, out: &mut impl FnMut(Closed)) {
        self.roll(now, out);
        self.live += 1;
        self.offsets += self.offset(now);
        self.open.admitted += u64::from(admitted);
    }

    /// A session that started at `started` ended at `now` for reason number
    /// `reason`; with `None`, it left with its org for another node (a
    /// cluster's handover): its seat time counts here, its end where it ends.
    pub fn end(&mut self, started: Millis, now: Millis, reason: Option<usize>, out: &mut impl FnMut(Closed)) {
        self.roll(now, out);
        // Its offset as `start` (or the last roll) recorded it.
        let from = if minute_of(started) < self.minute { 0 } else { self.offset(started) };
        let to = self.offset(now).max(from);
        self.offsets = self.offsets.saturating_sub(from);
        self.live = self.live.saturating_sub(1);
        self.open.seat_ms += to - from;
        if let Some(reason) = reason {
            self.open.ends[reason] += 1;
        }
    }

    /// An acquire refused for the quota at `now`.
    pub fn reject(&mut self, now: Millis, out: &mut impl FnMut(Closed)) {
        self.roll(now, out);
        self.open.rejected += 1;
    }

    /// Seat-milliseconds held up to `now` since the shard first saw the
    /// pool (closed minutes plus the open one so far): a counter that
    /// only grows while `now` does.
    pub fn seat_ms(&self, now: Millis) -> u64 {
        let open = match minute_of(now) > self.minute {
            // Not rolled yet: the whole open minute, then whole idle minutes, then part of this one.
            true => {
                let whole = (minute_of(now) - self.minute) * MINUTE_MS;
                (self.live * (whole + now.0 % MINUTE_MS)).saturating_sub(self.offsets)
            }
            false => (self.live * self.offset(now)).saturating_sub(self.offsets),
        };
        self.closed_ms + self.open.seat_ms + open
    }
}

/// The highest and lowest value a pool's seats-in-use took since the last
/// `take`: the per-minute peak and trough of the history.
///
/// Every change of the pool's seat word reports the value it produced
/// (`rose` after an increase, `fell` after a decrease, `saw` after either),
/// with an atomic max or min: a read-modify-write always acts on the
/// latest value, so no report is lost (a plain load first, to skip the
/// write, could read a value from before the harvest's swap and skip a new
/// extreme). The pool keeps these words on its seat word's cache line,
/// which the reporting core owns right after its compare-and-swap.
///
/// The harvest swaps both out, then reads the level with a read-modify-
/// write of the seat word and seeds the next window with it, so a window
/// always includes its starting level; a change ordered after that read
/// synchronises with it and reports into the next window. A report racing
/// the swap lands in one window or the other, never in neither.
#[derive(Debug)]
pub struct Extremes {
    peak: AtomicU32,
    trough: AtomicU32,
}

impl Default for Extremes {
    fn default() -> Extremes {
        Extremes { peak: AtomicU32::new(0), trough: AtomicU32::new(0) }
    }
}

impl Extremes {
    /// Seats in use just rose to `in_use`.
    pub fn rose(&self, in_use: u32) {
        // Relaxed: each word is a max (min) register on its own; ordering
        // against the seat word comes from `take` (see the type's docs).
        self.peak.fetch_max(in_use, Ordering::Relaxed);
    }

    /// Seats in use just fell to `in_use`.
    pub fn fell(&self, in_use: u32) {
        // Relaxed: see `rose`.
        self.trough.fetch_min(in_use, Ordering::Relaxed);
    }

    /// Seats in use just became `in_use` (either way).
    pub fn saw(&self, in_use: u32) {
        self.rose(in_use);
        self.fell(in_use);
    }

    /// The window's (peak, trough), starting the next one at the level
    /// `now_in_use` reads (after the swap).
    pub fn take(&self, now_in_use: impl FnOnce() -> u32) -> (u32, u32) {
        // Relaxed: see `rose`.
        let peak = self.peak.swap(0, Ordering::Relaxed);
        let trough = self.trough.swap(u32::MAX, Ordering::Relaxed);
        self.saw(now_in_use());
        (peak, trough.min(peak))
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;

    fn at(minute: u64, ms: u64) -> Millis {
        Millis(minute * MINUTE_MS + ms)
    }

    fn collect(a: &mut Accrual, now: Millis) -> Vec<Closed> {
        let mut out = Vec::new();
        a.roll(now, &mut |c| out.push(c));
        out
    }

    #[test]
    fn seat_time_splits_at_minute_boundaries() {
        let mut a = Accrual::default();
        let mut out = Vec::new();
        let mut push = |c| out.push(c);
        // Session 1 from 10:00.030 to 10:02.010; session 2 from 10:00.050 to 10:00.055.
        a.start(at(10, 30_000), true, &mut push);
        a.start(at(10, 50_000), true, &mut push);
        a.end(at(10, 50_000), at(10, 55_000), Some(0), &mut push);
        assert_eq!(a.seat_ms(at(10, 60_000)), 30_000 + 5_000);
        a.end(at(10, 30_000), at(12, 10_000), Some(1), &mut push);
        let mut closed = out;
        closed.extend(collect(&mut a, at(13, 0)));
        let first = Tally { seat_ms: 35_000, admitted: 2, rejected: 0, ends: [1, 0, 0, 0] };
        assert_eq!(closed[0], Closed { minute: 10, tally: first, idle: 1, held: 1 });
        let last = Tally { seat_ms: 10_000, ends: [0, 1, 0, 0], ..Tally::default() };
        assert_eq!(closed[1], Closed { minute: 12, tally: last, idle: 0, held: 0 });
        assert_eq!(closed.len(), 2);
        assert_eq!(a.seat_ms(at(20, 0)), 35_000 + 60_000 + 10_000);
    }

    #[test]
    fn open_seat_time_grows_with_now_and_matches_what_closes() {
        let mut a = Accrual::default();
        let mut sink = |_| {};
        a.start(at(5, 59_000), true, &mut sink);
        let readings: Vec<u64> = (0..200).map(|i| a.seat_ms(at(5, 59_000 + i * 1_000))).collect();
        assert!(readings.windows(2).all(|w| w[0] <= w[1]), "a counter never goes down");
        assert_eq!(a.seat_ms(at(8, 500)), 1_000 + 2 * MINUTE_MS + 500);
        let closed = collect(&mut a, at(8, 500));
        let total: u64 = closed.iter().map(|c| c.tally.seat_ms + c.idle * c.held * MINUTE_MS).sum();
        assert_eq!(total, 1_000 + 2 * MINUTE_MS);
        assert_eq!(a.seat_ms(at(8, 500)), 1_000 + 2 * MINUTE_MS + 500, "rolling changes no reading");
    }

    #[test]
    fn a_clock_a_moment_behind_clamps_into_the_open_minute() {
        let mut a = Accrual::default();
        let mut sink = |_| {};
        a.start(at(3, 10), true, &mut sink);
        a.start(at(2, 59_999), true, &mut sink); // read just before the other core's
        a.end(at(2, 59_999), at(3, 20), Some(0), &mut sink);
        a.end(at(3, 10), at(3, 30), Some(0), &mut sink);
        assert_eq!(a.seat_ms(at(4, 0)), 20 + 20);
    }

    #[test]
    fn extremes_include_the_level_a_window_starts_at() {
        let e = Extremes::default();
        e.saw(3);
        e.saw(1);
        e.saw(2);
        assert_eq!(e.take(|| 2), (3, 0), "the first window starts at 0");
        assert_eq!(e.take(|| 2), (2, 2), "a window with no change is its level");
        e.saw(5);
        assert_eq!(e.take(|| 5), (5, 2));
    }
}
