//! Seats reserved by job label (FlexNet's `RESERVE`): `pool reserve
//! --label pipeline=release --seats 2` keeps two seats of a pool that only
//! sessions carrying the label may take; the rest of the pool is shared.
//!
//! A reservation *holds* its seats in the pool's seat word, as a restart's
//! hold does: they count in `in_use` whether a session sits on them or not,
//! so no other admission can take them, and a pool's plain acquire (and a
//! pool without reservations) stays one compare-and-swap of that word. The
//! reservation's own seat word (its `LabelCap`) counts the seats it holds
//! (`limit`) and the sessions sitting on them (`in_use`): a session carrying
//! the label takes one of them by compare-and-swap of that word alone, and
//! its end gives it back to the reservation, not to the pool.
//!
//! A reservation made while the pool is full holds what is free and is
//! owed the rest: owed seats are first in line for the next seats freed
//! (the pool's `queued` bit stays set while any is owed, see `queue`).
//! Lowering or removing one gives back its free seats at once; a seat a
//! session sits on past the new size goes back to the pool when that
//! session ends (the word's `in_use` above its `limit`). Every change of a
//! reservation happens under the pool's bounds and queue locks; the sum of
//! what is reserved counts in the pool's limit like a durable holder's
//! seats (`limit`), so a durable ceiling never stands between a
//! reservation and the quota.

use std::collections::BTreeSet;

use super::labels::LabelCap;
use super::Pool;
use crate::core::seats::{SeatCount, Seats};
use crate::sync::Arc;

/// One reservation as the pool's queue keeps it (under its lock).
pub(in crate::core) struct Lane {
    /// The label's key.
    pub key: String,
    /// The label's value.
    pub value: String,
    /// Seats reserved: what the reservation holds once nothing is owed.
    pub want: u32,
    /// Seats held (`limit`: at most `want`) and sessions on them
    /// (`in_use`); its `queued` bit: someone waits in its lane.
    pub seats: Arc<Seats>,
    /// The queue's waiters carrying the label, by arrival number: its lane.
    pub waiting: BTreeSet<u64>,
}

impl Lane {
    /// Seats the reservation is still owed (the pool was full when it was made).
    pub fn owed(&self) -> u32 {
        self.want.saturating_sub(self.seats.count().limit)
    }
}

/// A reservation as listed: its label, size, and use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationUse {
    /// The label's key.
    pub key: String,
    /// The label's value.
    pub value: String,
    /// Seats reserved.
    pub seats: u32,
    /// Sessions sitting on them now.
    pub in_use: u32,
    /// Seats the reservation holds now (below `seats` while the pool owes it some).
    pub held: u32,
}

/// A reservation's lane at an instant, as the preflight reads it.
pub(in crate::core) struct LaneNow {
    /// The reservation's word (to tell the sessions on its seats).
    pub seats: Arc<Seats>,
    /// Runners waiting in its lane.
    pub waiting: u32,
    /// Its seats held and free.
    pub free: u32,
}

