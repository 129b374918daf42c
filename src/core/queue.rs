//! A pool's wait queue: runners that asked to wait for a seat, first come
//! first admitted.
//!
//! Fairness is enforced by the seat word, not by politeness: while the
//! queue is not empty its `queued` bit is set and every plain acquire is
//! refused, so a freed seat can only go to the head waiter. The bit and the
//! queue change together, under the queue's lock; a release that finds the
//! bit set hands its seat on (`Pool::pump`) in the same call that freed it.
//!
//! A waiter is given its seat as a `Grant`: a seat already counted in the
//! pool's `in_use`, held by nobody yet. The shell turns it into a session
//! (`Broker::claim`). A grant that is dropped instead (its waiter gave up,
//! its connection closed, its claim failed) gives the seat back, which
//! hands it to the next waiter: a seat granted is never lost and never
//! given twice. (Modelled in loom-tests.)
//!
//! In a pool with seats reserved by job label (`pool::lanes`) the queue
//! has lanes: a waiter whose labels match a reservation waits in its lane
//! too, and a seat freed in a reservation goes to the head of its lane (or
//! stays reserved-free if nobody there waits); a shared seat goes to the
//! head of the whole queue, since everyone may take one. First come first
//! admitted within each lane; a reservation's own `queued` bit holds
//! newcomers carrying its label back while its lane is not empty.
//!
//! The core never learns how a grant reaches its waiter: the shell supplies
//! a `Deliver` closure when it enqueues, which the core calls once, outside
//! its locks, with the grant. A closure that cannot deliver (the waiter is
//! gone) hands the grant back, and the seat goes to the next waiter.

use std::collections::BTreeMap;

use super::error::{Error, Result};
use super::pool::lanes::Lane;
use super::pool::Pool;
use super::seats::{SeatCount, Seats};
use crate::sync::Arc;

/// Hands a granted seat to its waiter; gives it back if the waiter is gone.
pub type Deliver = Box<dyn FnOnce(Grant) -> std::result::Result<(), Grant> + Send>;

/// A waiter's place in its pool's queue, to leave it by.
#[derive(Clone)]
pub struct Place {
    pool: Arc<Pool>,
    seq: u64,
    /// 1-based position when it joined (1: next to be admitted).
    pub position: u32,
    /// The waiter's hold on its machine, in a pool that tracks machine
    /// use: given back when the last copy of the place is dropped.
    hold: Option<Arc<super::pool::tenure::WaiterHold>>,
}

impl Place {
    /// The same place, holding the waiter's machine while it waits.
    pub(super) fn holding(mut self, hold: Option<super::pool::tenure::WaiterHold>) -> Place {
        self.hold = hold.map(Arc::new);
        self
    }

    /// The pool's queue alert: how long a wait is told of, if at all.
    pub fn queue_alert(&self) -> Option<std::time::Duration> {
        self.pool.alerts().queue_wait
    }

    /// The org and pool of the queue.
    pub fn pool(&self) -> (&super::id::OrgName, super::pool::PoolId) {
        (&self.pool.org, self.pool.id)
    }

    /// Leaves the queue. False if the waiter was no longer in it: its seat
    /// was granted (and is being, or was, delivered).
    pub fn leave(&self) -> bool {
        self.pool.leave_queue(self.seq)
    }
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Place({}/{} #{} at {})", self.pool.org, self.pool.id, self.seq, self.position)
    }
}

/// A seat counted in its pool's `in_use` and promised to one waiter. Turn
/// it into a session with `Broker::claim`; dropped, it gives the seat back
/// (to the next waiter first).
#[must_use = "a grant dropped gives its seat back"]
pub struct Grant {
    pool: Arc<Pool>,
    /// The reservation the seat is one of (`None`: a shared seat).
    lane: Option<Arc<Seats>>,
    armed: bool,
}

impl Grant {
    pub(super) fn new(pool: Arc<Pool>) -> Grant {
        Grant { pool, lane: None, armed: true }
    }

