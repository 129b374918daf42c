//! Who exists and who may do what: orgs, their pools and users, API keys.
//!
//! The directory is read-mostly (it changes only on admin requests), so it
//! sits behind one reader-writer lock in the broker; the hot counters live
//! in the `Pool`s it hands out. It never touches sessions or the store.

use std::collections::HashMap;

use super::error::{Error, Result};
use super::id::{Email, KeyHash, OrgName, Role};
use super::pool::{OfflineEntry, Pool, PoolId};
use super::record::{Change, OfflineLicense, Record};
use super::time::Millis;
use super::webhook::WebhookView;
use crate::sync::Arc;

/// An authenticated caller, resolved from an API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The caller's org; `None` for the operator.
    pub org: Option<OrgName>,
    /// The user the key belongs to.
    pub email: Email,
    /// What the caller may do.
    pub role: Role,
}

impl Principal {
    /// Refuses unless the caller is the broker's operator.
    pub fn require_operator(&self) -> Result<()> {
        match self.role {
            Role::Operator => Ok(()),
            _ => Err(Error::Forbidden("only the broker's operator can do this")),
        }
    }

    /// Refuses unless the caller belongs to `org` (any role).
    pub fn require_member(&self, org: &OrgName) -> Result<()> {
        match &self.org {
            Some(mine) if mine == org => Ok(()),
            None => Err(Error::Forbidden("the operator is not a member of any org")),
            Some(_) => Err(Error::Forbidden("not a member of that org")),
        }
    }

    /// Refuses unless the caller may read `org`'s numbers: the operator
    /// (every org) or a member (any role).
    pub fn require_reader(&self, org: &OrgName) -> Result<()> {
        match self.role {
            Role::Operator => Ok(()),
            _ => self.require_member(org),
        }
    }

    /// Refuses unless the caller is an Owner or Admin of `org`.
    pub fn require_admin(&self, org: &OrgName) -> Result<()> {
        self.require_member(org)?;
        if self.role.is_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden("only an Owner or Admin of the org can do this"))
        }
    }

    /// Refuses when an Admin acts on an Owner: only Owners manage Owners.
    pub fn require_may_manage(&self, target: Role) -> Result<()> {
        if target == Role::Owner && self.role != Role::Owner {
            return Err(Error::Forbidden("only an Owner can manage an Owner"));
        }
        Ok(())
    }
}

/// One org's durable state in memory.
pub(crate) struct OrgEntry {
    pub subscription_end: Millis,
    pub created: Millis,
    pub pools: HashMap<PoolId, Arc<Pool>>,
    pub users: HashMap<Email, UserEntry>,
    /// Its webhooks, by id, with how far each has delivered.
    pub webhooks: std::collections::BTreeMap<String, WebhookView>,
    /// The last notice given before its subscription ends: (end, days).
    pub notice: Option<(Millis, u32)>,
}

/// A member of an org.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UserEntry {
    pub role: Role,
    pub created: Millis,
}

/// An API key's metadata (never the key).
#[derive(Clone, Debug)]
pub(crate) struct KeyEntry {
    pub org: Option<OrgName>,
    pub email: Email,
    pub created: Millis,
    pub revoked: bool,
}

/// Orgs and keys.
#[derive(Default)]
pub(crate) struct Directory {
    pub orgs: HashMap<OrgName, OrgEntry>,
    pub keys: HashMap<KeyHash, KeyEntry>,
}

impl Directory {
    /// Resolves a key to its principal; revoked keys and removed users are refused.
    pub fn principal(&self, hash: &KeyHash) -> Result<Principal> {
        let key = self.keys.get(hash).filter(|k| !k.revoked).ok_or(Error::Unauthorized)?;
        let role = match &key.org {
            None => Role::Operator,
            Some(org) => {
                let entry = self.orgs.get(org).ok_or(Error::Unauthorized)?;
                entry.users.get(&key.email).ok_or(Error::Unauthorized)?.role
            }
        };
        Ok(Principal { org: key.org.clone(), email: key.email.clone(), role })
    }

    pub fn org(&self, org: &OrgName) -> Result<&OrgEntry> {
        self.orgs.get(org).ok_or_else(|| Error::not_found("org", org))
    }

    pub fn pool(&self, org: &OrgName, pool: PoolId) -> Result<&Arc<Pool>> {
        self.org(org)?.pools.get(&pool).ok_or_else(|| Error::not_found("pool", format!("{org}/{pool}")))
    }

