//! What a session holds besides its seat: its user's cap (a seat word of
//! the user's own), the caps of the labels it carries (`pool::labels`)
//! and, in a pool that tracks machine use, its machine's tenure. All are
//! taken before the pool's seat and given back when the
//! session ends (`shard::Shard::end`); a cap or tenures created under live
//! sessions are adopted by them here, each at most once (under the
//! session's shard lock).

use super::shard::Live;
use super::{SeatFrom, SessionRequest, SessionTable};
use crate::core::error::{Error, Result};
use crate::core::id::{Email, MachineId, SessionId};
use crate::core::pool::{LabelCap, Pool, PoolUid, Tenure};
use crate::core::seats::{SeatCount, Seats};
use crate::sync::Arc;

/// The caps a live session is counted in (its user's and its labels'),
/// and the reservation whose seat it sits on. One thin pointer, none for
/// a session in no cap on a shared seat (most are): the three as fields of
/// their own were 32 bytes on every one of a million sessions.
#[derive(Default)]
pub(super) struct Caps(Option<Box<Counted>>);

#[derive(Default)]
struct Counted {
    user: Option<Arc<Seats>>,
    labels: Vec<Arc<Seats>>,
    lane: Option<Arc<Seats>>,
}

impl Caps {
    /// A new session's: what `take_holds` counted it in, and its seat's
    /// reservation.
    pub fn new(user: Option<Arc<Seats>>, labels: Option<Box<[Arc<Seats>]>>, lane: Option<Arc<Seats>>) -> Caps {
        let labels = labels.map(Vec::from).unwrap_or_default();
        match (&user, labels.is_empty(), &lane) {
            (None, true, None) => Caps(None),
            _ => Caps(Some(Box::new(Counted { user, labels, lane }))),
        }
    }

    /// The reservation whose seat the session sits on (none: a shared seat).
    pub fn lane(&self) -> Option<&Arc<Seats>> {
        self.0.as_ref().and_then(|c| c.lane.as_ref())
    }

    fn user(&self) -> Option<&Arc<Seats>> {
        self.0.as_ref().and_then(|c| c.user.as_ref())
    }

    fn labels(&self) -> &[Arc<Seats>] {
        self.0.as_ref().map_or(&[], |c| &c.labels)
    }

    fn counted(&mut self) -> &mut Counted {
        self.0.get_or_insert_with(Default::default)
    }

    /// Gives every cap back (the session ended; its seat is the caller's).
    pub fn release(&self) {
        for cap in self.user().into_iter().chain(self.labels()) {
            cap.release(1);
        }
    }
}

/// See `SessionTable::adopt_cap`.
fn adopt(live: &mut Live, enforce: bool, cap_for: impl FnOnce(&Email) -> Option<Arc<Seats>>) -> Result<()> {
    if live.caps.user().is_some() {
        return Ok(());
    }
    let Some(cap) = cap_for(&live.user) else { return Ok(()) };
    cap.update(|c| (!enforce || c.in_use < c.limit).then_some(SeatCount { in_use: c.in_use + 1, ..c }))
        .map_err(|c| Error::UserLimit { max: c.limit })?;
    live.caps.counted().user = Some(cap);
    Ok(())
}

/// See `SessionTable::adopt_label_caps`.
fn adopt_labels(live: &mut Live, enforce: bool, caps: &[LabelCap]) -> Result<()> {
    for cap in caps.iter().filter(|c| c.matches(&live.labels)) {
        if live.caps.labels().iter().any(|h| Arc::ptr_eq(h, &cap.seats)) {
            continue;
        }
        cap.seats
            .update(|c| (!enforce || c.in_use < c.limit).then_some(SeatCount { in_use: c.in_use + 1, ..c }))
            .map_err(|c| Error::LabelLimit { max: c.limit })?;
        live.caps.counted().labels.push(cap.seats.clone());
    }
    Ok(())
}

/// Counts a new session in one of its caps: under the cap's limit, or
/// past it for a believer (`HeldFirst`). Asked only of a session that has
/// caps, so a plain acquire in a pool without any pays nothing for it.
fn counted_in(cap: &Seats, seat: &SeatFrom) -> std::result::Result<SeatCount, SeatCount> {
    match seat {
        SeatFrom::HeldFirst => cap.update(|c| Some(SeatCount { in_use: c.in_use + 1, ..c })),
        _ => cap.try_acquire(),
    }
}

/// After a relabel: gives back the caps of `caps` the session's labels no
/// longer match and counts it into those they now do. A held word of a
/// cap since removed stays held (it is nobody's cap; its end returns it).
pub(super) fn relabel(live: &mut Live, caps: &[LabelCap]) {
    let labels = &live.labels;
    let stale = |h: &Arc<Seats>| caps.iter().any(|c| Arc::ptr_eq(&c.seats, h) && !c.matches(labels));
    if let Some(counted) = live.caps.0.as_mut() {
        counted.labels.retain(|h| match stale(h) {
            true => {
                h.release(1);
                false
            }
            false => true,
        });
    }
    // Not enforced: never refuses.
    let _ = adopt_labels(live, false, caps);
}

