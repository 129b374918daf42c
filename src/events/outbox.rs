//! The outbox's numbering: each event gets the next `seq` of its org, in
//! commit order, and is written in the commit of the change that caused it.
//!
//! A reader that has seen `seq` n must never later meet an event below n,
//! so numbering and committing are one step: `commit` holds the outbox's
//! lock from numbering through the store's commit (only commits that carry
//! events take it; the audited acts are serialized by the operations'
//! writer lock anyway). The last `seq` of an org is read from the store
//! once and cached; on a cluster node the cache is kept per fence, so an
//! org that moved away and back is read again (another node numbered its
//! events meanwhile). A failed commit forgets the org's number: whether
//! an etcd transaction that timed out landed is unknown, and re-reading
//! never reuses a written number.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::core::{Change, Event, EventBody, OrgName, Record};
use crate::store::{Store, StoreError};

/// Numbers events and tells readers that new ones were committed.
#[derive(Debug)]
pub struct Outbox {
    /// Each org's last `seq` as committed, and the fence it was read under.
    last: Mutex<HashMap<OrgName, (Option<i64>, u64)>>,
    /// Bumped after every commit that wrote events: waiting readers wake.
    written: watch::Sender<u64>,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox { last: Mutex::new(HashMap::new()), written: watch::channel(0).0 }
    }
}

impl Outbox {
    /// Commits `changes` to `store` with an event for each audit entry
    /// among them, numbered after their org's last (`fence` names the
    /// cluster fence each org is written under; `None` on a single broker).
    /// Blocking: called on a blocking thread.
    pub fn commit(
        &self,
        store: &dyn Store,
        changes: Vec<Change>,
        fence: impl Fn(&OrgName) -> Option<i64>,
    ) -> Result<(), StoreError> {
        self.commit_with(store, changes, Vec::new(), fence)
    }

    /// Commits `events` alone (facts that changed no record, as a lease
    /// lost), numbered as `commit` numbers them.
    pub fn append(
        &self,
        store: &dyn Store,
        events: Vec<Event>,
        fence: impl Fn(&OrgName) -> Option<i64>,
    ) -> Result<(), StoreError> {
        self.commit_with(store, Vec::new(), events, fence)
    }

    /// Commits `changes` with `events` (numbered), and with an event for
    /// each audit entry among the changes.
    pub fn commit_with(
        &self,
        store: &dyn Store,
        changes: Vec<Change>,
        events: Vec<Event>,
        fence: impl Fn(&OrgName) -> Option<i64>,
    ) -> Result<(), StoreError> {
        let events: Vec<Event> = changes.iter().filter_map(event_of).chain(events).collect();
        if events.is_empty() {
            return store.commit(&changes);
        }
        let mut last = self.last.lock();
        let numbered = self.number(store, &mut last, events, &fence);
        let done = numbered.and_then(|(changes_too, next)| {
            let all: Vec<Change> = changes.into_iter().chain(changes_too).collect();
            store.commit(&all).map(|()| next)
        });
        match done {
            Ok(next) => {
                last.extend(next);
                drop(last);
                self.wake();
                Ok(())
            }
            Err(e) => {
                last.clear();
                Err(e)
            }
        }
    }

    /// The events numbered, as changes, and each org's new last number.
    #[allow(clippy::type_complexity)]
    fn number(
        &self,
        store: &dyn Store,
        last: &mut HashMap<OrgName, (Option<i64>, u64)>,
        events: Vec<Event>,
        fence: &impl Fn(&OrgName) -> Option<i64>,
    ) -> Result<(Vec<Change>, HashMap<OrgName, (Option<i64>, u64)>), StoreError> {
        let mut next: HashMap<OrgName, (Option<i64>, u64)> = HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        for mut event in events {
            let f = fence(&event.org);
            let seq = match next.get(&event.org).or_else(|| last.get(&event.org)) {
                Some(&(cached, seq)) if cached == f => seq,
                _ => store.events_last(&event.org)?,
            } + 1;
            next.insert(event.org.clone(), (f, seq));
            event.seq = seq;
            out.push(Change::Put(Record::Event(event)));
        }
        Ok((out, next))
    }

    /// The last number committed for `org` in this run, if known (a
    /// reader at or past it need not read the store to know there is
    /// nothing new).
    pub fn last_known(&self, org: &OrgName) -> Option<u64> {
        self.last.lock().get(org).map(|(_, seq)| *seq)
    }

    /// Wakes every waiting reader (a shutdown: they answer what they have).
    pub fn wake(&self) {
        self.written.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes after each commit that wrote events.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }
}

/// The event an audit entry becomes (numbered later).
fn event_of(change: &Change) -> Option<Event> {
    match change {
        Change::Put(Record::Audit(e)) => {
            Some(Event { org: e.org.clone(), seq: 0, at: e.at, body: EventBody::Audit(e.clone()) })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{AuditAction, AuditEntry, Email, Millis};
    use crate::store::RedbStore;

    fn audit(org: &str, seq: u64) -> Change {
        Change::Put(Record::Audit(AuditEntry {
            org: OrgName::new(org).unwrap(),
            at: Millis(1_000 + seq),
            seq,
            actor: Email::new("owner@example.com").unwrap(),
            action: AuditAction::Granted,
            detail: format!("n={seq}"),
        }))
    }

    fn seqs(store: &dyn Store, org: &str) -> Vec<u64> {
        let (events, _) = store.events_after(&OrgName::new(org).unwrap(), 0, 100).unwrap();
        events.iter().map(|e| e.seq).collect()
    }

    /// Each org's events are numbered 1, 2, 3 … in commit order, in the
    /// commit of their audit entries, and the numbering goes on after a
    /// restart (a new outbox over the same file) without reusing a number.
    #[test]
    fn numbers_each_org_in_commit_order_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            let outbox = Outbox::default();
            outbox.commit(&store, vec![audit("acme", 1), audit("beta", 2)], |_| None).unwrap();
            outbox.commit(&store, vec![audit("acme", 3), audit("acme", 4)], |_| None).unwrap();
            outbox.commit(&store, Vec::new(), |_| None).unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        Outbox::default().commit(&store, vec![audit("acme", 5)], |_| None).unwrap();
        assert_eq!(seqs(&store, "acme"), vec![1, 2, 3, 4]);
        assert_eq!(seqs(&store, "beta"), vec![1]);
        let (events, _) = store.events_after(&OrgName::new("acme").unwrap(), 2, 100).unwrap();
        let details: Vec<String> = events
            .iter()
            .map(|e| match &e.body {
                EventBody::Audit(a) => a.detail.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(details, vec!["n=4", "n=5"], "after a cursor: the later events, in order");
    }

    /// A number cached under one fence is read again under another: the
    /// org was served elsewhere meanwhile, and another node numbered on.
    #[test]
    fn a_new_fence_reads_the_last_number_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db.redb")).unwrap();
        let (here, there) = (Outbox::default(), Outbox::default());
        here.commit(&store, vec![audit("acme", 1)], |_| Some(7)).unwrap();
        there.commit(&store, vec![audit("acme", 2)], |_| Some(8)).unwrap();
        here.commit(&store, vec![audit("acme", 3)], |_| Some(9)).unwrap();
        assert_eq!(seqs(&store, "acme"), vec![1, 2, 3]);
    }
}