    /// The reservation the seat is one of, if it is a reserved seat.
    pub(super) fn lane(&self) -> Option<Arc<Seats>> {
        self.lane.clone()
    }

    /// Gives a reserved seat back without handing it on (the pump that
    /// calls this goes on to the next waiter itself).
    fn quiet(mut self) {
        self.armed = false;
        if let Some(lane) = self.lane.take() {
            self.pool.return_reserved_seat(&lane, false);
        }
    }

    /// The pool the seat is in.
    pub(super) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The seat now belongs to a session, which returns it when it ends.
    pub(super) fn consume(mut self) {
        self.armed = false;
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        match (self.armed, &self.lane) {
            (false, _) => {}
            (true, None) => self.pool.return_seat(),
            (true, Some(lane)) => self.pool.return_reserved_seat(lane, true),
        }
    }
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grant({}/{})", self.pool.org, self.pool.id)
    }
}

/// What joining the queue gave.
#[derive(Debug)]
pub enum Joined {
    /// A seat was free and nobody waited: it is granted at once.
    Seat(Grant),
    /// Queued; the grant comes through the `Deliver` closure.
    Waiting(Place),
}

/// The waiters of one pool, in arrival order, and its reservations.
#[derive(Default)]
pub(super) struct WaitQueue {
    /// Arrival number → the waiter.
    waiting: BTreeMap<u64, Waiter>,
    next: u64,
    /// The pool's reservations by job label (`pool::lanes`): what each
    /// holds changes under this lock, as the `queued` bit does, since seats
    /// owed to a reservation are first in line for the next seat freed.
    pub lanes: Vec<Lane>,
}

/// One queued runner.
struct Waiter {
    /// How to hand it its seat.
    deliver: Deliver,
    /// The pool, for the grant to return its seat to. (The pool holds its
    /// waiters and each holds the pool; the cycle ends when the waiter
    /// leaves the queue, which every waiter does: granted, gone or timed out.)
    pool: Arc<Pool>,
    /// Its job's labels: a reservation made while it waits takes it into
    /// its lane (`WaitQueue::join_new_lane`).
    labels: crate::value::Labels,
}

impl WaitQueue {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Seats owed to reservations (none in a pool without any).
    fn owed(&self) -> u32 {
        self.lanes.iter().map(Lane::owed).sum()
    }
}

impl Pool {
    /// Joins the queue, or takes a seat at once if one is free and nobody
    /// waits. Refuses with `QueueFull` past `max` waiters, and with
    /// `CeilingReached` when only the durable ceiling (not the quota) is in
    /// the way, so the caller raises it and tries again rather than wait
    /// for a seat the quota allows.
    /// `lanes`: the reservations the waiter's labels match (its lanes).
    pub fn join_queue(
        pool: &Arc<Pool>,
        (deliver, labels): (Deliver, &crate::value::Labels),
        max: u32,
        lanes: Option<&[Arc<Seats>]>,
    ) -> Result<Joined> {
        let joined = Self::enqueue(pool, (deliver, labels), max, lanes);
        if matches!(joined, Ok(Joined::Waiting(_))) && lanes.is_some() {
            // A reserved seat freed since the waiter's own try found none
            // saw no lane waiter, and handed nothing on: this does.
            pool.pump();
        }
        joined
    }

