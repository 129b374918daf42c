//! The license console: where an org's Owners and Admins do what the
//! vendor's License Management page does (grant and revoke licenses, end
//! sessions, deactivate machines, create and hand out offline licenses,
//! manage members and API keys), server-rendered, every flow a plain HTML
//! form. Its one script (`console.js`) is a nicety: it shows times in the
//! viewer's zone and adds copy buttons; nothing needs it.
//!
//! It decides nothing: every change is the same `crate::operations`
//! function the CLI's request reaches over QUIC (same rules, same audit
//! entry), and every read is the core's, which checks the caller. A page
//! shows a control only where the core's read for it answered, so a User
//! sees no management control, and a forged POST is refused by the
//! operation (403), not by this module. Every form carries the sign-in's
//! CSRF token (`Signed::csrf`), checked before anything else.
//!
//! Pages: `licenses` (License Management, per pool), `offline` (create,
//! confirm, download), `members` (members, keys, per-user caps), `usage`
//! (License Utilization: filters, session time per license type, the
//! ended sessions, Export), `webhooks` (add, new secret, remove, recent
//! deliveries), `operator` (orgs, pools and quotas, subscriptions).
//! Templates live in `templates/` (askama: escaped unless marked safe).

// A refusal here is the page to answer with; handlers return it as is,
// so boxing it would only add an allocation per refusal.
#![allow(clippy::result_large_err)]

mod chart;
mod extract;
mod form;
mod grants;
mod licensed;
mod licenses;
mod machines;
mod members;
mod offline;
mod operator;
mod usage;
mod webhooks;

use std::sync::Arc;

use askama::Template;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::dashboard;
use super::Web;
use crate::core::{Millis, OrgName, Principal, Role};
use crate::proto::{ErrorCode, WireError};
pub use form::Fields;

/// The console's routes, under `/org/ORG/`.
pub(super) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/org/{org}/licenses", get(licenses::page))
        .route("/org/{org}/licenses/grant", post(grants::grant))
        .route("/org/{org}/licenses/revoke", post(grants::revoke))
        .route("/org/{org}/sessions/end", post(machines::end_session))
        .route("/org/{org}/machines/deactivate", get(machines::confirm_deactivate).post(machines::deactivate))
        .route("/org/{org}/offline/new", get(offline::new))
        .route("/org/{org}/offline/review", post(offline::review))
        .route("/org/{org}/offline/create", post(offline::create))
        .route("/org/{org}/offline/{id}/file", get(offline::download))
        .route("/org/{org}/members", get(members::page))
        .route("/org/{org}/members/add", post(members::add))
        .route("/org/{org}/members/remove", post(members::remove))
        .route("/org/{org}/keys/create", post(members::create_key))
        .route("/org/{org}/keys/revoke", post(members::revoke_key))
        .route("/org/{org}/limits", post(members::set_limit))
        .route("/org/{org}/webhooks", get(webhooks::page))
        .route("/org/{org}/webhooks/add", post(webhooks::add))
        .route("/org/{org}/webhooks/rotate", post(webhooks::rotate))
        .route("/org/{org}/webhooks/remove", post(webhooks::remove))
        .route("/org/{org}/usage", get(usage::page))
        .route("/orgs", get(operator::page))
        .route("/orgs/create", post(operator::create))
        .route("/org/{org}/pools", post(operator::pool))
        .route("/org/{org}/subscription", post(operator::subscription))
        .route("/org/{org}/usage.csv", get(usage::export))
        .route("/console.js", get(script))
}

/// The caller of a console page: who, and the sign-in's CSRF token.
pub(super) struct Signed {
    pub p: Principal,
    /// The sign-in cookie's value (notes are bound to it).
    cookie: String,
    /// What every form of this sign-in echoes.
    pub csrf: String,
    /// The org whose members the caller may read (the core's
    /// `require_members_reader`), for the Members tab.
    members_of: Option<OrgName>,
}

