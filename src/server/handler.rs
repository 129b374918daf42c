//! One request → one operation → one answer.
//!
//! A router: one short arm per request, calling `crate::operations` (or,
//! for a read the core answers by itself, the core) and putting the answer
//! in the wire form of the stream's protocol version. No role check, rule
//! or undo lives here.
//!
//! `fast` answers synchronously everything that needs no durable write:
//! the hot path (an acquire on a cached ticket, one seat CAS), renewals,
//! releases and reads. What needs the store comes back as `Later`, already
//! decoded (nothing is authorised or routed twice), and `slow` awaits it:
//! an acquire that met its pool's ceiling, a re-attach, a `Checkout` (which
//! may queue: `waiting`), the admin acts. Session tokens are this door's
//! own: issued with each lease, checked before a re-attach.

use std::sync::Arc;

use super::paging;
use super::token::{Claims, Fixed};
use super::waiting::{self, Late};
use super::wire::list;
use super::{ConnCtx, Shared};
use crate::core::{
    parse_end_of_date, Activation, Email, KeyHash, KeyRef, Labels, Lease, Millis, Nonce, OrgName, Principal,
    Result as CoreResult, SessionId, Target,
};
use crate::operations::{Caller, TicketCache};
use crate::proto::{ErrorCode, PoolState, Req, Resp, SessionToken, SessionView, UserLimitInfo, Version, WireError};

pub(super) type Reply = Result<Resp, WireError>;

/// Who asks, on which connection, and when: what every arm needs.
pub(super) struct Call<'a> {
    pub shared: &'a Arc<Shared>,
    pub ctx: &'a Arc<ConnCtx>,
    pub p: &'a Principal,
    /// The caller's key (a queued request checks it again when its seat comes).
    pub key: KeyHash,
    /// The request's instant: read once per read of the stream for the
    /// fast requests it brought, once more for each that awaits the store.
    pub now: Millis,
    /// The protocol version of the caller's stream.
    pub proto: Version,
    /// The fixed claims of the stream's last token (the MAC's state after them).
    pub fixed: &'a parking_lot::Mutex<Fixed>,
}

/// A request `fast` could not answer without awaiting the store.
pub(super) enum Later {
    /// An acquire that met its pool's durable ceiling: raise it, then admit.
    Acquire(Target, Nonce),
    /// Any request that writes durable records.
    Req(Req),
}

