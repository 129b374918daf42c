//! The license utilization dashboard at `/`: server-rendered HTML with
//! inline SVG, no script, no CDN, so it works offline and in any browser.
//!
//! - `GET /`: the sign-in form; signed in, the operator's list of orgs, or
//!   a member's org page.
//! - `POST /signin` (form `key`), `POST /signout`.
//! - `GET /org/ORG?range=day|week|month|year`: the org's page (`view`).
//! - `POST /org/ORG/kill` (form `session`, `csrf`): an Owner or Admin
//!   ends a live session, audited, as `session kill` does.
//!
//! Who sees what follows the broker's roles: the operator and every
//! member see the org's numbers and charts; the lists of sessions,
//! machines, licensed users, offline licenses and the audit trail are for
//! the org's Owners and Admins, who alone get the Kill button.

mod cluster;
mod frame;
mod shape;
mod svg;
pub mod view;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::auth;
use crate::core::usage::MINUTE_MS;
use crate::core::{Millis, OrgName, Principal, Role, SessionId};
use crate::history::report;
use crate::http::Web;
use crate::operations::gathered::PeerUsage;
use view::{LiveView, OrgView, PoolView, RANGES};

/// Most audit entries the page shows.
const AUDIT_SHOWN: usize = 25;

/// The caller signed in with the cookie, with the cookie's value
/// (`auth::signed_in`).
pub(crate) fn signed_in(web: &Web, headers: &HeaderMap) -> Option<(Principal, String)> {
    auth::signed_in(web, headers)
}

fn who(p: &Principal) -> String {
    let role = match p.role {
        Role::Operator => "operator",
        Role::Owner => "Owner",
        Role::Admin => "Admin",
        _ => "User",
    };
    match &p.org {
        Some(org) => format!("{} ({role} of {org})", p.email),
        None => format!("{} ({role})", p.email),
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

/// `GET /`.
pub(super) async fn home(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some((p, _)) = signed_in(&web, &headers) else {
        return html(StatusCode::OK, view::sign_in(None));
    };
    match &p.org {
        Some(org) => Redirect::to(&format!("/org/{org}")).into_response(),
        // The operator's list of orgs (the console's page).
        None => Redirect::to("/orgs").into_response(),
    }
}

/// A refusal of the core as a page.
fn refused(e: crate::core::Error) -> Response {
    let w = crate::proto::WireError::from(e);
    let status = match w.code {
        crate::proto::ErrorCode::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::FORBIDDEN,
    };
    html(status, view::page("Refused", None, &format!("<p class=\"err\">{}</p>", view::esc(&w.message))))
}

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
pub(super) struct SignIn {
    key: String,
}

/// `POST /signin`.
pub(super) async fn sign_in(State(web): State<Arc<Web>>, Form(f): Form<SignIn>) -> Response {
    let hash = crate::keys::hash(f.key.trim());
    match auth::sign_in(&web, &hash).await {
        Ok(_) => {}
        // Another node serves the key's org: its console signs the person in.
        Err(auth::NotHere::Elsewhere(_, Some(console))) => return Redirect::to(&console).into_response(),
        Err(auth::NotHere::Elsewhere(why, None) | auth::NotHere::Said(why)) => {
            return html(StatusCode::UNAUTHORIZED, view::sign_in(Some(&why)))
        }
        Err(auth::NotHere::Unknown) => {
            let mut r = html(StatusCode::UNAUTHORIZED, view::sign_in(Some("That key is unknown or revoked.")));
            r.extensions_mut().insert(auth::Failed);
            return r;
        }
    }
    let now = web.ops.clock().now().0;
    let expires = now + auth::SIGN_IN_FOR.as_millis() as u64;
    let Ok(id) = web.sign_ins.start(&hash, expires, now) else {
        return html(StatusCode::INTERNAL_SERVER_ERROR, view::sign_in(Some("The system's random source failed.")));
    };
    let cookie = web.set_cookie(&web.signer.cookie(&hash, expires, id), auth::SIGN_IN_FOR);
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /signout`: ends the sign-in on the server (its cookie, kept or
/// copied, signs no one in any more) and clears the cookie.
pub(super) async fn sign_out(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let opened = auth::cookie(&headers, web.cookie_name()).and_then(|c| web.signer.open(c, web.ops.clock().now().0));
    if let Some((_, id)) = opened {
        web.sign_ins.end(id);
    }
    let mut r = Redirect::to("/").into_response();
    let gone = web.set_cookie("", std::time::Duration::ZERO);
    if let Ok(v) = HeaderValue::from_str(&gone) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /org/ORG`.
pub(super) async fn org_page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some((p, cookie)) = signed_in(&web, &headers) else {
        return Redirect::to("/").into_response();
    };
    let Ok(org) = OrgName::new(org) else {
        return html(StatusCode::NOT_FOUND, view::page("Not found", Some(&who(&p)), "<p>No such org.</p>"));
    };
    let range = q.get("range").cloned().unwrap_or_else(|| "week".into());
    let flash = killed(&web, &cookie, &org, q.get("killed")).map(|s| format!("Session {s} was ended."));
    let s = web.clone();
    let now = web.ops.clock().now();
    let elsewhere = cluster::fetch(&web, &p, &org, &range, now).await;
    let turn = web.ops.report_turn().await;
    let built = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let mut v = gather(&s, &p, &org, (&range, now), &elsewhere)?;
        v.flash = flash;
        v.missing = elsewhere.missing.warning();
        if v.kill_token.is_some() {
            v.kill_token = Some(s.signer.csrf_token(&cookie));
        }
        Ok::<_, crate::core::Error>(view::org(&v))
    })
    .await;
    match built {
        Ok(Ok(page)) => html(StatusCode::OK, page),
        Ok(Err(e)) => refused(e),
        Err(e) => html(StatusCode::INTERNAL_SERVER_ERROR, view::page("Error", None, &view::esc(&e.to_string()))),
    }
}

