//! The JSON and CSV reports: `/api/v1/usage`, `/api/v1/sessions`,
//! `/api/v1/what-if`, and the preflight `/api/v1/availability`. Each authenticates the caller (`auth`), parses its
//! query, and asks `history::report`, which holds every rule; this module
//! only encodes. Reads run off the async threads.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth;
use crate::core::{Millis, OrgName, PoolId, Principal};
use crate::history::export;
use crate::history::filter::SessionFilter;
use crate::history::report::{self, ReportError};
use crate::http::Web;
use crate::operations::gathered::{self, Gathered, Missing};

/// A refusal in the API's shape: a status, and `{"error": CODE, "message": ...}`.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// A failed authentication (counted against the caller's address).
    failed: bool,
}

impl Refusal {
    /// This refusal, counted as a failed authentication (`auth::Failed`).
    pub(super) fn failed_auth(self) -> Refusal {
        Refusal { failed: true, ..self }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        if self.failed {
            r.extensions_mut().insert(auth::Failed);
        }
        r
    }
}

/// A refusal with `status` and error `code`.
pub(super) fn refuse(status: StatusCode, code: &'static str, message: impl std::fmt::Display) -> Refusal {
    Refusal { status, code, message: message.to_string(), failed: false }
}

/// A refusal of the operations or the core: 403, 404, or 400.
pub(super) fn refused(w: crate::proto::WireError) -> Refusal {
    let status = match w.code {
        crate::proto::ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        crate::proto::ErrorCode::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    refuse(status, w.code.name(), w.message)
}

pub(super) fn report_error(e: ReportError) -> Refusal {
    match e {
        ReportError::Core(e) => refused(e.into()),
        ReportError::Invalid(why) => refuse(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", why),
        ReportError::Off => refuse(StatusCode::NOT_FOUND, "NO_HISTORY", ReportError::Off),
        ReportError::Db(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "STORE_FAILURE", e),
        ReportError::Task(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e),
    }
}

fn bad(why: impl std::fmt::Display) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", why)
}

/// The query's `org` (required), `from` and `to` (defaults: `default_span` back from now, and now).
fn org_and_range(
    q: &HashMap<String, String>,
    now: Millis,
    default_from: &str,
) -> Result<(OrgName, (Millis, Millis)), Refusal> {
    let org = q.get("org").ok_or_else(|| bad("the query needs org=ORG"))?;
    let org = OrgName::new(org.as_str()).map_err(bad)?;
    let to = report::parse_when(q.get("to").map_or("now", String::as_str), now).map_err(bad)?;
    let from = report::parse_when(q.get("from").map_or(default_from, String::as_str), to).map_err(bad)?;
    Ok((org, (from, to)))
}

fn pool_of(q: &HashMap<String, String>) -> Result<Option<PoolId>, Refusal> {
    q.get("pool").map(|p| p.parse::<PoolId>().map_err(bad)).transpose()
}

/// Whether the caller asked for CSV (`format=csv`) or JSON (the default).
fn csv(q: &HashMap<String, String>) -> Result<bool, Refusal> {
    match q.get("format").map(String::as_str) {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(bad(format!("format must be json or csv, not `{other}`"))),
    }
}

fn json_body(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn csv_body(name: &str, body: String) -> Response {
    let disposition = format!("attachment; filename=\"{name}.csv\"");
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response()
}

/// Who asks, authenticated; on a cluster node, an org served elsewhere
/// is refused naming the node that serves it (421).
pub(super) async fn caller(web: &Web, headers: &HeaderMap, q: &HashMap<String, String>) -> Result<Principal, Refusal> {
    let p = auth::principal(web, headers).await?;
    let named = q.get("org").and_then(|o| crate::core::OrgName::new(o).ok());
    match web.ops.owning(named.as_ref()) {
        Ok(()) => Ok(p),
        Err(e) => Err(refuse(StatusCode::MISDIRECTED_REQUEST, e.code.name(), e.message)),
    }
}

/// Runs a report off the async threads.
async fn blocking(f: impl FnOnce() -> Result<Response, Refusal> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => v,
        Ok(Err(r)) => r.into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e).into_response(),
    }
}