/// Answers a request that needs no durable write; leaves the others for `slow`.
pub(super) fn fast(call: &Call<'_>, tickets: &mut TicketCache, req: Req) -> Result<Reply, Later> {
    let (core, p) = (call.shared.ops.core(), call.p);
    Ok(match req {
        Req::Acquire { org, pool, machine, nonce } => {
            return acquire(call, tickets, Target { org, pool, machine }, nonce)
        }
        Req::Renew { session } => renew(call, session),
        Req::Release { session } => {
            call.shared.ops.release(call.c(), session).map(|()| call.forget(session, Resp::Released))
        }
        Req::Status { org } => reply(core.status(p, org.as_ref()), |v| match call.proto.queues_and_labels() {
            false => Resp::Status(list(v)),
            true => Resp::Pools(v.into_iter().map(|s| PoolState { waiting: s.waiting, status: s.into() }).collect()),
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
        Req::Nodes => Ok(Resp::Nodes(call.shared.ops.nodes())),
        Req::Route { org } => Ok(Resp::Route { server: call.shared.ops.route(&org) }),
        Req::ListGrants { org, pool } => reply(core.grants(p, &org, pool), |v| Resp::Grants(list(v))),
        Req::ListOffline { org } => reply(core.offline_licenses(p, &org), |v| Resp::Offline(list(v))),
        Req::RevokeOffline { org, license } | Req::TransferOffline { org, license, .. } => {
            Err(core.refuse_offline_change(p, &org, &license).into())
        }
        Req::OfflinePublicKey => Ok(Resp::PublicKey { pem: call.shared.ops.offline_public_key() }),
        slow => return Err(Later::Req(slow)),
    })
}

/// Answers what `fast` left: `None` when the request waits in a queue
/// (its answer goes out through `late` when its seat comes).
pub(super) async fn slow(call: &Call<'_>, later: Later, id: u64, late: &Late) -> Option<Reply> {
    let req = match later {
        Later::Acquire(target, nonce) => return Some(acquire_slow(call, target, nonce).await),
        Later::Req(req) => req,
    };
    Some(match req {
        Req::Checkout { org, pool, machine, nonce, wait_ms, labels } => {
            let wait = std::time::Duration::from_millis(wait_ms).min(waiting::MAX_WAIT);
            let req = waiting::WaitReq { id, target: Target { org, pool, machine }, nonce, wait, labels };
            return waiting::start(call, req, late).await;
        }
        Req::Reattach { org, pool, machine, nonce, token } => {
            reattach(call, Target { org, pool, machine }, (nonce, token), None).await
        }
        Req::ReattachLabelled { org, pool, machine, nonce, token, labels } => {
            reattach(call, Target { org, pool, machine }, (nonce, token), Some(labels)).await
        }
        Req::RegisterMachine { org, pool, machine } => {
            let new = call.shared.ops.register(call.c(), &Target { org, pool, machine }, false).await;
            new.map(|new| Resp::Registered { new })
        }
        Req::RegisterEphemeral { org, pool, machine } => {
            let new = call.shared.ops.register(call.c(), &Target { org, pool, machine }, true).await;
            new.map(|new| Resp::Registered { new })
        }
        Req::Activate { org, pool, machine, nonce } => activate(call, Target { org, pool, machine }, nonce).await,
        Req::Audit { org } => {
            paging::audit(call, org, None, paging::LEGACY_MAX).await.and_then(|(entries, more)| match more {
                true => Err(paging::too_large("audit entries")),
                false => Ok(Resp::AuditLog(entries)),
            })
        }
        Req::List { of, after, limit } => paging::list_page(call, of, after, limit).await,
        Req::WhatIf { org, pool, from_ms, to_ms, seats_min, seats_max } => {
            super::reports::what_if(call, (org, pool), (from_ms, to_ms), seats_min..=seats_max).await
        }
        Req::Check { org, pool, machine } => call
            .shared
            .ops
            .check(call.c(), (&org, pool), Some(&machine), &Labels::default())
            .await
            .map(Resp::Availability),
        Req::CheckLabelled { org, pool, machine, labels } => {
            call.shared.ops.check(call.c(), (&org, pool), Some(&machine), &labels).await.map(Resp::Availability)
        }
        Req::Events { org, after, wait_ms } => super::reports::events(call, org, after, wait_ms).await,
        req @ (Req::AddWebhook { .. }
        | Req::ListWebhooks { .. }
        | Req::RemoveWebhook { .. }
        | Req::RotateWebhookSecret { .. }
        | Req::WebhookDeliveries { .. }
        | Req::RedeliverWebhook { .. }) => super::webhooks::answer(call, req).await,
        Req::KillSession { org, session } => {
            call.shared.ops.kill(call.c(), &org, session).await.map(|()| call.forget(session, Resp::Killed))
        }
        other => act(call, other).await,
    })
}

/// The Owner's, Admin's and operator's durable acts.
async fn act(call: &Call<'_>, req: Req) -> Reply {
    let (ops, c) = (&call.shared.ops, call.c());
    let done = |r: Result<(), WireError>| r.map(|()| Resp::Done);
    match req {
        Req::CreateOrg { name, subscription_end, owner } => {
            let (end, owner) = (parse_end_of_date(&subscription_end)?, Email::parse_lenient(&owner)?);
            let key = ops.create_org(c, &name, end, &owner).await?;
            Ok(Resp::OrgCreated { owner_key: key.key })
        }
        Req::SetPool { org, pool, quota } => done(ops.set_pool(c, &org, pool, quota).await),
        Req::SetMachinePolicy { org, pool, machine_idle_ms, ephemeral } => {
            let idle = machine_idle_ms.map(std::time::Duration::from_millis);
            done(ops.set_policy(c, (&org, pool), crate::core::Policy { idle, ephemeral }).await)
        }
        Req::SetPoolAlerts { org, pool, queue_alert_ms, busy_minutes } => {
            let queue_wait = queue_alert_ms.map(std::time::Duration::from_millis);
            done(ops.set_alerts(c, (&org, pool), crate::core::Alerts { queue_wait, busy_minutes }).await)
        }
        Req::SetSubscription { org, subscription_end } => {
            done(ops.set_subscription(c, &org, parse_end_of_date(&subscription_end)?).await)
        }
        Req::AddUser { org, email, role } => done(ops.add_user(c, &org, &Email::parse_lenient(&email)?, role).await),
        Req::RemoveUser { org, email } => done(ops.remove_user(c, &org, &Email::parse_lenient(&email)?).await),
        Req::CreateKey { org, email } => {
            let key = ops.create_key(c, &org, &Email::parse_lenient(&email)?).await?;
            Ok(Resp::KeyCreated { key: key.key, id: key.id })
        }
        Req::RevokeKey { org, key } => done(ops.revoke_key(c, &org, key_ref(&key)).await),
        Req::RemoveMachine { org, pool, machine } => done(ops.remove_machine(c, &org, pool, &machine).await),
        Req::Grant { org, pool, email } => done(ops.grant(c, &org, pool, &Email::parse_lenient(&email)?).await),
        Req::RevokeGrant { org, pool, email } => {
            done(ops.revoke_grant(c, &org, pool, &Email::parse_lenient(&email)?).await)
        }
        Req::SetLabelLimit { org, pool, key, value, max } => {
            done(ops.set_label_limit(c, (&org, pool), (key, value), max).await)
        }
        Req::SetReservation { org, pool, key, value, seats } => {
            done(ops.set_reservation(c, (&org, pool), (key, value), seats).await)
        }
        Req::SetUserLimit { org, pool, email, max } => {
            done(ops.set_user_limit(c, (&org, pool), &Email::parse_lenient(&email)?, max).await)
        }
        Req::CreateOffline { org, pool, machine, expires } => {
            let file = ops.create_offline(c, Target { org, pool, machine }, parse_end_of_date(&expires)?).await?;
            Ok(Resp::OfflineCreated { file_name: file.file_name, content: file.content })
        }
        // `fast` answers everything else; reaching here is a routing bug,
        // reported rather than panicked on.
        other => Err(WireError::new(ErrorCode::Internal, format!("request {other:?} reached the slow path"))),
    }
}

/// A key named by its id, or by the key itself.
fn key_ref(key: &str) -> KeyRef {
    match crate::keys::looks_like_key(key) {
        true => KeyRef::Hash(crate::keys::hash(key)),
        false => KeyRef::Id(key.to_string()),
    }
}

/// The unpaged session list (versions 1 to 3), sorted by id: everything
/// when it fits a frame, else `RESPONSE_TOO_LARGE` after reading no more
/// than a frame could hold.
fn list_sessions(call: &Call<'_>, org: &OrgName) -> Reply {
    let (mut found, more) = call.shared.ops.core().sessions_page(call.p, org, None, paging::LEGACY_MAX)?;
    if more {
        return Err(paging::too_large("sessions"));
    }
    found.sort_by_key(|s| s.session);
    Ok(match call.proto.queues_and_labels() {
        false => Resp::Sessions(list(found)),
        true => Resp::SessionViews(
            found.into_iter().map(|s| SessionView { labels: s.labels.clone(), info: s.into() }).collect(),
        ),
    })
}

/// The core's answer as a reply: `ok` builds the response, errors become wire errors.
fn reply<T>(result: CoreResult<T>, ok: impl FnOnce(T) -> Resp) -> Reply {
    result.map(ok).map_err(Into::into)
}

/// The hot path: a cached ticket and one seat CAS. Left for `slow` when
/// the pool's ceiling must be raised first.
fn acquire(call: &Call<'_>, tickets: &mut TicketCache, target: Target, nonce: Nonce) -> Result<Reply, Later> {
    match call.shared.ops.admit(call.c(), tickets, &target, (nonce, call.ctx.id)) {
        Some(admitted) => Ok(admitted.map(|lease| call.leased(&target, nonce, lease))),
        None => Err(Later::Acquire(target, nonce)),
    }
}

/// An acquire that met the pool's ceiling: raised, then admitted.
async fn acquire_slow(call: &Call<'_>, target: Target, nonce: Nonce) -> Reply {
    let lease = call.shared.ops.acquire(call.c(), &target, nonce, call.ctx.id).await?;
    Ok(call.leased(&target, nonce, lease))
}

/// A runner keeps its lease across a restart or a lost connection, on the
/// strength of its session token; with the job's labels when it said them.
async fn reattach(
    call: &Call<'_>,
    target: Target,
    (nonce, token): (Nonce, SessionToken),
    labels: Option<Labels>,
) -> Reply {
    let vouch = || {
        let checked = call.shared.tokens.check(&call.claims(&target, nonce), &token).map_err(|_| {
            WireError::new(
                ErrorCode::InvalidArgument,
                "the session token was not issued by this broker for this org, pool, machine, nonce and user",
            )
        })?;
        Ok((checked.deadline, !checked.this_run))
    };
    let lease = call.shared.ops.reattach(call.c(), &target, (nonce, call.ctx.id), labels.as_ref(), vouch).await?;
    call.book(&target, &lease, &labels.unwrap_or_default());
    // Whatever version the stream speaks, a re-attach answers with a token.
    Ok(call.with_token(&target, nonce, lease))
}

/// Heartbeat; from version 2 on, with the new deadline's token.
fn renew(call: &Call<'_>, session: SessionId) -> Reply {
    let ops = &call.shared.ops;
    // A holder is always a member of the session's org (see `Broker::renew`).
    let org = call.p.org.as_ref().filter(|_| call.proto.tokens());
    let Some(org) = org else {
        return ops.renew(call.c(), session, |r| Resp::Renewed { deadline_ms: r.deadline.0 });
    };
    let user = &call.p.email;
    ops.renew(call.c(), session, |r| {
        let claims = Claims { org, pool: r.pool, machine: r.machine, nonce: r.nonce, user };
        Resp::Extended {
            deadline_ms: r.deadline.0,
            token: call.shared.tokens.issue_after(call.fixed, &claims, r.deadline),
        }
    })
}

/// KSE activation: a node-locked binding or a floating lease.
async fn activate(call: &Call<'_>, target: Target, nonce: Nonce) -> Reply {
    let machine = target.machine.clone();
    Ok(match call.shared.ops.activate(call.c(), &target, nonce, call.ctx.id).await? {
        Activation::Bound { already } => Resp::Activated { machine, session: None, deadline_ms: 0, ttl_ms: 0, already },
        // A floating activation is a lease like a runner's: from version 2
        // on it comes with its token, so it survives a restart too.
        Activation::Leased(lease) if call.proto.tokens() => {
            call.hold(&lease);
            call.with_token(&target, nonce, lease)
        }
        Activation::Leased(lease) => {
            call.hold(&lease);
            let (session, deadline_ms, ttl_ms) = (Some(lease.session), lease.deadline.0, call.ttl_ms());
            Resp::Activated { machine, session, deadline_ms, ttl_ms, already: lease.reattached }
        }
    })
}

impl Call<'_> {
    /// The caller, for the operations.
    pub(super) fn c(&self) -> Caller<'_> {
        Caller { p: self.p, now: self.now }
    }

    /// What a lease's token is about.
    fn claims<'t>(&'t self, target: &'t Target, nonce: Nonce) -> Claims<'t> {
        Claims { org: &target.org, pool: target.pool, machine: &target.machine, nonce, user: &self.p.email }
    }

    /// Books an admitted session and answers with it: with its token from
    /// version 2 on.
    fn leased(&self, target: &Target, nonce: Nonce, lease: Lease) -> Resp {
        self.book(target, &lease, &crate::core::Labels::default());
        match self.proto.tokens() {
            false => {
                let (session, deadline_ms, reattached) = (lease.session, lease.deadline.0, lease.reattached);
                Resp::Admitted { session, deadline_ms, ttl_ms: self.ttl_ms(), reattached }
            }
            true => self.with_token(target, nonce, lease),
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
        let token = self.shared.tokens.issue_after(self.fixed, &self.claims(target, nonce), lease.deadline);
        let (session, deadline_ms, reattached) = (lease.session, lease.deadline.0, lease.reattached);
        Resp::Leased { session, deadline_ms, ttl_ms: self.ttl_ms(), reattached, token }
    }

    /// Books a new or re-attached lease on this connection and the expiry task.
    fn hold(&self, lease: &Lease) {
        self.ctx.sessions.lock().insert(lease.session);
        self.shared.ops.deadline_added(lease.deadline);
    }

    /// Forgets a session this connection no longer holds.
    fn forget(&self, session: SessionId, resp: Resp) -> Resp {
        self.ctx.sessions.lock().remove(&session);
        resp
    }

    fn ttl_ms(&self) -> u64 {
        self.shared.ops.core().lease_ttl().as_millis() as u64
    }
}
