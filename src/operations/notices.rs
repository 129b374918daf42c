//! Notices before an org's subscription ends (docs/EVENTS.md,
//! `subscription.ending`): every `EVERY`, each org whose subscription
//! ends within 14, 7 or 1 days and has not had that notice for that end
//! gets it, as an event written in the same commit as the record that it
//! was given (`Record::SubscriptionNotice`), so a restart or a failover
//! gives none twice. When a notice is due is the core's
//! (`core::subscription_notice`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Operations;
use crate::core::{Change, Event, EventBody, Millis, OrgName, Record};

/// How often the subscriptions are looked at.
pub const EVERY: Duration = Duration::from_secs(10);

/// Gives the notices due, at start and every `EVERY`, until told to stop.
pub async fn run(ops: Arc<Operations>, mut stop: watch::Receiver<bool>) {
    loop {
        let now = ops.clock.now();
        for (org, end, days) in ops.core.subscription_notices(now) {
            give(&ops, org, (end, days), now).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One notice: its event and its record, in one commit.
async fn give(ops: &Operations, org: OrgName, (end, days): (Millis, u32), now: Millis) {
    let event = Event { org: org.clone(), seq: 0, at: now, body: EventBody::SubscriptionEnding { end, days } };
    let changes = vec![Change::Put(Record::SubscriptionNotice { org: org.clone(), end, days })];
    let (store, outbox, seat) = (ops.store.clone(), ops.outbox.clone(), ops.cluster.clone());
    let fence = move |o: &OrgName| seat.as_ref().and_then(|s| s.fence(o));
    let committed = changes.clone();
    let written = tokio::task::spawn_blocking(move || outbox.commit_with(&*store, committed, vec![event], fence)).await;
    match written.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        Ok(()) => drop(ops.core.apply(&changes, now)),
        Err(e) => tracing::warn!(%org, days, "subscription notice not written (retried): {e}"),
    }
}
