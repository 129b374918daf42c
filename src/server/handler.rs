//! One request → the core (and the store, for durable changes) → one result.
//!
//! A plain router: one short arm per request, no product or kind branching
//! and no undo by name; the rules and the undos live in the core. `fast`
//! answers everything that needs no durable write, synchronously: acquire,
//! renew, release, kills and reads. `slow` handles the rest under the writer
//! lock: the core plans (and reserves), the store commits off the async
//! threads, and the core's pending change is settled with the result.

use super::paging;
use super::stream::Tickets;
use super::token::Claims;
use super::wire::list;
use super::{ConnCtx, Shared};
use crate::core::{
    parse_end_of_date, Activation, Broker, Change, Email, Error, KeyRef, Lease, Millis, Nonce, OfflineId, OfflineOrder,
    Pending, Principal, Registration, Result as CoreResult, SessionId, Target,
};
use crate::keys;
use crate::proto::{ErrorCode, PoolState, Req, Resp, SessionToken, SessionView, UserLimitInfo, WireError};

pub(super) type Reply = Result<Resp, WireError>;

/// Who asks, on which connection, and when: what every arm needs.
pub(super) struct Call<'a> {
    pub shared: &'a Shared,
    pub ctx: &'a ConnCtx,
    pub p: &'a Principal,
    pub now: Millis,
    /// The protocol version of the caller's stream.
    pub proto: u16,
}

/// Answers a request that needs no durable write; hands others back.
pub(super) fn fast(call: &Call<'_>, tickets: &mut Tickets, req: Req) -> Result<Reply, Req> {
    let (core, p) = (&call.shared.core, call.p);
    let reply = match req {
        Req::Acquire { org, pool, machine, nonce } => {
            let target = Target { org, pool, machine };
            match acquire(call, tickets, &target, nonce) {
                Some(reply) => counted(call.shared, &target, reply),
                // The pool's ceiling must be raised first: a durable write.
                None => return Err(Req::Acquire { org: target.org, pool, machine: target.machine, nonce }),
            }
        }
        Req::Renew { session } => renew(call, session),
        Req::Release { session } => reply(core.release(p, session, call.now), |ended| {
            call.shared.ended(ended);
            call.forget(session, Resp::Released)
        }),
        Req::Status { org } => reply(core.status(p, org.as_ref()), |v| match call.proto {
            1 | 2 => Resp::Status(list(v)),
            // Version 3: each pool's wait queue too.
            _ => Resp::Pools(v.into_iter().map(|s| PoolState { waiting: s.waiting, status: s.into() }).collect()),
        }),
        Req::ListSessions { org } => list_sessions(call, &org),
        Req::Label { session, labels } => reply(core.label(p, session, labels), |()| Resp::Done),
        Req::ListUserLimits { org, pool } => reply(core.user_limits(p, &org, pool), |v| {
            Resp::UserLimits(
                v.into_iter().map(|(email, max, sessions)| UserLimitInfo { email, max, sessions }).collect(),
            )
        }),
        Req::ListMachines { org } => reply(core.machines(p, &org), |v| Resp::Machines(list(v))),
        Req::ListUsers { org } => reply(core.users(p, &org), |v| Resp::Users(list(v))),
        Req::ListKeys { org } => reply(core.keys(p, &org), |v| Resp::Keys(list(v))),
        Req::ListOrgs => reply(core.orgs(p), |v| Resp::Orgs(list(v))),
        Req::Nodes => Ok(Resp::Nodes(call.shared.cluster.as_ref().map(|c| c.view.nodes()).unwrap_or_default())),
        Req::Route { org } => {
            let elsewhere =
                call.shared.cluster.as_ref().filter(|c| !c.serves(&org)).and_then(|c| c.served_at(org.as_str()));
            Ok(Resp::Route { server: elsewhere.map(|o| o.advertise).unwrap_or_default() })
        }
        Req::ListGrants { org, pool } => reply(core.grants(p, &org, pool), |v| Resp::Grants(list(v))),
        Req::ListOffline { org } => reply(core.offline_licenses(p, &org), |v| Resp::Offline(list(v))),
        Req::RevokeOffline { org, license } | Req::TransferOffline { org, license, .. } => {
            Err(core.refuse_offline_change(p, &org, &license).into())
        }
        Req::OfflinePublicKey => Ok(Resp::PublicKey { pem: call.shared.signing.public_pem() }),
        slow => return Err(slow),
    };
    Ok(reply)
}

