//! `GET /api/v1/events?org=ORG&after=CURSOR&wait=SECONDS`: an org's
//! events after a cursor, oldest first, as docs/EVENTS.md documents them;
//! with `wait`, a long poll (at most `events::MAX_WAIT`) that answers as
//! soon as a first event is committed. Who may read, and what a stale
//! cursor means, are `Operations::events`'; this module only parses and
//! encodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::api::{caller, refuse, refused, Refusal};
use crate::core::OrgName;
use crate::events::json::event_json;
use crate::http::Web;

/// The handler.
pub(super) async fn events(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let read = match caller(&web, &headers, &q).await {
        Ok(p) => read(&web, &p, &q).await,
        Err(r) => Err(r),
    };
    read.unwrap_or_else(IntoResponse::into_response)
}

async fn read(web: &Web, p: &crate::core::Principal, q: &HashMap<String, String>) -> Result<Response, Refusal> {
    let bad = |why: String| refuse(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", why);
    let org = OrgName::new(q.get("org").ok_or_else(|| bad("the query needs org=ORG".into()))?.as_str())
        .map_err(|e| bad(e.to_string()))?;
    let number = |name: &str| match q.get(name) {
        None => Ok(0),
        Some(v) => v.parse::<u64>().map_err(|_| bad(format!("{name} must be a whole number, not `{v}`"))),
    };
    let (after, wait) = (number("after")?, Duration::from_secs(number("wait")?));
    let page = web.ops.events(web.ops.caller(p), &org, after, wait).await.map_err(refused)?;
    let list: Vec<serde_json::Value> = page.events.iter().map(event_json).collect();
    let body = serde_json::json!({ "org": org.as_str(), "events": list, "next": page.next });
    Ok(([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}