    fn enqueue(
        pool: &Arc<Pool>,
        (deliver, labels): (Deliver, &crate::value::Labels),
        max: u32,
        lanes: Option<&[Arc<Seats>]>,
    ) -> Result<Joined> {
        let this: &Pool = pool;
        let mut q = this.queue.lock();
        let quota = this.quota();
        let len = q.len() as u32;
        let mut seat = false;
        let update = this.seats.update(|c| {
            seat = c.in_use < c.limit && !c.queued;
            match seat {
                true => Some(SeatCount { in_use: c.in_use + 1, ..c }),
                false if c.in_use < quota && c.limit < quota => None,
                false if len >= max => None,
                false => Some(SeatCount { queued: true, ..c }),
            }
        });
        match update.map(|c| this.rose(c)) {
            Ok(_) if seat => Ok(Joined::Seat(Grant::new(pool.clone()))),
            Ok(_) => {
                let seq = q.next;
                q.next += 1;
                q.waiting.insert(seq, Waiter { deliver, pool: pool.clone(), labels: labels.clone() });
                q.join_lanes(seq, lanes.unwrap_or(&[]));
                // Relaxed: a statistic.
                this.queued.fetch_add(1, crate::sync::Ordering::Relaxed);
                Ok(Joined::Waiting(Place { pool: pool.clone(), seq, position: len + 1, hold: None }))
            }
            Err(c) if c.in_use < quota && c.limit < quota => Err(Error::CeilingReached),
            Err(_) => Err(Error::QueueFull { max }),
        }
    }

    /// Removes waiter `seq`; false if it is no longer queued.
    fn leave_queue(&self, seq: u64) -> bool {
        let mut q = self.queue.lock();
        if q.unqueue(seq).is_none() {
            return false;
        }
        if q.waiting.is_empty() && q.owed() == 0 {
            let _ = self.seats.update(|c| Some(SeatCount { queued: false, ..c }));
            // The bit was what held newcomers back from any free seat; they
            // may take one now. Nothing to hand on: the queue is empty.
        }
        true
    }

    /// Waiters in the queue.
    pub fn waiting(&self) -> u32 {
        self.queue.lock().len() as u32
    }

    /// Hands free seats to the head waiters while there are both (to the
    /// reservations owed seats first, then each lane's head its lane's free
    /// seats, then the queue's head a shared one). Called after every
    /// change that can free a seat or raise the limit while a `queued` bit
    /// is set. Deliveries run outside the queue's lock; a waiter that is
    /// gone hands its seat back, and the loop offers it to the next one.
    pub(super) fn pump(&self) {
        // A shared seat handed back by a waiter that was gone: still counted.
        let mut spare: Option<Grant> = None;
        loop {
            let next = self.next_grant(&mut self.queue.lock(), &mut spare);
            let Some((Waiter { deliver, pool, .. }, lane)) = next else { break };
            let grant = match lane {
                Some(lane) => Grant { pool, lane: Some(lane), armed: true },
                None => spare.take().unwrap_or_else(|| Grant::new(pool)),
            };
            match deliver(grant) {
                Ok(()) => {}
                Err(back) if back.lane.is_some() => back.quiet(),
                Err(back) => spare = Some(back),
            }
        }
        // Dropped here, a spare seat goes back; the queue was empty or full
        // up, so the release does not come back here for long.
        drop(spare);
    }

    /// Under the queue's lock: the next waiter to hand a seat to, with the
    /// reservation the seat is one of (`None`: a shared seat, taken here,
    /// or the spare one).
    fn next_grant(&self, q: &mut WaitQueue, spare: &mut Option<Grant>) -> Option<(Waiter, Option<Arc<Seats>>)> {
        if !q.lanes.is_empty() {
            while self.fill_lane(q, spare) {}
            if let Some(granted) = self.lane_head(q) {
                return Some(granted);
            }
        }
        let seq = q.waiting.first_key_value().map(|(&seq, _)| seq)?;
        let last = q.len() == 1 && q.owed() == 0;
        let has_spare = spare.is_some();
        let taken = self.seats.update(|c| {
            // A spare seat is already in `in_use`: it may pass on while
            // that is within the limit (a quota lowered meanwhile takes it
            // back instead).
            let room = if has_spare { c.in_use <= c.limit } else { c.in_use < c.limit };
            let in_use = if has_spare { c.in_use } else { c.in_use + 1 };
            room.then_some(SeatCount { in_use, queued: !last, ..c })
        });
        self.rose(taken.ok()?);
        // Invariant: `seq` was found under this same lock.
        Some((q.unqueue(seq).expect("head waiter present"), None))
    }