/// The unpaged session list (versions 1 to 3), sorted by id: everything
/// when it fits a frame, else `RESPONSE_TOO_LARGE` after reading no more
/// than a frame could hold.
fn list_sessions(call: &Call<'_>, org: &crate::core::OrgName) -> Reply {
    let (mut found, more) = call.shared.core.sessions_page(call.p, org, None, paging::LEGACY_MAX)?;
    if more {
        return Err(paging::too_large("sessions"));
    }
    found.sort_by_key(|s| s.session);
    Ok(match call.proto {
        1 | 2 => Resp::Sessions(list(found)),
        // Version 3 on: with each session's labels.
        _ => Resp::SessionViews(
            found.into_iter().map(|s| SessionView { labels: s.labels.clone(), info: s.into() }).collect(),
        ),
    })
}

/// The core's answer as a reply: `ok` builds the response, errors become wire errors.
fn reply<T>(result: CoreResult<T>, ok: impl FnOnce(T) -> Resp) -> Reply {
    result.map(ok).map_err(Into::into)
}

/// Requests that write durable records.
pub(super) async fn slow(call: &Call<'_>, req: Req) -> Reply {
    let p = call.p;
    match req {
        Req::Acquire { org, pool, machine, nonce } => {
            let target = Target { org, pool, machine };
            counted(call.shared, &target, acquire_slow(call, &target, nonce).await)
        }
        Req::Reattach { org, pool, machine, nonce, token } => {
            reattach(call, Target { org, pool, machine }, nonce, token).await
        }
        Req::RegisterMachine { org, pool, machine } => register(call, Target { org, pool, machine }).await,
        Req::CreateOrg { name, subscription_end, owner } => {
            let (end, owner) = (parse_end_of_date(&subscription_end)?, Email::parse_lenient(&owner)?);
            let (key, hash) = keys::generate().map_err(random_failure)?;
            p.require_operator()?;
            // In a cluster, the node that creates an org claims it first:
            // the creation is fenced on that claim, like every later write.
            let seat = call.shared.cluster.as_ref();
            if let Some(seat) = seat {
                seat.claim_new(&name).await.map_err(|e| match e {
                    crate::cluster::seat::ClaimError::Exists => {
                        WireError::from(Error::AlreadyExists { what: "org", name: name.to_string() })
                    }
                    crate::cluster::seat::ClaimError::Etcd(why) => {
                        WireError::new(ErrorCode::StoreFailure, format!("claiming the new org in etcd: {why}"))
                    }
                })?;
            }
            let created = call.mutate(|core, now| core.plan_create_org(p, &name, end, &owner, hash, now)).await;
            if let (Err(_), Some(seat)) = (&created, seat) {
                seat.unclaim(&name).await;
            }
            created?;
            Ok(Resp::OrgCreated { owner_key: key })
        }
        Req::SetPool { org, pool, quota } => {
            call.mutate(|core, now| core.plan_set_pool(p, &org, pool, quota, now)).await.map(|()| Resp::Done)
        }
        Req::AddUser { org, email, role } => {
            let email = Email::parse_lenient(&email)?;
            call.mutate(|core, now| core.plan_add_user(p, &org, &email, role, now)).await.map(|()| Resp::Done)
        }
        Req::CreateKey { org, email } => {
            let email = Email::parse_lenient(&email)?;
            let (key, hash) = keys::generate().map_err(random_failure)?;
            call.mutate(|core, now| core.plan_create_key(p, &org, &email, hash, now)).await?;
            Ok(Resp::KeyCreated { key, id: hash.key_id() })
        }
        Req::RevokeKey { org, key } => {
            let key = if keys::looks_like_key(&key) { KeyRef::Hash(keys::hash(&key)) } else { KeyRef::Id(key) };
            call.mutate(|core, now| core.plan_revoke_key(p, &org, key, now)).await.map(|()| Resp::Done)
        }
        Req::RemoveMachine { org, pool, machine } => {
            call.mutate(|core, now| core.plan_remove_machine(p, &org, pool, &machine, now)).await.map(|()| Resp::Done)
        }
        Req::Grant { org, pool, email } => {
            let email = Email::parse_lenient(&email)?;
            call.mutate(|core, now| core.plan_grant(p, &org, pool, &email, now)).await.map(|()| Resp::Done)
        }
        Req::RevokeGrant { org, pool, email } => {
            let email = Email::parse_lenient(&email)?;
            call.mutate(|core, now| core.plan_revoke_grant(p, &org, pool, &email, now)).await.map(|()| Resp::Done)
        }
        Req::Activate { org, pool, machine, nonce } => {
            let target = Target { org, pool, machine };
            counted(call.shared, &target, activate(call, &target, nonce).await)
        }
        Req::CreateOffline { org, pool, machine, expires } => {
            create_offline(call, Target { org, pool, machine }, &expires).await
        }
        Req::Audit { org } => match paging::audit(call, org, None, paging::LEGACY_MAX).await? {
            (_, true) => Err(paging::too_large("audit entries")),
            (entries, false) => Ok(Resp::AuditLog(entries)),
        },
        Req::List { of, after, limit } => paging::list_page(call, of, after, limit).await,
        Req::WhatIf { org, pool, from_ms, to_ms, seats_min, seats_max } => {
            super::reports::what_if(call, (org, pool), (from_ms, to_ms), seats_min..=seats_max).await.map(Resp::WhatIf)
        }
        Req::KillSession { org, session } => kill(call, org, session).await,
        Req::SetUserLimit { org, pool, email, max } => {
            let email = Email::parse_lenient(&email)?;
            let plan = |core: &Broker, now| core.plan_set_user_limit(p, &org, pool, &email, max, now);
            call.mutate(plan).await.map(|()| Resp::Done)
        }
        Req::SetSubscription { org, subscription_end } => {
            let end = parse_end_of_date(&subscription_end)?;
            call.mutate(|core, now| core.plan_set_subscription(p, &org, end, now)).await.map(|()| Resp::Done)
        }
        Req::RemoveUser { org, email } => {
            let email = Email::parse_lenient(&email)?;
            call.mutate(|core, now| core.plan_remove_user(p, &org, &email, now)).await.map(|()| Resp::Done)
        }
        // `fast` answers everything else; reaching here is a routing bug,
        // reported rather than panicked on.
        other => Err(WireError::new(ErrorCode::Internal, format!("request {other:?} reached the slow path"))),
    }
}

