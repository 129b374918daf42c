//! License Management, one pool at a time (the vendor's page): the
//! subscription box, Licensed Users (KSE: grant several at once, revoke
//! several), Online Licenses (live sessions and node-locked activations,
//! each ended or deactivated), Registered Machines (deactivated after a
//! confirmation that says what it ends) and Offline Licenses (listed,
//! downloaded, created through `offline`).
//!
//! The acts are in `grants` (Licensed Users in bulk) and `machines`
//! (ending sessions, deactivating machines); `offline` makes offline
//! licenses.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::OrgPage;
use super::form::Q;
use super::{at, end_day, refused, render, Fields, Shell, Signed, When};
use crate::core::{Kind, Millis, OrgName, PoolId, PoolStatus, Principal, Product, Term};
use crate::http::Web;

#[derive(Template)]
#[template(path = "licenses.html")]
struct Page {
    shell: Shell,
    org: String,
    /// Every pool as a tab: (id, selected, title).
    pools: Vec<(String, bool, String)>,
    pool: Option<PoolBox>,
    /// Whether the caller manages the org (the core answered its lists).
    manage: bool,
    licensed: Vec<Licensed>,
    online: Vec<Online>,
    /// Registered machines: (machine, when, last use where the pool keeps it).
    machines: Vec<(String, When, Option<When>)>,
    offline: Vec<super::offline::Row>,
    /// An offline license just created (its download starts).
    created: Option<super::offline::Row>,
    /// What the lists are narrowed to, and how many rows each matched
    /// (licensed, online, machines, offline).
    find: String,
    matched: [usize; 4],
    /// Whether the caller is the operator (who sets pools and subscriptions).
    operator: bool,
    /// Every pool a form may name, `PRODUCT-KIND-TERM`.
    all_pools: Vec<String>,
}

/// A pool's subscription box.
struct PoolBox {
    id: PoolId,
    pool: String,
    title: String,
    kse: bool,
    quota: u32,
    available: u32,
    sessions: u32,
    grants: u32,
    activations: u32,
    offline: u32,
    held: u32,
    machines: u32,
    waiting: u32,
    /// When the pool is full: when a runner asking now would likely get a
    /// seat (the preflight's answer, `Operations::check`).
    next_seat: Option<String>,
    end: String,
    offline_allowed: bool,
}

struct Licensed {
    email: String,
    since: When,
    machine: String,
}

/// A live session or a node-locked activation.
struct Online {
    machine: String,
    user: String,
    kind: &'static str,
    job: String,
    since: When,
    /// The session to end (`None`: an activation, freed by deactivating its machine).
    session: Option<String>,
}

/// `GET /org/ORG/licenses?pool=POOL`.
pub(super) async fn page(State(web): State<Arc<Web>>, OrgPage { s, org }: OrgPage, Q(q): Q) -> Response {
    let mut page = match gather(&web, &s, &org, &q) {
        Ok(page) => page,
        Err(e) => return refused(e),
    };
    if let Some(b) = page.pool.as_mut().filter(|b| b.available == 0) {
        b.next_seat = next_seat(&web, &s.p, &org, b.id).await;
    }
    render(StatusCode::OK, &page)
}

/// The page as `s` may see it.
fn gather(web: &Web, s: &Signed, org: &OrgName, q: &Fields) -> Result<Page, crate::core::Error> {
    let core = web.ops.core();
    let status = core.status(&s.p, Some(org))?;
    let chosen = q.one("pool").and_then(|p| p.parse::<PoolId>().ok());
    let current = status.iter().find(|st| Some(st.pool) == chosen).or(status.first());
    let pools = status.iter().map(|st| (st.pool.to_string(), Some(st) == current, title(st.pool))).collect();
    let mut shell = s.shell("License management", Some(org), "licenses");
    shell.note = s.note(web, q);
    let mut page = Page {
        shell,
        org: org.to_string(),
        pools,
        pool: None,
        manage: false,
        licensed: Vec::new(),
        online: Vec::new(),
        machines: Vec::new(),
        offline: Vec::new(),
        created: None,
        find: q.one("find").unwrap_or("").to_string(),
        matched: [0; 4],
        operator: s.p.require_operator().is_ok(),
        all_pools: every_pool(),
    };
    if let Some(st) = current {
        page.pool = Some(subscription_box(st, subscription_end(web, &s.p, org)));
        fill_lists(&mut page, web, &s.p, org, st.pool);
        // An offline license this sign-in just made (looked up before the
        // lists are cut, so it is found however many there are).
        let created = s.vouched(web, q, "created");
        page.created = created.and_then(|id| page.offline.iter().find(|o| o.id == id).cloned());
        narrow(&mut page, q.one("find"));
    }
    Ok(page)
}

/// The lists an Owner or Admin sees; left empty (and `manage` false) for
/// anyone the core refuses them to.
fn fill_lists(page: &mut Page, web: &Web, p: &Principal, org: &OrgName, pool: PoolId) {
    let core = web.ops.core();
    let now = web.ops.clock().now();
    let (Ok(sessions), Ok(grants), Ok(machines), Ok(offline)) = (
        core.sessions(p, org),
        core.grants(p, org, Some(pool)),
        core.machine_uses(p, org),
        core.offline_licenses(p, org),
    ) else {
        return;
    };
    page.manage = true;
    page.online = online(&sessions, &grants, pool, now);
    page.licensed = grants
        .iter()
        .map(|g| Licensed {
            email: g.email.to_string(),
            since: at(g.granted, now),
            machine: g.machine.as_ref().map(ToString::to_string).unwrap_or_default(),
        })
        .collect();
    page.machines = machines
        .into_iter()
        .filter(|(p, _)| *p == pool)
        .map(|(_, m)| (m.machine.to_string(), at(m.registered, now), m.last_use.map(|u| at(u, now))))
        .collect();
    page.offline = offline.into_iter().filter(|o| o.pool == pool).map(super::offline::Row::of).collect();
}

