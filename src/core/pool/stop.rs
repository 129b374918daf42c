//! What a clean stop leaves of a pool's sessions for the next start.
//!
//! After a crash the next start knows only upper bounds: the durable
//! ceiling for the shared seats, and every reserved seat whole, since the
//! store does not say how many runners sat on them; and each cap holds
//! places up to its limit. A clean stop, once drained, knows better: it
//! counts the sessions on the pool's reserved seats (closing the
//! reservations to newcomers first, so the count stays exact) and in each
//! cap, and writes them (`Record::Stopped`) with the ceilings lowered to
//! the shared sessions and the clock's mark. The next start holds just
//! what was counted if no broker ran on the store since (the mark is still
//! the one written), and removes the record before it admits anything: a
//! later crash never reads counts of an earlier run. A cluster writes
//! none: a node of an older build taking an org over would leave them
//! stale, and a later owner could not tell.

use super::Pool;
use crate::core::id::Email;
use crate::core::seats::SeatCount;
use crate::core::time::Millis;

/// Label, and the sessions a clean stop counted in its cap.
pub type LabelCount = (String, String, u32);

/// A pool's sessions as a stop counted them (`Record::Stopped`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Sessions on the pool's reserved seats.
    pub reserved: u32,
    /// Sessions counted in each label cap that counted any.
    pub labels: Vec<LabelCount>,
    /// Sessions counted in each user's cap that counted any.
    pub users: Vec<(Email, u32)>,
    /// The clock's mark written with them (`Record::Stopped::stamp`).
    pub stamp: Millis,
}

impl Pool {
    /// At a clean stop, once drained (the ceiling lowered to the
    /// sessions): closes the pool's reservations to newcomers (each keeps
    /// only the seats sessions sit on; the pool's word keeps counting the
    /// others, nothing being admitted after) and counts the sessions on
    /// their seats and in each label's and user's cap, stamped `stamp`.
    /// `None`: there is nothing to count, and the ceiling alone is what the
    /// next hold holds.
    pub(in crate::core) fn stop_counts(&self, stamp: Millis) -> Option<Stopped> {
        let reserved = self.close_lanes();
        let (users, labels) = self.caps_now();
        let has_caps = !users.is_empty() || labels.is_some();
        let some = |n: u32| n > 0;
        let count = |c: &super::LabelCap| (c.key.clone(), c.value.clone(), c.seats.count().in_use);
        let labels: Vec<LabelCount> =
            labels.iter().flat_map(|caps| caps.iter()).map(count).filter(|c| some(c.2)).collect();
        let users: Vec<(Email, u32)> =
            users.into_iter().map(|(e, w)| (e, w.count().in_use)).filter(|u| some(u.1)).collect();
        (reserved.is_some() || has_caps).then(|| Stopped { reserved: reserved.unwrap_or(0), labels, users, stamp })
    }

    /// Lowers each reservation's seats to those sessions sit on, so none is
    /// taken after the count; the sessions on them (`None`: no reservation).
    /// Sessions past a lowered reservation are not among them: they count
    /// as shared sessions, against the ceiling.
    fn close_lanes(&self) -> Option<u32> {
        let q = self.queue.lock();
        if q.lanes.is_empty() {
            return None;
        }
        let mut sessions = 0;
        for lane in &q.lanes {
            let closed = lane.seats.update(|c| Some(SeatCount { limit: c.limit.min(c.in_use), ..c }));
            // Invariant: the closure never refuses.
            sessions += closed.unwrap_or_else(|c| c).limit;
        }
        Some(sessions)
    }

    /// Keeps a stop's counts for the next hold (`hold_reserve`).
    pub(in crate::core) fn set_stopped(&self, counted: Stopped) {
        self.bounds.lock().stopped = Some(counted);
    }
}