impl Call<'_> {
    /// Refuses new seats while the broker drains.
    pub(super) fn admitting(&self) -> Result<(), WireError> {
        // (The request's org was checked as it arrived: `stream::served_here`.)
        self.shared.valid()?;
        match self.shared.is_draining() {
            true => Err(WireError::new(
                ErrorCode::Draining,
                "the broker is shutting down; retry against the restarted broker",
            )),
            false => Ok(()),
        }
    }

    /// What a lease's token is about.
    fn claims<'t>(&'t self, target: &'t Target, nonce: Nonce) -> Claims<'t> {
        Claims { org: &target.org, pool: target.pool, machine: &target.machine, nonce, user: &self.p.email }
    }

    /// Books an admitted (or re-attached) session and answers with it: with
    /// its token on a version 2 stream.
    fn leased(&self, target: &Target, nonce: Nonce, lease: Lease) -> Resp {
        self.book(target, &lease, &crate::core::Labels::default());
        match self.proto {
            1 => {
                let (session, deadline_ms, reattached) = (lease.session, lease.deadline.0, lease.reattached);
                Resp::Admitted { session, deadline_ms, ttl_ms: self.ttl_ms(), reattached }
            }
            _ => self.with_token(target, nonce, lease),
        }
    }

    /// Logs a session that took a seat, and books it.
    pub(super) fn book(&self, target: &Target, lease: &Lease, labels: &crate::core::Labels) {
        if !lease.reattached {
            let (org, pool, machine, user) = (&target.org, target.pool, &target.machine, &self.p.email);
            tracing::debug!(session = %lease.session, %org, %pool, %machine, %user, %labels, "session started");
        }
        self.hold(lease);
    }

    /// The `Leased` answer for `lease`, with a fresh token.
    pub(super) fn with_token(&self, target: &Target, nonce: Nonce, lease: Lease) -> Resp {
        let token = self.shared.tokens.issue(&self.claims(target, nonce), lease.deadline);
        let (session, deadline_ms, reattached) = (lease.session, lease.deadline.0, lease.reattached);
        Resp::Leased { session, deadline_ms, ttl_ms: self.ttl_ms(), reattached, token }
    }

    /// Books a new or re-attached lease on this connection and the expiry task.
    fn hold(&self, lease: &Lease) {
        self.ctx.sessions.lock().insert(lease.session);
        self.shared.deadline_added(lease.deadline);
    }

    /// Forgets a session this connection no longer holds.
    fn forget(&self, session: SessionId, resp: Resp) -> Resp {
        self.ctx.sessions.lock().remove(&session);
        resp
    }

    fn ttl_ms(&self) -> u64 {
        self.shared.core.lease_ttl().as_millis() as u64
    }

    /// Plan → commit → apply, as one step with respect to other durable changes.
    async fn mutate(&self, plan: impl FnOnce(&Broker, Millis) -> CoreResult<Vec<Change>>) -> Result<(), WireError> {
        let _writer = self.shared.writer.lock().await;
        let pending = Pending::plan(plan(&self.shared.core, self.now)?, ());
        self.shared.settle(pending).await
    }
}

