//! One typed method per request of the protocol, on top of `Client::call`.

use super::{Client, ClientError};
use crate::proto::{
    AuditEntry, GrantInfo, KeyInfo, LabelLimitInfo, MachineInfo, MachineUseInfo, OfflineInfo, OrgInfo, PoolState,
    PoolStatus, ReservationInfo, SessionView, UserInfo, UserLimitInfo,
};
use crate::proto::{Cursor, ListOf, PageItems, Req, Resp, SessionToken, WhatIfReport};
use crate::value::{Labels, MachineId, Millis, Nonce, OrgName, PoolId, Role, SessionId};

impl Client {
    /// Registers a machine; `true` if it was new.
    pub async fn register_machine(
        &self,
        org: &OrgName,
        pool: PoolId,
        machine: &MachineId,
    ) -> Result<bool, ClientError> {
        self.registered(Req::RegisterMachine { org: org.clone(), pool, machine: machine.clone() }).await
    }

    /// Registers a machine ephemeral (released with its last session); `true` if it was new.
    pub async fn register_ephemeral(
        &self,
        org: &OrgName,
        pool: PoolId,
        machine: &MachineId,
    ) -> Result<bool, ClientError> {
        self.registered(Req::RegisterEphemeral { org: org.clone(), pool, machine: machine.clone() }).await
    }

