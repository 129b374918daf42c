//! One request → the core (and the store, for durable changes) → one result.
//!
//! `fast` answers everything that needs no durable write, synchronously:
//! acquire, renew, release, kills and reads. `slow` handles the rest: it
//! takes the writer lock, plans in the core, commits to the store off the
//! async threads, and only then applies to memory.

use super::connection::ConnCtx;
use super::Shared;
use crate::core::{
    parse_end_of_date, Activation, Broker, Change, Email, ErrorCode, KeyRef, Kind, MachineId, Millis, Nonce, OrgName,
    PoolId, Principal, Product, Registration, Result as CoreResult,
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
    /// Machines seen registered, with the pool's machine epoch when seen.
    machines: Vec<(MachineId, u64)>,
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
    ) -> CoreResult<(Arc<crate::core::pool::Pool>, MachineId, u64)> {
        let version = core.version();
        if version != self.version {
            self.entries.clear();
            self.version = version;
        }
        let index = match self.entries.iter().position(|e| e.pool == pool && &e.org == org) {
            Some(i) => i,
            None => {
                let handle = core.member_pool(p, org, pool)?;
                if self.entries.len() >= CACHE_POOLS {
                    self.entries.remove(0);
                }
                self.entries.push(CachedPool { org: org.clone(), pool, handle, machines: Vec::new() });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        if let Some((m, epoch)) = entry.machines.iter().find(|(m, _)| *m == machine) {
            return Ok((entry.handle.clone(), m.clone(), *epoch));
        }
        // The epoch before the check: a removal after it makes the core check again.
        let epoch = entry.handle.machine_epoch();
        // KRE runners register their machine first; KSE floating sessions
        // may come from any machine of a licensed user.
        if entry.handle.id.product == crate::core::Product::Kre && !entry.handle.has_machine(&machine) {
            return Err(crate::core::Error::MachineNotRegistered);
        }
        if entry.machines.len() >= CACHE_MACHINES {
            entry.machines.remove(0);
        }
        entry.machines.push((machine.clone(), epoch));
        Ok((entry.handle.clone(), machine, epoch))
    }
}

fn store_failure(e: crate::store::StoreError) -> WireError {
    tracing::error!("{e}");
    WireError::new(ErrorCode::StoreFailure, format!("{e}; nothing was changed"))
}

fn draining() -> WireError {
    WireError::new(ErrorCode::Draining, "the broker is shutting down; retry against the restarted broker")
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
        Req::Acquire { org, pool, machine, nonce } => acquire(shared, ctx, p, pools, org, pool, machine, nonce, now),
        Req::Renew { session } => {
            core.renew(p, session, now).map(|d| Resp::Renewed { deadline_ms: d.0 }).map_err(Into::into)
        }
        Req::Release { session } => core
            .release(p, session)
            .map(|_| {
                ctx.sessions.lock().remove(&session);
                Resp::Released
            })
            .map_err(Into::into),
        Req::Status { org } => core.status(p, org.as_ref()).map(Resp::Status).map_err(Into::into),
        Req::ListSessions { org } => core.sessions(p, &org).map(Resp::Sessions).map_err(Into::into),
        Req::ListMachines { org } => core.machines(p, &org).map(Resp::Machines).map_err(Into::into),
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
        Req::ListGrants { org, pool } => core.grants(p, &org, pool).map(Resp::Grants).map_err(Into::into),
        Req::ListOffline { org } => core.offline_licenses(p, &org).map(Resp::Offline).map_err(Into::into),
        Req::RevokeOffline { org, license } | Req::TransferOffline { org, license, .. } => {
            Err(core.refuse_offline_change(p, &org, &license).into())
        }
        Req::OfflinePublicKey => Ok(Resp::PublicKey { pem: shared.signing.public_pem() }),
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
    let (handle, machine, epoch) = pools.resolve(core, p, &org, pool, machine)?;
    let lease = core.acquire_on(p, &handle, machine, Nonce(nonce), ctx.id, now, epoch)?;
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
pub(super) async fn slow(shared: &Shared, ctx: &ConnCtx, p: &Principal, req: Req) -> Reply {
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
            Ok(Resp::Registered { new: registration == Registration::New })
        }
        Req::CreateOrg { name, subscription_end, owner } => {
            let end = parse_end_of_date(&subscription_end)?;
            let owner = Email::parse_lenient(&owner)?;
            let (key, hash) = keys::generate().map_err(random_failure)?;
            mutate(shared, |core| core.plan_create_org(p, &name, end, &owner, hash, now)).await?;
            Ok(Resp::OrgCreated { owner_key: key })
        }
        Req::SetPool { org, pool, quota } => {
            mutate(shared, |core| core.plan_set_pool(p, &org, pool, quota, now)).await?;
            Ok(Resp::Done)
        }
        Req::AddUser { org, email, role } => {
            let email = Email::parse_lenient(&email)?;
            mutate(shared, |core| core.plan_add_user(p, &org, &email, role, now)).await?;
            Ok(Resp::Done)
        }
        Req::CreateKey { org, email } => {
            let email = Email::parse_lenient(&email)?;
            let (key, hash) = keys::generate().map_err(random_failure)?;
            mutate(shared, |core| core.plan_create_key(p, &org, &email, hash, now)).await?;
            Ok(Resp::KeyCreated { key, id: hash.key_id() })
        }
        Req::RevokeKey { org, key } => {
            let key = if keys::looks_like_key(&key) { KeyRef::Hash(keys::hash(&key)) } else { KeyRef::Id(key) };
            mutate(shared, |core| core.plan_revoke_key(p, &org, key, now)).await?;
            Ok(Resp::Done)
        }
        Req::RemoveMachine { org, pool, machine } => {
            mutate(shared, |core| core.plan_remove_machine(p, &org, pool, &machine, now)).await?;
            Ok(Resp::Done)
        }
        Req::Grant { org, pool, email } => {
            let email = Email::parse_lenient(&email)?;
            mutate(shared, |core| core.plan_grant(p, &org, pool, &email, now)).await?;
            Ok(Resp::Done)
        }
        Req::RevokeGrant { org, pool, email } => {
            let email = Email::parse_lenient(&email)?;
            mutate(shared, |core| core.plan_revoke_grant(p, &org, pool, &email, now)).await?;
            Ok(Resp::Done)
        }
        Req::Activate { org, pool, machine, nonce } => activate(shared, ctx, p, org, pool, machine, nonce).await,
        Req::CreateOffline { org, pool, machine, expires } => {
            create_offline(shared, p, org, pool, machine, expires).await
        }
        Req::Audit { org } => {
            core.require_org_admin(p, &org)?;
            let store = shared.store.clone();
            let entries = tokio::task::spawn_blocking(move || store.audit(&org))
                .await
                .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(store_failure)?;
            Ok(Resp::AuditLog(entries))
        }
        // `fast` answers everything else; reaching here is a routing bug,
        // reported rather than panicked on.
        other => Err(WireError::new(ErrorCode::Internal, format!("request {other:?} reached the slow path"))),
    }
}