    /// Applies one committed change. `new_pool` builds pools so the broker
    /// controls their uids. Returns an offline license that became active in
    /// memory, for the broker to track its expiry.
    pub fn apply(
        &mut self,
        change: &Change,
        now: Millis,
        new_pool: impl FnOnce(&OrgName, PoolId, u32, Millis) -> Arc<Pool>,
    ) -> Option<(Arc<Pool>, OfflineEntry)> {
        match change {
            Change::Put(Record::Org { name, subscription_end, created }) => {
                self.put_org(name, *subscription_end, *created)
            }
            Change::RemoveUser { org, email } => {
                if let Some(entry) = self.orgs.get_mut(org) {
                    entry.users.remove(email);
                }
            }
            Change::Put(Record::Pool { org, pool, quota }) => self.put_pool(org, *pool, *quota, new_pool),
            Change::Put(Record::User { org, email, role, created }) => {
                if let Some(entry) = self.orgs.get_mut(org) {
                    entry.users.insert(email.clone(), UserEntry { role: *role, created: *created });
                }
            }
            Change::Put(Record::Key { hash, org, email, created, revoked }) => {
                let entry = KeyEntry { org: org.clone(), email: email.clone(), created: *created, revoked: *revoked };
                self.keys.insert(*hash, entry);
            }
            Change::Put(Record::Offline { org, pool, license }) => return self.put_offline(org, *pool, license),
            Change::Put(Record::SubscriptionNotice { org, end, days }) => {
                if let Some(entry) = self.orgs.get_mut(org) {
                    entry.notice = Some((*end, *days));
                }
            }
            Change::Put(Record::Webhook(_) | Record::WebhookCursor { .. })
            | Change::RemoveWebhook { .. }
            | Change::RemoveWebhookCursor { .. } => self.apply_webhook(change),
            // The audit trail and the outbox are never read back; the broker keeps the clock and lease marks.
            Change::Put(Record::Audit(_) | Record::Event(_) | Record::Clock { .. } | Record::Leases { .. })
            | Change::RemoveEvent { .. } => {}
            other => self.apply_to_pool(other, now),
        }
        None
    }

    /// A webhook added, changed or removed, or its cursor moved.
    fn apply_webhook(&mut self, change: &Change) {
        let Some(entry) = change.org().and_then(|org| self.orgs.get_mut(org)) else { return };
        let hooks = &mut entry.webhooks;
        match change {
            Change::Put(Record::Webhook(h)) => {
                let delivered = hooks.get(&h.id).map_or(0, |v| v.delivered);
                hooks.insert(h.id.clone(), WebhookView { hook: h.clone(), delivered });
            }
            Change::Put(Record::WebhookCursor { id, delivered, .. }) => {
                if let Some(v) = hooks.get_mut(id) {
                    v.delivered = (*delivered).max(v.delivered);
                }
            }
            Change::RemoveWebhook { id, .. } => {
                hooks.remove(id);
            }
            _ => {}
        }
    }

    fn put_org(&mut self, name: &OrgName, subscription_end: Millis, created: Millis) {
        let entry = self.orgs.entry(name.clone()).or_insert_with(|| OrgEntry {
            subscription_end,
            created,
            pools: HashMap::new(),
            users: HashMap::new(),
            webhooks: Default::default(),
            notice: None,
        });
        entry.subscription_end = subscription_end;
        for pool in entry.pools.values() {
            pool.set_not_after(subscription_end);
        }
    }

    fn put_pool(
        &mut self,
        org: &OrgName,
        pool: PoolId,
        quota: u32,
        new_pool: impl FnOnce(&OrgName, PoolId, u32, Millis) -> Arc<Pool>,
    ) {
        let Some(entry) = self.orgs.get_mut(org) else { return };
        match entry.pools.get(&pool) {
            Some(p) => p.set_quota(quota),
            None => {
                let end = entry.subscription_end;
                entry.pools.insert(pool, new_pool(org, pool, quota, end));
            }
        }
    }

    fn put_offline(&self, org: &OrgName, pool: PoolId, license: &OfflineLicense) -> Option<(Arc<Pool>, OfflineEntry)> {
        let p = self.pool(org, pool).ok()?;
        let entry = OfflineEntry {
            id: license.id,
            machine: license.machine.clone(),
            issued: license.issued,
            expires: license.expires,
            created_by: license.created_by.clone(),
            active: true,
        };
        p.restore_offline(entry.clone()).then(|| (p.clone(), entry))
    }

