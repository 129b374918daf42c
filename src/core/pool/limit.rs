//! What a pool's admission limit is computed from, and every change of it:
//! the quota, the durable session ceiling, the seats durable holders
//! (activations, offline licenses) take, and the seats held after a
//! restart for the previous run's sessions.
//!
//! Every limit change happens under the bounds lock and recomputes the seat
//! word's limit in the same step; admissions never take that lock.

use super::stop::Stopped;
use super::Pool;
use crate::core::error::{Error, Result};
use crate::core::seats::{SeatCount, MAX_IN_USE};
use crate::core::time::Millis;
use crate::sync::Ordering;

/// The inputs of a pool's admission limit.
///
/// Sessions are not durable; the ceiling is. It bounds the seats that
/// sessions (and seats reserved for the previous run's sessions) may hold,
/// and the store always holds a ceiling at least as high as the one in
/// memory: it is raised durably before memory, and lowered in memory
/// before durably. After a crash the broker therefore knows how many
/// runners may still believe they hold a seat, without an fsync per lease.
/// Activations and offline licenses are durable records of their own and
/// do not count against it.
pub(super) struct Bounds {
    /// Licenses bought.
    quota: u32,
    /// Most seats sessions may hold (`None`: not enforced, a broker without
    /// durable ceilings, as in the core's own tests).
    ceiling: Option<u32>,
    /// Seats held by activations and offline licenses.
    durable: u32,
    /// Seats reserved by job label (`lanes`): held for the sessions
    /// carrying a label, against the quota alone like a durable holder's.
    pub(super) reserved: u32,
    /// Lowering passes since the ceiling was last set: a pool is lowered
    /// only after `QUIET_PASSES` of them, so a busy pool whose use swings
    /// is not lowered and raised again (a durable write each) every pass.
    quiet: u32,
    /// A clean stop's (or a handover's) counts of the sessions on reserved
    /// seats and in caps (`stop`), until the hold takes them.
    pub(super) stopped: Option<Stopped>,
    /// Places caps hold for the previous run's runners (`cap_hold`).
    pub(super) caps_held: Vec<super::cap_hold::CapHold>,
}

/// What a restart's hold took of a pool (`Pool::hold_reserve`).
pub struct Held {
    /// Seats held for the previous run's runners.
    pub seats: u32,
    /// The hold raised the ceiling: the caller writes it.
    pub raised: bool,
    /// A clean stop's counts were read: the caller removes them.
    pub stopped: bool,
}

/// Lowering passes a ceiling must sit unchanged before it is lowered.
const QUIET_PASSES: u32 = 3;

impl Bounds {
    /// A pool's bounds before any ceiling or durable holder: the quota alone.
    pub(super) fn new(quota: u32) -> Bounds {
        Bounds { quota, ceiling: None, durable: 0, reserved: 0, quiet: 0, stopped: None, caps_held: Vec::new() }
    }

    pub(super) fn limit(&self) -> u32 {
        match self.ceiling {
            Some(c) => self.quota.min(c.saturating_add(self.durable).saturating_add(self.reserved)),
            None => self.quota,
        }
    }
}

/// How far a ceiling moves past the seats sessions hold: a quarter more
/// (at least one), so a pool filling up to a million seats raises it about
/// seventy times (each a durable write), and a crash holds back at most a
/// quarter more seats than were in use.
fn headroom(sessions: u32) -> u32 {
    (sessions / 4).max(1)
}

impl Pool {
    /// Changes the quota (operator only; checked by the caller).
    pub fn set_quota(&self, quota: u32) {
        let mut b = self.bounds.lock();
        b.quota = quota;
        self.quota.store(quota, Ordering::Relaxed);
        self.relimit(&b, 0);
    }

    /// Recomputes the seat word's limit from `b`, moving `in_use` by `delta`
    /// in the same step, and lets waiters have any room it made. Callers
    /// hold the bounds lock.
    fn relimit(&self, b: &Bounds, delta: i64) {
        let limit = b.limit();
        let after = self.seats.update(|c| {
            let in_use = (i64::from(c.in_use) + delta).clamp(0, i64::from(MAX_IN_USE)) as u32;
            Some(SeatCount { limit, in_use, ..c })
        });
        self.freed(self.seen(after.unwrap_or_else(|c| c)));
    }

