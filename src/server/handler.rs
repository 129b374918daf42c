//! One request → the core (and the store, for durable changes) → one result.
//!
//! Hot requests (acquire, renew, release) are plain synchronous core calls.
//! Durable changes take the writer lock, plan in the core, commit to the
//! store off the async threads, and only then apply to memory.

use super::connection::ConnCtx;
use super::Shared;
use crate::core::{
    parse_end_of_date, Broker, Change, Email, ErrorCode, KeyRef, Nonce, Principal, Registration,
    Result as CoreResult,
};
use crate::keys;
use crate::proto::{Req, Resp, WireError};

type Reply = Result<Resp, WireError>;

fn store_failure(e: crate::store::StoreError) -> WireError {
    tracing::error!("{e}");
    WireError::new(ErrorCode::StoreFailure, format!("{e}; nothing was changed"))
}

fn draining() -> WireError {
    WireError::new(
        ErrorCode::Draining,
        "the broker is shutting down; retry against the restarted broker",
    )
}

fn random_failure(e: keys::RandomUnavailable) -> WireError {
    WireError::new(ErrorCode::Internal, e.to_string())
}

pub(super) async fn handle(shared: &Shared, ctx: &ConnCtx, p: &Principal, req: Req) -> Reply {
    let core = &shared.core;
    let now = shared.clock.now();
    match req {
        Req::Acquire {
            org,
            pool,
            machine,
            nonce,
        } => {
            if shared.is_draining() {
                return Err(draining());
            }
            let lease = core.acquire(p, &org, pool, machine, Nonce(nonce), ctx.id, now)?;
            ctx.sessions.lock().insert(lease.session);
            shared.deadline_added(lease.deadline);
            Ok(Resp::Admitted {
                session: lease.session,
                deadline_ms: lease.deadline.0,
                ttl_ms: core.lease_ttl().as_millis() as u64,
                reattached: lease.reattached,
            })
        }
        Req::Renew { session } => {
            let deadline = core.renew(p, session, now)?;
            Ok(Resp::Renewed {
                deadline_ms: deadline.0,
            })
        }
        Req::Release { session } => {
            core.release(p, session)?;
            ctx.sessions.lock().remove(&session);
            Ok(Resp::Released)
        }
        Req::RegisterMachine { org, pool, machine } => {
            if shared.is_draining() {
                return Err(draining());
            }
            if core.is_registered(p, &org, pool, &machine)? {
                return Ok(Resp::Registered { new: false });
            }
            let _writer = shared.writer.lock().await;
            let (registration, change) = core.register_machine(p, &org, pool, &machine, now)?;
            if let Some(change) = change {
                if let Err(e) = shared.commit(vec![change]).await {
                    core.forget_machine(&org, pool, &machine);
                    return Err(store_failure(e));
                }
            }
            Ok(Resp::Registered {
                new: registration == Registration::New,
            })
        }
        Req::Status { org } => Ok(Resp::Status(core.status(p, org.as_ref())?)),
        Req::ListSessions { org } => Ok(Resp::Sessions(core.sessions(p, &org)?)),
        Req::ListMachines { org } => Ok(Resp::Machines(core.machines(p, &org)?)),
        Req::ListUsers { org } => Ok(Resp::Users(core.users(p, &org)?)),
        Req::ListKeys { org } => Ok(Resp::Keys(core.keys(p, &org)?)),
        Req::KillSession { org, session } => {
            let ended = core.kill(p, &org, session)?;
            ctx.sessions.lock().remove(&session);
            shared.announce(vec![ended]);
            Ok(Resp::Killed)
        }
        Req::CreateOrg {
            name,
            subscription_end,
            owner,
        } => {
            let end = parse_end_of_date(&subscription_end)?;
            let owner = Email::parse_lenient(&owner)?;
            let (key, hash) = keys::generate().map_err(random_failure)?;
            mutate(shared, |core| {
                core.plan_create_org(p, &name, end, &owner, hash, now)
            })
            .await?;
            Ok(Resp::OrgCreated { owner_key: key })
        }
        Req::SetPool { org, pool, quota } => {
            mutate(shared, |core| core.plan_set_pool(p, &org, pool, quota)).await?;
            Ok(Resp::Done)
        }
        Req::AddUser { org, email, role } => {
            let email = Email::parse_lenient(&email)?;
            mutate(shared, |core| {
                core.plan_add_user(p, &org, &email, role, now)
            })
            .await?;
            Ok(Resp::Done)
        }
        Req::CreateKey { org, email } => {
            let email = Email::parse_lenient(&email)?;
            let (key, hash) = keys::generate().map_err(random_failure)?;
            mutate(shared, |core| {
                core.plan_create_key(p, &org, &email, hash, now)
            })
            .await?;
            Ok(Resp::KeyCreated {
                key,
                id: hash.key_id(),
            })
        }
        Req::RevokeKey { org, key } => {
            let key = if keys::looks_like_key(&key) {
                KeyRef::Hash(keys::hash(&key))
            } else {
                KeyRef::Id(key)
            };
            mutate(shared, |core| core.plan_revoke_key(p, &org, key)).await?;
            Ok(Resp::Done)
        }
        Req::RemoveMachine { org, pool, machine } => {
            mutate(shared, |core| {
                core.plan_remove_machine(p, &org, pool, &machine)
            })
            .await?;
            Ok(Resp::Done)
        }
    }
}

/// Plan → commit → apply, as one step with respect to other durable changes.
async fn mutate(
    shared: &Shared,
    plan: impl FnOnce(&Broker) -> CoreResult<Vec<Change>>,
) -> Result<(), WireError> {
    let _writer = shared.writer.lock().await;
    let changes = plan(&shared.core)?;
    let ended = shared.commit(changes).await.map_err(store_failure)?;
    shared.announce(ended);
    Ok(())
}
