//! The history's reports over a whole cluster. Each node keeps the history
//! of the time it served an org (its own `history.redb`), so the node
//! serving an org now reads its own slice and asks every other node for
//! theirs (`cluster::peer`), at once, and merges them (`merge`). A node
//! that does not answer within its deadline is named in the answer
//! (`Missing`, one type for every door and the logs) rather than failing
//! the report or silently showing less.
//!
//! On a single broker (no cluster, so no peers) a report is this node's
//! read alone: the same call, with nothing else to ask.
//!
//! The other side, a node answering for its slice, is `slice_usage` and
//! `slice_sessions`: the history's rows as they are, for any org (the org
//! may no longer be served here), to a caller the door has checked is a
//! node of this cluster.

use serde::{Deserialize, Serialize};

use super::merge::{self, PoolSlice};
use super::Operations;
use crate::core::{Millis, OrgName, PoolId};
use crate::history::filter::SessionFilter;
use crate::history::report::{ReportError, Series, SessionsAsk, UsageAsk, WhatIfAsk, MAX_POINTS};
use crate::history::{EndedRow, Recorded, SessionsPage, WhatIf};

/// The nodes whose slice of the history is not in an answer, each once
/// (in name order, with the first reason given for it). The one way every
/// door names them: the JSON's `missing` (`Serialize`: `[{node, why}]`)
/// and `warning`, the `X-History-Missing` header (`HEADER`), the pages and
/// the logs all print `Display` ("part of the history may be missing: node
/// n0 did not answer within 2 s").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Missing(Vec<Absent>);

/// One node whose slice is not in an answer, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Absent {
    /// The node's name.
    pub node: String,
    /// Why (it did not answer in time, is not live, refused).
    pub why: String,
}

/// The header that names the missing nodes on any answer (a CSV has no
/// room for them in its body).
pub const HEADER: &str = "x-history-missing";

impl Missing {
    /// Names `node` (once: a node named already keeps its first reason).
    pub fn add(&mut self, node: String, why: String) {
        if let Err(at) = self.0.binary_search_by(|a| a.node.cmp(&node)) {
            self.0.insert(at, Absent { node, why });
        }
    }

    /// Names the nodes `other` names too (several reads of one page or
    /// export name the same nodes: each is said once).
    pub fn join(&mut self, other: Missing) {
        for a in other.0 {
            self.add(a.node, a.why);
        }
    }

    /// Whether every node answered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The nodes, in name order.
    pub fn nodes(&self) -> &[Absent] {
        &self.0
    }

    /// The words a person reads, if any node is missing.
    pub fn warning(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.to_string())
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("part of the history may be missing: ")?;
        for (i, a) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}node {} {}", a.node, a.why)?;
        }
        Ok(())
    }
}

/// A report's answer, and the nodes whose part of it is missing.
#[derive(Debug)]
pub struct Gathered<T> {
    /// The answer.
    pub value: T,
    /// The nodes not in it (none on a single broker, and when all answered).
    pub missing: Missing,
}

/// Other nodes' rollups of an org's pools, to fold into this node's.
#[derive(Debug, Default)]
pub struct PeerUsage(Vec<Vec<PoolSlice>>);

impl PeerUsage {
    /// Adds them to `series` (this node's read of the same question).
    pub fn fold_into(&self, series: &mut [Series]) {
        if !self.0.is_empty() {
            merge::series(series, &self.0);
        }
    }
}

/// One node's page of ended sessions, as it travels.
#[derive(Serialize, Deserialize)]
struct SessionsSlice {
    rows: Vec<(u64, EndedRow)>,
    next: Option<(u64, u64)>,
}

impl Operations {
    /// The usage `ask` asks for, over every node that served the org.
    pub async fn usage_gathered(&self, ask: UsageAsk) -> Result<Gathered<Vec<Series>>, ReportError> {
        let path = self.peers.is_some().then(|| usage_path(&ask));
        let local = self.read_history(move |h| ask.read(h));
        let (local, answers) = tokio::join!(local, self.ask_peers(path));
        let mut value = local?;
        if answers.is_empty() {
            return Ok(Gathered { value, missing: Missing::default() });
        }
        // Decoding and merging the slices is heavy: off the async threads, in a turn.
        self.read_history(move |_| {
            let (slices, missing) = decoded::<Vec<PoolSlice>>(answers);
            merge::series(&mut value, &slices);
            Ok(Gathered { value, missing })
        })
        .await
    }

    /// The page of ended sessions `ask` asks for, over every node that
    /// served the org (one page of each, merged: `merge::pages`).
    pub async fn sessions_gathered(&self, ask: SessionsAsk) -> Result<Gathered<SessionsPage>, ReportError> {
        let path = self.peers.is_some().then(|| sessions_path(&ask));
        let limit = ask.span().2;
        let local = self.read_history(move |h| ask.read(h));
        let (local, answers) = tokio::join!(local, self.ask_peers(path));
        let local = local?;
        if answers.is_empty() {
            return Ok(Gathered { value: local, missing: Missing::default() });
        }
        // Decoding and merging pages of up to 100,000 rows each: off the
        // async threads, in a turn.
        self.read_history(move |_| {
            let (slices, missing) = decoded::<SessionsSlice>(answers);
            if slices.is_empty() {
                return Ok(Gathered { value: local, missing });
            }
            let pages = std::iter::once(local).chain(slices.into_iter().map(|s| (s.rows, s.next))).collect();
            Ok(Gathered { value: merge::pages(pages, limit), missing })
        })
        .await
    }

