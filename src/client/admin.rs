//! The org's administration over the protocol, for Owners, Admins and the
//! operator: orgs and pools, members and keys, machines and sessions, caps,
//! the audit trail. Apart from `api` because a runner never asks these.

use super::api::unexpected;
use super::{Client, ClientError};
use crate::proto::{
    AuditEntry, KeyInfo, LabelLimitInfo, ListOf, MachineInfo, MachineUseInfo, OrgInfo, PageItems, Req, ReservationInfo,
    Resp, SessionView, UserInfo, UserLimitInfo,
};
use crate::value::{MachineId, OrgName, PoolId, Role, SessionId};

impl Client {
    /// Operator: creates an org; returns its Owner's key.
    pub async fn create_org(&self, name: &OrgName, subscription_end: &str, owner: &str) -> Result<String, ClientError> {
        let req = Req::CreateOrg { name: name.clone(), subscription_end: subscription_end.into(), owner: owner.into() };
        match self.call(req).await? {
            Resp::OrgCreated { owner_key } => Ok(owner_key),
            other => unexpected(other),
        }
    }

    /// Operator: renews or changes an org's subscription (last day `YYYY-MM-DD`).
    pub async fn set_subscription(&self, org: &OrgName, subscription_end: &str) -> Result<(), ClientError> {
        self.done(Req::SetSubscription { org: org.clone(), subscription_end: subscription_end.into() }).await
    }

