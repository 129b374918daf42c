//! Caps across a restart: the places a label's or a user's cap holds for
//! the previous run's runners it counted, until they re-attach.
//!
//! Sessions are not durable, so a restart's caps start from nothing
//! counted. A runner of that run re-attaching is counted in its user's and
//! its labels' caps past their limits (a cap never refuses a believer), so
//! if newcomers took a cap's places first, the cap would end over its
//! limit. So the restart's hold (`limit::hold_reserve`) also holds places
//! in each cap: as many sessions as a clean stop counted in it (`stop`),
//! or after a crash as many as its limit or the seats held, whichever is
//! fewer. Each runner that re-attaches into a new session gives back one
//! place of every cap it is counted in (it is counted itself now), and no
//! cap holds more places than seats are still held for runners to come;
//! the rest go back when the hold ends. Counted in the cap's word like
//! sessions, so admissions pay nothing.

use super::limit::Bounds;
use super::stop::Stopped;
use super::Pool;
use crate::core::hash::FastMap;
use crate::core::id::Email;
use crate::core::seats::{SeatCount, Seats};
use crate::sync::{Arc, Ordering};
use crate::value::Labels;

/// Whose sessions a cap counts.
enum Whose {
    /// Those carrying the label `key=value`.
    Label(String, String),
    /// The user's.
    User(Email),
}

/// Places one cap holds for the previous run's runners.
pub(super) struct CapHold {
    whose: Whose,
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
    /// At the restart's hold of `held` seats: holds, in each cap, the
    /// sessions `stopped` counted in it (a clean stop's), else as many as
    /// its limit or the held seats, whichever is fewer. Callers hold the
    /// bounds lock.
    pub(super) fn hold_caps(&self, b: &mut Bounds, stopped: Option<&Stopped>, held: u32) {
        // A hold of no seats never ends (`Broker::end_hold`): none to track.
        if held > 0 {
            *self.returned.lock() = Some(Default::default());
        }
        let (users, labels) = self.caps_now();
        let counted_users: Option<FastMap<&Email, u32>> =
            stopped.map(|s| &s.users).map(|u| u.iter().map(|(e, n)| (e, *n)).collect());
        for (email, seats) in users {
            let counted = counted_users.as_ref().map(|c| c.get(&email).copied().unwrap_or(0));
            hold_cap(b, Whose::User(email), seats, counted, held);
        }
        let counted_labels = stopped.map(|s| &s.labels);
        for cap in labels.iter().flat_map(|caps| caps.iter()) {
            let of =
                |l: &Vec<super::LabelCount>| l.iter().find(|c| c.0 == cap.key && c.1 == cap.value).map_or(0, |c| c.2);
            let whose = Whose::Label(cap.key.clone(), cap.value.clone());
            hold_cap(b, whose, cap.seats.clone(), counted_labels.map(of), held);
        }
        self.recount(b);
    }

    /// Whether the previous run's runner of `nonce` may come back into a
    /// held seat, and if so marks it come back: once per hold. One that
    /// came back, and whose session ended since, replays a token of the
    /// previous run: it is not a believer any more (its new session's
    /// token says so), and must take neither a second held seat nor a
    /// second cap's place. Marked before its admission, so no replay slips
    /// in while it is admitted; `unreturn` if the admission fails.
    pub fn may_return(&self, nonce: u128) -> bool {
        self.returned.lock().as_mut().is_none_or(|came| came.insert(nonce))
    }

    /// The runner of `nonce` did not come back after all (its admission
    /// was refused: a retry may still).
    pub fn unreturn(&self, nonce: u128) {
        if let Some(came) = self.returned.lock().as_mut() {
            came.remove(&nonce);
        }
    }

    /// A runner of the previous run re-attached into a new session as
    /// `user` with `labels` (counted in their caps already): each of those
    /// caps gives back one place held for it, and no cap keeps more places
    /// than seats are still held for the runners to come.
    pub fn reattached(&self, user: &Email, labels: &Labels) {
        // Acquire: pairs with the Release of every change under the lock.
        if self.places.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut b = self.bounds.lock();
        let counts = |w: &Whose| match w {
            Whose::Label(k, v) => labels.get(k) == Some(v.as_str()),
            Whose::User(e) => e == user,
        };
        for hold in b.caps_held.iter_mut().filter(|h| counts(&h.whose)) {
            let after = hold.held.saturating_sub(1);
            hold.keep(after);
        }
        // Acquire: pairs with `take_reserved`'s update.
        let to_come = self.reserve.load(Ordering::Acquire);
        b.caps_held.retain_mut(|h| h.keep(to_come) > 0);
        self.recount(&b);
    }

    /// Publishes the places held in all (under the bounds lock).
    fn recount(&self, b: &Bounds) {
        // Release: see `reattached`.
        let places = b.caps_held.iter().fold(0u32, |all, h| all.saturating_add(h.held));
        self.places.store(places, Ordering::Release);
    }

    /// Ends the caps' hold: every place still held goes back, and the
    /// runners come back are forgotten. Callers hold the bounds lock.
    pub(super) fn release_caps(&self, b: &mut Bounds) {
        for mut hold in b.caps_held.drain(..) {
            hold.keep(0);
        }
        self.recount(b);
        *self.returned.lock() = None;
    }

    /// Places caps hold now for the previous run's runners, by the address
    /// of the cap's word (what a cap's listing leaves out of its sessions;
    /// `held_in` reads it).
    pub(super) fn caps_held(&self) -> FastMap<usize, (Arc<Seats>, u32)> {
        // Acquire: see `reattached`.
        if self.places.load(Ordering::Acquire) == 0 {
            return FastMap::default();
        }
        let b = self.bounds.lock();
        // The words themselves too: none is freed, nor its address reused
        // by a cap set anew, while the listing reads the map.
        b.caps_held.iter().map(|h| (Arc::as_ptr(&h.seats) as usize, (h.seats.clone(), h.held))).collect()
    }
}

/// The places `held` (`Pool::caps_held`) says the cap of `word` holds.
pub(super) fn held_in(held: &FastMap<usize, (Arc<Seats>, u32)>, word: &Arc<Seats>) -> u32 {
    held.get(&(Arc::as_ptr(word) as usize)).map_or(0, |h| h.1)
}

/// Holds `places` of a cap (`None`: as many as its limit), at most `held`.
fn hold_cap(b: &mut Bounds, whose: Whose, seats: Arc<Seats>, places: Option<u32>, held: u32) {
    let places = places.unwrap_or(seats.count().limit).min(held);
    if places > 0 {
        let _ = seats.update(|c| Some(SeatCount { in_use: c.in_use.saturating_add(places), ..c }));
        b.caps_held.push(CapHold { whose, seats, held: places });
    }
}