impl SessionTable {
    /// Takes a new session's holds on its machine's tenure, its user's cap
    /// and its labels' caps; a refusal gives back what was taken. A
    /// believer's (`seat` is `HeldFirst`: a runner of an earlier run, whose
    /// lease was valid when that run ended) are counted past their caps'
    /// limits, never refused: it held its seat, and a cap never cuts a
    /// session (see `counted_in`). Only its machine may refuse it.
    pub(super) fn take_holds(req: &SessionRequest, seat: &SeatFrom) -> Result<()> {
        if let Some(tenure) = &req.tenure {
            if !tenure.take() {
                return Err(Error::MachineNotRegistered);
            }
        }
        if let Some(cap) = &req.cap {
            if let Err(c) = counted_in(cap, seat) {
                Self::give_tenure(req);
                return Err(Error::UserLimit { max: c.limit });
            }
        }
        let caps = req.label_caps.as_deref().unwrap_or(&[]);
        for (i, cap) in caps.iter().enumerate() {
            if let Err(c) = counted_in(cap, seat) {
                for taken in caps[..i].iter().chain(&req.cap) {
                    taken.release(1);
                }
                Self::give_tenure(req);
                return Err(Error::LabelLimit { max: c.limit });
            }
        }
        Ok(())
    }

    /// Gives back what `take_holds` took, for a session never admitted
    /// (no use of the machine: it ran nothing).
    pub(super) fn give_holds(req: &SessionRequest) {
        Self::give_tenure(req);
        if let Some(cap) = &req.cap {
            cap.release(1);
        }
        for cap in req.label_caps.iter().flatten() {
            cap.release(1);
        }
    }

    fn give_tenure(req: &SessionRequest) {
        if let Some(tenure) = &req.tenure {
            tenure.give_back(None);
        }
    }

    /// Counts a live session into its user's cap (`cap_for` finds it),
    /// unless it already is: `enforce` refuses (`UserLimit`) when the cap
    /// is full (an admission checking itself after inserting), otherwise
    /// it counts it regardless (a session older than the cap, which is not
    /// cut). Under the shard's lock, so a session is counted at most once.
    pub fn adopt_cap(
        &self,
        id: SessionId,
        enforce: bool,
        cap_for: impl FnOnce(&Email) -> Option<Arc<Seats>>,
    ) -> Result<()> {
        let (_, mut shard) = self.lock_for(id);
        let Some(live) = shard.get_mut(id) else { return Ok(()) };
        adopt(live, enforce, cap_for)
    }

    /// Counts a live session into the caps of `caps` its labels match and
    /// it is not counted in yet; `enforce` refuses (`LabelLimit`) at a full
    /// one, as `adopt_cap`. Those counted before a refusal stay with the
    /// session (its end gives them back). Under the shard's lock.
    pub fn adopt_label_caps(&self, id: SessionId, enforce: bool, caps: &[LabelCap]) -> Result<()> {
        let (_, mut shard) = self.lock_for(id);
        let Some(live) = shard.get_mut(id) else { return Ok(()) };
        adopt_labels(live, enforce, caps)
    }

    /// Counts every live session of `pool` carrying the cap's label into
    /// it (a new label cap's sweep).
    pub fn adopt_label_where(&self, pool: PoolUid, cap: &LabelCap) {
        for cell in self.shards.iter() {
            let mut shard = cell.lock.lock();
            for live in shard.lives_mut().filter(|l| l.pool == pool) {
                let _ = adopt_labels(live, false, std::slice::from_ref(cap));
            }
        }
    }

    /// Makes a live session hold its machine's tenure (`tenure_for` finds
    /// it) unless it already does or has none; refused (`MachineNotRegistered`)
    /// if the machine's release is planned. Under the shard's lock, so a
    /// session holds it at most once.
    pub fn adopt_tenure(
        &self,
        id: SessionId,
        tenure_for: impl FnOnce(&MachineId) -> Option<Arc<Tenure>>,
    ) -> Result<()> {
        let (_, mut shard) = self.lock_for(id);
        let Some(live) = shard.get_mut(id).filter(|l| l.tenure.is_none()) else { return Ok(()) };
        let Some(tenure) = tenure_for(&live.machine) else { return Ok(()) };
        if !tenure.take() {
            return Err(Error::MachineNotRegistered);
        }
        live.tenure = Some(tenure);
        Ok(())
    }

    /// Makes every live session of `pool` hold its machine's tenure (the
    /// sweep after a pool's machines were given tenures).
    pub fn adopt_tenures(&self, pool: PoolUid, tenure_for: impl Fn(&MachineId) -> Option<Arc<Tenure>>) {
        for cell in self.shards.iter() {
            let mut shard = cell.lock.lock();
            for live in shard.lives_mut().filter(|l| l.pool == pool && l.tenure.is_none()) {
                // A new tenure is open (nothing closes one before this sweep ends).
                live.tenure = tenure_for(&live.machine).filter(|t| t.take());
            }
        }
    }

    /// Counts every live session matching `pred` into `cap` (a new cap's sweep).
    pub fn adopt_where(&self, cap: &Arc<Seats>, mut pred: impl FnMut(&Pool, &Email) -> bool) {
        for cell in self.shards.iter() {
            let mut shard = cell.lock.lock();
            let ids: Vec<SessionId> =
                shard.iter().filter(|(_, s)| pred(shard.pool_of(s), &s.user)).map(|(id, _)| id).collect();
            for id in ids {
                if let Some(live) = shard.get_mut(id) {
                    let _ = adopt(live, false, |_| Some(cap.clone()));
                }
            }
        }
    }
}
