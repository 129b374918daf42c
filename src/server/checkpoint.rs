//! Every few seconds, and once more at shutdown, writes what must outlive
//! this run without being a durable change of its own: the clock's
//! high-water mark (so a clock that went backwards is noticed at the next
//! start) and each pool's admission counts (so `status` keeps counting).
//! Off the hot path: one small store commit per period, skipped when
//! nothing changed but the clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use crate::core::{Change, Record};

/// How often the checkpoint is written. A crash loses at most this much of
/// the counts, and the high-water mark lags the clock by at most this much.
pub(super) const EVERY: Duration = Duration::from_secs(5);

/// Writes a checkpoint every `EVERY` until told to stop.
pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut last = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
        last = write(&shared, last).await;
    }
}

/// Writes the records that changed since `last` (the clock always does);
/// returns what is now on disk, or `last` again if the write failed.
pub(super) async fn write(shared: &Shared, last: Vec<Record>) -> Vec<Record> {
    let now = shared.clock.now();
    let records = shared.core.checkpoint(now);
    let changes: Vec<Change> = records.iter().filter(|r| !last.contains(r)).cloned().map(Change::Put).collect();
    let store = shared.store.clone();
    match tokio::task::spawn_blocking(move || store.commit(&changes)).await {
        Ok(Ok(())) => records,
        Ok(Err(e)) => {
            tracing::warn!("checkpoint not written: {e}");
            last
        }
        Err(e) => {
            tracing::warn!("checkpoint not written: {e}");
            last
        }
    }
}
