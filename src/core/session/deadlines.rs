//! A shard's expiry index: its sessions by the instant their entry is due,
//! grouped per millisecond.
//!
//! A `BTreeSet<(deadline, id)>` held each entry in a node of its own
//! order: deadlines are `now + ttl`, so entries arrive nearly in order,
//! and a B-tree filled at its right edge leaves its leaves half empty,
//! about 35 bytes an entry (35 MB for a million sessions). Grouped by the
//! millisecond, an entry is 8 bytes in its instant's list; the lists are
//! short (the sessions one shard admits within one millisecond), so
//! finding one to remove is a scan of a few words.

use std::collections::BTreeMap;

use crate::core::id::SessionId;
use crate::core::time::Millis;

#[derive(Default)]
pub(super) struct Deadlines {
    due: BTreeMap<Millis, Vec<SessionId>>,
}

impl Deadlines {
    pub fn insert(&mut self, at: Millis, id: SessionId) {
        self.due.entry(at).or_default().push(id);
    }

    /// Removes `id`'s entry at `at`, if there is one.
    pub fn remove(&mut self, at: Millis, id: SessionId) {
        let Some(ids) = self.due.get_mut(&at) else { return };
        // The last is the one `first` names: the expiry removes it in O(1).
        if let Some(i) = ids.iter().rposition(|x| *x == id) {
            ids.swap_remove(i);
        }
        if ids.is_empty() {
            self.due.remove(&at);
        }
    }

    /// An entry of the earliest instant.
    pub fn first(&self) -> Option<(Millis, SessionId)> {
        let (at, ids) = self.due.first_key_value()?;
        // Invariant: an instant's list is removed with its last entry.
        Some((*at, *ids.last().expect("no instant is kept empty")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_first_by_instant_and_each_is_removed_once() {
        let mut d = Deadlines::default();
        let (a, b, c) = (SessionId(1), SessionId(2), SessionId(3));
        d.insert(Millis(20), a);
        d.insert(Millis(10), b);
        d.insert(Millis(10), c);
        assert_eq!(d.first(), Some((Millis(10), c)));
        d.remove(Millis(10), c);
        assert_eq!(d.first(), Some((Millis(10), b)));
        d.remove(Millis(10), c);
        d.remove(Millis(20), b);
        assert_eq!(d.first(), Some((Millis(10), b)), "absent entries are not removed");
        d.remove(Millis(10), b);
        assert_eq!(d.first(), Some((Millis(20), a)));
        d.remove(Millis(20), a);
        assert_eq!(d.first(), None);
    }
}
