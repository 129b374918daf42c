//! Machines that come and go: the broker's side of a pool's machine policy
//! (`pool::tenure`, `pool::idle`). The operator sets the policy; the expiry
//! task asks which machines are due and commits their release; `machine
//! list` shows each machine's last use.
//!
//! A release is planned like any durable change: the machines' tenures are
//! closed now (nobody starts a session on them from here on), the removal
//! and its audit line are committed, and applying it forgets them; a
//! failed commit reopens them. Nothing is released while seats are held
//! for runners re-attaching after a restart or a takeover: a runner that
//! re-attaches holds its machine again, and only then is the rest judged.

use std::time::Duration;

use super::broker::Broker;
use super::directory::Principal;
use super::error::{Error, Result};
use super::hash::FastMap;
use super::id::{MachineId, OrgName};
use super::pending::{Pending, Undo};
use super::pool::{MachineUse, Policy, Pool, PoolId, PoolUid};
use super::record::{AuditAction, Change, Record};
use super::time::Millis;
use crate::sync::{Arc, Ordering};

/// The longest idle limit a pool may set (ten years).
pub const MAX_IDLE: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Most machines one release commits: their removals and audit lines (and
/// each line's event) fit one fenced etcd transaction, so a release is all
/// or nothing there too; the machine task takes the rest at once.
pub const MACHINES_PER_RELEASE: usize = 30;

/// Who releases machines: the broker itself, in the audit trail.
const EXPIRY_ACTOR: &str = "broker@localhost";

/// A machine the broker released, for the audit, the metrics and the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// Its org.
    pub org: OrgName,
    /// Its pool.
    pub pool: PoolId,
    /// The machine.
    pub machine: MachineId,
    /// When it was last used.
    pub last_use: Millis,
}

/// What the checkpoint last wrote of a tracked pool's last uses: its
/// machines, the sum of their last uses in minutes (last uses only grow, so
/// the sum moves when one enters a new minute) and its expired count. A
/// busy pool's machines are used all the time; written at a minute's grain,
/// a crash can make a machine look idle up to a minute (and a checkpoint)
/// early, which the restart's hold, at least a lease TTL, mostly covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsesMark {
    machines: usize,
    minutes: u64,
    expired: u64,
}

impl Broker {
    /// Operator: sets a pool's machine policy (the pool must exist).
    pub fn plan_set_policy(
        &self,
        p: &Principal,
        org: &OrgName,
        pool: PoolId,
        policy: Policy,
        now: Millis,
    ) -> Result<Vec<Change>> {
        p.require_operator()?;
        if policy.idle.is_some_and(|d| d > MAX_IDLE || d < Duration::from_secs(1)) {
            return Err(Error::invalid("machine idle", "between 1 second and 10 years"));
        }
        self.with_dir(|dir| dir.pool(org, pool).map(|_| ()))?;
        let idle_ms = policy.idle.map(|d| d.as_millis() as u64);
        let idle = idle_ms.map_or("forever".to_string(), |ms| format!("{}s", ms / 1000));
        let detail = format!("pool={pool} machine_idle={idle} ephemeral={}", policy.ephemeral);
        Ok(vec![
            Change::Put(Record::PoolPolicy { org: org.clone(), pool, idle_ms, ephemeral: policy.ephemeral }),
            self.audit(org, p, AuditAction::PolicyChanged, detail, now),
        ])
    }

    /// Closes the tenures of the machines due for release at `now`, at
    /// most `MACHINES_PER_RELEASE`, and plans their removal, audited;
    /// `None` when nothing is due.
    pub fn plan_machine_expiry(&self, now: Millis) -> Option<Pending<Vec<Expired>>> {
        let mut expired = Vec::new();
        let mut tenures = Vec::new();
        for pool in self.tracked.lock().iter().filter(|p| !self.held(&p.org)) {
            let room = MACHINES_PER_RELEASE - expired.len();
            for (machine, tenure) in pool.close_idle(now, self.lease_ttl(), room) {
                let last_use = tenure.last_use();
                expired.push(Expired { org: pool.org.clone(), pool: pool.id, machine, last_use });
                tenures.push(tenure);
            }
        }
        if expired.is_empty() {
            return None;
        }
        let changes = expired.iter().flat_map(|e| self.expiry_changes(e, now)).collect();
        Some(Pending::reserved(changes, expired, Undo::Reopen(tenures)))
    }

    /// After their release committed: counts each machine in its pool.
    pub fn count_expired(&self, expired: &[Expired]) {
        let tracked = self.tracked.lock();
        for e in expired {
            if let Some(pool) = tracked.iter().find(|p| p.org == e.org && p.id == e.pool) {
                pool.count_expired();
            }
        }
    }