/// The session a `killed=SESSION.TAG` flash names, if this door's kill
/// redirected this browser there (`Signer::flash_tag`): a link anyone
/// could make shows nothing.
fn killed(web: &Web, cookie: &str, org: &OrgName, flash: Option<&String>) -> Option<SessionId> {
    let (session, tag) = flash?.split_once('.')?;
    let session = session.parse::<SessionId>().ok()?;
    let expected = web.signer.flash_tag(cookie, &format!("killed.{org}.{session}"));
    auth::same_secret(tag, &expected).then_some(session)
}

/// The kill form's fields.
#[derive(serde::Deserialize)]
pub(super) struct Kill {
    session: String,
    csrf: String,
}

/// `POST /org/ORG/kill`.
pub(super) async fn kill(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(org): Path<String>,
    Form(f): Form<Kill>,
) -> Response {
    let Some((p, cookie)) = signed_in(&web, &headers) else {
        return html(StatusCode::UNAUTHORIZED, view::sign_in(Some("Sign in first.")));
    };
    // The token is derived from this browser's cookie: a page of another
    // origin can make the browser send the cookie, never read the token.
    if !auth::same_secret(&f.csrf, &web.signer.csrf_token(&cookie)) {
        return html(
            StatusCode::FORBIDDEN,
            view::page("Refused", None, "<p class=\"err\">The form is stale or forged (CSRF token mismatch).</p>"),
        );
    }
    let (Ok(org), Ok(session)) = (OrgName::new(org), f.session.parse::<SessionId>()) else {
        return html(StatusCode::BAD_REQUEST, view::page("Refused", None, "<p class=\"err\">No such session.</p>"));
    };
    match web.ops.kill(web.ops.caller(&p), &org, session).await {
        Ok(()) => {
            let tag = web.signer.flash_tag(&cookie, &format!("killed.{org}.{session}"));
            Redirect::to(&format!("/org/{org}?killed={session}.{tag}")).into_response()
        }
        Err(e) => html(
            StatusCode::FORBIDDEN,
            view::page("Refused", None, &format!("<p class=\"err\">{}</p>", view::esc(&e.message))),
        ),
    }
}

