//! Label caps across a restart: the places a cap holds for the previous
//! run's runners carrying its label until they re-attach.
//!
//! Sessions are not durable, so a restart's caps start from nothing
//! counted. A runner of that run re-attaching is counted in its labels'
//! caps past their limits (a cap never refuses a believer), so if
//! newcomers carrying the label took the cap's places first, the cap
//! would end over its limit. So the restart's hold (`limit::hold_reserve`)
//! also holds places in each label cap: as many sessions as a clean stop
//! counted in it (`stop`), or after a crash as many as its limit or the
//! seats held, whichever is fewer. Each runner that re-attaches into a
//! held seat gives back one place of every cap it is counted in (it is
//! counted itself now), and no cap holds more places than seats are still
//! held for runners to come; the rest go back when the hold ends.
//! Counted in the cap's word like sessions, so admissions pay nothing.

use super::limit::Bounds;
use super::stop::Stopped;
use super::Pool;
use crate::core::seats::{SeatCount, Seats};
use crate::sync::{Arc, Ordering};
use crate::value::Labels;

/// Places one label cap holds for the previous run's runners.
pub(super) struct CapHold {
    key: String,
    value: String,
    seats: Arc<Seats>,
    held: u32,
}

impl CapHold {
    /// Gives back all but `keep` of its places; how many it keeps.
    fn keep(&mut self, keep: u32) -> u32 {
        if self.held > keep {
            self.seats.release(self.held - keep);
            self.held = keep;
        }
        self.held
    }
}

impl Pool {
    /// At the restart's hold of `held` seats: holds, in each label cap, the
    /// sessions `stopped` counted in it (a clean stop's), else as many as
    /// its limit or the held seats, whichever is fewer. Callers hold the
    /// bounds lock.
    pub(super) fn hold_caps(&self, b: &mut Bounds, stopped: Option<&Stopped>, held: u32) {
        let Some(caps) = self.label_caps() else { return };
        for cap in caps.iter() {
            let counted = stopped.and_then(|s| s.labels.iter().find(|(k, v, _)| *k == cap.key && *v == cap.value));
            let places = counted.map_or(cap.seats.count().limit, |(_, _, n)| *n).min(held);
            if places == 0 {
                continue;
            }
            let _ = cap.seats.update(|c| Some(SeatCount { in_use: c.in_use.saturating_add(places), ..c }));
            let (key, value, seats) = (cap.key.clone(), cap.value.clone(), cap.seats.clone());
            b.caps_held.push(CapHold { key, value, seats, held: places });
        }
    }

    /// A runner of the previous run re-attached into a new session with
    /// `labels` (counted in their caps already): each of those caps gives
    /// back one place held for it, and no cap keeps more places than seats
    /// are still held for the runners to come.
    pub fn reattached(&self, labels: &Labels) {
        let mut b = self.bounds.lock();
        if b.caps_held.is_empty() {
            return;
        }
        for hold in b.caps_held.iter_mut().filter(|h| labels.get(&h.key) == Some(h.value.as_str())) {
            let after = hold.held.saturating_sub(1);
            hold.keep(after);
        }
        // Acquire: pairs with `take_reserved`'s update.
        let to_come = self.reserve.load(Ordering::Acquire);
        b.caps_held.retain_mut(|h| h.keep(to_come) > 0);
    }

    /// Ends the caps' hold: every place still held goes back. Callers hold
    /// the bounds lock.
    pub(super) fn release_caps(b: &mut Bounds) {
        for mut hold in b.caps_held.drain(..) {
            hold.keep(0);
        }
    }

    /// Places label caps hold now for the previous run's runners, by the
    /// cap's word (what a cap's listing leaves out of its sessions).
    pub(super) fn caps_held(&self) -> Vec<(Arc<Seats>, u32)> {
        let b = self.bounds.lock();
        b.caps_held.iter().map(|h| (h.seats.clone(), h.held)).collect()
    }
}
