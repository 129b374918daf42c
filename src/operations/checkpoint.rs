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
use crate::core::{Broker, Change, OrgName};

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
/// nothing more is admitted) and, outside a cluster, writes the sessions
/// on reserved seats and in caps (`Record::Stopped`, stamped with this
/// commit's clock mark), so the restart holds no more of them than there
/// are. A cluster node writes none: a node of an older build taking the
/// org over would neither read nor remove them, and a later owner would
/// trust counts it cannot tell are stale.
pub async fn write(ops: &Operations, last: Written, tight: bool) -> Written {
    let now = ops.clock.now();
    let (records, figures) = ops.core.checkpoint_since(now, &last);
    let mut changes: Vec<Change> = records.into_iter().map(Change::Put).collect();
    // Held until the commit ends: no raise may write between a lowering in
    // memory and its durable write. If the write fails, memory is lower
    // than the store, which is the safe way round.
    let _ceiling = ops.ceiling.lock().await;
    changes.extend(ops.core.lower_ceilings(tight).into_iter().map(Change::Put));
    if tight && ops.cluster.is_none() {
        // After the ceilings: the count closes the reservations to newcomers.
        changes.extend(ops.core.stop_records(&ops.core.org_names(), now).into_iter().map(Change::Put));
    }
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
/// them is admitted here), writes them under the orgs' fences with the
/// machines' last uses (`handover_records`), after their webhooks' cursors
/// as delivered (`deliver::write_cursors`), and only then calls `unfence`
/// (which removes the fences: nothing more is admitted, renewed or written
/// for them here), all under the ceiling lock, so no raise is written in
/// between. If the write fails, the fences go all the same: the durable
/// ceilings stay at least memory's, which the next node holds, as after a
/// lapse. Returns the ceilings written.
pub async fn hand_on(ops: &Operations, orgs: &[OrgName], unfence: impl FnOnce()) -> usize {
    // Their webhooks' cursors as delivered now (the writer lock, taken
    // before the ceiling lock as every path holding both).
    super::deliver::write_cursors(ops, orgs).await;
    let _ceiling = ops.ceiling.lock().await;
    let (changes, ceilings) = handover_records(&ops.core, orgs);
    if !changes.is_empty() {
        if let Err(e) = ops.commit(changes).await {
            tracing::warn!("ceilings of orgs handed on not written down (the next node holds more): {e}");
        }
    }
    unfence();
    ceilings
}

/// What a node writes of `orgs` as it hands them on: each pool's ceiling
/// lowered to its sessions (how many there are is returned too), and every
/// tracked pool's machines' last uses as they are now. The checkpoint writes
/// last uses only when one enters a new minute, so without these the next
/// node would read uses up to a minute and a checkpoint old, and could
/// release a machine used seconds before the move.
pub fn handover_records(core: &Broker, orgs: &[OrgName]) -> (Vec<Change>, usize) {
    let mut changes: Vec<Change> = core.ceilings_to_sessions(orgs).into_iter().map(Change::Put).collect();
    let ceilings = changes.len();
    let (uses, _) = core.last_use_records(&Default::default());
    let theirs = uses.into_iter().filter(|r| r.org().is_some_and(|o| orgs.contains(o)));
    changes.extend(theirs.map(Change::Put));
    (changes, ceilings)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::testkit::{mid, t, Fixture};
    use crate::core::{Checkpointed, PoolId, Record};

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_handover_writes_the_last_uses_the_checkpoint_left_for_the_next_minute() {
        let w = Fixture::new(2, 2, Duration::from_secs(30));
        w.set_policy(Some(IDLE), false, t(0));
        w.register("a").unwrap();
        let first = w.acquire("a", 1, 1, t(0)).unwrap();
        w.broker.release(&w.owner, first.session, t(5_000)).unwrap();
        let (stored, written) = w.broker.checkpoint_since(t(6_000), &Checkpointed::default());
        let stored = stored.into_iter().filter(|r| matches!(r, Record::LastUses { .. }));
        // Used again in the same minute: the next checkpoint leaves it out.
        let second = w.acquire("a", 2, 1, t(7_000)).unwrap();
        w.broker.release(&w.owner, second.session, t(9_000)).unwrap();
        let (records, _) = w.broker.checkpoint_since(t(10_000), &written);
        assert!(!records.iter().any(|r| matches!(r, Record::LastUses { .. })), "left for the next minute");
        let (handed, _) = handover_records(&w.broker, std::slice::from_ref(&w.org));
        let others = handover_records(&w.broker, &[OrgName::new("other").unwrap()]).0;
        assert!(!others.iter().any(|c| matches!(c, Change::Put(Record::LastUses { .. }))), "only the orgs handed on");
        // The next node, from the org's records (the checkpoint's last use:
        // 5 s) and the handover's: machine a was used at 9 s, so it is
        // released a minute after that, not at 65 s.
        let next = Fixture::new(2, 2, Duration::from_secs(30));
        let pool = PoolId::KRE_DEFAULT;
        let policy = Record::PoolPolicy { org: next.org.clone(), pool, idle_ms: Some(60_000), ephemeral: false };
        let machine = Record::Machine { org: next.org.clone(), pool, machine: mid("a"), registered: t(0) };
        let mut changes: Vec<Change> = [policy, machine].into_iter().chain(stored).map(Change::Put).collect();
        changes.extend(handed);
        next.broker.apply(&changes, t(10_000));
        assert!(next.expire_machines(t(68_999)).is_empty(), "used at 9 s: not idle before 69 s");
        let gone: Vec<String> = next.expire_machines(t(69_000)).iter().map(|e| e.machine.to_string()).collect();
        assert_eq!(gone, ["a"]);
    }
}