/// Everything the org page shows, gathered as `p` may see it.
fn gather(
    web: &Web,
    p: &Principal,
    org: &OrgName,
    (range, now): (&str, Millis),
    elsewhere: &cluster::Elsewhere,
) -> Result<OrgView, crate::core::Error> {
    let core = web.ops.core();
    let status = core.status(p, Some(org))?;
    let (range, span, step) = range_of(range);
    let (from, to) = (Millis(now.0.saturating_sub(span)), now);
    let subscription_ends = core.subscription_end(p, org).map(crate::core::format_end_date).unwrap_or_default();
    let ask = Ask { web, p, org, span, step, now, elsewhere };
    // The licensed users' last use scans the ended sessions while the
    // pools' charts read the rollups and replay: the page's two long
    // reads side by side (the report's turn bounds how many pages at once).
    let (pools, licensed) = std::thread::scope(|scope| {
        let licensed = scope.spawn(|| ask.licensed());
        let pools: Vec<PoolView> = status.iter().map(|s| ask.pool(s)).collect();
        let licensed = licensed.join().unwrap_or_else(|_| {
            tracing::error!(%org, "reading the licensed users' last use failed (a panic): the page shows none");
            None
        });
        (pools, licensed)
    });
    let admin = p.require_admin(org).is_ok();
    let offline = core.offline_licenses(p, org).ok().map(|v| {
        v.into_iter().map(|o| (o.pool.to_string(), o.id, o.machine.to_string(), o.last_day, o.active)).collect()
    });
    let machines = core
        .machines(p, org)
        .ok()
        .map(|v| v.into_iter().map(|m| (m.pool.to_string(), m.machine.to_string(), m.registered)).collect());
    let audit =
        web.ops.audit_latest(web.ops.caller(p), org, AUDIT_SHOWN).ok().map(|v| {
            v.into_iter().map(|e| (e.at, e.actor.to_string(), format!("{} {}", e.action, e.detail))).collect()
        });
    let mut v = OrgView {
        org: org.to_string(),
        subscription_ends,
        who: who(p),
        range: (range, from, to),
        pools,
        live: ask.live(),
        kill_token: admin.then(String::new),
        licensed,
        offline,
        machines,
        audit,
        flash: None,
        missing: None,
        totals: [0; 4],
    };
    v.cut();
    Ok(v)
}

/// One org page's question: who asks about which org, over which span.
struct Ask<'a> {
    web: &'a Web,
    p: &'a Principal,
    org: &'a OrgName,
    /// The range's length and its chart's step (ms).
    span: u64,
    step: u64,
    now: Millis,
    /// The other nodes' rollups for the page's charts (a cluster node's).
    elsewhere: &'a cluster::Elsewhere,
}

/// A range's name, its length and its chart's step (ms); the week's for a
/// name the page does not offer.
fn range_of(name: &str) -> (&'static str, u64, u64) {
    RANGES.iter().find(|r| r.0 == name).copied().unwrap_or(RANGES[1])
}

/// The org page's three rollup questions as (step, range) at `now`: the
/// chart's, the heatmap's (hours over at least a week) and the time at
/// each level's (minutes while that is few enough points, else hours).
fn questions(span: u64, step: u64, now: Millis) -> [(u64, (Millis, Millis)); 3] {
    let (from, to) = (Millis(now.0.saturating_sub(span)), now);
    let heat_from = Millis(now.0.saturating_sub(span.max(7 * 86_400_000)));
    let level_step = if span / MINUTE_MS <= report::MAX_POINTS { MINUTE_MS } else { 3_600_000 };
    [(step, (from, to)), (3_600_000, (heat_from, to)), (level_step, (from, to))]
}

/// The range the page's what-if replays: the page's, at most 30 days.
fn replay_range(span: u64, now: Millis) -> (Millis, Millis) {
    (Millis(now.0.saturating_sub(span.min(30 * 86_400_000))), now)
}

/// The range the licensed users' last use is read over: the minutes' retention.
fn last_use_range(web: &Web, now: Millis) -> Option<(Millis, Millis)> {
    let kept = web.ops.history()?.retention().minutes.as_millis() as u64;
    Some((Millis(now.0.saturating_sub(kept)), now))
}