    /// Takes a seat for a durable holder (activation, offline license)
    /// against the quota alone; `check: false` restores one the store
    /// already holds (it passed the check when it was made).
    pub(super) fn take_durable(&self, check: bool) -> Result<()> {
        let mut b = self.bounds.lock();
        let quota = b.quota;
        b.durable += 1;
        let limit = b.limit();
        let taken = self.seats.update(|c| {
            (!check || c.in_use < quota).then(|| SeatCount { limit, in_use: c.in_use.saturating_add(1), ..c })
        });
        let taken = taken.map(|c| self.rose(c));
        if taken.is_err() {
            b.durable -= 1;
            return Err(Error::QuotaExceeded { quota });
        }
        Ok(())
    }

    /// Returns a durable holder's seat.
    pub(super) fn return_durable(&self) {
        let mut b = self.bounds.lock();
        b.durable = b.durable.saturating_sub(1);
        self.relimit(&b, -1);
    }

    /// Seats sessions hold on shared seats (the restart's held ones
    /// included), given a reading of the word and what reservations hold.
    fn sessions_in(b: &Bounds, c: SeatCount, reserved: u32) -> u32 {
        c.in_use.saturating_sub(b.durable).saturating_sub(reserved)
    }

    /// The ceiling to write before admitting past the current one, or
    /// `None` when none is needed (another raise got there first, or the
    /// quota is what binds).
    pub fn ceiling_wanted(&self) -> Option<u32> {
        let b = self.bounds.lock();
        let current = b.ceiling?;
        let reserved = self.reserved_held(b.reserved);
        let sessions = Self::sessions_in(&b, self.seats.count(), reserved);
        if sessions < current || current >= b.quota {
            return None;
        }
        // Relaxed: see `refusal`.
        let waiting = self.misses.swap(0, Ordering::Relaxed).saturating_add(self.waiting());
        Some(b.quota.min(sessions.max(current).saturating_add(headroom(sessions).max(waiting))))
    }

    /// The ceiling to write with a reservation that gives up `by` seats:
    /// the sessions on the seats it gives up count against the ceiling
    /// from then on, and a crash before they end must hold their seats
    /// too, so it rises by as many, up to the quota. `None` without
    /// ceilings, or when no seat is given up.
    pub fn ceiling_after_lowering(&self, by: u32) -> Option<u32> {
        let b = self.bounds.lock();
        let current = b.ceiling?;
        (by > 0 && current < b.quota).then(|| b.quota.min(current.saturating_add(by)))
    }

    /// Sets the ceiling from a committed `Ceiling` record (at start, or a
    /// raise just written). Lowerings set memory in `lower_ceiling` instead.
    pub fn set_ceiling(&self, ceiling: u32) {
        let mut b = self.bounds.lock();
        b.ceiling = Some(ceiling);
        b.quiet = 0;
        self.relimit(&b, 0);
    }

    /// Lowers the ceiling in memory, if it is well above what sessions
    /// hold, and returns the new value for the caller to write. Memory
    /// first: from this instant admissions obey the lower value, so the
    /// durable one (still higher until the write) stays an upper bound.
    /// `tight` lowers it to exactly the sessions held (a draining broker,
    /// which admits nothing more, so that its restart holds no spare shared
    /// seat; a pool's reserved seats are held whole all the same,
    /// `hold_reserve`).
    pub fn lower_ceiling(&self, tight: bool) -> Option<u32> {
        let mut b = self.bounds.lock();
        b.ceiling?;
        b.quiet = b.quiet.saturating_add(1);
        if !tight && b.quiet < QUIET_PASSES {
            return None;
        }
        // Runners waiting: the pool is not quiet, whatever its sessions.
        self.lower_to(&mut b, |c, sessions| match (c.queued, tight) {
            (true, _) => None,
            (false, true) => Some((sessions, 0)),
            (false, false) => Some((sessions.saturating_add(headroom(sessions)), headroom(sessions))),
        })
    }

