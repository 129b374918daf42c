//! Which orgs this node serves, pass by pass: it reads the live nodes and
//! the claims (reusing the last read while etcd's revision stands still),
//! drops the orgs whose claim it lost, takes over the orgs nobody serves
//! that prefer it (rendezvous over the live nodes), and hands on those
//! that prefer another node once that one has settled and nothing is held
//! for them here beyond their sessions (their takeover's hold is over):
//! their ceilings written down to the sessions held first, so the next
//! node holds only what runners may still believe. It also asks etcd which
//! nodes renewed their lease lately, so the broker redirects only there.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::{Node, CLAIM_BATCH, ORGS_EVERY, SETTLE};
use crate::cluster::etcd::Etcd;
use crate::cluster::membership::Membership;
use crate::cluster::ownership::{self, Claimed, NodeLease, Owner};
use crate::cluster::placement;
use crate::cluster::store::{EtcdStore, Fences, Layout};
use crate::core::{OrgName, Record};
use crate::server::Running;

/// Decides which orgs this node serves, pass by pass.
pub(super) struct Placer {
    etcd: Arc<Etcd>,
    layout: Layout,
    me: Owner,
    lease: NodeLease,
    store: Arc<EtcdStore>,
    fences: Arc<Fences>,
    view: Arc<Membership>,
    /// Every org of the cluster, as last listed (and any seen claimed since).
    orgs: BTreeSet<OrgName>,
    /// When the orgs were last listed.
    orgs_read: Option<Instant>,
    /// When each live node was first seen live (by name and lease).
    first_seen: HashMap<(String, i64), Instant>,
    /// The last read of the nodes and claims, and etcd's revision before it.
    last_read: Option<(i64, ClusterRead)>,
    /// Who held each claimed org at the last pass, and the nodes live at
    /// this one: whom an org taken now comes from, and whether that node
    /// handed it on (still live) or is gone (`cluster.*` events).
    owners: HashMap<String, String>,
    live: Vec<String>,
}

/// The live nodes (and their leases) and every org's claim, as read.
type ClusterRead = (Vec<(Owner, i64)>, HashMap<String, Claimed>);

/// What one pass saw of the cluster.
struct Seen {
    claims: HashMap<String, Claimed>,
    /// The live nodes' names.
    live: Vec<String>,
    /// The live nodes that have been live for `SETTLE`.
    settled: Vec<String>,
}

impl Placer {
    /// A placer for the term of `lease`.
    pub fn new(node: &Node, lease: NodeLease, store: Arc<EtcdStore>, fences: Arc<Fences>) -> Placer {
        Placer {
            etcd: node.etcd.clone(),
            layout: node.layout.clone(),
            me: node.me.clone(),
            lease,
            store,
            fences,
            view: node.view.clone(),
            orgs: BTreeSet::new(),
            orgs_read: None,
            first_seen: HashMap::new(),
            last_read: None,
            owners: HashMap::new(),
            live: Vec::new(),
        }
    }

    /// One pass: reads the live nodes and the claims, drops the orgs whose
    /// claim this node lost, takes the orgs nobody serves that prefer it,
    /// and hands on those that prefer another node settled in the cluster.
    /// Returns the orgs taken and given. An etcd error ends the pass early
    /// (the next one retries); nothing is given or taken on a partial view.
    pub async fn pass(&mut self, running: &Running) -> (Vec<OrgName>, Vec<OrgName>) {
        // Fences set before the claims are read are fences of claims the read sees.
        let before = self.fences.all();
        let Some(seen) = self.observe().await else {
            return (Vec::new(), Vec::new());
        };
        running.drop_orgs(self.lost(before, &seen.claims)).await;
        let claimed = self.claim_wanted(&seen).await;
        self.live = seen.live.clone();
        let took = self.adopt(running, claimed).await;
        self.owners = seen.claims.iter().map(|(org, c)| (org.clone(), c.owner.node.clone())).collect();
        let gave = self.give(running, &seen).await;
        (took, gave)
    }