impl Ask<'_> {
    /// A pool's numbers and, with the history on, its charts.
    fn pool(&self, s: &crate::core::PoolStatus) -> PoolView {
        let kre = s.pool.product == crate::core::Product::Kre;
        let mut pv = PoolView {
            pool: s.pool.to_string(),
            kre,
            quota: s.quota,
            in_use: s.in_use,
            machines: s.machines,
            waiting: s.waiting,
            reserved: (s.reserved, s.reserved_free),
            grants: s.grants,
            activations: s.activations,
            offline: s.offline,
            series: None,
            heat: [[None; 24]; 7],
            levels: Vec::new(),
            what_if: Vec::new(),
        };
        if let Some(h) = self.web.ops.history() {
            self.charts(h, s, &mut pv);
        }
        pv
    }

    /// A pool's charts from the history: its series, the week's heatmap,
    /// time at each level, and (KRE) the what-if replay.
    fn charts(&self, h: &crate::history::History, s: &crate::core::PoolStatus, pv: &mut PoolView) {
        let (core, p, org, span, now) = (self.web.ops.core(), self.p, self.org, self.span, self.now);
        let [chart, hours, at_level] = questions(span, self.step, now);
        let read = |(step, range): (u64, (Millis, Millis)), elsewhere: &PeerUsage| {
            let mut series =
                report::usage(core, Some(h), p, org, Some(s.pool), range, step).and_then(|a| a.read(h)).ok()?;
            elsewhere.fold_into(&mut series);
            series.pop()
        };
        pv.series = read(chart, &self.elsewhere.usage[0]);
        if let Some(hours) = read(hours, &self.elsewhere.usage[1]) {
            pv.heat = shape::heat(&hours, s.quota);
        }
        if let Some(fine) = read(at_level, &self.elsewhere.usage[2]) {
            pv.levels = shape::levels(&fine, span, at_level.0);
        }
        if pv.kre {
            let seats = s.quota.saturating_sub(2)..=s.quota + 2;
            let replay = report::what_if(core, Some(h), p, (org, s.pool), replay_range(span, now), seats);
            let theirs = self.elsewhere.demand.get(&s.pool);
            let replayed = replay.and_then(|a| match theirs {
                // A cluster node's: what every node recorded, replayed once.
                Some(theirs) => {
                    let mut recorded = a.recorded(h)?;
                    theirs.iter().for_each(|t| recorded.merge(t.clone()));
                    Ok(a.replay(recorded))
                }
                None => a.read(h),
            });
            if let Ok(w) = replayed {
                pv.what_if = w.outcomes;
            }
        }
    }

    /// The live sessions, if `p` may list them.
    fn live(&self) -> Option<Vec<LiveView>> {
        let core = self.web.ops.core();
        let ttl = core.lease_ttl().as_millis() as u64;
        let sessions = core.sessions(self.p, self.org).ok()?;
        Some(
            sessions
                .into_iter()
                .map(|s| LiveView {
                    session: s.session.to_string(),
                    pool: s.pool.to_string(),
                    user: s.user.to_string(),
                    machine: s.machine.to_string(),
                    started: s.started,
                    heartbeat: Millis(s.deadline.0.saturating_sub(ttl)),
                    job: s.labels.to_string(),
                })
                .collect(),
        )
    }

    /// The KSE licensed users with their last use, if `p` may list them.
    fn licensed(&self) -> Option<Vec<view::Licensed>> {
        let grants = self.web.ops.core().grants(self.p, self.org, None).ok()?;
        let last = last_use(self.web, (self.p, self.org), self.now, &self.elsewhere.ended);
        Some(
            grants
                .into_iter()
                .filter(|g| g.pool.product == crate::core::Product::Kse)
                .map(|g| {
                    let seen = last.get(g.email.as_str()).copied();
                    (g.pool.to_string(), g.email.to_string(), g.granted, g.machine.map(|m| m.to_string()), seen)
                })
                .collect(),
        )
    }
}

/// Each user's last active use: a live session now, else the end of their
/// latest ended session in the history's minute retention (on a cluster
/// node, the other nodes' too: `ended`).
fn last_use(
    web: &Web,
    (p, org): (&Principal, &OrgName),
    now: Millis,
    ended: &[crate::history::SessionsPage],
) -> HashMap<String, Millis> {
    let mut last: HashMap<String, Millis> = HashMap::new();
    let mut saw = |r: &crate::history::EndedRow| {
        let e = last.entry(r.user.clone()).or_insert(Millis(0));
        *e = (*e).max(Millis(r.end));
    };
    if let (Some(h), Some(range)) = (web.ops.history(), last_use_range(web, now)) {
        let ask = report::sessions(web.ops.core(), Some(h), p, org, range, None, report::MAX_SESSIONS);
        if let Ok((rows, _)) = ask.and_then(|a| a.read(h)) {
            rows.iter().for_each(|(_, r)| saw(r));
        }
    }
    ended.iter().flat_map(|(rows, _)| rows).for_each(|(_, r)| saw(r));
    if let Ok(live) = web.ops.core().sessions(p, org) {
        for s in live {
            last.insert(s.user.to_string(), now);
        }
    }
    last
}
