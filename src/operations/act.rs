//! The durable acts of an org's Owners and Admins and of the operator:
//! orgs, pools, members, keys, machines, KSE grants, per-user caps,
//! offline licenses, session kills. Each is one core plan committed and
//! applied as one step (`Operations::mutate`), audited by the core's plan.
//! Both doors call these: the CLI's `grant` over QUIC and the console's
//! grant button are the same function and the same audit entry.

use super::{random_failure, Caller, Operations};
use crate::cluster::seat::ClaimError;
use crate::core::{
    Email, Error, KeyRef, MachineId, Millis, OfflineId, OfflineOrder, OrgName, Pending, PoolId, Role, SessionId, Target,
};
use crate::keys;
use crate::proto::{ErrorCode, WireError};

/// A key made for someone: the key itself (shown once) and its id.
#[derive(Clone, Debug)]
pub struct NewKey {
    /// The API key, `lbk_…`.
    pub key: String,
    /// Its public id (what lists show and `key revoke` takes).
    pub id: String,
}

/// An offline license made: its file's name and its content.
#[derive(Clone, Debug)]
pub struct OfflineFile {
    /// The license's id, 32 hex digits (what `offline list` shows).
    pub id: String,
    /// `KSE_<machine>.lic`-style name.
    pub file_name: String,
    /// The signed file.
    pub content: String,
}

impl Operations {
    /// The operator creates an org with its first Owner; the Owner's key is
    /// the answer. In a cluster, this node claims the org first, so the
    /// creation is fenced on that claim like every later write.
    pub async fn create_org(
        &self,
        c: Caller<'_>,
        name: &OrgName,
        end: Millis,
        owner: &Email,
    ) -> Result<NewKey, WireError> {
        let (key, hash) = keys::generate().map_err(random_failure)?;
        c.p.require_operator()?;
        let seat = self.cluster.as_deref();
        if let Some(seat) = seat {
            seat.claim_new(name).await.map_err(|e| claim_failure(e, name))?;
        }
        let created = self.mutate(|core| core.plan_create_org(c.p, name, end, owner, hash, c.now)).await;
        if let (Err(_), Some(seat)) = (&created, seat) {
            seat.unclaim(name).await;
        }
        created?;
        Ok(NewKey { id: hash.key_id(), key })
    }

    /// Sets a pool's quota (the operator), creating the pool if new.
    pub async fn set_pool(&self, c: Caller<'_>, org: &OrgName, pool: PoolId, quota: u32) -> Result<(), WireError> {
        self.mutate(|core| core.plan_set_pool(c.p, org, pool, quota, c.now)).await
    }

    /// Sets a pool's alerts (Owner, Admin, the operator).
    pub async fn set_alerts(
        &self,
        c: Caller<'_>,
        (org, pool): (&OrgName, PoolId),
        alerts: crate::core::Alerts,
    ) -> Result<(), WireError> {
        self.mutate(|core| core.plan_set_alerts(c.p, org, pool, alerts, c.now)).await
    }

    /// Operator: sets a pool's machine policy (idle limit, ephemeral
    /// registrations); wakes the machine task.
    pub async fn set_policy(
        &self,
        c: Caller<'_>,
        (org, pool): (&OrgName, PoolId),
        policy: crate::core::Policy,
    ) -> Result<(), WireError> {
        self.mutate(|core| core.plan_set_policy(c.p, org, pool, policy, c.now)).await?;
        // A policy may make machines due at once (ephemeral): look now.
        self.wake_machines();
        Ok(())
    }

    /// Moves an org's subscription end.
    pub async fn set_subscription(&self, c: Caller<'_>, org: &OrgName, end: Millis) -> Result<(), WireError> {
        self.mutate(|core| core.plan_set_subscription(c.p, org, end, c.now)).await
    }

    /// Adds a member (or changes their role).
    pub async fn add_user(&self, c: Caller<'_>, org: &OrgName, email: &Email, role: Role) -> Result<(), WireError> {
        self.mutate(|core| core.plan_add_user(c.p, org, email, role, c.now)).await
    }

    /// Removes a member: their keys, grants and sessions go with them.
    pub async fn remove_user(&self, c: Caller<'_>, org: &OrgName, email: &Email) -> Result<(), WireError> {
        self.mutate(|core| core.plan_remove_user(c.p, org, email, c.now)).await
    }

    /// Makes an API key for a member.
    pub async fn create_key(&self, c: Caller<'_>, org: &OrgName, email: &Email) -> Result<NewKey, WireError> {
        let (key, hash) = keys::generate().map_err(random_failure)?;
        self.mutate(|core| core.plan_create_key(c.p, org, email, hash, c.now)).await?;
        Ok(NewKey { id: hash.key_id(), key })
    }

    /// Revokes a key, named by its id or by the key itself.
    pub async fn revoke_key(&self, c: Caller<'_>, org: &OrgName, key: KeyRef) -> Result<(), WireError> {
        self.mutate(|core| core.plan_revoke_key(c.p, org, key, c.now)).await
    }

