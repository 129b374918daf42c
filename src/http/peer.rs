//! `/peer/v1/usage`, `/peer/v1/sessions` and `/peer/v1/demand` (what a
//! what-if replays): this node's slice of an org's
//! history, for another node of its cluster merging a report
//! (`operations::gathered`). Only on a cluster node (404 elsewhere), only
//! to a request signed with the cluster's peer key within the allowed
//! skew (`cluster::peer`; 401 `PEER_UNAUTHENTICATED` otherwise, counted as
//! a failed authentication). The answer is the rows as they are
//! (postcard), for any org: the asking node has checked who may read what.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::api::{refuse, report_error, Refusal};
use super::Web;
use crate::core::{Millis, OrgName, PoolId};
use crate::history::filter::SessionFilter;

/// `GET /peer/v1/usage?org=&pools=P,Q&from=MS&to=MS&step=MS`.
pub(super) async fn usage(
    State(web): State<Arc<Web>>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let answer = async {
        signed(&web, &method, &uri, &headers)?;
        let org = org(&q)?;
        let pools = q.get("pools").map(String::as_str).unwrap_or_default();
        let pools = pools.split(',').filter(|p| !p.is_empty()).map(|p| p.parse::<PoolId>().map_err(bad));
        let pools = pools.collect::<Result<Vec<_>, _>>()?;
        let step = number(&q, "step")?;
        web.ops.slice_usage(org, pools, range(&q)?, step).await.map_err(report_error)
    };
    body(answer.await)
}

/// `GET /peer/v1/sessions?org=&from=MS&to=MS&limit=N[&after=END.ID][&user=&machine=&pool=&label=]`.
pub(super) async fn sessions(
    State(web): State<Arc<Web>>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let answer = async {
        signed(&web, &method, &uri, &headers)?;
        let org = org(&q)?;
        let after = match q.get("after") {
            Some(a) => {
                let (end, id) = a.split_once('.').ok_or_else(|| bad("after must be END.ID"))?;
                Some((end.parse().map_err(bad)?, id.parse().map_err(bad)?))
            }
            None => None,
        };
        let limit = number(&q, "limit")? as usize;
        let filter = SessionFilter::of(|k| q.get(k).cloned());
        web.ops.slice_sessions(org, range(&q)?, (after, limit), filter).await.map_err(report_error)
    };
    body(answer.await)
}

/// `GET /peer/v1/demand?org=&pool=&from=MS&to=MS`: what a what-if replays.
pub(super) async fn demand(
    State(web): State<Arc<Web>>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let answer = async {
        signed(&web, &method, &uri, &headers)?;
        let pool = q.get("pool").map(String::as_str).unwrap_or_default().parse::<PoolId>().map_err(bad)?;
        web.ops.slice_demand(org(&q)?, pool, range(&q)?).await.map_err(report_error)
    };
    body(answer.await)
}

/// Refuses a request that is not a peer's of this cluster.
fn signed(web: &Web, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(key) = web.ops.peer_key() else {
        return Err(refuse(StatusCode::NOT_FOUND, "NOT_FOUND", "peer reads are served by cluster nodes only"));
    };
    if !web.is_tls() {
        return Err(refuse(StatusCode::NOT_FOUND, "NOT_FOUND", "peer reads are served over TLS only"));
    }
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    key.check((method.as_str(), host, path), given, crate::cluster::peer::now_ms())
        .map_err(|e| refuse(StatusCode::UNAUTHORIZED, "PEER_UNAUTHENTICATED", e).failed_auth())
}

fn body(answer: Result<Vec<u8>, Refusal>) -> Response {
    match answer {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(r) => r.into_response(),
    }
}

fn bad(why: impl std::fmt::Display) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", why)
}

fn org(q: &HashMap<String, String>) -> Result<OrgName, Refusal> {
    OrgName::new(q.get("org").map(String::as_str).unwrap_or_default()).map_err(bad)
}

fn number(q: &HashMap<String, String>, name: &str) -> Result<u64, Refusal> {
    q.get(name).and_then(|v| v.parse().ok()).ok_or_else(|| bad(format!("{name} must be a number")))
}

fn range(q: &HashMap<String, String>) -> Result<(Millis, Millis), Refusal> {
    let (from, to) = (number(q, "from")?, number(q, "to")?);
    match from < to {
        true => Ok((Millis(from), Millis(to))),
        false => Err(bad("from must be before to")),
    }
}