    /// A released machine's removal and audit line.
    fn expiry_changes(&self, e: &Expired, now: Millis) -> [Change; 2] {
        // Invariant: a constant, valid address.
        let actor = super::id::Email::new(EXPIRY_ACTOR).expect("a valid address");
        let who = Principal { org: Some(e.org.clone()), email: actor, role: super::id::Role::Owner };
        let detail = format!("pool={} machine={} last_use={}", e.pool, e.machine, super::time::format_utc(e.last_use));
        [
            Change::RemoveMachine { org: e.org.clone(), pool: e.pool, machine: e.machine.clone() },
            self.audit(&e.org, &who, AuditAction::MachineExpired, detail, now),
        ]
    }

    /// When the first tracked machine may come due (a hint for the machine
    /// task, never later than the first one due: a look at that time may
    /// find it not yet due, and keys it at its time); while a hold keeps a tracked pool from being judged, the
    /// hold's end (then it is judged again).
    pub fn next_machine_due(&self) -> Option<Millis> {
        let tracked = self.tracked.lock();
        let look = |p: &Arc<Pool>| match self.held_until(&p.org) {
            Some(end) => Some(end),
            None => p.next_idle(),
        };
        tracked.iter().filter_map(look).min()
    }

    /// When the hold on `org`'s seats ends, if one is in force.
    fn held_until(&self, org: &OrgName) -> Option<Millis> {
        // Acquire: pairs with the Release in `hold_reserves`.
        let all = Some(self.hold_until.load(Ordering::Acquire)).filter(|&end| end != 0).map(Millis);
        let own = self.org_holds.lock().iter().filter(|(_, o)| o == org).map(|(end, _)| *end).max();
        all.max(own)
    }

    /// Whether seats are held for `org`'s re-attaching runners (a restart's
    /// hold, or a takeover's): no machine of it is judged idle meanwhile.
    fn held(&self, org: &OrgName) -> bool {
        // Acquire: pairs with the Release in `hold_reserves`.
        self.hold_until.load(Ordering::Acquire) != 0 || self.holding(org)
    }

    /// Owner/Admin: the org's registered machines with their last use.
    pub fn machine_uses(&self, p: &Principal, org: &OrgName) -> Result<Vec<(PoolId, MachineUse)>> {
        p.require_admin(org)?;
        let mut pools: Vec<Arc<Pool>> =
            self.with_dir(|dir| dir.org(org).map(|o| o.pools.values().cloned().collect()))?;
        pools.sort_by_key(|p| p.id);
        Ok(pools.iter().flat_map(|pool| pool.machine_uses().into_iter().map(|u| (pool.id, u))).collect())
    }

    /// The checkpoint's records of the tracked pools whose last uses moved
    /// since `last` (at a minute's grain: see `UsesMark`), with every
    /// tracked pool's mark now.
    pub(crate) fn last_use_records(
        &self,
        last: &FastMap<PoolUid, UsesMark>,
    ) -> (Vec<Record>, FastMap<PoolUid, UsesMark>) {
        let tracked = self.tracked.lock();
        let mut marks = FastMap::default();
        let mut out = Vec::new();
        for p in tracked.iter() {
            let (uses, expired) = (p.last_uses(), p.expired());
            let minutes = uses.iter().map(|(_, at)| at.0 / 60_000).sum();
            let mark = UsesMark { machines: uses.len(), minutes, expired };
            if last.get(&p.uid) != Some(&mark) {
                out.push(Record::LastUses { org: p.org.clone(), pool: p.id, uses, expired });
            }
            marks.insert(p.uid, mark);
        }
        (out, marks)
    }

    /// After applying `change`: a pool that now tracks machine use joins
    /// the tracked list; a new policy's tenures count the live sessions.
    pub(super) fn track(&self, change: &Change) {
        let (org, pool) = match change {
            Change::Put(Record::PoolPolicy { org, pool, .. } | Record::EphemeralMachine { org, pool, .. }) => {
                (org, *pool)
            }
            _ => return,
        };
        let Ok(handle) = self.with_dir(|dir| dir.pool(org, pool).cloned()) else { return };
        if matches!(change, Change::Put(Record::PoolPolicy { .. })) {
            self.sessions.adopt_tenures(handle.uid, |m| handle.tenure_of(m));
        }
        let mut tracked = self.tracked.lock();
        if !tracked.iter().any(|p| Arc::ptr_eq(p, &handle)) {
            tracked.push(handle);
        }
    }
}