/// The hot path: a cached ticket and one seat CAS. `None` when the pool's
/// ceiling must be raised first (the slow path does that, then admits).
fn acquire(call: &Call<'_>, tickets: &mut Tickets, target: &Target, nonce: Nonce) -> Option<Reply> {
    if let Err(e) = call.admitting() {
        return Some(Err(e));
    }
    let core = &call.shared.core;
    let ticket = match tickets.get(core, call.p, target) {
        Ok(t) => t,
        Err(e) => return Some(Err(e.into())),
    };
    match core.admit(ticket, nonce, call.ctx.id, call.now) {
        Ok(lease) => Some(Ok(call.leased(target, nonce, lease))),
        Err(Error::CeilingReached) => None,
        Err(e) => Some(Err(e.into())),
    }
}

/// Most ceiling raises one admission waits for before giving up. A raise
/// makes room for every admission refused at the ceiling before it (and a
/// quarter more), so one waiting admission rarely needs a second.
const RAISES: usize = 8;

/// Runs `admit` until it stops meeting the pool's ceiling, raising the
/// ceiling durably before each retry.
pub(super) async fn with_room<T>(
    call: &Call<'_>,
    target: &Target,
    mut admit: impl FnMut() -> CoreResult<T>,
) -> Result<T, WireError> {
    for _ in 0..RAISES {
        match admit() {
            Err(Error::CeilingReached) => call.shared.raise_ceiling(&target.org, target.pool).await?,
            other => return other.map_err(Into::into),
        }
    }
    Err(WireError::new(ErrorCode::Internal, "the pool's seat ceiling could not be raised in time; retry"))
}

/// An acquire that met the pool's ceiling: raise it, then admit.
async fn acquire_slow(call: &Call<'_>, target: &Target, nonce: Nonce) -> Reply {
    call.admitting()?;
    let core = &call.shared.core;
    let lease = with_room(call, target, || core.acquire(call.p, target, nonce, call.ctx.id, call.now)).await?;
    Ok(call.leased(target, nonce, lease))
}

/// Counts an admission's refusal in its pool's denials (by reason), and
/// passes the reply on.
pub(super) fn counted(shared: &Shared, target: &Target, reply: Reply) -> Reply {
    if let Err(e) = &reply {
        if let Some(why) = super::wire::denial_of(e.code) {
            shared.core.note_denial(&target.org, target.pool, why);
        }
    }
    reply
}

/// A runner keeps its lease across a restart or a lost connection, on the
/// strength of its session token.
async fn reattach(call: &Call<'_>, target: Target, nonce: Nonce, token: SessionToken) -> Reply {
    call.admitting()?;
    let claims = call.claims(&target, nonce);
    let checked = call.shared.tokens.check(&claims, &token).map_err(|_| {
        WireError::new(
            ErrorCode::InvalidArgument,
            "the session token was not issued by this broker for this org, pool, machine, nonce and user",
        )
    })?;
    if checked.deadline <= call.now {
        return Err(WireError::new(ErrorCode::SessionExpired, "the lease's deadline passed before it was re-attached"));
    }
    let core = &call.shared.core;
    let earlier = !checked.this_run;
    let lease =
        with_room(call, &target, || core.reattach(call.p, &target, nonce, call.ctx.id, call.now, earlier)).await?;
    call.book(&target, &lease, &crate::core::Labels::default());
    // Whatever version the stream speaks, a re-attach answers with a token.
    Ok(call.with_token(&target, nonce, lease))
}