impl Pool {
    /// Reserves `seats` seats of the pool for the sessions carrying
    /// `key=value` (0: removes the reservation). The caller has checked
    /// that the pool's reservations add up to at most its quota.
    pub fn set_reservation(&self, key: &str, value: &str, seats: u32) {
        let mut b = self.bounds.lock();
        let mut q = self.queue.lock();
        let found = q.lanes.iter().position(|l| l.key == key && l.value == value);
        let old = found.map_or(0, |i| q.lanes[i].want);
        b.reserved = b.reserved.saturating_sub(old).saturating_add(seats);
        let i = match found {
            Some(i) => i,
            None if seats == 0 => return,
            None => {
                let (key, value) = (key.to_string(), value.to_string());
                let (seats, waiting) = (Arc::new(Seats::new(0)), BTreeSet::new());
                q.lanes.push(Lane { key, value, want: 0, seats, waiting });
                q.lanes.len() - 1
            }
        };
        q.lanes[i].want = seats;
        q.join_new_lane(i);
        let word = q.lanes[i].seats.clone();
        let back = shrink(&word, seats);
        let limit = b.limit();
        let owed_elsewhere: u32 = q.lanes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, l)| l.owed()).sum();
        let short = seats.saturating_sub(word.count().limit);
        // Sessions past a lowered reservation's limit sit on seats the
        // pool's word already counts: a raise takes those back first (in
        // the word's own step, so one ending meanwhile is counted once).
        let short = short - readopt(&word, short);
        let waiting = q.len() > 0;
        let mut took = 0;
        let after = self.seats.update(|c| {
            let in_use = c.in_use.saturating_sub(back);
            took = short.min(limit.saturating_sub(in_use));
            let queued = waiting || owed_elsewhere + short - took > 0;
            Some(SeatCount { limit, in_use: in_use + took, queued })
        });
        let _ = word.update(|c| Some(SeatCount { limit: c.limit + took, ..c }));
        if seats == 0 {
            q.lanes.remove(i);
        }
        self.mirror(&q.lanes);
        drop(q);
        self.freed(self.seen(after.unwrap_or_else(|c| c)));
    }

    /// Publishes the lanes' words for tickets to carry (`None`: no reservation).
    fn mirror(&self, lanes: &[Lane]) {
        let copy = |l: &Lane| LabelCap { key: l.key.clone(), value: l.value.clone(), seats: l.seats.clone() };
        let mut list: Vec<LabelCap> = lanes.iter().map(copy).collect();
        list.sort_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
        self.caps.lock().reserved = (!list.is_empty()).then(|| Arc::new(list));
    }

    /// Takes a seat of the first of `words` (reservations the session's
    /// labels match) with a free one: the session's seat, already counted
    /// in the pool's word. `None`: every one is full (or has waiters).
    pub(in crate::core) fn take_reserved_seat(words: &[Arc<Seats>]) -> Option<Arc<Seats>> {
        words.iter().find(|w| w.try_acquire().is_ok()).cloned()
    }

    /// Gives back the reserved seat of an ended session (or a dropped
    /// grant): to its reservation, whose lane's head gets it at once if
    /// `hand_on`, or to the pool if the reservation was lowered below the
    /// sessions on it since.
    pub(in crate::core) fn return_reserved_seat(&self, word: &Seats, hand_on: bool) {
        let mut excess = false;
        let after = word.update(|c| {
            excess = c.in_use > c.limit;
            Some(SeatCount { in_use: c.in_use.saturating_sub(1), ..c })
        });
        // Invariant: the closure never refuses.
        let after = after.unwrap_or_else(|c| c);
        match (excess, hand_on) {
            (true, true) => self.return_seat(),
            (true, false) => _ = self.seen(self.seats.release(1)),
            (false, _) if hand_on && after.queued => self.pump(),
            (false, _) => {}
        }
    }

    /// The pool's reservations, sorted by label.
    pub fn reservations(&self) -> Vec<ReservationUse> {
        let q = self.queue.lock();
        let mut out: Vec<ReservationUse> = q
            .lanes
            .iter()
            .map(|l| {
                let c = l.seats.count();
                let (key, value) = (l.key.clone(), l.value.clone());
                ReservationUse { key, value, seats: l.want, in_use: c.in_use.min(c.limit), held: c.limit }
            })
            .collect();
        out.sort_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
        out
    }

    /// The lanes of the reservations `labels` match, as a runner carrying
    /// them would find them now (the preflight's estimate).
    pub(in crate::core) fn lanes_for(&self, labels: &crate::value::Labels) -> Vec<LaneNow> {
        let q = self.queue.lock();
        let carries = |l: &&Lane| labels.get(&l.key) == Some(l.value.as_str());
        let now = |l: &Lane| {
            let c = l.seats.count();
            let free = c.limit.saturating_sub(c.in_use);
            LaneNow { seats: l.seats.clone(), waiting: l.waiting.len() as u32, free }
        };
        q.lanes.iter().filter(carries).map(now).collect()
    }

    /// Free seats of the reservations `labels` match whose lanes nobody
    /// waits in: what a session carrying them may take now (the preflight).
    pub fn reserved_free_for(&self, labels: &crate::value::Labels) -> u32 {
        let Some(lanes) = self.caps.lock().reserved.clone() else { return 0 };
        let free = |c: SeatCount| if c.queued { 0 } else { c.limit.saturating_sub(c.in_use) };
        lanes.iter().filter(|l| l.matches(labels)).map(|l| free(l.seats.count())).sum()
    }

    /// Shrinks the seats the reservations hold to `room` in all, the rest
    /// owed to them again (the next seats freed go to them, ahead of any
    /// waiter); how many they gave back to the pool's word. Only free
    /// reserved seats go back. Callers hold the bounds lock.
    pub(super) fn owe_past(&self, room: u32) -> u32 {
        let q = self.queue.lock();
        let held: u32 = q.lanes.iter().map(|l| l.seats.count().limit).sum();
        let mut excess = held.saturating_sub(room);
        let mut back = 0;
        for lane in q.lanes.iter().rev() {
            let mut gave = 0;
            let _ = lane.seats.update(|c| {
                gave = excess.min(c.limit.saturating_sub(c.in_use));
                Some(SeatCount { limit: c.limit - gave, ..c })
            });
            (excess, back) = (excess - gave, back + gave);
        }
        if back > 0 {
            // Owed seats hold newcomers back and make a freed seat pump.
            let _ = self.seats.update(|c| Some(SeatCount { queued: true, ..c }));
        }
        back
    }

    /// Seats reservations hold (sessions on them or not), for the ceiling's
    /// count of the seats shared sessions hold. Callers hold the bounds lock.
    pub(super) fn reserved_held(&self, reserved: u32) -> u32 {
        match reserved {
            0 => 0,
            _ => self.queue.lock().lanes.iter().map(|l| l.seats.count().limit).sum(),
        }
    }
}

/// Raises `word`'s limit by up to `short` over the sessions on it past
/// its limit; how many.
fn readopt(word: &Seats, short: u32) -> u32 {
    let mut taken = 0;
    let _ = word.update(|c| {
        taken = short.min(c.in_use.saturating_sub(c.limit));
        Some(SeatCount { limit: c.limit + taken, ..c })
    });
    taken
}

/// Lowers a reservation's word to at most `seats` held, and returns how
/// many of the seats it held are free to go back to the pool (those a
/// session sits on go back when it ends: `return_reserved_seat`).
fn shrink(word: &Seats, seats: u32) -> u32 {
    let mut back = 0;
    let _ = word.update(|c| {
        back = c.limit.saturating_sub(c.in_use.max(seats));
        Some(SeatCount { limit: c.limit.min(seats), ..c })
    });
    back
}
