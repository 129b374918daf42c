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
use crate::cluster::store::{EtcdStore, Fences, Layout, LOAD_CONCURRENCY};
use crate::core::{Change, OrgName, Record};
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

    /// Takes the orgs just claimed: loads their records and, for each,
    /// holds its seats in memory (`Running::adopt`), commits what that hold
    /// must have durable under the claim (`serve_written`), and only then
    /// sets its fence, so nothing is admitted for it before a later owner
    /// would hold as much. An org whose commit failed is forgotten and its
    /// claim given back, as are all of them if the records could not be
    /// read (another pass, here or elsewhere, takes them again). Returns
    /// the orgs now served.
    pub async fn adopt(&self, running: &Running, claimed: Vec<(OrgName, i64)>) -> Vec<OrgName> {
        if claimed.is_empty() {
            return Vec::new();
        }
        let Some(loaded) = self.load(&claimed).await else {
            self.give_back(claimed).await;
            return Vec::new();
        };
        let fences: HashMap<OrgName, i64> = claimed.into_iter().collect();
        let held = loaded.into_iter().filter_map(|(org, records)| {
            let fence = *fences.get(&org)?;
            let to_write = running.adopt(&org, records);
            Some((org, fence, to_write))
        });
        let store = self.store.clone();
        let commit = move |org, fence, changes| commit_claimed(store.clone(), org, fence, changes);
        let (took, refused) = serve_written(held.collect(), &self.fences, commit).await;
        if !refused.is_empty() {
            running.drop_orgs(refused.iter().map(|(o, _)| o.clone()).collect()).await;
            self.give_back(refused).await;
        }
        running.tell(took.iter().map(|(org, fence)| self.moved(org, *fence)).collect()).await;
        took.into_iter().map(|(org, _)| org).collect()
    }

    /// The records of the orgs `claimed`, or `None` (logged) on etcd trouble.
    async fn load(&self, claimed: &[(OrgName, i64)]) -> Option<Vec<(OrgName, Vec<Record>)>> {
        let names: Vec<OrgName> = claimed.iter().map(|(o, _)| o.clone()).collect();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.load_orgs(&names)).await {
            Ok(Ok(loaded)) => Some(loaded),
            Ok(Err(e)) => Self::failed(e.to_string()),
            Err(e) => Self::failed(e.to_string()),
        }
    }

    fn failed<T>(why: String) -> Option<T> {
        tracing::warn!("loading the records of orgs claimed: {why}; giving the claims back");
        None
    }

    /// Gives the claims back (failures only logged: a claim not deleted
    /// lapses with this node's lease, or is dropped as lost).
    async fn give_back(&self, claims: Vec<(OrgName, i64)>) {
        for (org, fence) in claims {
            if let Err(e) = ownership::release(&self.etcd, &self.layout, org.as_str(), fence).await {
                tracing::debug!(%org, "giving the claim back: {e}");
            }
        }
    }
}

/// An org just claimed, its claim's revision (its fence to be), and what
/// its hold must have durable before it is served.
type Held = (OrgName, i64, Vec<Change>);

/// Commits each org's hold with `commit` (under its claim, at most
/// `LOAD_CONCURRENCY` orgs at once) and sets the fence of each written only
/// once its commit returned: from then on it is served. Returns the orgs
/// served and those refused (the claim gone, or etcd trouble: logged).
async fn serve_written<F, W>(held: Vec<Held>, fences: &Fences, commit: F) -> (Vec<(OrgName, i64)>, Vec<(OrgName, i64)>)
where
    F: Fn(OrgName, i64, Vec<Change>) -> W,
    W: std::future::Future<Output = Result<bool, String>> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(LOAD_CONCURRENCY));
    let mut calls = tokio::task::JoinSet::new();
    for (org, fence, changes) in held {
        let (limit, written) = (limit.clone(), commit(org.clone(), fence, changes));
        calls.spawn(async move {
            let _turn = limit.acquire_owned().await;
            (org, fence, written.await)
        });
    }
    let (mut took, mut refused) = (Vec::new(), Vec::new());
    while let Some(done) = calls.join_next().await {
        // A task never panics: the blocking call's panic comes back as an error.
        let Ok((org, fence, written)) = done else { continue };
        match written {
            Ok(true) => {
                fences.set(&org, fence);
                took.push((org, fence));
            }
            Ok(false) => refuse(&mut refused, org, fence, "its claim is gone"),
            Err(why) => refuse(&mut refused, org, fence, &why),
        }
    }
    (took, refused)
}

fn refuse(refused: &mut Vec<(OrgName, i64)>, org: OrgName, fence: i64, why: &str) {
    tracing::warn!(%org, "the seats a takeover holds could not be written ({why}): giving the org back");
    refused.push((org, fence));
}

/// Commits `changes` under `org`'s claim created at `fence`, off the async
/// threads (`EtcdStore::commit_claimed`); nothing to write needs no call.
async fn commit_claimed(store: Arc<EtcdStore>, org: OrgName, fence: i64, changes: Vec<Change>) -> Result<bool, String> {
    if changes.is_empty() {
        return Ok(true);
    }
    match tokio::task::spawn_blocking(move || store.commit_claimed(&org, fence, &changes)).await {
        Ok(written) => written.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The wall clock in Unix milliseconds (the node has no broker clock of
/// its own; an event's time is informative).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::core::PoolId;

    #[tokio::test]
    async fn an_org_taken_over_is_served_only_once_its_hold_is_written_under_its_claim() {
        let fences = Arc::new(Fences::default());
        let org = |name: &str| OrgName::new(name).unwrap();
        let raised =
            |name: &str| vec![Change::Put(Record::Ceiling { org: org(name), pool: PoolId::KRE_DEFAULT, seats: 4 })];
        let held = vec![(org("acme"), 7, raised("acme")), (org("gone"), 8, raised("gone")), (org("idle"), 9, vec![])];
        // What each commit saw of its org's fence, as it was written.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let commit = |o: OrgName, _, _| {
            let (seen, fences) = (seen.clone(), fences.clone());
            async move {
                tokio::task::yield_now().await;
                // As the write completes: a fence set before it is awaited shows.
                seen.lock().unwrap().push((o.clone(), fences.get(&o)));
                Ok(o.as_str() != "gone")
            }
        };
        let (mut took, refused) = serve_written(held, &fences, commit).await;
        took.sort();
        assert_eq!(took, [(org("acme"), 7), (org("idle"), 9)]);
        assert_eq!(refused, [(org("gone"), 8)], "its claim went before its hold was written");
        assert!(seen.lock().unwrap().iter().all(|(_, fence)| fence.is_none()), "no fence before the write: {seen:?}");
        let mut served = fences.all();
        served.sort();
        assert_eq!(served, took, "the org whose hold was not written is not served");
    }
}
