//! The event stream's read: an org's events after a cursor, waiting a
//! bounded time for the first when there are none yet (a long poll).
//! Owners and Admins of the org, as for the audit trail the events carry.
//! Both doors call it: `GET /api/v1/events` and QUIC's `Events`.

use std::time::Duration;

use super::{store_failure, Caller, Operations};
use crate::core::{Event, OrgName};
use crate::events::{MAX_WAIT, PAGE};
use crate::proto::{ErrorCode, WireError};
use crate::store::Store;

/// A page of an org's events.
#[derive(Clone, Debug)]
pub struct EventsPage {
    /// Oldest first, at most `events::PAGE`.
    pub events: Vec<Event>,
    /// The cursor to ask after next: the last event's, or the one asked after.
    pub next: u64,
}

impl Operations {
    /// `org`'s events after `after`, waiting up to `wait` (at most
    /// `events::MAX_WAIT`) for a first one. A cursor whose next events
    /// were trimmed past the retention, or that is ahead of the org's
    /// newest event, is refused (`INVALID_ARGUMENT`): the reader would
    /// miss events without knowing. A shutdown ends the wait.
    pub async fn events(
        &self,
        c: Caller<'_>,
        org: &OrgName,
        after: u64,
        wait: Duration,
    ) -> Result<EventsPage, WireError> {
        self.core.require_org_admin(c.p, org)?;
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        // Subscribed before the first read: a commit between the read and the wait wakes it.
        let mut written = self.outbox.subscribe();
        let mut turn = None;
        loop {
            let page = self.read_events(org, after).await?;
            if !page.events.is_empty() || wait.is_zero() || self.is_draining() {
                return Ok(page);
            }
            if turn.is_none() {
                // A reader past the bound is answered now, empty: it asks again.
                match self.waiters.clone().try_acquire_owned() {
                    Ok(t) => turn = Some(t),
                    Err(_) => return Ok(page),
                }
            }
            match tokio::time::timeout_at(deadline, written.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(page),
            }
        }
    }

    /// One read of the outbox, off the async threads.
    async fn read_events(&self, org: &OrgName, after: u64) -> Result<EventsPage, WireError> {
        let (store, org) = (self.store.clone(), org.clone());
        tokio::task::spawn_blocking(move || page(&*store, &org, after))
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?
    }
}

/// The page after `after`; refused if events were trimmed between them,
/// or if `after` is ahead of the newest.
fn page(store: &dyn Store, org: &OrgName, after: u64) -> Result<EventsPage, WireError> {
    let (events, _) = store.events_after(org, after, PAGE).map_err(store_failure)?;
    let gone = |first: u64| {
        let message = format!(
            "the events after cursor {after} were removed past the retention (oldest kept: {first}); \
             read from after={} to go on, knowing some were missed",
            first - 1
        );
        Err(WireError::new(ErrorCode::InvalidArgument, message))
    };
    match events.first() {
        // Numbers are consecutive: a hole after the cursor is a trim (0 asks from the oldest kept).
        Some(first) if after > 0 && first.seq > after + 1 => return gone(first.seq),
        Some(_) => {}
        None if after == 0 => {}
        None => {
            let last = store.events_last(org).map_err(store_failure)?;
            if after > last {
                let message = format!("cursor {after} is ahead of org {org}'s newest event ({last})");
                return Err(WireError::new(ErrorCode::InvalidArgument, message));
            }
        }
    }
    let next = events.last().map_or(after, |e| e.seq);
    Ok(EventsPage { events, next })
}

/// Trims the outbox of the orgs this broker serves past the retention,
/// every `events::retention::EVERY`, until told to stop.
pub async fn trim(ops: std::sync::Arc<Operations>, stop: tokio::sync::watch::Receiver<bool>) {
    let (core, clock) = (ops.core.clone(), ops.clock);
    crate::events::retention::run(ops.store.clone(), move || core.org_names(), move || clock.now(), stop).await
}

/// Events waiting for the outbox that no change wrote (leases lost, each
/// pool's refusals per minute), at most: past it, they are counted
/// (`lbroker_events_dropped_total`), not queued.
pub const QUEUE: usize = 10_000;

/// Most queued events written in one commit.
pub const BATCH: usize = 500;

