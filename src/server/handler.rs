//! One request → the core (and the store, for durable changes) → one result.
//!
//! `fast` answers everything that needs no durable write, synchronously:
//! acquire, renew, release, kills and reads. `slow` handles the rest: it
//! takes the writer lock, plans in the core, commits to the store off the
//! async threads, and only then applies to memory.

use super::connection::ConnCtx;
use super::Shared;
use crate::core::{
    parse_end_of_date, Broker, Change, Email, ErrorCode, KeyRef, MachineId, Millis, Nonce, OrgName,
    PoolId, Principal, Registration, Result as CoreResult,
};
use crate::keys;
use crate::proto::{Req, Resp, WireError};
use crate::sync::Arc;

type Reply = Result<Resp, WireError>;

/// Pools (and machines seen registered in them) a stream has resolved,
/// valid while the directory version is unchanged. Saves the directory
/// lock and the machine lookup on every acquire.
#[derive(Default)]
pub(super) struct PoolCache {
    version: u64,
    entries: Vec<CachedPool>,
}

struct CachedPool {
    org: OrgName,
    pool: PoolId,
    handle: Arc<crate::core::pool::Pool>,
    machines: Vec<MachineId>,
}

/// Most pools, and machines per pool, a stream remembers.
const CACHE_POOLS: usize = 8;
const CACHE_MACHINES: usize = 64;

impl PoolCache {
    /// The pool and the cached copy of `machine` if it is registered there.
    fn resolve(
        &mut self,
        core: &Broker,
        p: &Principal,
        org: &OrgName,
        pool: PoolId,
        machine: MachineId,
    ) -> CoreResult<(Arc<crate::core::pool::Pool>, MachineId)> {
        let version = core.version();
        if version != self.version {
            self.entries.clear();
            self.version = version;
        }
        let index = match self
            .entries
            .iter()
            .position(|e| e.pool == pool && &e.org == org)
        {
            Some(i) => i,
            None => {
                let handle = core.member_pool(p, org, pool)?;
                if self.entries.len() >= CACHE_POOLS {
                    self.entries.remove(0);
                }
                self.entries.push(CachedPool {
                    org: org.clone(),
                    pool,
                    handle,
                    machines: Vec::new(),
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        if let Some(m) = entry.machines.iter().find(|m| **m == machine) {
            return Ok((entry.handle.clone(), m.clone()));
        }
        if !entry.handle.has_machine(&machine) {
            return Err(crate::core::Error::MachineNotRegistered);
        }
        if entry.machines.len() >= CACHE_MACHINES {
            entry.machines.remove(0);
        }
        entry.machines.push(machine.clone());
        Ok((entry.handle.clone(), machine))
    }
}

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

/// Answers a request that needs no durable write; hands others back.
pub(super) fn fast(
    shared: &Shared,
    ctx: &ConnCtx,
    p: &Principal,
    pools: &mut PoolCache,
    req: Req,
    now: Millis,
) -> Result<Reply, Req> {
    let core = &shared.core;
    let reply = match req {
        Req::Acquire {
            org,
            pool,
            machine,
            nonce,
        } => acquire(shared, ctx, p, pools, org, pool, machine, nonce, now),
        Req::Renew { session } => core
            .renew(p, session, now)
            .map(|d| Resp::Renewed { deadline_ms: d.0 })
            .map_err(Into::into),
        Req::Release { session } => core
            .release(p, session)
            .map(|_| {
                ctx.sessions.lock().remove(&session);
                Resp::Released
            })
            .map_err(Into::into),
        Req::Status { org } => core
            .status(p, org.as_ref())
            .map(Resp::Status)
            .map_err(Into::into),
        Req::ListSessions { org } => core
            .sessions(p, &org)
            .map(Resp::Sessions)
            .map_err(Into::into),
        Req::ListMachines { org } => core
            .machines(p, &org)
            .map(Resp::Machines)
            .map_err(Into::into),
        Req::ListUsers { org } => core.users(p, &org).map(Resp::Users).map_err(Into::into),
        Req::ListKeys { org } => core.keys(p, &org).map(Resp::Keys).map_err(Into::into),
        Req::KillSession { org, session } => core
            .kill(p, &org, session)
            .map(|ended| {
                ctx.sessions.lock().remove(&session);
                shared.announce(vec![ended]);
                Resp::Killed
            })
            .map_err(Into::into),
        slow => return Err(slow),
    };
    Ok(reply)
}

#[allow(clippy::too_many_arguments)]
fn acquire(
    shared: &Shared,
    ctx: &ConnCtx,
    p: &Principal,
    pools: &mut PoolCache,
    org: OrgName,
    pool: PoolId,
    machine: MachineId,
    nonce: u128,
    now: Millis,
) -> Reply {
    if shared.is_draining() {
        return Err(draining());
    }
    let core = &shared.core;
    let (handle, machine) = pools.resolve(core, p, &org, pool, machine)?;
    let lease = core.acquire_on(p, &handle, machine, Nonce(nonce), ctx.id, now)?;
    ctx.sessions.lock().insert(lease.session);
    shared.deadline_added(lease.deadline);
    Ok(Resp::Admitted {
        session: lease.session,
        deadline_ms: lease.deadline.0,
        ttl_ms: core.lease_ttl().as_millis() as u64,
        reattached: lease.reattached,
    })
}

/// Requests that write durable records.
pub(super) async fn slow(shared: &Shared, p: &Principal, req: Req) -> Reply {
    let core = &shared.core;
    let now = shared.clock.now();
    match req {
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
        // `fast` answers everything else; reaching here is a routing bug,
        // reported rather than panicked on.
        other => Err(WireError::new(
            ErrorCode::Internal,
            format!("request {other:?} reached the slow path"),
        )),
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
