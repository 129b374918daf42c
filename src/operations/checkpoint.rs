//! Every few seconds, and once more at shutdown, writes what must outlive
//! this run without being a durable change of its own: the clock's
//! high-water mark (so a clock that went backwards is noticed at the next
//! start) and each pool's admission counts (so `status` keeps counting);
//! and, before each, it looks for a leap of the wall clock (`leap`).
//! It also lowers the session ceilings of pools that have emptied, so a
//! crash holds back only about as many seats as were in use; and a cluster
//! node handing orgs on writes theirs down to the sessions held
//! (`hand_on`), so the next node holds no more than runners may believe.
//! Off the hot path: one small store commit per period, of the clock and
//! the pools whose figures changed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Operations;
use crate::core::{Change, OrgName};

/// How often the checkpoint is written. A crash loses at most this much of
/// the counts, and the high-water mark lags the clock by at most this much.
pub const EVERY: Duration = Duration::from_secs(5);

/// Writes a checkpoint every `EVERY` until told to stop.
pub async fn run(ops: Arc<Operations>, mut stop: watch::Receiver<bool>) {
    let mut last = Written::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
        ops.leaps.observe(&ops.clock);
        last = write(&ops, last, false).await;
    }
}

/// Each pool's figures as last written: with ten thousand pools a
/// checkpoint holds tens of thousands of records, nearly all unchanged.
pub type Written = crate::core::Checkpointed;

/// Writes the records that changed since `last` (the clock always does);
/// returns what is now on disk, or `last` again if the write failed.
/// `tight` lowers ceilings to exactly the sessions held (at shutdown, when
/// nothing more is admitted).
pub async fn write(ops: &Operations, last: Written, tight: bool) -> Written {
    let (records, figures) = ops.core.checkpoint_since(ops.clock.now(), &last);
    let mut changes: Vec<Change> = records.into_iter().map(Change::Put).collect();
    // Held until the commit ends: no raise may write between a lowering in
    // memory and its durable write. If the write fails, memory is lower
    // than the store, which is the safe way round.
    let _ceiling = ops.ceiling.lock().await;
    changes.extend(ops.core.lower_ceilings(tight).into_iter().map(Change::Put));
    match ops.commit(changes).await {
        Ok(()) => figures,
        Err(e) => {
            tracing::warn!("checkpoint not written: {e}");
            last
        }
    }
}

/// Before a cluster node hands `orgs` on: lowers each of their pools'
/// ceilings to the sessions held (memory first: from then on nothing past
/// them is admitted here), writes them under the orgs' fences, and only
/// then calls `unfence` (which removes the fences: nothing more is
/// admitted, renewed or written for them here), all under the ceiling
/// lock, so no raise is written in between. If the write fails, the fences
/// go all the same: the durable ceilings stay at least memory's, which the
/// next node holds, as after a lapse. Returns the ceilings written.
pub async fn hand_on(ops: &Operations, orgs: &[OrgName], unfence: impl FnOnce()) -> usize {
    let _ceiling = ops.ceiling.lock().await;
    let changes: Vec<Change> = ops.core.ceilings_to_sessions(orgs).into_iter().map(Change::Put).collect();
    let written = changes.len();
    if written > 0 {
        if let Err(e) = ops.commit(changes).await {
            tracing::warn!("ceilings of orgs handed on not written down (the next node holds more): {e}");
        }
    }
    unfence();
    written
}
