//! KSE grants, node-locked activations and offline licenses: the rest of
//! the vendor's rules (docs/OFFLINE.md has the offline ones in full).
//!
//! Like `admin`, these plan durable changes and never touch the store.
//! Activations and offline licenses take a seat *before* their commit (a
//! reservation, undone if the commit fails), because sessions compete for
//! the same seats without any lock.

use super::admission::Target;
use super::broker::Broker;
use super::error::{Error, ExpiryLimit, Result};
use super::id::{Email, MachineId, OfflineId, OrgName, Role};
use super::pending::{Pending, Undo};
use super::pool::{OfflineEntry, Pool, PoolId, Product};
use super::record::{AuditAction, Change, OfflineLicense, Record};
use super::time::{format_end_date, Millis, DAY_MS};
use super::Principal;
use crate::sync::Arc;

/// Longest an offline license may last, in days after the day it is created.
pub const OFFLINE_MAX_DAYS: u64 = 60;

/// The days an offline license made at some instant may end on (each as
/// the end of its last day): from today to `OFFLINE_MAX_DAYS` on, never
/// past the org's subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineWindow {
    /// The end of today: the soonest last day.
    pub first: Millis,
    /// The latest last day.
    pub last: Millis,
    /// Which limit `last` is.
    pub limit: ExpiryLimit,
}

impl OfflineWindow {
    /// The window at `now` for an org whose subscription ends at `subscription_end`.
    pub fn at(now: Millis, subscription_end: Millis) -> OfflineWindow {
        let first = Millis((now.0 / DAY_MS + 1) * DAY_MS);
        let most = Millis(first.0 + OFFLINE_MAX_DAYS * DAY_MS);
        match subscription_end < most {
            true => OfflineWindow { first, last: subscription_end, limit: ExpiryLimit::Subscription },
            false => OfflineWindow { first, last: most, limit: ExpiryLimit::MaxDays },
        }
    }
}

/// A licensed user of a pool, for `licenses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantInfo {
    /// The pool.
    pub pool: PoolId,
    /// The licensed user.
    pub email: Email,
    /// When the grant was made.
    pub granted: Millis,
    /// Where a node-locked license is activated (the pool's online licenses).
    pub machine: Option<MachineId>,
}

/// An offline license, for `offline list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineInfo {
    /// The pool whose seat it holds.
    pub pool: PoolId,
    /// Its id, 32 hex digits.
    pub id: String,
    /// Its machine.
    pub machine: MachineId,
    /// When it was created.
    pub issued: Millis,
    /// Its last valid day, `YYYY-MM-DD`.
    pub last_day: String,
    /// Who created it.
    pub created_by: Email,
    /// Whether it still holds its seat (false once expired).
    pub active: bool,
}

/// An order for an offline license: where, and until the end of which day.
#[derive(Clone, Debug)]
pub struct OfflineOrder {
    /// The (annual node-locked) pool and the machine the license binds to.
    pub target: Target,
    /// Midnight UTC after the license's last valid day.
    pub last_day_end: Millis,
    /// Its id, random, chosen by the shell.
    pub id: OfflineId,
}

/// What an offline license states: the seat it holds, where and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseFields {
    /// The org.
    pub org: OrgName,
    /// The pool whose seat it holds.
    pub pool: PoolId,
    /// Its id.
    pub id: OfflineId,
    /// The machine it is bound to.
    pub machine: MachineId,
    /// When it was issued (whole seconds).
    pub issued: Millis,
    /// When its seat comes back.
    pub expires: Millis,
}

impl Broker {
    /// Refuses unless the caller is an Owner or Admin of an existing org.
    pub fn require_org_admin(&self, p: &Principal, org: &OrgName) -> Result<()> {
        p.require_admin(org)?;
        self.with_dir(|dir| dir.org(org).map(|_| ()))
    }

    pub(super) fn admin_pool(&self, p: &Principal, org: &OrgName, pool: PoolId) -> Result<Arc<Pool>> {
        p.require_admin(org)?;
        self.with_dir(|dir| dir.pool(org, pool).cloned())
    }

