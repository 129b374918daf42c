//! What this node knows of the cluster, as its placement loop last read it
//! from etcd (`node`): the live nodes (each announced under `nodes/NAME`,
//! bound to its lease, so a node that dies or is cut off from etcd drops
//! out with its claims) and which node holds which org's claim. Kept here
//! so that `nodes`, `status` and the routing of a `Hello` read it without
//! an etcd round trip. It also keeps which nodes renewed their lease lately
//! (`renewed`): a node cut off from etcd keeps its announcement and claims
//! until its lease lapses, but is no place to send a client to meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::ownership::{Claimed, Owner};
use super::placement;
use crate::proto::NodeInfo;

/// Orgs named per node in a `Nodes` answer (the count is always exact):
/// the answer stays one frame however many orgs a cluster serves.
pub const MAX_LISTED_ORGS: usize = 200;

/// The cluster as last read.
#[derive(Debug, Default)]
pub struct Membership {
    view: RwLock<View>,
    /// Each node's console address, by node name (the nodes that say).
    consoles: RwLock<HashMap<String, String>>,
    /// The leases etcd said were renewed lately, and when it said so: a
    /// redirect goes only to a node whose lease is among them, read within
    /// `RENEWED_FOR` (a node that cannot read etcd itself redirects nowhere).
    renewed: RwLock<Option<(Instant, HashSet<i64>)>>,
    /// Every node seen live since this one started, and when last: a node
    /// that served an org keeps part of its history after it died, so it
    /// is asked (and named when it does not answer) until it has been gone
    /// longer than a report reaches back (`peer_targets`).
    seen: RwLock<BTreeMap<String, Instant>>,
}

/// How long an answer about which nodes renewed lately is believed: a few
/// placement passes, so one slow pass does not stop every redirect.
pub const RENEWED_FOR: Duration = Duration::from_millis(1000);

#[derive(Debug, Default)]
struct View {
    /// Live nodes and their leases, by name.
    nodes: Vec<(Owner, i64)>,
    /// Each claimed org's claim.
    claims: HashMap<String, Claimed>,
    /// How many orgs the cluster has.
    orgs: usize,
}

impl Membership {
    /// Replaces the view with what was just read: the live nodes and
    /// their leases, the claims, and how many orgs the cluster has.
    pub fn update(&self, nodes: Vec<(Owner, i64)>, claims: HashMap<String, Claimed>, orgs: usize) {
        self.update_at(Instant::now(), nodes, claims, orgs);
    }

    /// `update`, read at `now`.
    fn update_at(&self, now: Instant, mut nodes: Vec<(Owner, i64)>, claims: HashMap<String, Claimed>, orgs: usize) {
        nodes.sort_by(|a, b| a.0.node.cmp(&b.0.node));
        self.seen.write().extend(nodes.iter().map(|(n, _)| (n.node.clone(), now)));
        *self.view.write() = View { nodes, claims, orgs };
    }

    /// The leases etcd just said were renewed lately (`ownership::renewed_lately`).
    pub fn set_renewed(&self, leases: HashSet<i64>) {
        *self.renewed.write() = Some((Instant::now(), leases));
    }

    /// Whether the node holding `lease` renewed it lately, as last read
    /// within `RENEWED_FOR`: a client may be sent there.
    pub fn renewed_lately(&self, lease: i64) -> bool {
        self.renewed.read().as_ref().is_some_and(|(at, leases)| at.elapsed() < RENEWED_FOR && leases.contains(&lease))
    }

    /// Replaces the consoles' addresses with what was just read.
    pub fn set_consoles(&self, consoles: HashMap<String, String>) {
        *self.consoles.write() = consoles;
    }

    /// The console of the live node clients reach at `advertise`, if it
    /// said where it is.
    pub fn console_at(&self, advertise: &str) -> Option<String> {
        let view = self.view.read();
        let (node, _) = view.nodes.iter().find(|(n, _)| n.advertise == advertise)?;
        self.consoles.read().get(&node.node).cloned()
    }