/// `GET /api/v1/availability?org=&pool=&machine=&label=`: a preflight, as
/// `license-broker check --json` answers it (`Operations::check`); `label`
/// the runner's job labels, `KEY=VALUE` pairs joined by `,`. Cheap,
/// so it takes no report's turn: a dashboard polling it never waits
/// behind a what-if.
pub(super) async fn availability(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let asked = match caller(&web, &headers, &q).await {
        Ok(p) => availability_of(&web, &p, &q).await,
        Err(r) => Err(r),
    };
    asked.unwrap_or_else(IntoResponse::into_response)
}

async fn availability_of(web: &Web, p: &Principal, q: &HashMap<String, String>) -> Result<Response, Refusal> {
    let org = OrgName::new(q.get("org").ok_or_else(|| bad("`org` is required"))?).map_err(bad)?;
    let pool = pool_of(q)?.unwrap_or(PoolId::KRE_DEFAULT);
    let machine = q.get("machine").map(|m| crate::core::MachineId::new(m.as_str())).transpose().map_err(bad)?;
    let labels = match q.get("label") {
        Some(all) => crate::core::Labels::parse_list(all).map_err(bad)?,
        None => crate::core::Labels::default(),
    };
    let a = web.ops.check(web.ops.caller(p), (&org, pool), machine.as_ref(), &labels).await;
    a.map(|a| json_body(crate::operations::availability_json(&a))).map_err(refused)
}

/// `GET /api/v1/usage?org=&pool=&from=&to=&step=&format=json|csv`. On a
/// cluster node, over every node's history (`Operations::usage_gathered`).
pub(super) async fn usage(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match caller(&web, &headers, &q).await {
        Ok(p) => usage_report(web, &p, q).await.unwrap_or_else(IntoResponse::into_response),
        Err(r) => r.into_response(),
    }
}

async fn usage_report(web: Arc<Web>, p: &Principal, q: HashMap<String, String>) -> Result<Response, Refusal> {
    let (org, range) = org_and_range(&q, web.ops.clock().now(), "7d")?;
    let pool = pool_of(&q)?;
    let step = match q.get("step") {
        Some(s) => report::parse_step(s).map_err(bad)?,
        None => report::auto_step(range.1 .0.saturating_sub(range.0 .0)),
    };
    let as_csv = csv(&q)?;
    let ask = report::usage(web.ops.core(), web.ops.history(), p, &org, pool, range, step).map_err(report_error)?;
    let Gathered { value: series, missing } = web.ops.usage_gathered(ask).await.map_err(report_error)?;
    let said = missing.clone();
    let mut r = blocking(move || {
        Ok(match as_csv {
            true => csv_body(&format!("usage-{org}"), export::usage_csv(&series)),
            false => {
                let mut v = export::usage_json(org.as_str(), range, step, &series, export::Licenses::Said);
                said_missing(&mut v, &said);
                json_body(v)
            }
        })
    })
    .await;
    missing_header(&mut r, &missing);
    Ok(r)
}

/// Names the nodes whose history is not in a JSON answer (`missing`, and
/// a `warning` in words), when there are any.
fn said_missing(v: &mut serde_json::Value, missing: &Missing) {
    if let Some(words) = missing.warning() {
        v["missing"] = serde_json::to_value(missing).unwrap_or_default();
        v["warning"] = serde_json::Value::String(words);
    }
}

/// The same, as `X-History-Missing` on any answer (a CSV has no room for it).
pub(super) fn missing_header(r: &mut Response, missing: &Missing) {
    if let Some(v) = missing.warning().and_then(|w| HeaderValue::from_str(&w).ok()) {
        r.headers_mut().insert(gathered::HEADER, v);
    }
}

/// `GET /api/v1/sessions?org=&from=&to=&user=&machine=&pool=&label=&format=json|csv&limit=&after=`:
/// sessions that ended in the range, oldest end first, those the filters
/// keep (`history::filter`); `next` (JSON) or the `X-Next-After` header
/// (CSV) is the `after` of the next page (a page may hold fewer than
/// `limit` when a filter keeps few: go on while there is a `next`). On a
/// cluster node, over every node's history (`Operations::sessions_gathered`).
pub(super) async fn sessions(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match caller(&web, &headers, &q).await {
        Ok(p) => sessions_report(web, &p, q).await.unwrap_or_else(IntoResponse::into_response),
        Err(r) => r.into_response(),
    }
}

