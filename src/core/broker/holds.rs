//! Seats held for runners who may still believe in them: after a restart,
//! every pool holds its durable ceiling's worth until the previous run's
//! runners re-attach or their leases would have run out; in a cluster, an
//! adopted org holds its previous node's the same way. And the ceilings
//! themselves: raised before an admission would pass them, lowered at
//! checkpoints, written down to the sessions held when orgs are handed on.

use std::time::Duration;

use crate::core::id::OrgName;
use crate::core::pool::PoolId;
use crate::core::record::{Change, Record};
use crate::core::time::Millis;
use crate::sync::Ordering;

use super::Broker;

/// Seats a restart holds for the previous run's runners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Seats held, over all pools.
    pub seats: u64,
    /// When the seats not re-attached by then come back.
    pub until: Millis,
    /// The record to commit before admitting anything, so the next restart
    /// honours this run's TTL and this hold.
    pub record: Record,
    /// The ceilings the hold raised (`Pool::hold_reserve`), to commit
    /// with `record`.
    pub ceilings: Vec<Record>,
    /// The removals of the clean stop's counts the hold read
    /// (`Record::Stopped`), to commit with `record`: a later crash must
    /// not read them.
    pub cleared: Vec<Change>,
}

/// What holding the seats of some orgs' pools took.
#[derive(Default)]
struct Holding {
    seats: u64,
    ceilings: Vec<Record>,
    cleared: Vec<Change>,
}

impl Broker {
    /// After a restart, before admitting anything: every pool holds its
    /// durable ceiling's worth of seats for the previous run's sessions,
    /// until their runners re-attach or one lease TTL of the run that
    /// admitted them, plus the restart grace, has passed since `now` (or
    /// until an earlier run's hold ends, if later). `None` when ceilings
    /// are off.
    pub fn hold_reserves(&self, now: Millis) -> Option<Hold> {
        if !self.config.ceilings {
            return None;
        }
        let previous = *self.previous_leases.lock();
        // A store without the record predates ceilings (or is new): this
        // run's TTL is the best estimate of the last run's.
        let ttl = previous.map_or(self.config.lease_ttl, |(ms, _)| Duration::from_millis(ms));
        let until = now.after(ttl + self.config.restart_grace).max(previous.map_or(Millis(0), |(_, h)| h));
        let orgs: Vec<OrgName> = self.with_dir(|dir| dir.orgs.keys().cloned().collect());
        let Holding { seats, ceilings, cleared } = self.hold_pools(&orgs, Some(self.high_water()));
        if seats > 0 {
            // Release: pairs with the Acquire in `next_deadline`.
            self.hold_until.store(until.0, Ordering::Release);
        }
        let record = Record::Leases { ttl_ms: self.config.lease_ttl.as_millis() as u64, hold_until: until };
        Some(Hold { seats, until, record, ceilings, cleared })
    }

    /// Holds the seats of `orgs`' pools (`Pool::hold_reserve`: from a
    /// clean stop's counts stamped `stamp`, the store's clock mark, where
    /// there are some; `None`: none trusted).
    fn hold_pools(&self, orgs: &[OrgName], stamp: Option<Millis>) -> Holding {
        self.with_dir(|dir| {
            let mut out = Holding::default();
            for (org, entry) in orgs.iter().filter_map(|o| dir.orgs.get(o).map(|e| (o, e))) {
                for pool in entry.pools.values() {
                    let held = pool.hold_reserve(stamp);
                    out.seats += u64::from(held.seats);
                    if held.raised {
                        out.ceilings.push(Record::Ceiling { org: org.clone(), pool: pool.id, seats: held.seats });
                    }
                    if held.stopped {
                        out.cleared.push(Change::RemoveStopped { org: org.clone(), pool: pool.id });
                    }
                }
            }
            out
        })
    }