    /// Reads the cluster (the orgs' list too, every `ORGS_EVERY` while it
    /// changes), notes when each live node was first seen, and updates the
    /// view the broker routes with.
    async fn observe(&mut self) -> Option<Seen> {
        let ((nodes, claims), changed) = self.read().await?;
        if changed && self.orgs_read.is_none_or(|at| at.elapsed() >= ORGS_EVERY) {
            let store = self.store.clone();
            if let Ok(Ok(orgs)) = tokio::task::spawn_blocking(move || store.org_names()).await {
                self.orgs = orgs;
                self.orgs_read = Some(Instant::now());
            }
        }
        self.orgs.extend(claims.keys().filter_map(|o| OrgName::new(o).ok()));
        let now = Instant::now();
        self.first_seen.retain(|k, _| nodes.iter().any(|(n, l)| (&n.node, *l) == (&k.0, k.1)));
        for (n, l) in &nodes {
            self.first_seen.entry((n.node.clone(), *l)).or_insert(now);
        }
        let live = nodes.iter().map(|(n, _)| n.node.clone()).collect();
        let settled = self
            .first_seen
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= SETTLE)
            .map(|((n, _), _)| n.clone())
            .collect();
        let renewed = self.renewed(&nodes).await;
        self.view.set_renewed(renewed);
        self.view.update(nodes, claims.clone(), self.orgs.len());
        Some(Seen { claims, live, settled })
    }

    /// Lost: a claim this node held is gone or is another's (its lease
    /// lapsed; its validity lapsed before). Their fences are removed.
    fn lost(&self, before: Vec<(OrgName, i64)>, claims: &HashMap<String, Claimed>) -> Vec<OrgName> {
        let mut lost = Vec::new();
        for (org, fence) in before {
            if claims.get(org.as_str()).map(|c| c.fence) != Some(fence) && self.fences.remove(&org).is_some() {
                tracing::warn!(%org, "this node lost the org's claim");
                lost.push(org);
            }
        }
        lost
    }

    /// Claims orgs nobody serves that prefer this node (at most
    /// `CLAIM_BATCH`), all at once: each claim is its own create-if-absent
    /// transaction. Returns the claims won.
    async fn claim_wanted(&self, seen: &Seen) -> Vec<(OrgName, i64)> {
        let mine = |org: &OrgName| placement::preferred(org.as_str(), &seen.live) == Some(self.me.node.as_str());
        let wanted = self.orgs.iter().filter(|o| !seen.claims.contains_key(o.as_str()) && mine(o)).take(CLAIM_BATCH);
        let mut calls = tokio::task::JoinSet::new();
        for org in wanted.cloned() {
            let (etcd, layout, me, lease) = (self.etcd.clone(), self.layout.clone(), self.me.clone(), self.lease);
            calls.spawn(async move {
                let claimed = ownership::claim(&etcd, &layout, org.as_str(), &me, lease).await;
                (org, claimed)
            });
        }
        let mut claimed = Vec::new();
        while let Some(done) = calls.join_next().await {
            match done {
                Ok((org, Ok(Some(fence)))) => claimed.push((org, fence)),
                Ok((_, Ok(None))) => {}
                Ok((org, Err(e))) => tracing::debug!(%org, "claiming: {e}"),
                Err(e) => tracing::debug!("claiming: {e}"),
            }
        }
        claimed
    }

    /// The leases of the nodes that renewed lately (this node's own: its
    /// validity speaks for it), asked of etcd all at once within one call's
    /// bound; a node etcd did not answer for is left out.
    async fn renewed(&self, nodes: &[(Owner, i64)]) -> HashSet<i64> {
        let mut calls = tokio::task::JoinSet::new();
        for lease in nodes.iter().map(|(_, l)| *l).filter(|l| *l != self.lease.0) {
            let etcd = self.etcd.clone();
            calls.spawn(async move { (lease, ownership::renewed_lately(&etcd, lease).await) });
        }
        let mut renewed = HashSet::from([self.lease.0]);
        while let Some(done) = calls.join_next().await {
            if let Ok((lease, Some(true))) = done {
                renewed.insert(lease);
            }
        }
        renewed
    }

    /// Given: orgs that prefer another live node, once it has settled and
    /// this node holds nothing for them beyond their sessions (their
    /// takeover's hold is over: an org taken over here stays at least a
    /// lease TTL and the grace, so it does not move back while seats are
    /// held for its runners). Ceilings first, written down to the sessions
    /// held, then the fences (nothing more is admitted for them here), then
    /// their connections and memory, then their claims.
    async fn give(&self, running: &Running, seen: &Seen) -> Vec<OrgName> {
        let mut gave = Vec::new();
        for (org, fence) in self.fences.all() {
            let Some(to) = placement::preferred(org.as_str(), &seen.live) else { continue };
            let held = seen.claims.get(org.as_str()).map(|c| c.fence) == Some(fence);
            if to != self.me.node && held && seen.settled.iter().any(|n| n == to) && !running.holding(&org) {
                gave.push((org, fence));
            }
        }
        if gave.is_empty() {
            return Vec::new();
        }
        let orgs: Vec<OrgName> = gave.iter().map(|(o, _)| o.clone()).collect();
        let written = running
            .write_down(&orgs, || {
                for org in &orgs {
                    self.fences.remove(org);
                }
            })
            .await;
        tracing::info!(
            orgs = orgs.len(),
            ceilings = written,
            "handing orgs on, ceilings written down to their sessions"
        );
        running.drop_orgs(orgs.clone()).await;
        for (org, fence) in &gave {
            if let Err(e) = ownership::release(&self.etcd, &self.layout, org.as_str(), *fence).await {
                tracing::warn!(%org, "releasing the org's claim (it lapses with this node's lease otherwise): {e}");
            }
        }
        orgs
    }

    /// The live nodes and every claim, and whether anything changed since
    /// the last pass. etcd's revision moves with every write (a lease's
    /// expiry too): while it stands still, the last read is reused, so an
    /// idle cluster costs etcd one small read per node per pass whatever
    /// its number of orgs. `None` on an etcd error.
    async fn read(&mut self) -> Option<(ClusterRead, bool)> {
        let revision = ownership::revision(&self.etcd, &self.layout)
            .await
            .map_err(|e| tracing::debug!("reading the cluster: {e}"))
            .ok()?;
        if let Some((at, read)) = &self.last_read {
            if *at == revision {
                return Some((read.clone(), false));
            }
        }
        let (nodes, claims) =
            match tokio::join!(ownership::nodes(&self.etcd, &self.layout), ownership::claims(&self.etcd, &self.layout))
            {
                (Ok((n, consoles)), Ok(c)) => {
                    self.view.set_consoles(consoles);
                    (n, c.into_iter().collect::<HashMap<String, Claimed>>())
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!("reading the cluster: {e}");
                    return None;
                }
            };
        // Read after the revision: a change in between shows at the next pass.
        let read = (nodes, claims);
        self.last_read = Some((revision, read.clone()));
        Some((read, true))
    }

    /// The event of `org` taken by this node under `fence`: from whom (if
    /// this node saw its claim), handed on by a node still live or taken
    /// over from one gone.
    fn moved(&self, org: &OrgName, fence: i64) -> crate::core::Event {
        let previous = self.owners.get(org.as_str()).filter(|n| **n != self.me.node).cloned();
        let handed = previous.as_ref().is_some_and(|n| self.live.contains(n));
        let body = crate::core::EventBody::OrgMoved { node: self.me.node.clone(), previous, handed, fence };
        crate::core::Event { org: org.clone(), seq: 0, at: crate::core::Millis(now_ms()), body }
    }

    /// Loads the records of orgs just claimed (removing the counts the node
    /// that handed them on wrote, `load_and_clear`) and serves them; on
    /// etcd trouble gives the claims back (another pass, here or elsewhere,
    /// takes them again). Returns the orgs now served.
    pub async fn adopt(&self, running: &Running, claimed: Vec<(OrgName, i64)>) -> Vec<OrgName> {
        if claimed.is_empty() {
            return Vec::new();
        }
        let names: Vec<OrgName> = claimed.iter().map(|(o, _)| o.clone()).collect();
        let (store, fences) = (self.store.clone(), claimed.clone());
        let loaded = tokio::task::spawn_blocking(move || load_and_clear(&store, &names, &fences)).await;
        match loaded {
            Ok(Ok(loaded)) => {
                let fences: HashMap<OrgName, i64> = claimed.into_iter().collect();
                let (mut took, mut raised) = (Vec::new(), Vec::new());
                for (org, records) in loaded {
                    let ceilings = running.adopt(&org, records);
                    if let Some(fence) = fences.get(&org) {
                        self.fences.set(&org, *fence);
                        took.push((org, *fence));
                        raised.extend(ceilings);
                    }
                }
                running.write_held(raised).await;
                running.tell(took.iter().map(|(org, fence)| self.moved(org, *fence)).collect()).await;
                took.into_iter().map(|(org, _)| org).collect()
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(_)) => String::new(),
                };
                tracing::warn!("loading the records of orgs claimed: {why}; giving the claims back");
                for (org, fence) in claimed {
                    let _ = ownership::release(&self.etcd, &self.layout, org.as_str(), fence).await;
                }
                Vec::new()
            }
        }
    }
}

/// The records of `orgs`, with the counts the node that handed each on
/// wrote (`Record::Stopped`) removed under its claim's fence before it is
/// served, so its hold may trust them (`EtcdStore::clear_stopped`). A
/// claim found gone is trouble like any other: the claims go back.
fn load_and_clear(
    store: &EtcdStore,
    orgs: &[OrgName],
    fences: &[(OrgName, i64)],
) -> Result<Vec<(OrgName, Vec<Record>)>, crate::store::StoreError> {
    let loaded = store.load_orgs(orgs)?;
    for (org, records) in &loaded {
        let fence = fences.iter().find(|(o, _)| o == org).map(|(_, f)| *f);
        if !fence.is_some_and(|f| store.clear_stopped(org, f, records).unwrap_or(false)) {
            return Err(crate::store::StoreError::Fenced);
        }
    }
    Ok(loaded)
}

/// The wall clock in Unix milliseconds (the node has no broker clock of
/// its own; an event's time is informative).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