    /// The head of the first lane whose reservation has a free seat, with
    /// that seat taken for it (and the pool's bit cleared if it was the
    /// last waiter and nothing is owed).
    fn lane_head(&self, q: &mut WaitQueue) -> Option<(Waiter, Option<Arc<Seats>>)> {
        let (seq, word) = q.lanes.iter().find_map(|l| {
            let seq = *l.waiting.first()?;
            let more = l.waiting.len() > 1;
            let taken = l
                .seats
                .update(|c| (c.in_use < c.limit).then_some(SeatCount { in_use: c.in_use + 1, queued: more, ..c }));
            taken.is_ok().then(|| (seq, l.seats.clone()))
        })?;
        // Invariant: a lane holds only queued waiters (both change under this lock).
        let waiter = q.unqueue(seq).expect("a lane's head is queued");
        if q.waiting.is_empty() && q.owed() == 0 {
            let _ = self.seats.update(|c| Some(SeatCount { queued: false, ..c }));
        }
        Some((waiter, Some(word)))
    }

    /// Gives a seat to the first reservation still owed one (they come
    /// before every waiter): the spare one if there is one, else a free
    /// one. False if none is owed, or no seat is free.
    fn fill_lane(&self, q: &WaitQueue, spare: &mut Option<Grant>) -> bool {
        let Some(lane) = q.lanes.iter().find(|l| l.owed() > 0) else { return false };
        let ahead = !q.waiting.is_empty() || q.owed() > 1;
        match spare.take() {
            // Already counted in `in_use`: it changes hands.
            Some(grant) => {
                grant.consume();
                let _ = self.seats.update(|c| Some(SeatCount { queued: ahead, ..c }));
            }
            None => {
                let taken = self
                    .seats
                    .update(|c| (c.in_use < c.limit).then_some(SeatCount { in_use: c.in_use + 1, queued: ahead, ..c }));
                match taken {
                    Ok(c) => _ = self.rose(c),
                    Err(_) => return false,
                }
            }
        }
        let _ = lane.seats.update(|c| Some(SeatCount { limit: c.limit + 1, ..c }));
        true
    }
}

impl WaitQueue {
    /// Puts waiter `seq` in the lanes of the reservations among `words`,
    /// holding back newcomers carrying their labels (their words' bits).
    fn join_lanes(&mut self, seq: u64, words: &[Arc<Seats>]) {
        for lane in self.lanes.iter_mut().filter(|l| words.iter().any(|w| Arc::ptr_eq(w, &l.seats))) {
            lane.waiting.insert(seq);
            let _ = lane.seats.update(|c| Some(SeatCount { queued: true, ..c }));
        }
    }

    /// Takes the waiters already queued carrying `key=value` into lane `i`
    /// (a reservation made or raised while they wait): its seats go to
    /// them first, as to those who join after it.
    pub(in crate::core) fn join_new_lane(&mut self, i: usize) {
        let WaitQueue { waiting, lanes, .. } = self;
        let lane = &mut lanes[i];
        let carries = |w: &Waiter| w.labels.get(&lane.key) == Some(lane.value.as_str());
        let seqs: Vec<u64> = waiting.iter().filter(|(_, w)| carries(w)).map(|(s, _)| *s).collect();
        if seqs.is_empty() {
            return;
        }
        lane.waiting.extend(seqs);
        let _ = lane.seats.update(|c| Some(SeatCount { queued: true, ..c }));
    }

    /// Takes waiter `seq` out of the queue and its lanes (a lane left
    /// empty lets newcomers carrying its label have its free seats).
    fn unqueue(&mut self, seq: u64) -> Option<Waiter> {
        let waiter = self.waiting.remove(&seq)?;
        for lane in self.lanes.iter_mut() {
            if lane.waiting.remove(&seq) && lane.waiting.is_empty() {
                let _ = lane.seats.update(|c| Some(SeatCount { queued: false, ..c }));
            }
        }
        Some(waiter)
    }
}
