//! Caps by job label (FlexNet's `MAX` for a group): the sessions of a pool
//! carrying a label `KEY=VALUE` are counted and limited by a seat word of
//! the label's own, exactly as a user's sessions are by a user cap.
//!
//! A pool's caps (users' and labels') sit under one lock, read once when a
//! ticket is resolved, so a pool without label caps pays nothing new: its
//! ticket carries `None`. A ticket of a pool with label caps carries the
//! list (one `Arc` clone), and each admission takes the words of the caps
//! its labels match (see `session::holds`). This module never decides who
//! is admitted; it only owns the list.

use super::Pool;
use crate::core::hash::FastMap;
use crate::core::id::Email;
use crate::core::seats::{SeatCount, Seats};
use crate::sync::Arc;
use crate::value::Labels;

/// One label's cap: the label and the seat word counting its sessions.
#[derive(Debug)]
pub struct LabelCap {
    /// The label's key.
    pub key: String,
    /// The label's value.
    pub value: String,
    /// Sessions carrying the label (in use) and the cap (limit).
    pub seats: Arc<Seats>,
}

/// A pool's label caps, as a ticket carries them (never empty).
pub type LabelCaps = Arc<Vec<LabelCap>>;

impl LabelCap {
    /// Whether a session with `labels` is counted in this cap.
    pub fn matches(&self, labels: &Labels) -> bool {
        labels.get(&self.key) == Some(self.value.as_str())
    }
}

/// The words of the caps in `caps` that `labels` match (`None`: none do,
/// at no allocation).
pub fn matching(caps: &[LabelCap], labels: &Labels) -> Option<Box<[Arc<Seats>]>> {
    if labels.is_empty() {
        return None;
    }
    let held: Vec<Arc<Seats>> = caps.iter().filter(|c| c.matches(labels)).map(|c| c.seats.clone()).collect();
    (!held.is_empty()).then(|| held.into_boxed_slice())
}

/// A pool's caps: by user and by label, under one lock.
#[derive(Default)]
pub(super) struct Caps {
    /// Per-user caps.
    pub users: FastMap<Email, Arc<Seats>>,
    /// Label caps; `None` when the pool has none (nothing to clone).
    pub labels: Option<LabelCaps>,
    /// The reservations' words (`lanes`), for tickets; `None`: none.
    pub reserved: Option<LabelCaps>,
}

/// What a ticket carries of a pool's caps and reservations.
pub struct CapsFor {
    /// The user's cap.
    pub user: Option<Arc<Seats>>,
    /// The pool's label caps.
    pub labels: Option<LabelCaps>,
    /// The pool's reservations' words.
    pub reserved: Option<LabelCaps>,
}

impl Pool {
    /// The user's cap, the pool's label caps and its reservations, read
    /// together (one lock).
    pub fn caps_for(&self, email: &Email) -> CapsFor {
        let caps = self.caps.lock();
        CapsFor { user: caps.users.get(email).cloned(), labels: caps.labels.clone(), reserved: caps.reserved.clone() }
    }

    /// The users' caps in force (not those set back to unlimited) and the
    /// label caps, read together (a restart's hold, `cap_hold`).
    pub(super) fn caps_now(&self) -> (Vec<(Email, Arc<Seats>)>, Option<LabelCaps>) {
        let caps = self.caps.lock();
        let users = caps.users.iter().filter(|(_, w)| w.count().limit != u32::MAX);
        (users.map(|(e, w)| (e.clone(), w.clone())).collect(), caps.labels.clone())
    }

    /// The pool's label caps, if any.
    pub fn label_caps(&self) -> Option<LabelCaps> {
        self.caps.lock().labels.clone()
    }

    /// Caps the sessions carrying `key=value` at `max` (`None`: the cap is
    /// removed). Returns the cap if it is new, for the caller to count the
    /// live sessions carrying the label into it. Lowering a cap ends
    /// nothing: no new session carrying the label is admitted until the
    /// label is below it.
    pub fn set_label_cap(&self, key: &str, value: &str, max: Option<u32>) -> Option<Arc<Seats>> {
        let mut caps = self.caps.lock();
        let old: &[LabelCap] = caps.labels.as_deref().map_or(&[], Vec::as_slice);
        let same = |c: &LabelCap| c.key == key && c.value == value;
        if let (Some(cap), Some(max)) = (old.iter().find(|c| same(c)), max) {
            let _ = cap.seats.update(|c| Some(SeatCount { limit: max, ..c }));
            return None;
        }
        let copy = |c: &LabelCap| LabelCap { key: c.key.clone(), value: c.value.clone(), seats: c.seats.clone() };
        let mut next: Vec<LabelCap> = old.iter().filter(|c| !same(c)).map(copy).collect();
        let added = max.map(|max| Arc::new(Seats::new(max)));
        if let Some(seats) = &added {
            next.push(LabelCap { key: key.to_string(), value: value.to_string(), seats: seats.clone() });
            next.sort_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
        }
        caps.labels = (!next.is_empty()).then(|| Arc::new(next));
        drop(caps);
        if added.is_some() {
            self.bump_adoptions();
        }
        added
    }

    /// Every label cap: (key, value, max, sessions counted), sorted. The
    /// places a cap holds after a restart for runners still to re-attach
    /// (`cap_hold`) are not sessions.
    pub fn label_limits(&self) -> Vec<(String, String, u32, u32)> {
        let Some(caps) = self.label_caps() else { return Vec::new() };
        let held = self.caps_held();
        let row = |c: &LabelCap| {
            let now = c.seats.count();
            (
                c.key.clone(),
                c.value.clone(),
                now.limit,
                now.in_use.saturating_sub(super::cap_hold::held_in(&held, &c.seats)),
            )
        };
        caps.iter().map(row).collect()
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;
    use crate::core::id::OrgName;
    use crate::core::pool::{PoolId, PoolUid};
    use crate::core::time::Millis;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn a_cap_matches_its_label_only_and_removal_drops_it() {
        let p = Pool::new(PoolUid(1), OrgName::new("acme").unwrap(), PoolId::KRE_DEFAULT, 5, Millis::MAX);
        assert!(p.label_caps().is_none(), "no caps: nothing for a ticket to carry");
        assert!(p.set_label_cap("team", "web", Some(2)).is_some());
        assert!(p.set_label_cap("team", "web", Some(3)).is_none(), "a change keeps the word");
        let caps = p.label_caps().unwrap();
        assert!(matching(&caps, &labels(&[("team", "api")])).is_none());
        assert!(matching(&caps, &Labels::default()).is_none());
        assert_eq!(matching(&caps, &labels(&[("job", "x"), ("team", "web")])).unwrap().len(), 1);
        assert_eq!(p.label_limits(), vec![("team".into(), "web".into(), 3, 0)]);
        assert!(p.set_label_cap("team", "web", None).is_none());
        assert!(p.label_caps().is_none());
    }
}
