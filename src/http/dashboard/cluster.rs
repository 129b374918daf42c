//! On a cluster node, the org page's charts over every node that served
//! the org: the other nodes' rollups for the page's three questions
//! (`questions`), fetched before the page is built on its blocking thread
//! and folded into each of this node's reads (`Ask::charts`); the demand
//! each KRE pool's what-if replays; and the ended sessions the licensed
//! users' last use is read from. A single broker fetches nothing.

use std::collections::HashMap;
use std::sync::Arc;

use super::{last_use_range, questions, range_of, replay_range, Web};
use crate::core::{Millis, OrgName, PoolId, Principal, Product};
use crate::history::report::{self, MAX_SESSIONS};
use crate::history::{Recorded, SessionsPage};
use crate::operations::gathered::{Gathered, Missing, PeerUsage};

/// The other nodes' part of an org page.
#[derive(Debug, Default)]
pub(super) struct Elsewhere {
    /// Their rollups for each of `questions`, in its order.
    pub usage: [PeerUsage; 3],
    /// What they recorded of each KRE pool, for the what-if replay.
    pub demand: HashMap<PoolId, Vec<Recorded>>,
    /// Their ended sessions over the minutes' retention (the licensed
    /// users' last use), if the caller may read them.
    pub ended: Vec<SessionsPage>,
    /// The nodes that did not answer.
    pub missing: Missing,
}

/// The other nodes' part of the page of `range` at `now`, as `p` may read
/// it, every question asked at once (nothing on a single broker, without a
/// history, or for a question `p` may not ask: the page says why itself).
pub(super) async fn fetch(web: &Arc<Web>, p: &Principal, org: &OrgName, range: &str, now: Millis) -> Elsewhere {
    let mut out = Elsewhere::default();
    if !web.ops.has_peers() || web.ops.history().is_none() {
        return out;
    }
    let (_, span, step) = range_of(range);
    let mut set = tokio::task::JoinSet::new();
    for (i, (step, range)) in questions(span, step, now).into_iter().enumerate() {
        let (web, p, org) = (web.clone(), p.clone(), org.clone());
        set.spawn(async move {
            let ask = report::usage(web.ops.core(), web.ops.history(), &p, &org, None, range, step).ok()?;
            Some(Part::Usage(i, web.ops.peer_usage(&ask).await))
        });
    }
    let pools = web.ops.core().status(p, Some(org)).unwrap_or_default();
    for s in pools.into_iter().filter(|s| s.pool.product == Product::Kre) {
        let (web, p, org) = (web.clone(), p.clone(), org.clone());
        set.spawn(async move {
            let seats = s.quota.saturating_sub(2)..=s.quota + 2;
            let range = replay_range(span, now);
            let ask = report::what_if(web.ops.core(), web.ops.history(), &p, (&org, s.pool), range, seats).ok()?;
            Some(Part::Demand(s.pool, web.ops.peer_demand(&ask).await))
        });
    }
    let (web, p, org) = (web.clone(), p.clone(), org.clone());
    set.spawn(async move {
        let range = last_use_range(&web, now)?;
        let ask = report::sessions(web.ops.core(), web.ops.history(), &p, &org, range, None, MAX_SESSIONS).ok()?;
        Some(Part::Ended(web.ops.peer_sessions(&ask).await))
    });
    while let Some(done) = set.join_next().await {
        match done.ok().flatten() {
            Some(Part::Usage(i, got)) => out.usage[i] = out.note(got),
            Some(Part::Demand(pool, got)) => {
                let theirs = out.note(got);
                out.demand.insert(pool, theirs);
            }
            Some(Part::Ended(got)) => out.ended = out.note(got),
            None => {}
        }
    }
    out
}

/// One question's answer from the other nodes.
enum Part {
    Usage(usize, Gathered<PeerUsage>),
    Demand(PoolId, Gathered<Vec<Recorded>>),
    Ended(Gathered<Vec<SessionsPage>>),
}

impl Elsewhere {
    /// A gathered answer's value; the nodes missing from it noted once each.
    fn note<T>(&mut self, got: Gathered<T>) -> T {
        self.missing.join(got.missing);
        got.value
    }
}