    /// Operator: every org.
    pub async fn list_orgs(&self) -> Result<Vec<OrgInfo>, ClientError> {
        self.all(ListOf::Orgs, |i| match i {
            PageItems::Orgs(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Operator: sets a pool's quota (creating the pool).
    pub async fn set_pool(&self, org: &OrgName, pool: PoolId, quota: u32) -> Result<(), ClientError> {
        self.done(Req::SetPool { org: org.clone(), pool, quota }).await
    }

    /// Operator: sets a pool's machine policy (idle limit, ephemeral registrations).
    pub async fn set_machine_policy(
        &self,
        org: &OrgName,
        pool: PoolId,
        machine_idle: Option<std::time::Duration>,
        ephemeral: bool,
    ) -> Result<(), ClientError> {
        let machine_idle_ms = machine_idle.map(|d| d.as_millis() as u64);
        match self.call(Req::SetMachinePolicy { org: org.clone(), pool, machine_idle_ms, ephemeral }).await? {
            Resp::Done => Ok(()),
            other => unexpected(other),
        }
    }

    /// Owner/Admin: adds a member.
    pub async fn add_user(&self, org: &OrgName, email: &str, role: Role) -> Result<(), ClientError> {
        self.done(Req::AddUser { org: org.clone(), email: email.into(), role }).await
    }

    /// Owner/Admin: removes a member (keys revoked, grants and activations
    /// freed, sessions ended).
    pub async fn remove_user(&self, org: &OrgName, email: &str) -> Result<(), ClientError> {
        self.done(Req::RemoveUser { org: org.clone(), email: email.into() }).await
    }

    /// Owner/Admin: the org's members.
    pub async fn list_users(&self, org: &OrgName) -> Result<Vec<UserInfo>, ClientError> {
        self.all(ListOf::Users { org: org.clone() }, |i| match i {
            PageItems::Users(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Owner/Admin: creates a key for a member; returns (key, id).
    pub async fn create_key(&self, org: &OrgName, email: &str) -> Result<(String, String), ClientError> {
        match self.call(Req::CreateKey { org: org.clone(), email: email.into() }).await? {
            Resp::KeyCreated { key, id } => Ok((key, id)),
            other => unexpected(other),
        }
    }

    /// Owner/Admin: revokes a key by id or full key.
    pub async fn revoke_key(&self, org: &OrgName, key: &str) -> Result<(), ClientError> {
        self.done(Req::RevokeKey { org: org.clone(), key: key.into() }).await
    }

    /// Owner/Admin: the org's keys.
    pub async fn list_keys(&self, org: &OrgName) -> Result<Vec<KeyInfo>, ClientError> {
        self.all(ListOf::Keys { org: org.clone() }, |i| match i {
            PageItems::Keys(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Owner/Admin: registered machines.
    pub async fn list_machines(&self, org: &OrgName) -> Result<Vec<MachineInfo>, ClientError> {
        self.all(ListOf::Machines { org: org.clone() }, |i| match i {
            PageItems::Machines(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Owner/Admin: registered machines with their last use (version 5).
    pub async fn machine_uses(&self, org: &OrgName) -> Result<Vec<MachineUseInfo>, ClientError> {
        self.all(ListOf::MachineUses { org: org.clone() }, |i| match i {
            PageItems::MachineUses(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Owner/Admin: removes a machine (from one pool or all).
    pub async fn remove_machine(
        &self,
        org: &OrgName,
        pool: Option<PoolId>,
        machine: &MachineId,
    ) -> Result<(), ClientError> {
        self.done(Req::RemoveMachine { org: org.clone(), pool, machine: machine.clone() }).await
    }

    /// Owner/Admin: live sessions.
    pub async fn list_sessions(&self, org: &OrgName) -> Result<Vec<SessionView>, ClientError> {
        self.all(ListOf::Sessions { org: org.clone() }, |i| match i {
            PageItems::Sessions(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Owner/Admin: ends a session.
    pub async fn kill_session(&self, org: &OrgName, session: SessionId) -> Result<(), ClientError> {
        match self.call(Req::KillSession { org: org.clone(), session }).await? {
            Resp::Killed => Ok(()),
            other => unexpected(other),
        }
    }

    /// Owner/Admin: caps one member's concurrent sessions in a pool (`None`: no cap).
    pub async fn set_user_limit(
        &self,
        org: &OrgName,
        pool: PoolId,
        email: &str,
        max: Option<u32>,
    ) -> Result<(), ClientError> {
        match self.call(Req::SetUserLimit { org: org.clone(), pool, email: email.into(), max }).await? {
            Resp::Done => Ok(()),
            other => unexpected(other),
        }
    }

    /// Owner/Admin: a pool's per-user caps.
    pub async fn user_limits(&self, org: &OrgName, pool: PoolId) -> Result<Vec<UserLimitInfo>, ClientError> {
        self.all(ListOf::UserLimits { org: org.clone(), pool }, |i| match i {
            PageItems::UserLimits(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Owner/Admin: caps the sessions carrying `key=value` in a pool (`None`: removes the cap).
    pub async fn set_label_limit(
        &self,
        (org, pool): (&OrgName, PoolId),
        (key, value): (&str, &str),
        max: Option<u32>,
    ) -> Result<(), ClientError> {
        let (key, value) = (key.to_string(), value.to_string());
        match self.call(Req::SetLabelLimit { org: org.clone(), pool, key, value, max }).await? {
            Resp::Done => Ok(()),
            other => unexpected(other),
        }
    }

    /// Owner/Admin: a pool's label caps.
    pub async fn label_limits(&self, org: &OrgName, pool: PoolId) -> Result<Vec<LabelLimitInfo>, ClientError> {
        self.all(ListOf::LabelLimits { org: org.clone(), pool }, |i| match i {
            PageItems::LabelLimits(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Owner/Admin: the org's audit trail.
    pub async fn audit(&self, org: &OrgName) -> Result<Vec<AuditEntry>, ClientError> {
        self.all(ListOf::Audit { org: org.clone() }, |i| match i {
            PageItems::Audit(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Owner/Admin/operator: sets a pool's alerts whole (none: off).
    pub async fn set_pool_alerts(
        &self,
        org: &OrgName,
        pool: PoolId,
        queue_alert: Option<std::time::Duration>,
        busy_minutes: Option<u32>,
    ) -> Result<(), ClientError> {
        let queue_alert_ms = queue_alert.map(|d| d.as_millis() as u64);
        match self.call(Req::SetPoolAlerts { org: org.clone(), pool, queue_alert_ms, busy_minutes }).await? {
            Resp::Done => Ok(()),
            other => unexpected(other),
        }
    }

    /// Owner/Admin: reserves `seats` seats of a pool for the sessions
    /// carrying `key=value` (0: removes the reservation).
    pub async fn set_reservation(
        &self,
        (org, pool): (&OrgName, PoolId),
        (key, value): (&str, &str),
        seats: u32,
    ) -> Result<(), ClientError> {
        let (key, value) = (key.to_string(), value.to_string());
        match self.call(Req::SetReservation { org: org.clone(), pool, key, value, seats }).await? {
            Resp::Done => Ok(()),
            other => unexpected(other),
        }
    }

    /// A member: the reservations of the org's pools.
    pub async fn reservations(&self, org: &OrgName) -> Result<Vec<ReservationInfo>, ClientError> {
        self.all(ListOf::Reservations { org: org.clone() }, |i| match i {
            PageItems::Reservations(v) => Ok(v),
            other => Err(other),
        })
        .await
    }
}