impl Signed {
    fn new(web: &Web, p: Principal, cookie: String, csrf: String) -> Signed {
        let members_of = p.org.clone().filter(|o| web.ops.core().require_members_reader(&p, o).is_ok());
        Signed { p, cookie, csrf, members_of }
    }

    /// The caller signed in with the cookie, or the sign-in page's address.
    fn of(web: &Web, headers: &HeaderMap) -> Result<Signed, Response> {
        let (p, cookie) = dashboard::signed_in(web, headers).ok_or_else(|| Redirect::to("/").into_response())?;
        let csrf = web.signer.csrf_token(&cookie);
        Ok(Signed::new(web, p, cookie, csrf))
    }

    /// As `of`, for a form: the echoed token must match, else 403. A page
    /// of another origin can make the browser send the cookie, never read
    /// the token.
    fn posted(web: &Web, headers: &HeaderMap, form: &Fields) -> Result<Signed, Response> {
        let Some((p, cookie)) = dashboard::signed_in(web, headers) else {
            return Err(status_page(StatusCode::UNAUTHORIZED, "Sign in first.", "UNAUTHENTICATED"));
        };
        let csrf = web.signer.csrf_token(&cookie);
        if !super::auth::same_secret(form.one("csrf").unwrap_or(""), &csrf) {
            return Err(status_page(
                StatusCode::FORBIDDEN,
                "The form is stale or forged (CSRF token mismatch); reload the page and try again.",
                "FORBIDDEN",
            ));
        }
        Ok(Signed::new(web, p, cookie, csrf))
    }

    /// The caller as the operations take them, at the broker's clock.
    fn caller<'a>(&'a self, ops: &crate::operations::Operations) -> crate::operations::Caller<'a> {
        ops.caller(&self.p)
    }

    /// The page shell for this caller.
    fn shell(&self, title: impl Into<String>, org: Option<&OrgName>, tab: &'static str) -> Shell {
        Shell {
            title: title.into(),
            who: who(&self.p),
            csrf: self.csrf.clone(),
            org: org.map(OrgName::to_string),
            members_tab: org.is_some() && org == self.members_of.as_ref(),
            tab,
            note: None,
            error: None,
            style: dashboard::view::STYLE,
            console_style: STYLE,
        }
    }

    /// A redirect to `path` carrying `note`, signed so that only this
    /// sign-in's own acts can put words on its pages.
    fn back_with(&self, web: &Web, path: &str, note: &str) -> Response {
        let note: String = note.chars().take(NOTE_MAX).collect();
        let tag = note_tag(web, &self.cookie, &note);
        let (path, anchor) = path.split_once('#').map_or((path, String::new()), |(p, a)| (p, format!("#{a}")));
        let sep = if path.contains('?') { '&' } else { '?' };
        let query = form::encode(&[("note", &note), ("tag", &tag)]);
        Redirect::to(&format!("{path}{sep}{query}{anchor}")).into_response()
    }

    /// The note a page was sent back with, if this sign-in signed it.
    fn note(&self, web: &Web, q: &Fields) -> Option<String> {
        let (note, tag) = (q.one("note")?, q.one("tag")?);
        super::auth::same_secret(tag, &note_tag(web, &self.cookie, note)).then(|| note.to_string())
    }

    /// `value` and this sign-in's tag for it, as query pairs `name` and
    /// `NAME_tag`: what a redirect may carry for `vouched` to believe.
    fn signed(&self, web: &Web, name: &str, value: &str) -> String {
        let tag = note_tag(web, &self.cookie, &format!("{name}={value}"));
        form::encode(&[(name, value), (&format!("{name}_tag"), &tag)])
    }

    /// The query's `name`, if this sign-in signed it (`signed`).
    fn vouched<'q>(&self, web: &Web, q: &'q Fields, name: &str) -> Option<&'q str> {
        let (value, tag) = (q.one(name)?, q.one(&format!("{name}_tag"))?);
        let expected = note_tag(web, &self.cookie, &format!("{name}={value}"));
        super::auth::same_secret(tag, &expected).then_some(value)
    }
}