/// Heartbeat; a version 2 stream gets the new deadline's token with it.
fn renew(call: &Call<'_>, session: SessionId) -> Reply {
    // A node whose claim lapsed extends nobody's belief in a seat.
    call.shared.valid()?;
    let core = &call.shared.core;
    if call.proto < 2 {
        return reply(core.renew(call.p, session, call.now), |d| Resp::Renewed { deadline_ms: d.0 });
    }
    // A holder is always a member of the session's org (see `Broker::renew`).
    let Some(org) = call.p.org.as_ref() else {
        return reply(core.renew(call.p, session, call.now), |d| Resp::Renewed { deadline_ms: d.0 });
    };
    let user = &call.p.email;
    let resp = core.renew_with(call.p, session, call.now, |r| {
        let claims = Claims { org, pool: r.pool, machine: r.machine, nonce: r.nonce, user };
        Resp::Extended { deadline_ms: r.deadline.0, token: call.shared.tokens.issue(&claims, r.deadline) }
    })?;
    Ok(resp)
}

async fn register(call: &Call<'_>, target: Target) -> Reply {
    call.admitting()?;
    let core = &call.shared.core;
    if core.is_registered(call.p, &target)? {
        return Ok(Resp::Registered { new: false });
    }
    let _writer = call.shared.writer.lock().await;
    let registration = call.shared.settle(core.register(call.p, &target, call.now)?).await?;
    Ok(Resp::Registered { new: registration == Registration::New })
}

/// KSE activation: a node-locked binding or a floating lease, audited durably.
async fn activate(call: &Call<'_>, target: &Target, nonce: Nonce) -> Reply {
    call.admitting()?;
    let core = &call.shared.core;
    let _writer = call.shared.writer.lock().await;
    let pending = with_room(call, target, || core.activate(call.p, target, nonce, call.ctx.id, call.now)).await?;
    let machine = target.machine.clone();
    Ok(match call.shared.settle(pending).await? {
        Activation::Bound { already } => Resp::Activated { machine, session: None, deadline_ms: 0, ttl_ms: 0, already },
        // A floating activation is a lease like a runner's: on a version 2
        // stream it comes with its token, so it survives a restart too.
        Activation::Leased(lease) if call.proto >= 2 => {
            call.hold(&lease);
            call.with_token(target, nonce, lease)
        }
        Activation::Leased(lease) => {
            call.hold(&lease);
            let (session, deadline_ms, ttl_ms) = (Some(lease.session), lease.deadline.0, call.ttl_ms());
            Resp::Activated { machine, session, deadline_ms, ttl_ms, already: lease.reattached }
        }
    })
}

/// Reserves the seat, signs the file, commits it, and hands the file back.
async fn create_offline(call: &Call<'_>, target: Target, expires: &str) -> Reply {
    let last_day_end = parse_end_of_date(expires)?;
    let id = OfflineId(keys::random_u128().map_err(random_failure)?);
    let shared = call.shared;
    let _writer = shared.writer.lock().await;
    let order = OfflineOrder { target, last_day_end, id };
    let pending = shared.core.create_offline(call.p, &order, call.now, |f| shared.signing.sign(f))?;
    let (fields, content) = shared.settle(pending).await?;
    shared.deadline_added(fields.expires);
    Ok(Resp::OfflineCreated { file_name: fields.file_name(), content })
}

/// An Owner/Admin ends a session: audited first, then ended (the holder gets a notice).
async fn kill(call: &Call<'_>, org: crate::core::OrgName, session: crate::core::SessionId) -> Reply {
    call.shared.kill(call.p, org, session).await?;
    Ok(call.forget(session, Resp::Killed))
}

/// A failed commit as the client sees it; logged, since it is the broker's fault.
pub(super) fn store_failure(e: crate::store::StoreError) -> WireError {
    if let crate::store::StoreError::Fenced = e {
        return WireError::new(
            ErrorCode::NotOwner,
            format!("{e}; reconnect: any node redirects to the one that serves"),
        );
    }
    tracing::error!("{e}");
    WireError::new(ErrorCode::StoreFailure, format!("{e}; nothing was changed"))
}

fn random_failure(e: keys::RandomUnavailable) -> WireError {
    WireError::new(ErrorCode::Internal, e.to_string())
}