    /// Sends a registration; `true` if the machine was new.
    async fn registered(&self, req: Req) -> Result<bool, ClientError> {
        match self.call(req).await? {
            Resp::Registered { new } => Ok(new),
            other => unexpected(other),
        }
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

    /// Acquires (or re-attaches to) a session; returns the session and deadline (Unix ms).
    pub async fn acquire(
        &self,
        org: &OrgName,
        pool: PoolId,
        machine: &MachineId,
        nonce: u128,
    ) -> Result<Admitted, ClientError> {
        admitted(
            self.call(Req::Acquire { org: org.clone(), pool, machine: machine.clone(), nonce: Nonce(nonce) }).await?,
        )
    }

    /// Keeps a lease across a broker restart or a lost connection: presents
    /// the lease's latest token (from `Admitted::token` or `renew_lease`).
    pub async fn reattach(
        &self,
        org: &OrgName,
        pool: PoolId,
        machine: &MachineId,
        nonce: u128,
        token: SessionToken,
    ) -> Result<Admitted, ClientError> {
        let req = Req::Reattach { org: org.clone(), pool, machine: machine.clone(), nonce: Nonce(nonce), token };
        admitted(self.call(req).await?)
    }

    /// Heartbeat; returns the new deadline (Unix ms).
    pub async fn renew(&self, session: SessionId) -> Result<u64, ClientError> {
        self.renew_lease(session).await.map(|(deadline_ms, _)| deadline_ms)
    }

    /// Heartbeat; returns the new deadline (Unix ms) and the lease's new token.
    pub async fn renew_lease(&self, session: SessionId) -> Result<(u64, Option<SessionToken>), ClientError> {
        match self.call(Req::Renew { session }).await? {
            Resp::Extended { deadline_ms, token } => Ok((deadline_ms, Some(token))),
            Resp::Renewed { deadline_ms } => Ok((deadline_ms, None)),
            other => unexpected(other),
        }
    }

    /// Gives a seat back.
    pub async fn release(&self, session: SessionId) -> Result<(), ClientError> {
        match self.call(Req::Release { session }).await? {
            Resp::Released => Ok(()),
            other => unexpected(other),
        }
    }

    /// Pool numbers.
    pub async fn status(&self, org: Option<&OrgName>) -> Result<Vec<PoolStatus>, ClientError> {
        Ok(self.pools(org).await?.into_iter().map(|p| p.status).collect())
    }

    /// Pool numbers with each pool's wait queue (0 from a version 2 broker).
    pub async fn pools(&self, org: Option<&OrgName>) -> Result<Vec<PoolState>, ClientError> {
        self.all(ListOf::Status { org: org.cloned() }, |i| match i {
            PageItems::Pools(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Acquires with the job's labels, waiting up to `wait` in the pool's
    /// queue (first come, first admitted) when no seat is free (zero: do
    /// not wait). The broker pushes a `Queued` notice with the position
    /// meanwhile. Refused with `QUEUE_TIMEOUT` if no seat came in time,
    /// `QUEUE_FULL`, or an acquire's refusal.
    pub async fn checkout(&self, c: &Checkout<'_>) -> Result<Admitted, ClientError> {
        let wait_ms = u64::try_from(c.wait.as_millis()).unwrap_or(u64::MAX);
        let req = Req::Checkout {
            org: c.org.clone(),
            pool: c.pool,
            machine: c.machine.clone(),
            nonce: Nonce(c.nonce),
            wait_ms,
            labels: c.labels.clone(),
        };
        admitted(self.call(req).await?)
    }

    /// `checkout` without labels.
    pub async fn wait(
        &self,
        org: &OrgName,
        pool: PoolId,
        machine: &MachineId,
        nonce: u128,
        wait: std::time::Duration,
    ) -> Result<Admitted, ClientError> {
        self.checkout(&Checkout { org, pool, machine, nonce, wait, labels: Labels::default() }).await
    }

    /// Operator: creates an org; returns its Owner's key.
    pub async fn create_org(&self, name: &OrgName, subscription_end: &str, owner: &str) -> Result<String, ClientError> {
        let req = Req::CreateOrg { name: name.clone(), subscription_end: subscription_end.into(), owner: owner.into() };
        match self.call(req).await? {
            Resp::OrgCreated { owner_key } => Ok(owner_key),
            other => unexpected(other),
        }
    }

    /// Operator: sets a pool's quota (creating the pool).
    pub async fn set_pool(&self, org: &OrgName, pool: PoolId, quota: u32) -> Result<(), ClientError> {
        self.done(Req::SetPool { org: org.clone(), pool, quota }).await
    }

    /// Owner/Admin: adds a member.
    pub async fn add_user(&self, org: &OrgName, email: &str, role: Role) -> Result<(), ClientError> {
        self.done(Req::AddUser { org: org.clone(), email: email.into(), role }).await
    }

    /// Owner/Admin: `org`'s events after the cursor `after`, waiting up to
    /// `wait` for a first one (docs/EVENTS.md): each event's JSON document,
    /// and the cursor to ask after next.
    pub async fn events(
        &self,
        org: &OrgName,
        after: u64,
        wait: std::time::Duration,
    ) -> Result<(Vec<String>, u64), ClientError> {
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        match self.call(Req::Events { org: org.clone(), after, wait_ms }).await? {
            Resp::Events { events, next } => Ok((events, next)),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: adds a webhook; returns (id, secret).
    pub async fn add_webhook(
        &self,
        org: &OrgName,
        url: &str,
        events: Vec<String>,
    ) -> Result<(String, String), ClientError> {
        match self.call(Req::AddWebhook { org: org.clone(), url: url.into(), events }).await? {
            Resp::WebhookAdded { id, secret } => Ok((id, secret)),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: the org's webhooks.
    pub async fn webhooks(&self, org: &OrgName) -> Result<Vec<crate::proto::WebhookInfo>, ClientError> {
        match self.call(Req::ListWebhooks { org: org.clone() }).await? {
            Resp::Webhooks(v) => Ok(v),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: removes a webhook.
    pub async fn remove_webhook(&self, org: &OrgName, id: &str) -> Result<(), ClientError> {
        match self.call(Req::RemoveWebhook { org: org.clone(), id: id.into() }).await? {
            Resp::Done => Ok(()),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: a webhook's new secret.
    pub async fn rotate_webhook_secret(&self, org: &OrgName, id: &str) -> Result<String, ClientError> {
        match self.call(Req::RotateWebhookSecret { org: org.clone(), id: id.into() }).await? {
            Resp::WebhookAdded { secret, .. } => Ok(secret),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: a webhook's recent delivery attempts, oldest first.
    pub async fn webhook_deliveries(
        &self,
        org: &OrgName,
        id: &str,
    ) -> Result<Vec<crate::proto::DeliveryInfo>, ClientError> {
        match self.call(Req::WebhookDeliveries { org: org.clone(), id: id.into() }).await? {
            Resp::Deliveries(v) => Ok(v),
            other => unexpected(other),
        }
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

    /// Owner/Admin: the org's members.
    pub async fn list_users(&self, org: &OrgName) -> Result<Vec<UserInfo>, ClientError> {
        self.all(ListOf::Users { org: org.clone() }, |i| match i {
            PageItems::Users(v) => Ok(v),
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

    /// Owner/Admin: a pool's label caps.
    pub async fn label_limits(&self, org: &OrgName, pool: PoolId) -> Result<Vec<LabelLimitInfo>, ClientError> {
        self.all(ListOf::LabelLimits { org: org.clone(), pool }, |i| match i {
            PageItems::LabelLimits(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Replaces the labels of a session this user holds.
    pub async fn label(&self, session: SessionId, labels: Labels) -> Result<(), ClientError> {
        match self.call(Req::Label { session, labels }).await? {
            Resp::Done => Ok(()),
            other => unexpected(other),
        }
    }

    /// Owner/Admin: ends a session.
    pub async fn kill_session(&self, org: &OrgName, session: SessionId) -> Result<(), ClientError> {
        match self.call(Req::KillSession { org: org.clone(), session }).await? {
            Resp::Killed => Ok(()),
            other => unexpected(other),
        }
    }

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

    /// Replays a pool's recorded demand over `range` (Unix ms) against each
    /// seat count from `seats.0` to `seats.1`.
    pub async fn what_if(
        &self,
        org: &OrgName,
        pool: PoolId,
        range: (Millis, Millis),
        seats: (u32, u32),
    ) -> Result<WhatIfReport, ClientError> {
        let req = Req::WhatIf {
            org: org.clone(),
            pool,
            from_ms: range.0 .0,
            to_ms: range.1 .0,
            seats_min: seats.0,
            seats_max: seats.1,
        };
        match self.call(req).await? {
            Resp::WhatIf(r) => Ok(r),
            other => unexpected(other),
        }
    }

    /// The nodes of the cluster the broker belongs to (empty for a single
    /// broker, and from brokers older than the request).
    pub async fn nodes(&self) -> Result<Vec<crate::proto::NodeInfo>, ClientError> {
        match self.call(Req::Nodes).await {
            Ok(Resp::Nodes(v)) => Ok(v),
            Ok(other) => unexpected(other),
            Err(ClientError::Rejected(e)) if e.code == crate::proto::ErrorCode::BadFrame => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Preflight: whether an acquire on `machine` in `org`'s `pool` would
    /// be admitted now and, if not, the place in the queue and the wait.
    pub async fn check(
        &self,
        (org, pool): (&OrgName, PoolId),
        machine: &MachineId,
        labels: &Labels,
    ) -> Result<crate::proto::AvailabilityInfo, ClientError> {
        let (org, machine) = (org.clone(), machine.clone());
        // Unlabelled: the version 4 request, which older brokers know too.
        let req = match labels.is_empty() {
            true => Req::Check { org, pool, machine },
            false => Req::CheckLabelled { org, pool, machine, labels: labels.clone() },
        };
        match self.call(req).await? {
            Resp::Availability(a) => Ok(a),
            other => unexpected(other),
        }
    }

    /// Where `org` is served: `Some(HOST:PORT)` of another node of the
    /// cluster, `None` for this one (always, from a single broker and from
    /// brokers older than the request).
    pub async fn route(&self, org: &OrgName) -> Result<Option<String>, ClientError> {
        match self.call(Req::Route { org: org.clone() }).await {
            Ok(Resp::Route { server }) => Ok(Some(server).filter(|s| !s.is_empty())),
            Ok(other) => unexpected(other),
            Err(ClientError::Rejected(e)) if e.code == crate::proto::ErrorCode::BadFrame => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Owner/Admin: the org's audit trail.
    pub async fn audit(&self, org: &OrgName) -> Result<Vec<AuditEntry>, ClientError> {
        self.all(ListOf::Audit { org: org.clone() }, |i| match i {
            PageItems::Audit(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Operator: every org.
    pub async fn list_orgs(&self) -> Result<Vec<OrgInfo>, ClientError> {
        self.all(ListOf::Orgs, |i| match i {
            PageItems::Orgs(v) => Ok(v),
            other => Err(other),
        })
        .await
    }

    /// Operator: renews or changes an org's subscription (last day `YYYY-MM-DD`).
    pub async fn set_subscription(&self, org: &OrgName, subscription_end: &str) -> Result<(), ClientError> {
        self.done(Req::SetSubscription { org: org.clone(), subscription_end: subscription_end.into() }).await
    }

    /// Owner/Admin: removes a member (keys revoked, grants and activations
    /// freed, sessions ended).
    pub async fn remove_user(&self, org: &OrgName, email: &str) -> Result<(), ClientError> {
        self.done(Req::RemoveUser { org: org.clone(), email: email.into() }).await
    }

    async fn done(&self, req: Req) -> Result<(), ClientError> {
        match self.call(req).await? {
            Resp::Done => Ok(()),
            other => unexpected(other),
        }
    }
}

/// What `checkout` asks for.
#[derive(Clone, Debug)]
pub struct Checkout<'a> {
    /// The org.
    pub org: &'a OrgName,
    /// The pool.
    pub pool: PoolId,
    /// The registered machine.
    pub machine: &'a MachineId,
    /// The runner instance's nonce.
    pub nonce: u128,
    /// Longest wait in the queue; zero: do not wait.
    pub wait: std::time::Duration,
    /// The job's labels.
    pub labels: Labels,
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

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The session.
    pub session: SessionId,
    /// Its deadline (Unix ms).
    pub deadline_ms: u64,
    /// The lease TTL.
    pub ttl_ms: u64,
    /// Whether an existing session was re-attached (same nonce).
    pub reattached: bool,
    /// The lease's token (protocol version 2); keep the latest for `reattach`.
    pub token: Option<SessionToken>,
}

/// A lease answer, in either protocol version.
fn admitted(resp: Resp) -> Result<Admitted, ClientError> {
    match resp {
        Resp::Leased { session, deadline_ms, ttl_ms, reattached, token } => {
            Ok(Admitted { session, deadline_ms, ttl_ms, reattached, token: Some(token) })
        }
        Resp::Admitted { session, deadline_ms, ttl_ms, reattached } => {
            Ok(Admitted { session, deadline_ms, ttl_ms, reattached, token: None })
        }
        other => unexpected(other),
    }
}

impl Client {
    /// One page of a list (protocol version 4): its items, and the cursor
    /// of the next page (none after the last). `limit` 0: as many as fit.
    pub async fn page(
        &self,
        of: ListOf,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(PageItems, Option<Cursor>), ClientError> {
        match self.call(Req::List { of, after, limit }).await? {
            Resp::Page { items, next } => Ok((items, next)),
            other => unexpected(other),
        }
    }

    /// Every page of a list in order, each handed to `each` as it arrives
    /// (so a million sessions never sit in memory at once).
    pub async fn each_page(&self, of: ListOf, mut each: impl FnMut(PageItems)) -> Result<(), ClientError> {
        let mut after: Option<Cursor> = None;
        loop {
            let (items, next) = self.page(of.clone(), after.clone(), 0).await?;
            let empty = items.is_empty();
            each(items);
            match next {
                None => return Ok(()),
                // A cursor that does not move would page for ever.
                Some(c) if empty || after.as_ref() == Some(&c) => {
                    return Err(ClientError::Protocol(format!("the broker's {of:?} pages stopped advancing")));
                }
                Some(c) => after = Some(c),
            }
        }
    }

    /// Every item of a list, paged through and collected; `take` unwraps
    /// the list's own variant.
    async fn all<T>(
        &self,
        of: ListOf,
        take: fn(PageItems) -> Result<Vec<T>, PageItems>,
    ) -> Result<Vec<T>, ClientError> {
        let (mut out, mut wrong) = (Vec::new(), None);
        self.each_page(of, |items| match take(items) {
            Ok(v) => out.extend(v),
            Err(other) => wrong = Some(other),
        })
        .await?;
        match wrong {
            None => Ok(out),
            Some(other) => Err(ClientError::Protocol(format!("unexpected page {other:?}"))),
        }
    }
}

fn unexpected<T>(resp: Resp) -> Result<T, ClientError> {
    Err(ClientError::Protocol(format!("unexpected response {resp:?}")))
}