async fn sessions_report(web: Arc<Web>, p: &Principal, q: HashMap<String, String>) -> Result<Response, Refusal> {
    let (org, range) = org_and_range(&q, web.ops.clock().now(), "1d")?;
    let limit = match q.get("limit") {
        Some(n) => n.parse::<usize>().map_err(|_| bad("limit must be a number"))?,
        None => report::MAX_SESSIONS,
    };
    let after = match q.get("after") {
        Some(a) => {
            let parsed = a
                .split_once('.')
                .and_then(|(end, id)| Some((end.parse().ok()?, id.parse::<crate::core::SessionId>().ok()?.0)));
            Some(parsed.ok_or_else(|| bad("after must be the `next` of an earlier page"))?)
        }
        None => None,
    };
    let as_csv = csv(&q)?;
    let filter = SessionFilter::of(|k| q.get(k).cloned());
    let ask = report::sessions(web.ops.core(), web.ops.history(), p, &org, range, after, limit)
        .map_err(report_error)?
        .filtered(filter);
    let Gathered { value: (rows, next), missing } = web.ops.sessions_gathered(ask).await.map_err(report_error)?;
    let next = next.map(|(end, id)| format!("{end}.{}", crate::core::SessionId(id)));
    let said = missing.clone();
    let mut r = blocking(move || Ok(sessions_body(org.as_str(), &rows, next, as_csv, &said))).await;
    missing_header(&mut r, &missing);
    Ok(r)
}

/// A page of ended sessions as CSV (the next cursor in `X-Next-After`) or JSON.
fn sessions_body(
    org: &str,
    rows: &[(u64, crate::history::EndedRow)],
    next: Option<String>,
    as_csv: bool,
    missing: &Missing,
) -> Response {
    if as_csv {
        let mut body = String::from(export::SESSIONS_CSV_HEADER);
        for (id, r) in rows {
            body.push_str(&export::session_csv(*id, r));
        }
        let mut response = csv_body(&format!("sessions-{org}"), body);
        if let Some(next) = next.and_then(|n| n.parse().ok()) {
            response.headers_mut().insert("x-next-after", next);
        }
        return response;
    }
    let list: Vec<serde_json::Value> = rows.iter().map(|(id, r)| export::session_json(*id, r)).collect();
    let mut v = serde_json::json!({ "org": org, "sessions": list, "next": next });
    said_missing(&mut v, missing);
    json_body(v)
}

/// `GET /api/v1/what-if?org=&pool=&seats=N[..M]&from=&to=&format=json|csv`.
/// On a cluster node, of the demand every node recorded
/// (`Operations::what_if_gathered`).
pub(super) async fn what_if(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match caller(&web, &headers, &q).await {
        Ok(p) => what_if_report(&web, &p, q).await.unwrap_or_else(IntoResponse::into_response),
        Err(r) => r.into_response(),
    }
}

async fn what_if_report(web: &Web, p: &Principal, q: HashMap<String, String>) -> Result<Response, Refusal> {
    let (org, range) = org_and_range(&q, web.ops.clock().now(), "30d")?;
    let pool = pool_of(&q)?.ok_or_else(|| bad("the query needs pool=POOL"))?;
    let seats = report::parse_seats(q.get("seats").ok_or_else(|| bad("the query needs seats=N or seats=N..M"))?)
        .map_err(bad)?;
    let ask =
        report::what_if(web.ops.core(), web.ops.history(), p, (&org, pool), range, seats).map_err(report_error)?;
    let Gathered { value: w, missing } = web.ops.what_if_gathered(ask).await.map_err(report_error)?;
    let mut r = match csv(&q)? {
        true => csv_body(&format!("what-if-{org}-{pool}"), export::what_if_csv(&w)),
        false => {
            let mut v = export::what_if_json(org.as_str(), &pool.to_string(), range, &w);
            said_missing(&mut v, &missing);
            json_body(v)
        }
    };
    missing_header(&mut r, &missing);
    Ok(r)
}
