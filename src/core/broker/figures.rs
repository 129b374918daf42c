//! The broker's numbers handed to the shell's background tasks: the
//! checkpoint (each pool's counts and the clock's high-water mark, only
//! what changed since the last one), the seat time so far, and the
//! history's harvest of closed minutes and pool samples.

use crate::core::id::OrgName;
use crate::core::pool::{Figures, PoolId, PoolUid};
use crate::core::record::Record;
use crate::core::time::Millis;
use crate::sync::Ordering;

use super::Broker;

/// What the checkpoint last written held (`checkpoint_since`): each
/// pool's figures, and each tracked pool's last uses (their mark).
#[derive(Clone, Debug, Default)]
pub struct Checkpointed {
    figures: crate::core::hash::FastMap<PoolUid, Figures>,
    uses: crate::core::hash::FastMap<PoolUid, crate::core::machines::UsesMark>,
}

/// What `Broker::harvest` hands the history.
#[derive(Debug, Default)]
pub struct Harvest {
    /// Closed minutes per pool (several shards' shares of a minute come
    /// separately; the history sums them).
    pub minutes: Vec<(OrgName, PoolId, crate::core::usage::Closed)>,
    /// Every pool's numbers at the harvest.
    pub pools: Vec<PoolSample>,
    /// Closed minutes dropped because no harvest came for too long.
    pub dropped: u64,
}

/// One pool at a harvest.
#[derive(Debug, Clone)]
pub struct PoolSample {
    /// Its org.
    pub org: OrgName,
    /// Which pool.
    pub pool: PoolId,
    /// Highest seats in use since the last harvest.
    pub peak: u32,
    /// Lowest seats in use since the last harvest.
    pub trough: u32,
    /// Its quota now.
    pub quota: u32,
    /// Refusals for other reasons than the quota, since the pool was
    /// created (`Denial::ALL` order): the history takes differences.
    pub denied: [u64; crate::core::pool::Denial::ALL.len()],
    /// Runners that joined the wait queue this run (differences, too).
    pub queued: u64,
    /// Users granted the pool now (KSE's Licensed Users).
    pub assigned: u32,
    /// Node-locked activations and live offline licenses now.
    pub activated: u32,
    /// Machines released unused since the pool was created (differences, too).
    pub expired: u64,
    /// Busy minutes in a row that are told of (`core::alerts`; none: not told).
    pub busy_minutes: Option<u32>,
}

impl Broker {
    /// The latest time a previous run recorded (0 if none).
    pub fn high_water(&self) -> Millis {
        // Relaxed: see `apply`.
        Millis(self.high_water.load(Ordering::Relaxed))
    }

    /// Records that keep what must outlive this run but is not a durable
    /// change of its own: every pool's admission counts, and the clock's
    /// high-water mark `now`. The shell writes them to the store now and
    /// then; they are never applied back to this run's memory.
    pub fn checkpoint(&self, now: Millis) -> Vec<Record> {
        self.checkpoint_since(now, &Checkpointed::default()).0
    }

    /// `checkpoint`, less the pools whose figures are those of `last` (the
    /// figures of the checkpoint last written); with every pool's figures
    /// now, to pass as `last` once these records are written.
    pub fn checkpoint_since(&self, now: Millis, last: &Checkpointed) -> (Vec<Record>, Checkpointed) {
        // Relaxed: a statistic.
        let auth_failures = self.auth_failures.load(Ordering::Relaxed);
        let mut out = vec![Record::Clock { high_water: now }, Record::AuthFailures { count: auth_failures }];
        let (uses, marks) = self.last_use_records(&last.uses);
        out.extend(uses);
        let counts = self.sessions.all_counts();
        let seat_ms = self.sessions.seat_ms(now);
        let dir = self.dir.read();
        let mut figures = crate::core::hash::FastMap::with_capacity_and_hasher(last.figures.len(), Default::default());
        for pool in dir.orgs.values().flat_map(|entry| entry.pools.values()) {
            let this_run = counts.get(&pool.uid).copied().unwrap_or_default();
            let f = pool.figures(this_run, seat_ms.get(&pool.uid).copied().unwrap_or(0));
            if last.figures.get(&pool.uid) != Some(&f) {
                out.extend(f.records(&pool.org, pool.id));
            }
            figures.insert(pool.uid, f);
        }
        (out, Checkpointed { figures, uses: marks })
    }

    /// Seat-milliseconds every pool's sessions have held up to `now`, since
    /// the pool was created (survives restarts through `checkpoint`): the
    /// integral of seats in use, so its rate over the quota is utilization.
    pub fn seat_ms(&self, now: Millis) -> Vec<(OrgName, PoolId, u64)> {
        let this_run = self.sessions.seat_ms(now);
        let dir = self.dir.read();
        dir.orgs
            .values()
            .flat_map(|e| e.pools.values())
            .map(|p| (p.org.clone(), p.id, p.seat_ms_before() + this_run.get(&p.uid).copied().unwrap_or(0)))
            .collect()
    }

    /// Closes every pool's minutes up to `now` (see `usage`) for the
    /// history: each pool's closed minutes, its seats-in-use extremes since
    /// the last harvest, and how many closed minutes were dropped.
    pub fn harvest(&self, now: Millis) -> Harvest {
        let mut minutes = Vec::new();
        let dropped = self.sessions.harvest(now, |pool, closed| minutes.push((pool.org.clone(), pool.id, closed)));
        let dir = self.dir.read();
        let pools = dir
            .orgs
            .values()
            .flat_map(|e| e.pools.values())
            .map(|p| {
                let (peak, trough) = p.take_extremes();
                let (assigned, bound, offline) = p.licensing_counts();
                PoolSample {
                    org: p.org.clone(),
                    pool: p.id,
                    peak,
                    trough,
                    quota: p.quota(),
                    denied: p.denied(),
                    queued: p.queued(),
                    assigned,
                    activated: bound + offline,
                    expired: p.expired(),
                    busy_minutes: p.alerts().busy_minutes,
                }
            })
            .collect();
        Harvest { minutes, pools, dropped }
    }
}
