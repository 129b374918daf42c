//! Seats reserved by job label, as admins plan them: who may reserve, the
//! rule that a pool's reservations add up to at most its quota, the durable
//! record and its audit line. The seats themselves are the pool's
//! (`pool::lanes`); this module never takes one.

use super::broker::Broker;
use super::error::{Error, Result};
use super::id::OrgName;
use super::pool::{Pool, PoolId, ReservationUse};
use super::record::{AuditAction, Change, Record};
use super::time::Millis;
use super::Principal;
use crate::sync::Arc;

/// Most reservations one pool has: each admission carrying labels and
/// each hand-off of a freed seat walks them.
pub const MAX_RESERVATIONS: usize = 32;

impl Broker {
    /// Owner/Admin: reserves `seats` seats of a pool for the sessions
    /// carrying the label `key=value` (0: removes the reservation). Refused
    /// (`ReservedPastQuota`) if the pool's reservations would add up to
    /// more than its quota. Audited.
    pub fn plan_set_reservation(
        &self,
        p: &Principal,
        (org, pool): (&OrgName, PoolId),
        label: (String, String),
        seats: u32,
        now: Millis,
    ) -> Result<Vec<Change>> {
        let handle = self.admin_pool(p, org, pool)?;
        crate::value::Labels::new([label.clone()])?;
        let (key, value) = label;
        let existing = handle.reservations();
        let others: Vec<_> = existing.iter().filter(|r| r.key != key || r.value != value).collect();
        if seats > 0 && others.len() >= MAX_RESERVATIONS {
            return Err(Error::invalid("reservation", format!("at most {MAX_RESERVATIONS} a pool")));
        }
        let others: u64 = others.iter().map(|r| u64::from(r.seats)).sum();
        let total = others + u64::from(seats);
        if total > u64::from(handle.quota()) {
            let reserved = u32::try_from(total).unwrap_or(u32::MAX);
            return Err(Error::ReservedPastQuota { quota: handle.quota(), reserved });
        }
        let was = existing.iter().find(|r| r.key == key && r.value == value).map_or(0, |r| r.seats);
        // First: the seats given up are covered before they count against it.
        let ceiling = handle.ceiling_after_lowering(was.saturating_sub(seats));
        let ceiling = ceiling.map(|seats| Change::Put(Record::Ceiling { org: org.clone(), pool, seats }));
        let detail = format!("pool={pool} label={key}={value} seats={seats}");
        Ok(ceiling
            .into_iter()
            .chain([
                Change::Put(Record::Reservation { org: org.clone(), pool, key, value, seats }),
                self.audit(org, p, AuditAction::SeatsReserved, detail, now),
            ])
            .collect())
    }

    /// A member: every reservation of the org's pools, by pool then label.
    pub fn reservations(&self, p: &Principal, org: &OrgName) -> Result<Vec<(PoolId, ReservationUse)>> {
        p.require_member(org)?;
        let mut pools: Vec<Arc<Pool>> =
            self.with_dir(|dir| dir.org(org).map(|o| o.pools.values().cloned().collect()))?;
        pools.sort_by_key(|p| p.id);
        Ok(pools.iter().flat_map(|pool| pool.reservations().into_iter().map(|r| (pool.id, r))).collect())
    }
}
