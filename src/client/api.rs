//! One typed method per request of the protocol, on top of `Client::call`:
//! here, what a runner and a CI job ask (machines, leases, the queue,
//! labels, where an org is served, preflight and what-if). The org's
//! administration is in `admin`, licensed users and offline licenses in
//! `licenses`, events and webhooks in `hooks`, paging through lists in
//! `paging`: a reader looking for one request finds it by who asks it.

use super::{Client, ClientError};
use crate::proto::{ListOf, MissingNode, PageItems, PoolState, PoolStatus, Req, Resp, SessionToken, WhatIfReport};
use crate::value::{Labels, MachineId, Millis, Nonce, OrgName, PoolId, SessionId};

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

    /// `reattach` carrying the job's labels: to a broker of protocol
    /// version 7, one `ReattachLabelled` (a new session carries them from
    /// its first instant, counted in its label caps); to an older one,
    /// which does not know it, `Reattach`, then `Label` on the session it
    /// gave. No labels: a plain `Reattach`, which every version knows.
    pub async fn reattach_labelled(
        &self,
        (org, pool, machine): (&OrgName, PoolId, &MachineId),
        nonce: u128,
        token: SessionToken,
        labels: &Labels,
    ) -> Result<Admitted, ClientError> {
        let (o, m, n) = (org.clone(), machine.clone(), Nonce(nonce));
        let req = Req::ReattachLabelled { org: o, pool, machine: m, nonce: n, token, labels: labels.clone() };
        if !labels.is_empty() && self.speaks(&req) {
            return admitted(self.call(req).await?);
        }
        let again = self.reattach(org, pool, machine, nonce, token).await?;
        if !labels.is_empty() {
            // Always, not only on a new session: a retry after a `Label`
            // that failed finds the live session, still unlabelled (and a
            // relabel to the same labels moves nothing).
            self.label(again.session, labels.clone()).await?;
        }
        Ok(again)
    }

    /// Whether this connection's protocol version (the broker's, when it
    /// is older than this build) lists `req`: a client never sends a
    /// request its broker's version does not know.
    fn speaks(&self, req: &Req) -> bool {
        crate::proto::Version::new(self.welcome().version).is_some_and(|v| v.lists(req))
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

    /// Replaces the labels of a session this user holds.
    pub async fn label(&self, session: SessionId, labels: Labels) -> Result<(), ClientError> {
        match self.call(Req::Label { session, labels }).await? {
            Resp::Done => Ok(()),
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

    /// Preflight: whether an acquire on `machine` in `org`'s `pool` would
    /// be admitted now and, if not, the place in the queue and the wait;
    /// with `labels`, as a runner carrying them (a broker older than
    /// version 6 is asked without them).
    pub async fn check(
        &self,
        (org, pool): (&OrgName, PoolId),
        machine: &MachineId,
        labels: &Labels,
    ) -> Result<crate::proto::AvailabilityInfo, ClientError> {
        let (org, machine) = (org.clone(), machine.clone());
        // Unlabelled: the version 4 request, which older brokers know too.
        // A broker older than version 6 answers a labelled one `BAD_FRAME`:
        // asked again without the labels, as it would have been before.
        let plain = Req::Check { org: org.clone(), pool, machine: machine.clone() };
        let answer = match labels.is_empty() {
            true => self.call(plain).await,
            false => match self.call(Req::CheckLabelled { org, pool, machine, labels: labels.clone() }).await {
                Err(ClientError::Rejected(e)) if e.code == crate::proto::ErrorCode::BadFrame => self.call(plain).await,
                other => other,
            },
        };
        match answer? {
            Resp::Availability(a) => Ok(a),
            other => unexpected(other),
        }
    }

    /// Replays a pool's recorded demand over `range` (Unix ms) against each
    /// seat count from `seats.0` to `seats.1`; with the nodes of a cluster
    /// whose demand is missing from it (version 6; none from an older broker).
    pub async fn what_if(
        &self,
        org: &OrgName,
        pool: PoolId,
        range: (Millis, Millis),
        seats: (u32, u32),
    ) -> Result<(WhatIfReport, Vec<MissingNode>), ClientError> {
        let req = Req::WhatIf {
            org: org.clone(),
            pool,
            from_ms: range.0 .0,
            to_ms: range.1 .0,
            seats_min: seats.0,
            seats_max: seats.1,
        };
        match super::paging::partial(self.call(req).await?) {
            (Resp::WhatIf(r), missing) => Ok((r, missing)),
            (other, _) => unexpected(other),
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

    pub(super) async fn done(&self, req: Req) -> Result<(), ClientError> {
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

/// An answer of a kind the request never gets: the broker is broken or
/// speaks another protocol.
pub(super) fn unexpected<T>(resp: Resp) -> Result<T, ClientError> {
    Err(ClientError::Protocol(format!("unexpected response {resp:?}")))
}