    /// At a single broker's clean stop, once drained (the ceilings lowered
    /// to the sessions held): each of `orgs`' pools' sessions on reserved
    /// seats and in caps (`Pool::stop_counts`, which closes the
    /// reservations to newcomers), stamped `stamp`, for the next start to
    /// hold just those.
    pub fn stop_records(&self, orgs: &[OrgName], stamp: Millis) -> Vec<Record> {
        self.with_dir(|dir| {
            let entries = orgs.iter().filter_map(|o| dir.orgs.get(o).map(|e| (o, e)));
            let pools = entries.flat_map(|(org, e)| e.pools.values().map(move |p| (org, p)));
            let counted = pools.filter_map(|(org, p)| p.stop_counts(stamp).map(|s| (org, p.id, s)));
            let record = |(org, pool, s): (&OrgName, PoolId, crate::core::pool::Stopped)| Record::Stopped {
                org: org.clone(),
                pool,
                reserved: s.reserved,
                labels: s.labels,
                users: s.users,
                stamp: s.stamp,
            };
            counted.map(record).collect()
        })
    }

    /// In a cluster, taking over `org` from another node: applies its
    /// records (read from the cluster's store) and, with ceilings on, holds
    /// every pool's durable ceiling for the previous owner's runners, and
    /// every reserved seat and each cap's limit (any `Record::Stopped` is
    /// not trusted: a node of an older build may have served the org since
    /// it was written, leaving it stale) until they
    /// re-attach or one lease TTL (the longest any node has recorded) plus
    /// the restart grace has passed since `now`. Returns the seats held and
    /// what the shell must commit under the org's claim before it serves
    /// the org (as a restart commits its `Hold` before admitting): the
    /// ceilings the hold raised, so a later owner holds as many, and the
    /// removals of any counts it read. If that commit fails, the shell forgets
    /// the org (`forget_orgs`). The same rule as a restart
    /// (`hold_reserves`), for one org.
    pub fn adopt_org(&self, org: &OrgName, records: Vec<Record>, now: Millis) -> (u64, Vec<Change>) {
        self.apply(&records.into_iter().map(Change::Put).collect::<Vec<_>>(), now);
        if !self.config.ceilings {
            return (0, Vec::new());
        }
        let previous = self.previous_leases.lock().map_or(Duration::ZERO, |(ms, _)| Duration::from_millis(ms));
        let until = now.after(self.config.lease_ttl.max(previous) + self.config.restart_grace);
        let Holding { seats, ceilings, cleared } = self.hold_pools(std::slice::from_ref(org), None);
        if seats > 0 {
            self.org_holds.lock().push((until, org.clone()));
        }
        let mut changes: Vec<Change> = ceilings.into_iter().map(Change::Put).collect();
        changes.extend(cleared);
        (seats, changes)
    }

    /// In a cluster, handing orgs to other nodes: forgets them entirely
    /// (their pools, members and keys, their live sessions without ending
    /// them, since their runners re-attach at the next owner, and any
    /// hold), in one pass over the sessions whatever their number (a node
    /// that joins takes many orgs at once). The shell has already stopped
    /// admitting for them and writing their records.
    pub fn forget_orgs(&self, orgs: &[OrgName], now: Millis) {
        let gone: std::collections::HashSet<&OrgName> = orgs.iter().collect();
        let removed = {
            let mut dir = self.dir.write();
            dir.keys.retain(|_, k| k.org.as_ref().is_none_or(|o| !gone.contains(o)));
            orgs.iter().filter(|o| dir.orgs.remove(*o).is_some()).count()
        };
        // Release: pairs with the Acquire in `version` (cached principals of the orgs go stale).
        self.version.fetch_add(1, Ordering::Release);
        if removed == 0 {
            return;
        }
        self.offline_due.lock().retain(|_, pool| !gone.contains(&pool.org));
        self.org_holds.lock().retain(|(_, o)| !gone.contains(o));
        self.tracked.lock().retain(|pool| !gone.contains(&pool.org));
        // Not ends: nobody released these seats; the next owner holds them,
        // and counts their ends (the history counts each session's end once
        // across the nodes: its seat time here, its end where it ends).
        self.sessions.hand_on_where(now, |p, _, _| gone.contains(&p.org));
    }

