//! What a clean stop leaves of a pool's sessions for the next start.
//!
//! After a crash the next start knows only upper bounds: the durable
//! ceiling for the shared seats, and every reserved seat whole, since the
//! store does not say how many runners sat on them. A clean stop knows
//! exactly: once nothing more is admitted it counts the sessions on the
//! pool's reserved seats and in each label cap, and writes them
//! (`Record::Stopped`) with the ceilings lowered to the shared sessions.
//! The next start holds just those for their runners, so a reserved seat
//! nobody sat on is free for its label at once, and removes the record in
//! the same commit as its hold, before it admits anything: a later crash
//! never reads counts of an earlier run.

use super::Pool;
use crate::core::id::Email;
use crate::core::seats::SeatCount;

/// Label, and the sessions a clean stop counted in its cap.
pub type LabelCount = (String, String, u32);

/// A pool's sessions as a clean stop counted them (`Record::Stopped`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Sessions on the pool's reserved seats.
    pub reserved: u32,
    /// Sessions counted in each label cap.
    pub labels: Vec<LabelCount>,
    /// Sessions counted in each user's cap.
    pub users: Vec<(Email, u32)>,
}

impl Pool {
    /// At a clean stop, once its shared seats admit nothing more (the
    /// ceiling lowered to the sessions): closes the pool's reservations to
    /// newcomers (each keeps only the seats sessions sit on) and counts
    /// the sessions on their seats and in each label's and user's cap.
    /// `None`: the pool has none of them, and its ceiling alone is what
    /// the next start holds.
    pub fn stop_counts(&self) -> Option<Stopped> {
        let reserved = self.close_lanes();
        let (users, labels) = self.caps_now();
        let count = |c: &super::LabelCap| (c.key.clone(), c.value.clone(), c.seats.count().in_use);
        let labels: Vec<LabelCount> = labels.iter().flat_map(|caps| caps.iter()).map(count).collect();
        let users: Vec<(Email, u32)> = users.into_iter().map(|(e, w)| (e, w.count().in_use)).collect();
        let any = reserved.is_some() || !labels.is_empty() || !users.is_empty();
        any.then(|| Stopped { reserved: reserved.unwrap_or(0), labels, users })
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

    /// Keeps a clean stop's counts for the restart's hold (`hold_reserve`).
    pub fn set_stopped(&self, reserved: u32, labels: &[LabelCount], users: &[(Email, u32)]) {
        self.bounds.lock().stopped = Some(Stopped { reserved, labels: labels.to_vec(), users: users.to_vec() });
    }
}