    /// The replay `ask` asks for, of the demand every node that served the
    /// org recorded (each node's `Recorded`, merged, then replayed).
    pub async fn what_if_gathered(&self, ask: WhatIfAsk) -> Result<Gathered<WhatIf>, ReportError> {
        if self.peers.is_none() {
            return Ok(Gathered { value: self.read_history(move |h| ask.read(h)).await?, missing: Missing::default() });
        }
        let path = Some(demand_path(&ask));
        let ask = std::sync::Arc::new(ask);
        let mine = ask.clone();
        let local = self.read_history(move |h| mine.recorded(h));
        let (local, answers) = tokio::join!(local, self.ask_peers(path));
        let mut recorded = local?;
        let (slices, missing) = decoded::<Recorded>(answers);
        for slice in slices {
            recorded.merge(slice);
        }
        // The replay is the heavy part: off the async threads, in a turn.
        let value = self.read_history(move |_| Ok(ask.replay(recorded))).await?;
        Ok(Gathered { value, missing })
    }

    /// Whether this node asks other nodes for their slices (a cluster node).
    pub fn has_peers(&self) -> bool {
        self.peers.is_some()
    }

    /// The other nodes' rollups for `ask` alone, for a page that reads this
    /// node's own on a blocking thread and folds these in (`PeerUsage`).
    pub async fn peer_usage(&self, ask: &UsageAsk) -> Gathered<PeerUsage> {
        let path = self.peers.is_some().then(|| usage_path(ask));
        let (slices, missing) = decoded::<Vec<PoolSlice>>(self.ask_peers(path).await);
        Gathered { value: PeerUsage(slices), missing }
    }

    /// The other nodes' records for `ask` alone (see `peer_usage`).
    pub async fn peer_demand(&self, ask: &WhatIfAsk) -> Gathered<Vec<Recorded>> {
        let path = self.peers.is_some().then(|| demand_path(ask));
        let (value, missing) = decoded::<Recorded>(self.ask_peers(path).await);
        Gathered { value, missing }
    }

    /// The other nodes' first page for `ask` alone (see `peer_usage`).
    pub async fn peer_sessions(&self, ask: &SessionsAsk) -> Gathered<Vec<SessionsPage>> {
        let path = self.peers.is_some().then(|| sessions_path(ask));
        let (slices, missing) = decoded::<SessionsSlice>(self.ask_peers(path).await);
        Gathered { value: slices.into_iter().map(|s| (s.rows, s.next)).collect(), missing }
    }

    /// Every other node's answer to `path` (none on a single broker, which
    /// has no `path` to ask: nothing is built or sent there), of the nodes
    /// that may hold rows of the report (`reach` of its start).
    async fn ask_peers(&self, path: Option<PeerPath>) -> Vec<(String, Result<hyper::body::Bytes, String>)> {
        let (Some(seat), Some(peers), Some((path, from))) = (&self.cluster, &self.peers, path) else {
            return Vec::new();
        };
        let targets = seat.peers(self.reach(from));
        if targets.is_empty() {
            return Vec::new();
        }
        peers.ask(&targets, &path, crate::cluster::peer::now_ms()).await
    }

    /// How long ago a node may have left the cluster and still hold rows of
    /// a report starting at `from`: back to `from`, and a day more (a day's
    /// rollup, the coarsest, may start before `from`); and never longer than
    /// the history keeps its finest rows (minutes and ended sessions), so a
    /// node removed for good stops being named.
    fn reach(&self, from: Millis) -> std::time::Duration {
        let back = self.clock.now().0.saturating_sub(from.0) + crate::history::Period::Day.ms();
        let back = std::time::Duration::from_millis(back);
        self.history.as_ref().map_or(back, |h| back.min(h.retention().minutes))
    }

    /// This node's rollups of `org`'s `pools`, encoded for the node that asked.
    pub async fn slice_usage(
        &self,
        org: OrgName,
        pools: Vec<PoolId>,
        (from, to): (Millis, Millis),
        step_ms: u64,
    ) -> Result<Vec<u8>, ReportError> {
        bounded_usage(pools.len(), (from, to), step_ms)?;
        let slices = self
            .read_history(move |h| {
                let mut out: Vec<PoolSlice> = Vec::new();
                for pool in pools {
                    let points = h.usage(org.as_str(), &pool.to_string(), from, to, step_ms)?;
                    out.push((pool.to_string(), points.into_iter().map(|p| (p.start, p.step_ms, p.usage)).collect()));
                }
                Ok(out)
            })
            .await?;
        postcard::to_allocvec(&slices).map_err(|e| ReportError::Task(e.to_string()))
    }

