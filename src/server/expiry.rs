//! The lease-expiry task: sleeps until the core's next deadline (or a wake-up
//! when an earlier one appears), then asks the core to expire what is due
//! and tells the holders' connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;

/// Longest sleep with no deadline pending; a safety net, not a poll.
const IDLE_SLEEP: Duration = Duration::from_secs(60);

pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let now = shared.clock.now();
        let ended = shared.core.expire(now);
        if !ended.is_empty() {
            tracing::debug!(count = ended.len(), "leases expired");
            shared.announce(ended);
        }
        let next = shared.core.next_deadline();
        let target = next.map_or(u64::MAX, |d| d.0);
        // Relaxed: see Shared::deadline_added; Notify keeps a permit, so a
        // wake-up sent between this store and the select below is not lost.
        shared.expiry_target.store(target, Ordering::Relaxed);
        let wake_at = match next {
            Some(d) => shared.clock.instant_of(d),
            None => tokio::time::Instant::now() + IDLE_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = shared.expiry_wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}
