//! The machine task: releases the machines the core finds unused past
//! their pool's policy (`core::machines`), as a durable change under the
//! writer lock. Apart from lease expiry, which must never wait for the
//! store: sleeps until the next machine comes due (or a hold that keeps a
//! pool from being judged ends), or until woken when a tracked machine's
//! last session ends or a policy changes; looks at most every `MIN_GAP`.
//! A look touches only the machines each pool's index (`pool::due`) keys
//! as due by now, never every tracked machine.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Operations;

/// Longest sleep with no machine due; a safety net, not a poll.
const IDLE_SLEEP: Duration = Duration::from_secs(60);

/// Least time between two looks: a busy ephemeral pool ends sessions all
/// the time, and each look takes the writer lock and commits a batch.
const MIN_GAP: Duration = Duration::from_millis(250);

/// How soon a release whose commit failed is tried again (the machines
/// stay due meanwhile: without a pause the task would spin on the store).
const RETRY: Duration = Duration::from_secs(1);

/// Runs until `stop` fires.
pub async fn run(ops: Arc<Operations>, mut stop: watch::Receiver<bool>) {
    loop {
        let looked = tokio::time::Instant::now();
        let (next, full) = release(&ops, ops.clock.now()).await;
        // A full release (`MACHINES_PER_RELEASE`) leaves more due: a fleet
        // of ephemeral machines waits for those slots, so the next at once.
        if full && !*stop.borrow() {
            tokio::task::yield_now().await;
            continue;
        }
        let wake_at = match next {
            Some(d) => ops.clock.instant_of(d),
            None => looked + IDLE_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = ops.machines_wake.notified() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep_until(looked + MIN_GAP) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Releases the machines due at `now`: planned, committed and applied
/// under the writer lock, like every durable change (so never between a
/// policy's apply and the sweep that counts its sessions). A failed commit
/// leaves them registered; the next pass tries again. Returns when the
/// next machine comes due, and whether this pass released as many as one
/// may.
async fn release(ops: &Operations, now: crate::core::Millis) -> (Option<crate::core::Millis>, bool) {
    let due = ops.core.next_machine_due();
    if due.is_none_or(|due| due > now) {
        return (due, false);
    }
    let _writer = ops.writer.lock().await;
    let Some(pending) = ops.core.plan_machine_expiry(now) else { return (ops.core.next_machine_due(), false) };
    let full = match ops.settle(pending).await {
        Ok(expired) => {
            ops.core.count_expired(&expired);
            for e in &expired {
                let (org, pool, machine, last_use) = (&e.org, e.pool, &e.machine, e.last_use.0);
                tracing::info!(%org, %pool, %machine, last_use_ms = last_use, "machine released unused");
            }
            expired.len() >= crate::core::MACHINES_PER_RELEASE
        }
        Err(e) => {
            tracing::warn!("unused machines not released (tried again in {RETRY:?}): {e}");
            return (Some(now.after(RETRY)), false);
        }
    };
    (ops.core.next_machine_due(), full)
}