    /// Owner/Admin: caps how many sessions one member may hold at once in
    /// a pool (`None`: no cap). Existing sessions are not cut; the member
    /// gets no new one until below the cap. Audited.
    pub fn plan_set_user_limit(
        &self,
        p: &Principal,
        org: &OrgName,
        pool: PoolId,
        email: &Email,
        max: Option<u32>,
        now: Millis,
    ) -> Result<Vec<Change>> {
        self.admin_pool(p, org, pool)?;
        self.with_dir(|dir| dir.org(org)?.users.get(email).map(|_| ()).ok_or_else(|| Error::not_found("user", email)))?;
        let detail = match max {
            Some(max) => format!("pool={pool} user={email} max={max}"),
            None => format!("pool={pool} user={email} no limit"),
        };
        Ok(vec![
            Change::Put(Record::UserLimit { org: org.clone(), pool, email: email.clone(), max }),
            self.audit(org, p, AuditAction::UserLimitSet, detail, now),
        ])
    }

    /// Owner/Admin: the pool's per-user caps: (user, max, sessions counted).
    pub fn user_limits(&self, p: &Principal, org: &OrgName, pool: PoolId) -> Result<Vec<(Email, u32, u32)>> {
        Ok(self.admin_pool(p, org, pool)?.caps())
    }

    /// Owner/Admin: caps how many sessions carrying the label `key=value`
    /// a pool holds at once (`None`: no cap). Existing sessions are not
    /// cut; no new one carrying the label is admitted until below the cap.
    /// Audited.
    pub fn plan_set_label_limit(
        &self,
        p: &Principal,
        org: &OrgName,
        pool: PoolId,
        label: (String, String),
        max: Option<u32>,
        now: Millis,
    ) -> Result<Vec<Change>> {
        self.admin_pool(p, org, pool)?;
        crate::value::Labels::new([label.clone()])?;
        let (key, value) = label;
        let detail = match max {
            Some(max) => format!("pool={pool} label={key}={value} max={max}"),
            None => format!("pool={pool} label={key}={value} no limit"),
        };
        Ok(vec![
            Change::Put(Record::LabelLimit { org: org.clone(), pool, key, value, max }),
            self.audit(org, p, AuditAction::LabelLimitSet, detail, now),
        ])
    }

    /// Owner/Admin: the pool's label caps: (key, value, max, sessions counted).
    pub fn label_limits(&self, p: &Principal, org: &OrgName, pool: PoolId) -> Result<Vec<(String, String, u32, u32)>> {
        Ok(self.admin_pool(p, org, pool)?.label_limits())
    }

    /// Owner/Admin: grants a KSE pool's license to a member of the org.
    pub fn plan_grant(
        &self,
        p: &Principal,
        org: &OrgName,
        pool: PoolId,
        email: &Email,
        now: Millis,
    ) -> Result<Vec<Change>> {
        let handle = self.admin_pool(p, org, pool)?;
        if pool.product != Product::Kse {
            return Err(Error::invalid("pool", "KRE licenses need no grant: every member of the org may use them"));
        }
        let role = self.with_dir(|dir| {
            dir.org(org)?.users.get(email).map(|u| u.role).ok_or_else(|| Error::not_found("user", email))
        })?;
        if role == Role::Operator {
            return Err(Error::invalid("user", "the operator cannot hold licenses"));
        }
        if handle.has_grant(email) {
            return Err(Error::AlreadyExists { what: "grant", name: format!("{email} on {pool}") });
        }
        let quota = handle.quota();
        if handle.grant_count() >= quota as usize {
            return Err(Error::GrantLimit { quota });
        }
        Ok(vec![
            Change::Put(Record::Grant { org: org.clone(), pool, email: email.clone(), granted: now }),
            self.audit(org, p, AuditAction::Granted, format!("pool={pool} user={email}"), now),
        ])
    }

