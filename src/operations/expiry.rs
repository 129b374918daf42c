//! The lease-expiry task: sleeps until the core's next deadline (or a wake-up
//! when an earlier one appears), then asks the core to expire what is due
//! and tells the holders' connections. It never waits for the store or the
//! writer lock (unused machines are released by a task of their own,
//! `machines`), so a slow commit never holds a lease past its deadline.

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
        let next = ops.core.next_deadline();
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