    /// Before its org is handed to another node: lowers the ceiling to
    /// exactly the seats sessions hold, runners waiting or not (their
    /// connections close with the org's, and they queue again at the next
    /// node), and returns it for the caller to write. Memory first, as
    /// `lower_ceiling`: from here on this node admits no session past it.
    pub fn ceiling_to_sessions(&self) -> Option<u32> {
        let mut b = self.bounds.lock();
        b.ceiling?;
        self.lower_to(&mut b, |_, sessions| Some((sessions, 0)))
    }

    /// Lowers the ceiling to the target `plan` gives for the seat word and
    /// the sessions it holds (with the slack the current ceiling may keep
    /// above it), in one CAS that reads the sessions and sets the limit, so
    /// no admission slips in between the reading and the new limit.
    fn lower_to(&self, b: &mut Bounds, plan: impl Fn(SeatCount, u32) -> Option<(u32, u32)>) -> Option<u32> {
        let current = b.ceiling?;
        // Read before the swap: a reservation's seat taken meanwhile only
        // makes the count of shared sessions higher, so the ceiling too.
        let reserved = self.reserved_held(b.reserved);
        let (quota, durable, wanted) = (b.quota, b.durable, b.reserved);
        let mut lowered = None;
        let _ = self.seats.update(|c| {
            let sessions = Self::sessions_in(b, c, reserved);
            lowered = None;
            let (target, slack) = plan(c, sessions)?;
            if current <= target.saturating_add(slack) {
                return None;
            }
            lowered = Some(target);
            Some(SeatCount { limit: quota.min(target.saturating_add(durable).saturating_add(wanted)), ..c })
        });
        if let Some(target) = lowered {
            b.ceiling = Some(target);
            b.quiet = 0;
        }
        lowered
    }

    /// After a restart: holds seats for the previous run's sessions, until
    /// their runners re-attach: the durable ceiling's (the shared seats
    /// they may sit on) and, on reserved seats, the sessions a clean stop
    /// counted (`Record::Stopped`, stamped with the store's clock mark
    /// `stamp`: no broker ran since), else every
    /// reserved seat (a re-attaching runner takes a held seat whatever its
    /// labels, and a labelled newcomer must not take a reserved seat a
    /// believer sits on); for a pool that never had a ceiling, every seat
    /// not held durably. Says how many, whether that is not the stored
    /// ceiling (the re-attaching runners count against the ceiling as
    /// shared sessions, so the caller writes it, `Hold::ceilings`, before
    /// admitting, or memory would admit past what a second crash holds),
    /// and whether a clean stop's counts were read (the caller removes
    /// them with it).
    pub fn hold_reserve(&self, stamp: Option<Millis>) -> Held {
        let mut b = self.bounds.lock();
        let stopped = b.stopped.take();
        // Only counts no broker ran after: see `Record::Stopped::stamp`.
        let counted = stopped.as_ref().filter(|s| Some(s.stamp) == stamp);
        let on_reserved = counted.map_or(b.reserved, |s| s.reserved.min(b.reserved));
        let room = b.quota.saturating_sub(b.durable);
        let held = b.ceiling.map_or(room, |c| room.min(c.saturating_add(on_reserved)));
        let raised = b.ceiling != Some(held);
        b.ceiling = Some(held);
        b.quiet = 0;
        self.reserve.store(held, Ordering::Release);
        // Reservations restored before the hold took their seats whole: the
        // previous run's believers come first, and what would pass the
        // quota is owed to the reservations again, as on a full pool.
        let back = self.owe_past(b.quota.saturating_sub(b.durable).saturating_sub(held));
        self.relimit(&b, i64::from(held) - i64::from(back));
        self.hold_caps(&mut b, counted, held);
        Held { seats: held, raised, stopped: stopped.is_some() }
    }

    /// Takes one reserved seat for a re-attaching runner; false when none is left.
    pub fn take_reserved(&self) -> bool {
        // AcqRel: pairs with `release_reserve`'s swap; exactly one of them gets each seat.
        self.reserve.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1)).is_ok()
    }

    /// Ends the hold: seats still reserved go back, and the places label
    /// caps held for the runners (`cap_hold`).
    pub fn release_reserve(&self) {
        self.release_caps(&mut self.bounds.lock());
        let n = self.reserve.swap(0, Ordering::AcqRel);
        if n > 0 {
            let after = self.seats.release(n);
            self.seats.extremes.fell(after.in_use);
            self.freed(after);
        }
    }
}