impl Page {
    /// What to say of list `i` when it was cut short.
    fn cut(&self, i: usize) -> Option<String> {
        let shown = [self.licensed.len(), self.online.len(), self.machines.len(), self.offline.len()][i];
        (shown < self.matched[i]).then(|| format!("Showing {shown} of {}: use Find to narrow.", self.matched[i]))
    }
}

/// Each list narrowed to what `find` names, and cut at `SHOWN` rows.
fn narrow(page: &mut Page, find: Option<&str>) {
    use super::narrowed;
    let licensed;
    (licensed, page.matched[0]) = narrowed(std::mem::take(&mut page.licensed), find, |g| g.email.clone());
    page.licensed = licensed;
    let online;
    (online, page.matched[1]) =
        narrowed(std::mem::take(&mut page.online), find, |o| format!("{} {} {}", o.machine, o.user, o.job));
    page.online = online;
    let machines;
    (machines, page.matched[2]) = narrowed(std::mem::take(&mut page.machines), find, |m| m.0.clone());
    page.machines = machines;
    let offline;
    (offline, page.matched[3]) = narrowed(std::mem::take(&mut page.offline), find, |o| o.machine.clone());
    page.offline = offline;
}

/// The pool's live sessions, then its node-locked activations.
fn online(
    sessions: &[crate::core::SessionInfo],
    grants: &[crate::core::GrantInfo],
    pool: PoolId,
    now: Millis,
) -> Vec<Online> {
    let live = sessions.iter().filter(|x| x.pool == pool).map(|x| Online {
        machine: x.machine.to_string(),
        user: x.user.to_string(),
        kind: "session",
        job: x.labels.to_string(),
        since: at(x.started, now),
        session: Some(x.session.to_string()),
    });
    let activated = grants.iter().filter_map(|g| {
        Some(Online {
            machine: g.machine.as_ref()?.to_string(),
            user: g.email.to_string(),
            kind: "activation",
            job: String::new(),
            since: at(g.granted, now),
            session: None,
        })
    });
    live.chain(activated).collect()
}

/// What the subscription box shows of a pool.
fn subscription_box(st: &PoolStatus, end: String) -> PoolBox {
    let kse = st.pool.product == Product::Kse;
    PoolBox {
        id: st.pool,
        pool: st.pool.to_string(),
        title: title(st.pool),
        kse,
        quota: st.quota,
        // Seats held after a restart are counted in `in_use` already.
        available: st.quota.saturating_sub(st.in_use),
        sessions: st.in_use.saturating_sub(st.activations).saturating_sub(st.offline).saturating_sub(st.held),
        grants: st.grants,
        activations: st.activations,
        offline: st.offline,
        held: st.held,
        machines: st.machines,
        waiting: st.waiting,
        next_seat: None,
        end,
        offline_allowed: st.pool.issues_offline(),
    }
}

/// When a runner asking now would likely get a seat of a full pool, in
/// words, as `license-broker check` says it; nothing for a pool with a
/// free seat, or one a wait cannot help (a node-locked KSE pool), or a
/// caller who may not ask (the operator is no member).
async fn next_seat(web: &Web, p: &Principal, org: &OrgName, pool: PoolId) -> Option<String> {
    use crate::core::time::format_rough as rough;
    let a = web
        .ops
        .check(web.ops.caller(p), (org, pool), None, &crate::core::Labels::default())
        .await
        .ok()
        .filter(|a| a.worth_waiting)?;
    let about = match (a.wait_ms, a.mean_ms) {
        (Some(w), Some(m)) => format!("about {} (sessions lasted {} on average over the last day)", rough(w), rough(m)),
        _ => "no estimate (no session in the last day, or no history kept)".to_string(),
    };
    Some(format!("place {} in the queue: {about}", a.place))
}

/// Every pool id there can be, for the operator's form.
fn every_pool() -> Vec<String> {
    let mut all = Vec::new();
    for product in ["kre", "kse"] {
        for kind in ["floating", "node-locked"] {
            for term in ["annual", "monthly"] {
                all.push(format!("{product}-{kind}-{term}"));
            }
        }
    }
    all
}

/// "KSE node-locked (annual)".
pub(super) fn title(pool: PoolId) -> String {
    let kind = match pool.kind {
        Kind::Floating => "floating",
        _ => "node-locked",
    };
    let term = match pool.term {
        Term::Annual => "annual",
        _ => "monthly",
    };
    format!("{} {kind} ({term})", pool.product_name())
}

fn subscription_end(web: &Web, p: &Principal, org: &OrgName) -> String {
    web.ops.core().subscription_end(p, org).map(end_day).unwrap_or_default()
}

/// The license a form names, or a refusal page.
pub(super) fn pool_of(f: &Fields) -> Result<PoolId, Response> {
    let pool = f.one("pool").and_then(|p| p.parse::<PoolId>().ok());
    pool.ok_or_else(|| super::status_page(StatusCode::UNPROCESSABLE_ENTITY, "No such license.", "INVALID_ARGUMENT"))
}

pub(super) fn back(org: &OrgName, pool: PoolId, anchor: &str) -> String {
    format!("/org/{org}/licenses?pool={pool}#{anchor}")
}