impl Operations {
    /// Queues the event of a session its runner lost (expired, revoked);
    /// other ends (released, connection closed) are no event. Never waits.
    pub(super) fn lease_lost(&self, e: &crate::core::Ended) {
        use crate::core::{EndReason, EventBody, LeaseLost};
        let revoked = match e.reason {
            EndReason::Expired => false,
            EndReason::Revoked => true,
            EndReason::Released | EndReason::ConnectionClosed => return,
        };
        let i = &e.info;
        let lost = LeaseLost {
            pool: i.pool,
            session: i.session.0,
            machine: i.machine.clone(),
            user: i.user.clone(),
            started: i.started,
            revoked,
            labels: i.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let event = Event { org: e.org.clone(), seq: 0, at: e.at, body: EventBody::Lease(lost) };
        if self.queued.try_send(event).is_err() {
            // Relaxed: a statistic.
            self.queued_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Queues `machine.limit_reached` for `target`'s pool, at most once a
    /// minute per pool. Never waits.
    pub(super) fn machine_limit(&self, target: &crate::core::Target, quota: u32, now: crate::core::Millis) {
        let minute = now.0 / 60_000;
        let key = (target.org.clone(), target.pool);
        if self.limits_told.lock().insert(key, minute) == Some(minute) {
            return;
        }
        let body =
            crate::core::EventBody::MachineLimit { pool: target.pool, quota, machine: target.machine.clone(), minute };
        if self.queued.try_send(Event { org: target.org.clone(), seq: 0, at: now, body }).is_err() {
            self.queued_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Queues `queue.wait_exceeded` for a runner waiting in `org`'s queue
    /// past its pool's alert. Never waits.
    pub fn waited_long(&self, org: &OrgName, w: crate::core::QueueWait) {
        let at = crate::core::Millis(w.joined.0 + w.threshold_ms);
        let event = Event { org: org.clone(), seq: 0, at, body: crate::core::EventBody::QueueWait(w) };
        if self.queued.try_send(event).is_err() {
            self.queued_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Leases lost and minutes of refusals that got no event (the queue
    /// was full, or the write failed).
    pub fn events_dropped(&self) -> u64 {
        let refusals = self.history.as_ref().map_or(0, |h| h.events_dropped());
        self.queued_dropped.load(std::sync::atomic::Ordering::Relaxed) + refusals
    }
}

/// Writes the queued events (leases lost, refusals per minute, machine
/// limits) to the outbox in batches until told to stop (then writes what
/// is queued).
pub async fn write_queued(ops: std::sync::Arc<Operations>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(mut rx) = ops.queued_rx.lock().take() else { return };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n == 0,
            _ = stop.changed() => true,
        };
        if stopping {
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
        }
        for chunk in std::mem::take(&mut batch).chunks(BATCH) {
            append(&ops, chunk.to_vec()).await;
        }
        if stopping {
            return;
        }
    }
}

/// One batch of events into the outbox, off the async threads (a
/// failure is logged and counted in `events_dropped`).
pub async fn append(ops: &Operations, events: Vec<Event>) {
    let n = events.len() as u64;
    let (store, outbox, seat) = (ops.store.clone(), ops.outbox.clone(), ops.cluster.clone());
    let fence = move |org: &OrgName| seat.as_ref().and_then(|s| s.fence(org));
    let written = tokio::task::spawn_blocking(move || outbox.append(&*store, events, fence)).await;
    if let Err(e) = written.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        tracing::warn!(count = n, "queued events not written: {e}");
        ops.queued_dropped.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{AuditAction, AuditEntry, Change, Email, Millis, Record};
    use crate::events::retention::{trim, Bound};
    use crate::events::Outbox;
    use crate::store::RedbStore;

    /// After a trim: cursor 0 reads from the oldest kept, a cursor just
    /// before it goes on, an older one is refused, one past the newest too.
    #[test]
    fn a_cursor_within_the_retention_reads_on_and_one_before_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db.redb")).unwrap();
        let org = OrgName::new("acme").unwrap();
        let outbox = Outbox::default();
        for at in 1..=10 {
            let entry = AuditEntry {
                org: org.clone(),
                at: Millis(at),
                seq: at,
                actor: Email::new("owner@example.com").unwrap(),
                action: AuditAction::UserAdded,
                detail: String::new(),
            };
            outbox.commit(&store, vec![Change::Put(Record::Audit(entry))], |_| None).unwrap();
        }
        trim(&store, &org, Bound { before: Millis(6), keep: u64::MAX }).unwrap();
        let seqs = |after| page(&store, &org, after).map(|p| p.events.iter().map(|e| e.seq).collect::<Vec<_>>());
        assert_eq!(seqs(0).unwrap(), vec![6, 7, 8, 9, 10]);
        assert_eq!(seqs(5).unwrap(), vec![6, 7, 8, 9, 10]);
        assert_eq!(seqs(8).unwrap(), vec![9, 10]);
        assert_eq!(seqs(10).unwrap(), Vec::<u64>::new());
        assert_eq!(seqs(4).unwrap_err().code, ErrorCode::InvalidArgument, "events 5 were trimmed");
        assert_eq!(seqs(11).unwrap_err().code, ErrorCode::InvalidArgument, "ahead of the newest");
    }
}