    /// Owner/Admin: revokes a grant. Applying it ends the user's live
    /// sessions on the pool (reason: revoked) and frees a node-locked activation.
    pub fn plan_revoke_grant(
        &self,
        p: &Principal,
        org: &OrgName,
        pool: PoolId,
        email: &Email,
        now: Millis,
    ) -> Result<Vec<Change>> {
        let handle = self.admin_pool(p, org, pool)?;
        if !handle.has_grant(email) {
            return Err(Error::not_found("grant", format!("{email} on {pool}")));
        }
        let mut changes = vec![Change::RemoveGrant { org: org.clone(), pool, email: email.clone() }];
        if handle.binding(email).is_some() {
            changes.push(Change::RemoveBinding { org: org.clone(), pool, email: email.clone() });
        }
        changes.push(self.audit(org, p, AuditAction::GrantRevoked, format!("pool={pool} user={email}"), now));
        Ok(changes)
    }

    /// Owner/Admin: licensed users of one pool or all, with their activations.
    pub fn grants(&self, p: &Principal, org: &OrgName, pool: Option<PoolId>) -> Result<Vec<GrantInfo>> {
        p.require_admin(org)?;
        self.with_dir(|dir| {
            let mut pools: Vec<&Arc<Pool>> =
                dir.org(org)?.pools.values().filter(|h| pool.is_none_or(|want| h.id == want)).collect();
            pools.sort_by_key(|h| h.id);
            Ok(pools
                .into_iter()
                .flat_map(|h| {
                    h.grants().into_iter().map(|(email, granted, machine)| GrantInfo {
                        pool: h.id,
                        email,
                        granted,
                        machine,
                    })
                })
                .collect())
        })
    }

    /// Owner/Admin: creates an offline license. Takes its seat now; `sign`
    /// turns the reservation into the signed file, which the pending change
    /// stores. The seat comes back if the commit fails.
    pub fn create_offline(
        &self,
        p: &Principal,
        order: &OfflineOrder,
        now: Millis,
        sign: impl FnOnce(&LicenseFields) -> String,
    ) -> Result<Pending<(LicenseFields, String)>> {
        let Target { org, pool, machine } = &order.target;
        let handle = self.offline_pool(p, &order.target, order.last_day_end, now)?;
        // Whole seconds: the file states its issue time to the second.
        let issued = Millis(now.0 / 1000 * 1000);
        let (id, expires) = (order.id, order.last_day_end);
        let created_by = p.email.clone();
        let entry = OfflineEntry { id, machine: machine.clone(), issued, expires, created_by, active: true };
        handle.reserve_offline(entry)?;
        self.track_offline(handle.clone(), id, expires);
        let r = LicenseFields { org: org.clone(), pool: *pool, id, machine: machine.clone(), issued, expires };
        let file = sign(&r);
        let changes = self.offline_changes(p, &r, file.clone(), now);
        Ok(Pending::reserved(changes, (r, file), Undo::CancelOffline(handle, id, expires)))
    }

    /// Owner/Admin: whether an offline license for `target` through the day
    /// ending at `last_day_end` would be created now, every rule but the
    /// quota checked (the console's confirmation page asks before the act).
    pub fn check_offline(&self, p: &Principal, target: &Target, last_day_end: Millis, now: Millis) -> Result<()> {
        self.offline_pool(p, target, last_day_end, now).map(drop)
    }

    /// The pool an offline license for `target` would hold a seat of, once
    /// the caller, the pool's kind, the expiry and the machine are checked.
    fn offline_pool(&self, p: &Principal, target: &Target, last_day_end: Millis, now: Millis) -> Result<Arc<Pool>> {
        let Target { org, pool, machine } = target;
        let handle = self.admin_pool(p, org, *pool)?;
        self.check_offline_expiry(org, *pool, last_day_end, now)?;
        if let Some(until) = handle.active_offline_for(machine) {
            return Err(Error::AlreadyExists {
                what: "offline license",
                name: format!(
                    "for {machine} until {} (a new one can be made once it has expired)",
                    format_end_date(until)
                ),
            });
        }
        Ok(handle)
    }