/// Plan → commit → apply, as one step with respect to other durable changes.
async fn mutate(shared: &Shared, plan: impl FnOnce(&Broker) -> CoreResult<Vec<Change>>) -> Result<(), WireError> {
    let _writer = shared.writer.lock().await;
    let changes = plan(&shared.core)?;
    let ended = shared.commit(changes).await.map_err(store_failure)?;
    shared.announce(ended);
    Ok(())
}

/// KSE activation: binds a node-locked license to the machine, or opens a
/// leased session on a floating pool. Either way it is audited durably.
async fn activate(
    shared: &Shared,
    ctx: &ConnCtx,
    p: &Principal,
    org: OrgName,
    pool: PoolId,
    machine: MachineId,
    nonce: u128,
) -> Reply {
    if shared.is_draining() {
        return Err(draining());
    }
    let core = &shared.core;
    let now = shared.clock.now();
    if pool.product != Product::Kse {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            "KRE licenses are not activated: run `license-broker runner`",
        ));
    }
    let _writer = shared.writer.lock().await;
    if pool.kind == Kind::NodeLocked {
        return match core.activate_node_locked(p, &org, pool, &machine, now)? {
            Activation::AlreadyBound => {
                Ok(Resp::Activated { machine, session: None, deadline_ms: 0, ttl_ms: 0, already: true })
            }
            Activation::Bound { changes } => match shared.commit(changes).await {
                Ok(ended) => {
                    shared.announce(ended);
                    Ok(Resp::Activated { machine, session: None, deadline_ms: 0, ttl_ms: 0, already: false })
                }
                Err(e) => {
                    core.unbind(&org, pool, &p.email);
                    Err(store_failure(e))
                }
            },
        };
    }
    let lease = core.acquire(p, &org, pool, machine.clone(), Nonce(nonce), ctx.id, now)?;
    if !lease.reattached {
        if let Err(e) = shared.commit(vec![core.audit_activation(p, &org, pool, &machine, now)]).await {
            let _ = core.release(p, lease.session);
            return Err(store_failure(e));
        }
    }
    ctx.sessions.lock().insert(lease.session);
    shared.deadline_added(lease.deadline);
    Ok(Resp::Activated {
        machine,
        session: Some(lease.session),
        deadline_ms: lease.deadline.0,
        ttl_ms: core.lease_ttl().as_millis() as u64,
        already: lease.reattached,
    })
}

/// Reserves the seat, signs the file, commits it, and hands the file back.
async fn create_offline(
    shared: &Shared,
    p: &Principal,
    org: OrgName,
    pool: PoolId,
    machine: MachineId,
    expires: String,
) -> Reply {
    let core = &shared.core;
    let now = shared.clock.now();
    let last_day_end = parse_end_of_date(&expires)?;
    let id = keys::random_u128().map_err(random_failure)?;
    let _writer = shared.writer.lock().await;
    let r = core.reserve_offline(p, &org, pool, &machine, last_day_end, id, now)?;
    let fields = crate::offline::LicenseFields {
        id: r.id,
        org: r.org.clone(),
        pool: r.pool,
        machine: r.machine.clone(),
        issued: r.issued,
        expires: r.expires,
    };
    let content = shared.signing.sign(&fields);
    let changes = core.offline_changes(p, &r, content.clone(), now);
    if let Err(e) = shared.commit(changes).await {
        core.cancel_offline(&r);
        return Err(store_failure(e));
    }
    shared.deadline_added(r.expires);
    Ok(Resp::OfflineCreated { file_name: fields.file_name(), content })
}
