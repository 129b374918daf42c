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

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::api::{refuse, report_error, Refusal};
use super::Web;
use crate::core::{Millis, OrgName, PoolId};
use crate::history::filter::SessionFilter;

/// What every peer read starts from: the request checked as a peer's of
/// this cluster (a cluster node's door, over TLS, signed within the skew),
/// the org it names, and its query. A request that fails here is answered
/// from here (404, 401 counted as a failed authentication, 400).
pub(super) struct PeerRead {
    web: Arc<Web>,
    org: OrgName,
    q: HashMap<String, String>,
}

impl FromRequestParts<Arc<Web>> for PeerRead {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<PeerRead, Refusal> {
        signed(web, parts)?;
        let Query(q) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri).map_err(bad)?;
        let org = OrgName::new(q.get("org").map(String::as_str).unwrap_or_default()).map_err(bad)?;
        Ok(PeerRead { web: web.clone(), org, q })
    }
}

/// `GET /peer/v1/usage?org=&pools=P,Q&from=MS&to=MS&step=MS`.
pub(super) async fn usage(read: PeerRead) -> Response {
    let answer = async {
        let pools = read.q.get("pools").map(String::as_str).unwrap_or_default();
        let pools = pools.split(',').filter(|p| !p.is_empty()).map(|p| p.parse::<PoolId>().map_err(bad));
        let pools = pools.collect::<Result<Vec<_>, _>>()?;
        let (range, step) = (read.range()?, read.number("step")?);
        read.web.ops.slice_usage(read.org, pools, range, step).await.map_err(report_error)
    };
    body(answer.await)
}

/// `GET /peer/v1/sessions?org=&from=MS&to=MS&limit=N[&after=END.ID][&user=&machine=&pool=&label=]`.
pub(super) async fn sessions(read: PeerRead) -> Response {
    let answer = async {
        let after = match read.q.get("after") {
            Some(a) => {
                let (end, id) = a.split_once('.').ok_or_else(|| bad("after must be END.ID"))?;
                Some((end.parse().map_err(bad)?, id.parse().map_err(bad)?))
            }
            None => None,
        };
        let (range, limit) = (read.range()?, read.number("limit")? as usize);
        let filter = SessionFilter::of(|k| read.q.get(k).cloned());
        read.web.ops.slice_sessions(read.org, range, (after, limit), filter).await.map_err(report_error)
    };
    body(answer.await)
}

/// `GET /peer/v1/demand?org=&pool=&from=MS&to=MS`: what a what-if replays.
pub(super) async fn demand(read: PeerRead) -> Response {
    let answer = async {
        let pool = read.q.get("pool").map(String::as_str).unwrap_or_default().parse::<PoolId>().map_err(bad)?;
        read.web.ops.slice_demand(read.org.clone(), pool, read.range()?).await.map_err(report_error)
    };
    body(answer.await)
}

impl PeerRead {
    /// The query's `name`, a number.
    fn number(&self, name: &str) -> Result<u64, Refusal> {
        self.q.get(name).and_then(|v| v.parse().ok()).ok_or_else(|| bad(format!("{name} must be a number")))
    }

    /// The query's `from` and `to`, in order.
    fn range(&self) -> Result<(Millis, Millis), Refusal> {
        let (from, to) = (self.number("from")?, self.number("to")?);
        match from < to {
            true => Ok((Millis(from), Millis(to))),
            false => Err(bad("from must be before to")),
        }
    }
}

/// Refuses a request that is not a peer's of this cluster.
fn signed(web: &Web, parts: &Parts) -> Result<(), Refusal> {
    let Some(key) = web.ops.peer_key() else {
        return Err(refuse(StatusCode::NOT_FOUND, "NOT_FOUND", "peer reads are served by cluster nodes only"));
    };
    if !web.is_tls() {
        return Err(refuse(StatusCode::NOT_FOUND, "NOT_FOUND", "peer reads are served over TLS only"));
    }
    let header = |name| parts.headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    let (given, host) = (header(header::AUTHORIZATION), header(header::HOST).unwrap_or_default());
    let path = parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str());
    key.check((parts.method.as_str(), host, path), given, crate::cluster::peer::now_ms())
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