    /// The orgs in memory (in a cluster: the orgs this node serves).
    pub fn org_names(&self) -> Vec<OrgName> {
        self.with_dir(|dir| dir.orgs.keys().cloned().collect())
    }

    /// Returns the seats still held for the previous run once the hold is due.
    pub(super) fn end_hold(&self, now: Millis) {
        self.end_org_holds(now);
        // Relaxed pre-check; the swap below decides who ends it.
        let until = self.hold_until.load(Ordering::Relaxed);
        if until == 0 || now.0 < until || self.hold_until.swap(0, Ordering::AcqRel) == 0 {
            return;
        }
        self.with_dir(|dir| {
            for pool in dir.orgs.values().flat_map(|o| o.pools.values()) {
                pool.release_reserve();
            }
        });
    }

    /// Returns the seats held for adopted orgs whose hold is due.
    fn end_org_holds(&self, now: Millis) {
        let due: Vec<OrgName> = {
            let mut holds = self.org_holds.lock();
            if holds.iter().all(|(at, _)| *at > now) {
                return;
            }
            let (due, later) = std::mem::take(&mut *holds).into_iter().partition(|(at, _)| *at <= now);
            *holds = later;
            due.into_iter().map(|(_, org): (Millis, OrgName)| org).collect()
        };
        self.with_dir(|dir| {
            for pool in due.iter().filter_map(|o| dir.orgs.get(o)).flat_map(|o| o.pools.values()) {
                pool.release_reserve();
            }
        });
    }

    /// The ceiling record to commit before `org`/`pool` admits past its
    /// current ceiling, or `None` if none is needed any more (a concurrent
    /// raise got there, seats were freed, or the quota is what binds).
    /// The shell serialises ceiling writes; committing and settling the
    /// change raises the ceiling in memory.
    pub fn plan_ceiling(&self, org: &OrgName, pool: PoolId) -> Option<crate::core::pending::Pending<()>> {
        let handle = self.with_dir(|dir| dir.pool(org, pool).ok().cloned())?;
        let seats = handle.ceiling_wanted()?;
        let record = Record::Ceiling { org: org.clone(), pool, seats };
        Some(crate::core::pending::Pending::plan(vec![Change::Put(record)], ()))
    }

    /// Lowers, in memory, the ceilings of pools whose sessions hold far
    /// fewer seats (`tight`: any fewer, to exactly what they hold), and
    /// returns the records the shell must then write (serialised with
    /// raises; they need no applying).
    pub fn lower_ceilings(&self, tight: bool) -> Vec<Record> {
        self.with_dir(|dir| {
            let mut out = Vec::new();
            for (org, entry) in &dir.orgs {
                for pool in entry.pools.values() {
                    if let Some(seats) = pool.lower_ceiling(tight) {
                        out.push(Record::Ceiling { org: org.clone(), pool: pool.id, seats });
                    }
                }
            }
            out
        })
    }

    /// In a cluster, before handing `orgs` on: lowers each of their pools'
    /// ceilings to the sessions they hold (`Pool::ceiling_to_sessions`)
    /// and returns the records the shell must write under the orgs' fences
    /// before it lets them go, so the next node holds only the seats that
    /// runners may still believe in.
    pub fn ceilings_to_sessions(&self, orgs: &[OrgName]) -> Vec<Record> {
        self.with_dir(|dir| {
            let mut out = Vec::new();
            for (org, entry) in orgs.iter().filter_map(|o| dir.orgs.get(o).map(|e| (o, e))) {
                for pool in entry.pools.values() {
                    if let Some(seats) = pool.ceiling_to_sessions() {
                        out.push(Record::Ceiling { org: org.clone(), pool: pool.id, seats });
                    }
                }
            }
            out
        })
    }

    /// Whether seats are still held for the runners of `org`'s previous
    /// node (a takeover's hold, `adopt_org`, not yet over).
    pub fn holding(&self, org: &OrgName) -> bool {
        self.org_holds.lock().iter().any(|(_, o)| o == org)
    }
}