    /// Deactivates a registered machine (in one pool, or all): its slot
    /// frees and its live sessions end.
    pub async fn remove_machine(
        &self,
        c: Caller<'_>,
        org: &OrgName,
        pool: Option<PoolId>,
        machine: &MachineId,
    ) -> Result<(), WireError> {
        self.mutate(|core| core.plan_remove_machine(c.p, org, pool, machine, c.now)).await
    }

    /// Grants a KSE license to a member.
    pub async fn grant(&self, c: Caller<'_>, org: &OrgName, pool: PoolId, email: &Email) -> Result<(), WireError> {
        self.mutate(|core| core.plan_grant(c.p, org, pool, email, c.now)).await
    }

    /// Revokes a member's KSE license: their sessions on the pool end at once.
    pub async fn revoke_grant(
        &self,
        c: Caller<'_>,
        org: &OrgName,
        pool: PoolId,
        email: &Email,
    ) -> Result<(), WireError> {
        self.mutate(|core| core.plan_revoke_grant(c.p, org, pool, email, c.now)).await
    }

    /// Caps (or uncaps, `None`) a member's concurrent sessions in a pool.
    pub async fn set_user_limit(
        &self,
        c: Caller<'_>,
        (org, pool): (&OrgName, PoolId),
        email: &Email,
        max: Option<u32>,
    ) -> Result<(), WireError> {
        self.mutate(|core| core.plan_set_user_limit(c.p, org, pool, email, max, c.now)).await
    }

    /// Caps the sessions carrying a label in a pool (`None`: no cap).
    pub async fn set_label_limit(
        &self,
        c: Caller<'_>,
        (org, pool): (&OrgName, PoolId),
        label: (String, String),
        max: Option<u32>,
    ) -> Result<(), WireError> {
        self.mutate(|core| core.plan_set_label_limit(c.p, org, pool, label.clone(), max, c.now)).await
    }

    /// Reserves seats of a pool for a job label (0: removes the reservation).
    pub async fn set_reservation(
        &self,
        c: Caller<'_>,
        (org, pool): (&OrgName, PoolId),
        label: (String, String),
        seats: u32,
    ) -> Result<(), WireError> {
        // A lowering raises the pool's ceiling (`plan_set_reservation`):
        // no other ceiling write between its reading and its commit. The
        // writer first, as `mutate` and every path holding both.
        let _writer = self.writer.lock().await;
        let _ceiling = self.ceiling.lock().await;
        let changes = self.core.plan_set_reservation(c.p, (org, pool), label, seats, c.now)?;
        self.settle(crate::core::Pending::plan(changes, ())).await
    }

    /// Reserves the seat, signs the file, commits it, and hands the file back.
    pub async fn create_offline(
        &self,
        c: Caller<'_>,
        target: Target,
        last_day_end: Millis,
    ) -> Result<OfflineFile, WireError> {
        let id = OfflineId(keys::random_u128().map_err(random_failure)?);
        let _writer = self.writer.lock().await;
        let order = OfflineOrder { target, last_day_end, id };
        let pending = self.core.create_offline(c.p, &order, c.now, |f| self.signing.sign(f))?;
        let (fields, content) = self.settle(pending).await?;
        self.deadline_added(fields.expires);
        Ok(OfflineFile { id: fields.id.to_string(), file_name: fields.file_name(), content })
    }

    /// An offline license's file again, byte for byte as it was handed out
    /// (Owner/Admin).
    pub fn offline_file(&self, c: Caller<'_>, org: &OrgName, id: &str) -> Result<OfflineFile, WireError> {
        let fields = self.core.offline_fields(c.p, org, id)?;
        Ok(OfflineFile {
            id: fields.id.to_string(),
            file_name: fields.file_name(),
            content: self.signing.sign(&fields),
        })
    }

    /// An Owner/Admin ends a session of their org: audited first, then
    /// ended (its holder is told).
    pub async fn kill(&self, c: Caller<'_>, org: &OrgName, session: SessionId) -> Result<(), WireError> {
        let _writer = self.writer.lock().await;
        // Stamped once the writer lock is held: the entry is the newest.
        let audit = self.core.plan_kill(c.p, org, session, self.clock.now())?;
        self.settle(Pending::plan(audit, ())).await?;
        let ended = self.core.kill(c.p, org, session, self.clock.now())?;
        self.announce(vec![ended]);
        Ok(())
    }

    /// The public key offline licenses are verified with.
    pub fn offline_public_key(&self) -> String {
        self.signing.public_pem()
    }
}

/// Why a new org's claim failed, as the creator sees it.
fn claim_failure(e: ClaimError, name: &OrgName) -> WireError {
    match e {
        ClaimError::Exists => WireError::from(Error::AlreadyExists { what: "org", name: name.to_string() }),
        ClaimError::Etcd(why) => {
            WireError::new(ErrorCode::StoreFailure, format!("claiming the new org in etcd: {why}"))
        }
    }
}
