//! KSE's licensed users and their activations, and offline licenses: the
//! license management of the seed's walk-through, apart from `admin` because
//! these requests have rules of their own (grant limits, offline terms).

use super::api::unexpected;
use super::{Client, ClientError};
use crate::proto::{GrantInfo, ListOf, OfflineInfo, PageItems, Req, Resp, SessionToken};
use crate::value::{MachineId, Nonce, OrgName, PoolId, SessionId};

impl Client {
    /// Owner/Admin: grants a KSE pool's license to a member.
    pub async fn grant(&self, org: &OrgName, pool: PoolId, email: &str) -> Result<(), ClientError> {
        self.done(Req::Grant { org: org.clone(), pool, email: email.into() }).await
    }

    /// Owner/Admin: revokes a grant.
    pub async fn revoke_grant(&self, org: &OrgName, pool: PoolId, email: &str) -> Result<(), ClientError> {
        self.done(Req::RevokeGrant { org: org.clone(), pool, email: email.into() }).await
    }

    /// Owner/Admin: licensed users and their activations.
    pub async fn list_grants(&self, org: &OrgName, pool: Option<PoolId>) -> Result<Vec<GrantInfo>, ClientError> {
        self.all(ListOf::Grants { org: org.clone(), pool }, |i| match i {
            PageItems::Grants(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// A licensed user activates KSE on a machine.
    pub async fn activate(
        &self,
        org: &OrgName,
        pool: PoolId,
        machine: &MachineId,
        nonce: u128,
    ) -> Result<Activated, ClientError> {
        match self.call(Req::Activate { org: org.clone(), pool, machine: machine.clone(), nonce: Nonce(nonce) }).await?
        {
            Resp::Activated { machine, session, deadline_ms, ttl_ms, already } => {
                Ok(Activated { machine, session, deadline_ms, ttl_ms, already, token: None })
            }
            // A version 2 broker answers a floating activation with its lease's token.
            Resp::Leased { session, deadline_ms, ttl_ms, reattached, token } => Ok(Activated {
                machine: machine.clone(),
                session: Some(session),
                deadline_ms,
                ttl_ms,
                already: reattached,
                token: Some(token),
            }),
            other => unexpected(other),
        }
    }

    /// Owner/Admin: creates an offline license; returns (file name, content).
    pub async fn create_offline(
        &self,
        org: &OrgName,
        pool: PoolId,
        machine: &MachineId,
        expires: &str,
    ) -> Result<(String, String), ClientError> {
        let req = Req::CreateOffline { org: org.clone(), pool, machine: machine.clone(), expires: expires.into() };
        match self.call(req).await? {
            Resp::OfflineCreated { file_name, content } => Ok((file_name, content)),
            other => unexpected(other),
        }
    }

    /// Owner/Admin: the org's offline licenses.
    pub async fn list_offline(&self, org: &OrgName) -> Result<Vec<OfflineInfo>, ClientError> {
        self.all(ListOf::Offline { org: org.clone() }, |i| match i {
            PageItems::Offline(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Owner/Admin: asks to revoke an offline license (the broker refuses).
    pub async fn revoke_offline(&self, org: &OrgName, license: &str) -> Result<(), ClientError> {
        self.done(Req::RevokeOffline { org: org.clone(), license: license.into() }).await
    }

    /// Owner/Admin: asks to move an offline license (the broker refuses).
    pub async fn transfer_offline(&self, org: &OrgName, license: &str, machine: &MachineId) -> Result<(), ClientError> {
        self.done(Req::TransferOffline { org: org.clone(), license: license.into(), machine: machine.clone() }).await
    }

    /// The broker's offline-license public key (PEM).
    pub async fn offline_public_key(&self) -> Result<String, ClientError> {
        match self.call(Req::OfflinePublicKey).await? {
            Resp::PublicKey { pem } => Ok(pem),
            other => unexpected(other),
        }
    }
}

/// The result of a KSE activation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activated {
    /// The machine it is bound to (node-locked) or runs on (floating).
    pub machine: MachineId,
    /// The leased session of a floating activation; none for node-locked.
    pub session: Option<SessionId>,
    /// The session's deadline (Unix ms), 0 for node-locked.
    pub deadline_ms: u64,
    /// The lease TTL, 0 for node-locked.
    pub ttl_ms: u64,
    /// Whether it was already activated (same machine, or same nonce).
    pub already: bool,
    /// A floating activation's session token (version 2): `reattach`
    /// presents it after a restart. None for node-locked.
    pub token: Option<SessionToken>,
}