/// The console's one script (niceties only: local times, copy buttons;
/// see the file). Served from here so the policy can allow `'self'` and
/// nothing inline.
async fn script() -> Response {
    let headers = [
        (axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
        (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
    ];
    (headers, include_str!("console.js")).into_response()
}

/// Longest note carried back to a page (a long batch is cut short).
const NOTE_MAX: usize = 1500;

fn note_tag(web: &Web, cookie: &str, note: &str) -> String {
    web.signer.flash_tag(cookie, &format!("note\n{note}"))
}

/// What every console page shows around its content.
pub(super) struct Shell {
    pub title: String,
    pub who: String,
    pub csrf: String,
    /// The org whose tabs are shown.
    pub org: Option<String>,
    /// Whether the Members tab is offered: by the core's rule for who reads
    /// an org's members (`require_members_reader`), so no one is shown a
    /// tab that answers 403.
    pub members_tab: bool,
    /// The tab that is on.
    pub tab: &'static str,
    /// What the last act did (signed, see `Signed::note`).
    pub note: Option<String>,
    /// Why the last act was refused.
    pub error: Option<String>,
    pub style: &'static str,
    pub console_style: &'static str,
}

/// The console's style, after the dashboard's.
const STYLE: &str = r#"
nav.tabs{margin:0}
.pooltabs{display:flex;gap:6px;flex-wrap:wrap;margin:0 0 12px}.pooltabs a{padding:4px 10px;border:1px solid #cdd6e0;border-radius:14px;text-decoration:none}
.pooltabs a.on{background:#1d2733;color:#fff}
.box{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px}.box div{background:#f5f7fa;padding:8px;border-radius:4px}
.box b{display:block;font-size:20px}
.note-box{background:#e7f5ec;border:1px solid #9fd3b1;padding:8px 12px;border-radius:4px;white-space:pre-line}
.err-box{background:#fdecec;border:1px solid #f0a8a8;padding:8px 12px;border-radius:4px;color:#8f1d1d}
.field-err{color:#b91c1c;display:block}
label{display:inline-block;margin:4px 12px 4px 0}input,select,textarea,button{font:inherit}
textarea{width:100%;max-width:520px}.key{font-family:monospace;background:#fff8dc;padding:6px;word-break:break-all}
.warn{background:#fff4e5;border:1px solid #f5c27a;padding:8px 12px;border-radius:4px}
button.danger{color:#fff;background:#b91c1c;border:1px solid #8f1d1d;border-radius:3px;padding:2px 10px}
td form{display:inline}.scroll{overflow-x:auto}
@media (max-width:600px){main{padding:10px}header{flex-wrap:wrap}th,td{padding:3px 4px}}
"#;

/// Most rows one console list shows; `find` narrows a longer one.
pub(super) const SHOWN: usize = 500;

/// The rows whose `text` contains `find` (any case), at most `SHOWN` of
/// them, and how many matched in all.
pub(super) fn narrowed<T>(rows: Vec<T>, find: Option<&str>, text: impl Fn(&T) -> String) -> (Vec<T>, usize) {
    let find = find.map(str::to_lowercase);
    let mut kept: Vec<T> =
        rows.into_iter().filter(|r| find.as_ref().is_none_or(|f| text(r).to_lowercase().contains(f))).collect();
    let total = kept.len();
    kept.truncate(SHOWN);
    (kept, total)
}

/// `p` as the header shows them.
fn who(p: &Principal) -> String {
    let role = role_name(p.role);
    match &p.org {
        Some(org) => format!("{} ({role} of {org})", p.email),
        None => format!("{} ({role})", p.email),
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Operator => "operator",
        Role::Owner => "Owner",
        Role::Admin => "Admin",
        _ => "User",
    }
}

/// An org named in a path, or a 404 page.
fn org_of(name: String) -> Result<OrgName, Response> {
    OrgName::new(name).map_err(|_| status_page(StatusCode::NOT_FOUND, "No such org.", "NOT_FOUND"))
}

/// A rendered template as a page (never cached: member data is on it).
fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("rendering the page failed: {e}")),
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], format!("{text}\n")).into_response()
}

/// A page that says why a request was refused, with the broker's code.
#[derive(Template)]
#[template(path = "refused.html")]
struct Refused<'a> {
    message: &'a str,
    code: &'a str,
}

fn status_page(status: StatusCode, message: &str, code: &str) -> Response {
    render(status, &Refused { message, code })
}

/// The HTTP status of a refusal of the operations.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Forbidden | ErrorCode::Unauthorized => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::StoreFailure | ErrorCode::Internal => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::CONFLICT,
    }
}

/// A refusal of the operations (or the core) as a page.
fn refused(e: impl Into<WireError>) -> Response {
    let e = e.into();
    status_page(status_of(e.code), &e.message, e.code.name())
}

/// Whether a refusal says the caller may not do this at all (a page then
/// answers 403 instead of carrying the refusal back as a note).
fn forbidden(e: &WireError) -> bool {
    matches!(e.code, ErrorCode::Forbidden | ErrorCode::Unauthorized)
}

/// A refusal of input the door parsed (an email, a role, a number).
fn invalid(what: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::InvalidArgument, what.to_string())
}

/// A refusal in words with its code, as shown next to a field or in a note.
fn words(e: &WireError) -> String {
    format!("{} ({})", e.message, e.code.name())
}

/// An instant as people read it: the UTC time and how long ago.
pub(super) fn when(t: Millis, now: Millis) -> String {
    let ago = now.0.saturating_sub(t.0) / 1000;
    let rel = match ago {
        0..=59 => "just now".to_string(),
        60..=3599 => format!("{} min ago", ago / 60),
        3600..=86_399 => format!("{} h ago", ago / 3600),
        _ => format!("{} days ago", ago / 86_400),
    };
    let utc = crate::core::format_utc(t);
    format!("{} {} UTC ({rel})", &utc[..10], &utc[11..16])
}

/// An instant on a page: a `<time>` holding `when`'s UTC text, which the
/// console's script (`/console.js`) rewrites in the viewer's own time zone
/// and locale, keeping the UTC text as its tooltip; without the script the
/// UTC text stands.
#[derive(Clone, Copy, Debug)]
pub(super) struct When {
    t: Millis,
    now: Millis,
}

/// `t` as a page shows it (see `When`).
pub(super) fn at(t: Millis, now: Millis) -> When {
    When { t, now }
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let iso = crate::core::format_utc(self.t);
        write!(f, r#"<time datetime="{iso}">{}</time>"#, when(self.t, self.now))
    }
}

/// `When` writes only digits, fixed words and its own markup: nothing to escape.
impl askama::filters::HtmlSafe for When {}

/// A subscription's end as people read it: its last day, or "no end".
pub(super) fn end_day(end: Millis) -> String {
    let day = crate::core::format_end_date(end);
    if day.starts_with("9999") {
        "no end".into()
    } else {
        day
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_narrowed_in_any_case_and_cut_at_the_bound() {
        let rows: Vec<String> = (0..SHOWN + 10).map(|i| format!("ci-{i}@X.io")).collect();
        let (all, total) = narrowed(rows.clone(), None, |r| r.clone());
        assert_eq!((all.len(), total), (SHOWN, SHOWN + 10));
        let (some, total) = narrowed(rows, Some("CI-50"), |r| r.clone());
        assert_eq!(total, 11, "ci-50 and ci-500..=509");
        assert_eq!(some[0], "ci-50@X.io");
    }

    #[test]
    fn an_end_far_off_reads_no_end() {
        let far = Millis::from_civil_date(9999, 12, 31).map(|m| Millis(m.0 + 86_400_000)).unwrap();
        assert_eq!(end_day(far), "no end");
        let near = Millis::from_civil_date(2027, 6, 30).map(|m| Millis(m.0 + 86_400_000)).unwrap();
        assert_eq!(end_day(near), "2027-06-30");
    }
}
