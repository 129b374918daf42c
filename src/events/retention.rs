//! Keeps each org's outbox bounded: every `EVERY`, the events older than
//! `RETENTION`, and the oldest beyond `MAX_PER_ORG`, are removed from the
//! orgs this broker serves (in a cluster, under each org's fence like any
//! write). The newest event of an org is always kept, so a reader can
//! tell a cursor that fell out of the retention from one that is current.
//! Off the hot path: at most `ORGS_PER_PASS` orgs a minute, a few small
//! commits each, `BATCH` removals per commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{MAX_PER_ORG, RETENTION};
use crate::core::{Change, Event, Millis, OrgName};
use crate::store::{Store, StoreError};

/// How often the outbox is trimmed.
pub const EVERY: Duration = Duration::from_secs(60);

/// Most events removed per commit (and read per call).
pub const BATCH: usize = 500;

/// Most orgs looked at per pass, taken in turn: with many orgs (in a
/// cluster, each look is two etcd reads) a whole round takes several
/// passes, which the retention's days easily allow.
pub const ORGS_PER_PASS: usize = 200;

/// What `trim` may remove: events older than `before`, and beyond the
/// newest `keep` of the org.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// Events at or after this instant are kept (unless beyond `keep`).
    pub before: Millis,
    /// The newest this many are the most kept.
    pub keep: u64,
}

impl Bound {
    /// The house's bound at `now`.
    pub fn at(now: Millis) -> Bound {
        Bound { before: Millis(now.0.saturating_sub(RETENTION.as_millis() as u64)), keep: MAX_PER_ORG }
    }
}

/// Removes `org`'s events past `bound`, a batch per commit; returns how
/// many. Blocking: called on a blocking thread.
pub fn trim(store: &dyn Store, org: &OrgName, bound: Bound) -> Result<usize, StoreError> {
    let last = store.events_last(org)?;
    let mut removed = 0;
    loop {
        let (events, _) = store.events_after(org, 0, BATCH)?;
        let doomed: Vec<Change> = events
            .iter()
            .take_while(|e| e.seq < last && (e.at < bound.before || last - e.seq >= bound.keep))
            .map(|e: &Event| Change::RemoveEvent { org: org.clone(), seq: e.seq })
            .collect();
        if doomed.is_empty() {
            return Ok(removed);
        }
        store.commit(&doomed)?;
        removed += doomed.len();
    }
}

/// Trims the outbox of every org `orgs` names, every `EVERY`, until told to stop.
pub async fn run(
    store: Arc<dyn Store>,
    orgs: impl Fn() -> Vec<OrgName> + Send + 'static,
    now: impl Fn() -> Millis + Send + 'static,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
        let mut all = orgs();
        all.sort();
        let from = if next < all.len() { next } else { 0 };
        let turn: Vec<OrgName> = all.into_iter().skip(from).take(ORGS_PER_PASS).collect();
        next = from + turn.len();
        let (store, bound) = (store.clone(), Bound::at(now()));
        let pass = tokio::task::spawn_blocking(move || {
            for org in &turn {
                if let Err(e) = trim(&*store, org, bound) {
                    tracing::warn!(%org, "events past their retention not trimmed: {e}");
                }
            }
        });
        let _ = pass.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{AuditAction, AuditEntry, Email, Record};
    use crate::events::Outbox;
    use crate::store::RedbStore;

    fn audit(at: u64) -> Change {
        Change::Put(Record::Audit(AuditEntry {
            org: OrgName::new("acme").unwrap(),
            at: Millis(at),
            seq: at,
            actor: Email::new("owner@example.com").unwrap(),
            action: AuditAction::UserAdded,
            detail: String::new(),
        }))
    }

    fn left(store: &dyn Store) -> Vec<u64> {
        let (events, _) = store.events_after(&OrgName::new("acme").unwrap(), 0, 10_000).unwrap();
        events.iter().map(|e| e.seq).collect()
    }

    /// Old events go, and so do the oldest beyond the count; the newest
    /// always stays, and numbering goes on after it.
    #[test]
    fn trims_by_age_and_count_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db.redb")).unwrap();
        let outbox = Outbox::default();
        let org = OrgName::new("acme").unwrap();
        for at in 1..=1200 {
            outbox.commit(&store, vec![audit(at)], |_| None).unwrap();
        }
        assert_eq!(trim(&store, &org, Bound { before: Millis(1001), keep: u64::MAX }).unwrap(), 1000);
        assert_eq!(left(&store), (1001..=1200).collect::<Vec<_>>(), "older than the bound: gone");
        assert_eq!(trim(&store, &org, Bound { before: Millis(0), keep: 50 }).unwrap(), 150);
        assert_eq!(left(&store), (1151..=1200).collect::<Vec<_>>(), "beyond the newest 50: gone");
        trim(&store, &org, Bound { before: Millis(u64::MAX), keep: 0 }).unwrap();
        assert_eq!(left(&store), vec![1200], "the newest is kept whatever the bound");
        outbox.commit(&store, vec![audit(5000)], |_| None).unwrap();
        assert_eq!(left(&store), vec![1200, 1201]);
    }
}
