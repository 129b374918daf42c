//! The lease-expiry task: sleeps until the core's next deadline (or a wake-up
//! when an earlier one appears), then asks the core to expire what is due
//! and tells the holders' connections. It also releases the machines the
//! core finds unused past their pool's policy (`core::machines`), as a
//! durable change under the writer lock, woken when a tracked machine's
//! last session ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Operations;

/// Longest sleep with no deadline pending; a safety net, not a poll.
const IDLE_SLEEP: Duration = Duration::from_secs(60);

/// Runs until `stop` fires.
pub async fn run(ops: Arc<Operations>, mut stop: watch::Receiver<bool>) {
    loop {
        let now = ops.clock.now();
        let ended = ops.core.expire(now);
        if !ended.is_empty() {
            tracing::debug!(count = ended.len(), "leases expired");
            ops.announce(ended);
        }
        let machine_due = release_machines(&ops, now).await;
        let next = [ops.core.next_deadline(), machine_due].into_iter().flatten().min();
        let target = next.map_or(u64::MAX, |d| d.0);
        // Relaxed: see Operations::deadline_added; Notify keeps a permit, so a
        // wake-up sent between this store and the select below is not lost.
        ops.expiry_target.store(target, Ordering::Relaxed);
        let wake_at = match next {
            Some(d) => ops.clock.instant_of(d),
            None => tokio::time::Instant::now() + IDLE_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = ops.expiry_wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Releases the machines due at `now`: planned, committed and applied
/// under the writer lock, like every durable change (so never between a
/// policy's apply and the sweep that counts its sessions). A failed commit
/// leaves them registered; the next pass tries again. Returns when the
/// next machine comes due.
async fn release_machines(ops: &Operations, now: crate::core::Millis) -> Option<crate::core::Millis> {
    let due = ops.core.next_machine_due();
    if due.is_none_or(|due| due > now) {
        return due;
    }
    let _writer = ops.writer.lock().await;
    let Some(pending) = ops.core.plan_machine_expiry(now) else { return ops.core.next_machine_due() };
    match ops.settle(pending).await {
        Ok(expired) => {
            ops.core.count_expired(&expired);
            for e in &expired {
                let (org, pool, machine, last_use) = (&e.org, e.pool, &e.machine, e.last_use.0);
                tracing::info!(%org, %pool, %machine, last_use_ms = last_use, "machine released unused");
            }
        }
        Err(e) => {
            tracing::warn!("unused machines not released (tried again in {RETRY:?}): {e}");
            return Some(now.after(RETRY));
        }
    }
    ops.core.next_machine_due()
}

/// How soon a release whose commit failed is tried again (the machines
/// stay due meanwhile: without a pause the task would spin on the store).
const RETRY: Duration = Duration::from_secs(1);