    /// The per-pool records: machines, grants and bindings, put or removed;
    /// the restored counts, caps and ceilings; the machine policy (applied
    /// at `now`) and last uses.
    fn apply_to_pool(&self, change: &Change, now: Millis) {
        let Some((org, pool)) = pool_of(change) else { return };
        let Ok(p) = self.pool(org, pool) else { return };
        match change {
            Change::Put(Record::Machine { machine, registered, .. }) => {
                p.restore_machine(machine.clone(), *registered, false)
            }
            Change::Put(Record::EphemeralMachine { machine, registered, .. }) => {
                p.restore_machine(machine.clone(), *registered, true)
            }
            Change::Put(Record::LastUses { uses, expired, .. }) => p.restore_last_uses(uses, *expired),
            // A new policy's tenures count live sessions: `Broker::follow` sweeps.
            Change::Put(Record::PoolPolicy { idle_ms, ephemeral, .. }) => {
                let idle = idle_ms.map(std::time::Duration::from_millis);
                p.set_policy(super::pool::Policy { idle, ephemeral: *ephemeral }, now)
            }
            Change::RemoveMachine { machine, .. } => {
                p.forget_machine(machine);
            }
            Change::Put(Record::Grant { email, granted, .. }) => p.restore_grant(email, *granted),
            Change::RemoveGrant { email, .. } => {
                p.forget_grant(email);
            }
            Change::Put(Record::Binding { email, machine, bound, .. }) => p.restore_binding(email, machine, *bound),
            Change::RemoveBinding { email, .. } => {
                p.unbind(email);
            }
            Change::Put(Record::Counters { admitted, rejected, .. }) => p.restore_counts(*admitted, *rejected),
            Change::Put(Record::Ends { by_reason, .. }) => p.restore_ends(*by_reason),
            Change::Put(Record::Denials { by_reason, .. }) => p.restore_denials(by_reason),
            Change::Put(Record::SeatTime { ms, .. }) => p.restore_seat_ms(*ms),
            // A new cap counts the user's live sessions: `Broker::apply` sweeps.
            Change::Put(Record::UserLimit { email, max, .. }) => {
                let _ = p.set_cap(email, *max);
            }
            // A new label cap counts the live sessions carrying it: `Broker::follow` sweeps.
            Change::Put(Record::LabelLimit { key, value, max, .. }) => {
                let _ = p.set_label_cap(key, value, *max);
            }
            Change::Put(Record::Ceiling { seats, .. }) => p.set_ceiling(*seats),
            Change::Put(Record::PoolAlerts { queue_wait_ms, busy_minutes, .. }) => {
                p.set_alerts(super::alerts::Alerts {
                    queue_wait: queue_wait_ms.map(std::time::Duration::from_millis),
                    busy_minutes: *busy_minutes,
                })
            }
            Change::Put(Record::Reservation { key, value, seats, .. }) => p.set_reservation(key, value, *seats),
            Change::Put(Record::Stopped { reserved, labels, users, stamp, .. }) => {
                let (labels, users) = (labels.clone(), users.clone());
                p.set_stopped(super::pool::Stopped { reserved: *reserved, labels, users, stamp: *stamp })
            }
            _ => {}
        }
    }
}

/// The pool a per-pool record or removal is about (`None` for the others).
fn pool_of(change: &Change) -> Option<(&OrgName, PoolId)> {
    let pool = match change {
        Change::Put(
            Record::Machine { org, pool, .. }
            | Record::EphemeralMachine { org, pool, .. }
            | Record::PoolPolicy { org, pool, .. }
            | Record::LastUses { org, pool, .. }
            | Record::Grant { org, pool, .. }
            | Record::Binding { org, pool, .. }
            | Record::Counters { org, pool, .. }
            | Record::Ends { org, pool, .. }
            | Record::Denials { org, pool, .. }
            | Record::SeatTime { org, pool, .. }
            | Record::UserLimit { org, pool, .. }
            | Record::LabelLimit { org, pool, .. }
            | Record::PoolAlerts { org, pool, .. }
            | Record::Reservation { org, pool, .. }
            | Record::Stopped { org, pool, .. }
            | Record::Ceiling { org, pool, .. },
        )
        | Change::RemoveMachine { org, pool, .. }
        | Change::RemoveGrant { org, pool, .. }
        | Change::RemoveBinding { org, pool, .. } => (org, *pool),
        _ => return None,
    };
    Some(pool)
}