    /// The nodes to ask for their slice of an org's history: every node
    /// seen live since this one started but `me` and those gone from the
    /// cluster for longer than `reach` (a node not live since before a
    /// report's range holds none of its rows), each with its console if it
    /// is live and said where its console is.
    pub fn peer_targets(&self, me: &str, reach: Duration) -> Vec<crate::cluster::peer::Target> {
        self.peer_targets_at(me, reach, Instant::now())
    }

    /// `peer_targets` as of `now`.
    fn peer_targets_at(&self, me: &str, reach: Duration, now: Instant) -> Vec<crate::cluster::peer::Target> {
        let live: HashSet<String> = self.view.read().nodes.iter().map(|(n, _)| n.node.clone()).collect();
        let consoles = self.consoles.read();
        let seen = self.seen.read();
        let target = |node: &String| crate::cluster::peer::Target {
            node: node.clone(),
            console: live.contains(node).then(|| consoles.get(node).cloned()).flatten(),
        };
        let recent = |at: &Instant| now.saturating_duration_since(*at) <= reach;
        seen.iter().filter(|(n, at)| n.as_str() != me && recent(at)).map(|(n, _)| target(n)).collect()
    }

    /// How many orgs the cluster has, as last read.
    pub fn org_count(&self) -> usize {
        self.view.read().orgs
    }

    /// The nodes, by name, each with the orgs it serves.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let view = self.view.read();
        view.nodes
            .iter()
            .map(|(node, lease)| {
                let mut orgs: Vec<String> = view
                    .claims
                    .iter()
                    .filter(|(_, c)| c.lease == *lease && c.owner.node == node.node)
                    .map(|(org, _)| org.clone())
                    .collect();
                orgs.sort();
                let org_count = orgs.len() as u32;
                orgs.truncate(MAX_LISTED_ORGS);
                NodeInfo {
                    name: node.node.clone(),
                    advertise: node.advertise.clone(),
                    serving: org_count > 0,
                    orgs,
                    org_count,
                }
            })
            .collect()
    }

    /// Who holds `org`'s claim, if anyone.
    pub fn claim_of(&self, org: &str) -> Option<Claimed> {
        self.view.read().claims.get(org).cloned()
    }

    /// The live node that should serve `org` (rendezvous over the live
    /// nodes), and its lease.
    pub fn preferred(&self, org: &str) -> Option<(Owner, i64)> {
        let view = self.view.read();
        let names: Vec<String> = view.nodes.iter().map(|(n, _)| n.node.clone()).collect();
        let name = placement::preferred(org, &names)?;
        view.nodes.iter().find(|(n, _)| n.node == name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> (Owner, i64) {
        (Owner { node: name.into(), advertise: format!("{name}:4433") }, 1)
    }

    #[test]
    fn a_node_gone_longer_than_a_report_reaches_back_is_not_asked() {
        let view = Membership::default();
        view.update(vec![node("a"), node("b"), node("c")], HashMap::new(), 1);
        view.set_consoles(HashMap::from([("b".to_string(), "https://b:8443/".to_string())]));
        // c leaves the cluster (its lease lapsed, or it was removed for good).
        view.update(vec![node("a"), node("b")], HashMap::new(), 1);
        let day = Duration::from_secs(86_400);
        let names = |targets: Vec<crate::cluster::peer::Target>| -> Vec<(String, Option<String>)> {
            targets.into_iter().map(|t| (t.node, t.console)).collect()
        };
        // Just gone: asked (and so named, not live), never this node itself.
        let b = ("b".to_string(), Some("https://b:8443/".to_string()));
        assert_eq!(names(view.peer_targets("a", day)), [b.clone(), ("c".to_string(), None)]);
        // Gone longer than the report reaches back: left out; the live ones stay.
        let later = Instant::now() + day + Duration::from_secs(1);
        view.update_at(later, vec![node("a"), node("b")], HashMap::new(), 1);
        assert_eq!(names(view.peer_targets_at("a", day, later)), [b]);
    }
}