    /// Refuses an offline license from a pool that cannot issue them, or
    /// one that would end outside `offline_window`.
    fn check_offline_expiry(&self, org: &OrgName, pool: PoolId, last_day_end: Millis, now: Millis) -> Result<()> {
        if !pool.issues_offline() {
            return Err(Error::OfflineNotAllowed { pool });
        }
        let subscription_end = self.with_dir(|dir| dir.org(org).map(|o| o.subscription_end))?;
        let w = OfflineWindow::at(now, subscription_end);
        if last_day_end < w.first {
            return Err(Error::invalid("expiry", "must be today or later"));
        }
        if last_day_end > w.last {
            return Err(Error::ExpiryTooLate { limit: w.limit, latest: w.last });
        }
        Ok(())
    }

    /// Owner/Admin: the days an offline license of `org` made now may end
    /// on (what the console's form offers; `create_offline` enforces it).
    pub fn offline_window(&self, p: &Principal, org: &OrgName, now: Millis) -> Result<OfflineWindow> {
        p.require_admin(org)?;
        let subscription_end = self.with_dir(|dir| dir.org(org).map(|o| o.subscription_end))?;
        Ok(OfflineWindow::at(now, subscription_end))
    }

    /// The durable changes of a reserved offline license, with its signed file.
    fn offline_changes(&self, p: &Principal, r: &LicenseFields, file: String, now: Millis) -> Vec<Change> {
        let license = OfflineLicense {
            id: r.id,
            machine: r.machine.clone(),
            issued: r.issued,
            expires: r.expires,
            created_by: p.email.clone(),
            file,
        };
        let detail =
            format!("pool={} machine={} license={} last_day={}", r.pool, r.machine, r.id, format_end_date(r.expires));
        vec![
            Change::Put(Record::Offline { org: r.org.clone(), pool: r.pool, license }),
            self.audit(&r.org, p, AuditAction::OfflineCreated, detail, now),
        ]
    }

    /// Owner/Admin: every offline license of the org.
    pub fn offline_licenses(&self, p: &Principal, org: &OrgName) -> Result<Vec<OfflineInfo>> {
        p.require_admin(org)?;
        self.with_dir(|dir| {
            let mut pools: Vec<&Arc<Pool>> = dir.org(org)?.pools.values().collect();
            pools.sort_by_key(|h| h.id);
            Ok(pools
                .into_iter()
                .flat_map(|h| {
                    h.offline().into_iter().map(|o| OfflineInfo {
                        pool: h.id,
                        id: o.id.to_string(),
                        machine: o.machine,
                        issued: o.issued,
                        last_day: format_end_date(o.expires),
                        created_by: o.created_by,
                        active: o.active,
                    })
                })
                .collect())
        })
    }

    /// Owner/Admin: what an offline license of the org says, to hand its
    /// file out again (the signature is deterministic, so the same fields
    /// sign to the same bytes).
    pub fn offline_fields(&self, p: &Principal, org: &OrgName, id: &str) -> Result<LicenseFields> {
        p.require_admin(org)?;
        let found = self.with_dir(|dir| -> Result<_> {
            let pools = dir.org(org)?.pools.values();
            Ok(pools.flat_map(|h| h.offline().into_iter().map(|o| (h.id, o))).find(|(_, o)| o.id.to_string() == id))
        })?;
        let (pool, o) = found.ok_or_else(|| Error::not_found("offline license", id))?;
        Ok(LicenseFields { org: org.clone(), pool, id: o.id, machine: o.machine, issued: o.issued, expires: o.expires })
    }

    /// Owner/Admin asks to revoke or transfer an offline license: always
    /// refused (the vendor's rule), with when its seat comes back.
    pub fn refuse_offline_change(&self, p: &Principal, org: &OrgName, id: &str) -> Error {
        if let Err(e) = p.require_admin(org) {
            return e;
        }
        let found = self.with_dir(|dir| {
            let pools = dir.org(org)?.pools.values();
            Ok(pools.flat_map(|h| h.offline()).find(|o| o.id.to_string() == id).map(|o| o.expires))
        });
        match found {
            Ok(Some(expires)) => Error::OfflineIrrevocable { expires },
            Ok(None) => Error::not_found("offline license", id),
            Err(e) => e,
        }
    }
}
