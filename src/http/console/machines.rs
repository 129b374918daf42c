//! Online licenses and registered machines: end a live session (audited,
//! its runner told), and deactivate a machine after a page that says what
//! it ends (its live sessions, a node-locked activation), through the same
//! operations as `session kill` and `machine remove`.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::{OrgForm, OrgPage};
use super::form::Q;
use super::licenses::{back, pool_of};
use super::{refused, render, when, Shell};
use crate::core::{MachineId, OrgName, PoolId, Principal, SessionId};
use crate::http::Web;
use crate::operations::Operations;

/// `POST /org/ORG/sessions/end` (`pool`, `session`): an Owner or Admin
/// ends a live session (audited; its holder is told).
pub(super) async fn end_session(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let pool = match pool_of(&f) {
        Ok(pool) => pool,
        Err(r) => return r,
    };
    let Some(session) = f.one("session").and_then(|x| x.parse::<SessionId>().ok()) else {
        return super::status_page(StatusCode::UNPROCESSABLE_ENTITY, "No such session.", "INVALID_ARGUMENT");
    };
    match web.ops.kill(s.caller(&web.ops), &org, session).await {
        Ok(()) => s.back_with(
            &web,
            &back(&org, pool, "online"),
            &format!("Session {session} was ended; its runner has been told."),
        ),
        Err(e) => refused(e),
    }
}

#[derive(Template)]
#[template(path = "deactivate.html")]
struct Confirm {
    shell: Shell,
    org: String,
    pool: String,
    machine: String,
    /// What deactivating ends, in words.
    ends: Vec<String>,
}

/// `GET /org/ORG/machines/deactivate?pool=&machine=`: says what it ends first.
pub(super) async fn confirm_deactivate(State(web): State<Arc<Web>>, OrgPage { s, org }: OrgPage, Q(q): Q) -> Response {
    let pool = q.one("pool").and_then(|p| p.parse::<PoolId>().ok());
    let machine = q.one("machine").and_then(|m| MachineId::new(m).ok());
    let (Some(pool), Some(machine)) = (pool, machine) else {
        return super::status_page(StatusCode::UNPROCESSABLE_ENTITY, "No such machine.", "INVALID_ARGUMENT");
    };
    match what_it_ends(&web.ops, &s.p, &org, pool, &machine) {
        Ok(ends) => {
            let shell = s.shell(format!("Deactivate {machine}"), Some(&org), "licenses");
            render(
                StatusCode::OK,
                &Confirm { shell, org: org.to_string(), pool: pool.to_string(), machine: machine.to_string(), ends },
            )
        }
        Err(e) => refused(e),
    }
}

/// The live sessions and the activation that deactivating `machine` ends.
fn what_it_ends(
    ops: &Operations,
    p: &Principal,
    org: &OrgName,
    pool: PoolId,
    machine: &MachineId,
) -> Result<Vec<String>, crate::core::Error> {
    let core = ops.core();
    let now = ops.clock().now();
    // What `machine remove` removes in the pool: its registration, and the
    // node-locked activations bound to it (which never register it).
    let registered = core.machines(p, org)?.iter().any(|m| m.pool == pool && &m.machine == machine);
    let bound: Vec<_> =
        core.grants(p, org, Some(pool))?.into_iter().filter(|g| g.machine.as_ref() == Some(machine)).collect();
    if !registered && bound.is_empty() {
        return Err(crate::core::Error::not_found("machine", machine.as_str()));
    }
    let sessions = core.sessions(p, org)?.into_iter().filter(|x| x.pool == pool && &x.machine == machine);
    let mut ends: Vec<String> = sessions
        .map(|x| format!("the live session {} of {} (started {})", x.session, x.user, when(x.started, now)))
        .collect();
    for g in bound {
        ends.push(format!("the node-locked activation of {} (their license stays granted)", g.email));
    }
    Ok(ends)
}

/// `POST /org/ORG/machines/deactivate` (`pool`, `machine`).
pub(super) async fn deactivate(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let pool = match pool_of(&f) {
        Ok(pool) => pool,
        Err(r) => return r,
    };
    let Some(machine) = f.one("machine").and_then(|m| MachineId::new(m).ok()) else {
        return super::status_page(StatusCode::UNPROCESSABLE_ENTITY, "No such machine.", "INVALID_ARGUMENT");
    };
    match web.ops.remove_machine(s.caller(&web.ops), &org, Some(pool), &machine).await {
        Ok(()) => s.back_with(
            &web,
            &back(&org, pool, "machines"),
            &format!("Machine {machine} was deactivated; its slot is free."),
        ),
        Err(e) => refused(e),
    }
}