    /// What this node recorded of `org`'s `pool` over the range, encoded
    /// for the node that asked (its what-if replays every node's).
    pub async fn slice_demand(
        &self,
        org: OrgName,
        pool: PoolId,
        range: (Millis, Millis),
    ) -> Result<Vec<u8>, ReportError> {
        let recorded = self.read_history(move |h| Ok(h.recorded(org.as_str(), &pool.to_string(), range)?)).await?;
        postcard::to_allocvec(&recorded).map_err(|e| ReportError::Task(e.to_string()))
    }

    /// This node's page of `org`'s ended sessions, encoded for the node that asked.
    pub async fn slice_sessions(
        &self,
        org: OrgName,
        range: (Millis, Millis),
        (after, limit): (Option<(u64, u64)>, usize),
        filter: SessionFilter,
    ) -> Result<Vec<u8>, ReportError> {
        let limit = limit.clamp(1, PEER_MAX_SESSIONS);
        let (rows, next) = self
            .read_history(move |h| Ok(h.sessions(org.as_str(), range, after, limit, &|r| filter.keeps(r))?))
            .await?;
        postcard::to_allocvec(&SessionsSlice { rows, next }).map_err(|e| ReportError::Task(e.to_string()))
    }
}

/// Most ended sessions one node sends another in a page: a row with the
/// longest labels, email and machine id the broker takes is under 2 KiB,
/// so a page stays within the asker's `peer::MAX_ANSWER` (32 MiB) whatever
/// its rows hold; the merge takes rows only up to where each node stopped,
/// and the next page goes on from there.
pub const PEER_MAX_SESSIONS: usize = 16_384;

/// A slice's question within a report's bounds.
fn bounded_usage(pools: usize, (from, to): (Millis, Millis), step_ms: u64) -> Result<(), ReportError> {
    let minute = crate::core::usage::MINUTE_MS;
    let ok = from < to && step_ms >= minute && step_ms.is_multiple_of(minute) && pools <= 64;
    match ok && (to.0 - from.0) / step_ms <= MAX_POINTS {
        true => Ok(()),
        false => Err(ReportError::Invalid("the slice asked for is out of bounds".into())),
    }
}

/// A peer read's path and query, and the start of the report's range.
type PeerPath = (String, Millis);

/// The peer path of a usage question.
fn usage_path(ask: &UsageAsk) -> PeerPath {
    let ((from, to), step) = ask.span();
    let pools: Vec<String> = ask.pools().map(|p| p.to_string()).collect();
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("org", ask.org().as_str()).append_pair("pools", &pools.join(","));
    q.append_pair("from", &from.0.to_string()).append_pair("to", &to.0.to_string());
    q.append_pair("step", &step.to_string());
    (format!("/peer/v1/usage?{}", q.finish()), from)
}

/// The peer path of a what-if's demand.
fn demand_path(ask: &WhatIfAsk) -> PeerPath {
    let (org, pool, (from, to)) = ask.span();
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("org", org.as_str()).append_pair("pool", &pool.to_string());
    q.append_pair("from", &from.0.to_string()).append_pair("to", &to.0.to_string());
    (format!("/peer/v1/demand?{}", q.finish()), from)
}

/// The peer path of a question about ended sessions.
fn sessions_path(ask: &SessionsAsk) -> PeerPath {
    let ((from, to), after, limit) = ask.span();
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("org", ask.org().as_str());
    q.append_pair("from", &from.0.to_string()).append_pair("to", &to.0.to_string());
    q.append_pair("limit", &limit.to_string());
    if let Some((end, id)) = after {
        q.append_pair("after", &format!("{end}.{id}"));
    }
    for (k, v) in ask.filter().pairs() {
        q.append_pair(k, &v);
    }
    (format!("/peer/v1/sessions?{}", q.finish()), from)
}

/// The answers that decoded, and the nodes that gave none.
fn decoded<T: serde::de::DeserializeOwned>(
    answers: Vec<(String, Result<hyper::body::Bytes, String>)>,
) -> (Vec<T>, Missing) {
    let (mut slices, mut missing) = (Vec::new(), Missing::default());
    for (node, answer) in answers {
        let slice = answer
            .and_then(|b| postcard::from_bytes::<T>(&b).map_err(|e| format!("sent an answer not understood ({e})")));
        match slice {
            Ok(s) => slices.push(s),
            Err(why) => missing.add(node, why),
        }
    }
    (slices, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_each_node_once_in_order_in_every_form() {
        let mut m = Missing::default();
        assert_eq!(m.warning(), None);
        m.add("n2".into(), "did not answer within 2 s".into());
        let mut other = Missing::default();
        other.add("n0".into(), "is not live, or did not say where its console is".into());
        other.add("n2".into(), "answered 500".into());
        m.join(other);
        let words = "part of the history may be missing: node n0 is not live, or did not say where its console \
                     is; node n2 did not answer within 2 s";
        assert_eq!(m.warning().as_deref(), Some(words));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json[0]["node"], "n0");
        assert_eq!(json[1]["why"], "did not answer within 2 s");
        assert_eq!(json.as_array().map(Vec::len), Some(2));
    }
}
