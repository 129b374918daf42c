//! On a cluster node, the org page's charts over every node that served
//! the org: the other nodes' rollups for the page's three questions
//! (`questions`), fetched before the page is built on its blocking thread
//! and folded into each of this node's reads (`Ask::charts`). A single
//! broker fetches nothing. The what-if replay and the licensed users' last
//! use read this node's history only (docs/CLUSTER.md).

use super::{questions, range_of, Web};
use crate::core::{Millis, OrgName, Principal};
use crate::history::report;
use crate::operations::gathered::{Missing, PeerUsage};

/// The other nodes' part of an org page.
#[derive(Debug, Default)]
pub(super) struct Elsewhere {
    /// Their rollups for each of `questions`, in its order.
    pub usage: [PeerUsage; 3],
    /// The nodes that did not answer.
    pub missing: Vec<Missing>,
}

/// The other nodes' rollups of `org`'s pools for the page of `range` at
/// `now`, as `p` may read them (nothing on a single broker, without a
/// history, or for a question `p` may not ask: the page says why itself).
pub(super) async fn fetch(web: &Web, p: &Principal, org: &OrgName, range: &str, now: Millis) -> Elsewhere {
    let mut out = Elsewhere::default();
    if !web.ops.has_peers() || web.ops.history().is_none() {
        return out;
    }
    let (_, span, step) = range_of(range);
    for (slot, (step, range)) in out.usage.iter_mut().zip(questions(span, step, now)) {
        let Ok(ask) = report::usage(web.ops.core(), web.ops.history(), p, org, None, range, step) else { continue };
        let got = web.ops.peer_usage(&ask).await;
        *slot = got.value;
        for m in got.missing {
            if !out.missing.iter().any(|seen| seen.node == m.node) {
                out.missing.push(m);
            }
        }
    }
    out
}
