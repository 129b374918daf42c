//! Members, API keys and per-user session caps, for an org's Owners and
//! Admins: add a member with a role (only Owners make or remove Owners:
//! the core's rule), remove one (their keys, grants and sessions go with
//! them), create a key (shown once, on the answer to the form, never
//! again), revoke one, cap a member's concurrent sessions in a pool.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::{OrgForm, OrgPage};
use super::form::Q;
use super::{at, forbidden, invalid, refused, render, role_name, words, Fields, Shell, Signed, When};
use crate::core::{Email, KeyRef, OrgName, PoolId, Role};
use crate::http::Web;
use crate::proto::WireError;

#[derive(Template)]
#[template(path = "members.html")]
struct Page {
    shell: Shell,
    org: String,
    /// (email, role, since)
    members: Vec<(String, &'static str, When)>,
    /// (id, email, created, revoked)
    keys: Vec<(String, String, When, bool)>,
    /// (pool, email, max, in use)
    caps: Vec<(String, String, u32, u32)>,
    pools: Vec<String>,
    /// A key just made: (email, key), shown this once.
    new_key: Option<(String, String)>,
    /// What the lists are narrowed to, and how many members and keys matched.
    find: String,
    matched: [usize; 2],
}

impl Page {
    /// What to say of list `i` (members, keys) when it was cut short.
    fn cut(&self, i: usize) -> Option<String> {
        let shown = [self.members.len(), self.keys.len()][i];
        (shown < self.matched[i]).then(|| format!("Showing {shown} of {}: use Find to narrow.", self.matched[i]))
    }
}

/// `GET /org/ORG/members`.
pub(super) async fn page(State(web): State<Arc<Web>>, OrgPage { s, org }: OrgPage, Q(q): Q) -> Response {
    let mut shell = s.shell("Members and API keys", Some(&org), "members");
    shell.note = s.note(&web, &q);
    match gather(&web, &s, &org, shell, q.one("find")) {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => refused(e),
    }
}

/// Everything on the page; the core refuses it to anyone but the org's
/// Owners and Admins (and the operator, who sees no org's users).
fn gather(web: &Web, s: &Signed, org: &OrgName, shell: Shell, find: Option<&str>) -> Result<Page, crate::core::Error> {
    let core = web.ops.core();
    let now = web.ops.clock().now();
    let members = core
        .users(&s.p, org)?
        .into_iter()
        .map(|u| (u.email.to_string(), role_name(u.role), at(u.created, now)))
        .collect();
    let keys =
        core.keys(&s.p, org)?.into_iter().map(|k| (k.id, k.email.to_string(), at(k.created, now), k.revoked)).collect();
    let pools: Vec<PoolId> = core.status(&s.p, Some(org))?.into_iter().map(|st| st.pool).collect();
    let mut caps = Vec::new();
    for pool in &pools {
        for (email, max, in_use) in core.user_limits(&s.p, org, *pool)? {
            caps.push((pool.to_string(), email.to_string(), max, in_use));
        }
    }
    let pools = pools.iter().map(ToString::to_string).collect();
    let (members, in_members) = super::narrowed(members, find, |m| m.0.clone());
    let (keys, in_keys) = super::narrowed(keys, find, |k| format!("{} {}", k.0, k.1));
    let (find, matched) = (find.unwrap_or("").to_string(), [in_members, in_keys]);
    Ok(Page { shell, org: org.to_string(), members, keys, caps, pools, new_key: None, find, matched })
}

/// The form's `email`.
fn email(f: &Fields) -> Result<Email, WireError> {
    let raw = f.one("email").unwrap_or("");
    Email::parse_lenient(raw).map_err(|e| invalid(format!("{raw}: {e}")))
}

/// Back to the members page, saying what happened; a caller who may not
/// do this at all gets a 403 page instead.
fn back(s: &Signed, web: &Web, org: &OrgName, said: Result<String, WireError>) -> Response {
    let note = match said {
        Ok(done) => done,
        Err(e) if forbidden(&e) => return refused(e),
        Err(e) => format!("Refused: {}", words(&e)),
    };
    s.back_with(web, &format!("/org/{org}/members"), &note)
}

/// `POST /org/ORG/members/add` (`email`, `role`).
pub(super) async fn add(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let said = async {
        let email = email(&f)?;
        let role: Role = f.one("role").unwrap_or("user").parse().map_err(invalid)?;
        web.ops.add_user(s.caller(&web.ops), &org, &email, role).await?;
        Ok(format!("{email} is a member, as {}.", role_name(role)))
    };
    back(&s, &web, &org, said.await)
}

/// `POST /org/ORG/members/remove` (`email`).
pub(super) async fn remove(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let said = async {
        let email = email(&f)?;
        web.ops.remove_user(s.caller(&web.ops), &org, &email).await?;
        Ok(format!("{email} was removed: their keys, licenses and sessions ended."))
    };
    back(&s, &web, &org, said.await)
}

/// `POST /org/ORG/keys/revoke` (`id`).
pub(super) async fn revoke_key(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let id = f.one("id").unwrap_or("").to_string();
    let said = web.ops.revoke_key(s.caller(&web.ops), &org, KeyRef::Id(id.clone())).await;
    back(&s, &web, &org, said.map(|()| format!("Key {id} was revoked.")))
}

/// `POST /org/ORG/limits` (`pool`, `email`, `max`; no `max`: lift the cap).
pub(super) async fn set_limit(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let said = async {
        let email = email(&f)?;
        let pool: PoolId = f.one("pool").unwrap_or("").parse().map_err(invalid)?;
        let max =
            f.one("max").map(str::parse::<u32>).transpose().map_err(|_| invalid("the cap must be a whole number"))?;
        web.ops.set_user_limit(s.caller(&web.ops), (&org, pool), &email, max).await?;
        Ok(match max {
            Some(n) => format!("{email} may hold at most {n} sessions at once in {pool}."),
            None => format!("{email} has no session cap in {pool}."),
        })
    };
    back(&s, &web, &org, said.await)
}

/// `POST /org/ORG/keys/create` (`email`): the answer is the page with the
/// key on it, this once (never cached, never in an address).
pub(super) async fn create_key(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let made = match email(&f) {
        Ok(email) => web.ops.create_key(s.caller(&web.ops), &org, &email).await.map(|k| (email, k)),
        Err(e) => Err(e),
    };
    let (email, made) = match made {
        Ok(x) => x,
        Err(e) => return back(&s, &web, &org, Err(e)),
    };
    let mut shell = s.shell("Members and API keys", Some(&org), "members");
    shell.note = Some(format!("Key {} made for {email}.", made.id));
    match gather(&web, &s, &org, shell, None) {
        Ok(mut page) => {
            page.new_key = Some((email.to_string(), made.key));
            render(StatusCode::OK, &page)
        }
        Err(e) => refused(e),
    }
}
