//! The operator's console: every org with its subscription end, pools and
//! members; create an org with its first Owner (the Owner's key shown
//! once); set a pool's quota (creating the pool) and an org's
//! subscription end. The core checks that the caller is the operator.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::extract::{OrgForm, SignedForm};
use super::form::Q;
use super::{at, end_day, forbidden, invalid, refused, render, words, Fields, Shell, Signed, When};
use crate::core::{parse_end_of_date, Email, OrgName, PoolId};
use crate::http::Web;
use crate::proto::WireError;

#[derive(Template)]
#[template(path = "orgs.html")]
struct Page {
    shell: Shell,
    /// (name, subscription ends, pools, members, created)
    orgs: Vec<(String, String, u32, u32, When)>,
    /// An org just created: (org, owner, the owner's key), shown this once.
    created: Option<(String, String, String)>,
}

/// `GET /orgs`: the operator's list of orgs.
pub(super) async fn page(State(web): State<Arc<Web>>, headers: HeaderMap, Q(q): Q) -> Response {
    let s = match Signed::of(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut shell = s.shell("Orgs", None, "orgs");
    shell.note = s.note(&web, &q);
    match gather(&web, &s, shell) {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => refused(e),
    }
}

fn gather(web: &Web, s: &Signed, shell: Shell) -> Result<Page, crate::core::Error> {
    let now = web.ops.clock().now();
    let orgs = web
        .ops
        .core()
        .orgs(&s.p)?
        .into_iter()
        .map(|o| (o.name.to_string(), end_day(o.subscription_end), o.pools, o.users, at(o.created, now)))
        .collect();
    Ok(Page { shell, orgs, created: None })
}

/// `POST /orgs/create` (`name`, `owner`, `end`): the answer shows the
/// first Owner's key, this once.
pub(super) async fn create(State(web): State<Arc<Web>>, SignedForm { s, f }: SignedForm) -> Response {
    let made = async {
        let name = OrgName::new(f.one("name").unwrap_or("")).map_err(invalid)?;
        let owner = Email::parse_lenient(f.one("owner").unwrap_or("")).map_err(invalid)?;
        let end = parse_end_of_date(f.one("end").unwrap_or("")).map_err(invalid)?;
        let key = web.ops.create_org(s.caller(&web.ops), &name, end, &owner).await?;
        Ok::<_, WireError>((name, owner, key))
    };
    match made.await {
        Ok((name, owner, key)) => {
            let mut shell = s.shell("Orgs", None, "orgs");
            shell.note = Some(format!("Org {name} created with {owner} as its Owner."));
            match gather(&web, &s, shell) {
                Ok(mut page) => {
                    page.created = Some((name.to_string(), owner.to_string(), key.key));
                    render(StatusCode::OK, &page)
                }
                Err(e) => refused(e),
            }
        }
        Err(e) if forbidden(&e) => refused(e),
        Err(e) => s.back_with(&web, "/orgs", &format!("Refused: {}", words(&e))),
    }
}

/// A pools-or-subscription form: checked, acted, and back to the org's
/// License Management page with what happened.
async fn act(web: &Web, OrgForm { s, org, f }: OrgForm, pool: bool) -> Response {
    let said = match pool {
        true => set_pool(web, &s, &org, &f).await,
        false => set_subscription(web, &s, &org, &f).await,
    };
    match said {
        Ok(note) => s.back_with(web, &format!("/org/{org}/licenses#operator"), &note),
        Err(e) if forbidden(&e) => refused(e),
        Err(e) => s.back_with(web, &format!("/org/{org}/licenses#operator"), &format!("Refused: {}", words(&e))),
    }
}

async fn set_pool(web: &Web, s: &Signed, org: &OrgName, f: &Fields) -> Result<String, WireError> {
    let pool: PoolId = f.one("pool").unwrap_or("").parse().map_err(invalid)?;
    let quota: u32 = f.one("quota").unwrap_or("").parse().map_err(|_| invalid("the quota must be a whole number"))?;
    web.ops.set_pool(s.caller(&web.ops), org, pool, quota).await?;
    Ok(format!("{pool} of {org}: quota {quota}."))
}

async fn set_subscription(web: &Web, s: &Signed, org: &OrgName, f: &Fields) -> Result<String, WireError> {
    let day = f.one("end").unwrap_or("");
    let end = parse_end_of_date(day).map_err(invalid)?;
    web.ops.set_subscription(s.caller(&web.ops), org, end).await?;
    Ok(format!("The subscription of {org} now ends after {day}."))
}

/// `POST /org/ORG/pools` (`pool`, `quota`).
pub(super) async fn pool(State(web): State<Arc<Web>>, form: OrgForm) -> Response {
    act(&web, form, true).await
}

/// `POST /org/ORG/subscription` (`end`).
pub(super) async fn subscription(State(web): State<Arc<Web>>, form: OrgForm) -> Response {
    act(&web, form, false).await
}
