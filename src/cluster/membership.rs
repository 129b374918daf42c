//! Which nodes are in the cluster: each node announces itself under
//! `PREFIX/nodes/NAME` (its advertised address) bound to a lease of its
//! own, renewed every second whatever its role, so a node that dies or is
//! cut off from etcd drops out of the list within `TTL`. The list, with
//! which node holds the claim, is refreshed every second and kept here
//! for `nodes` and `status` to read without an etcd round trip.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::etcd::Etcd;
use super::ownership::Owner;
use super::store::Layout;
use crate::proto::NodeInfo;

/// How long a node's announcement outlives its last renewal.
pub const TTL: Duration = Duration::from_secs(3);

/// How often a node renews its announcement and re-reads the list.
pub const EVERY: Duration = Duration::from_secs(1);

/// The cluster's nodes as last read from etcd.
#[derive(Debug, Default)]
pub struct Membership {
    nodes: Mutex<Vec<NodeInfo>>,
}

impl Membership {
    /// The nodes, by name.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.lock().clone()
    }
}

/// Announces `me` and refreshes `view` until the task is aborted; then the
/// announcement lapses within `TTL` (a node leaving cleanly revokes it).
pub async fn announce(etcd: Arc<Etcd>, layout: Layout, me: Owner, view: Arc<Membership>, lease: Arc<Mutex<i64>>) {
    loop {
        let current = *lease.lock();
        let alive = match current {
            0 => false,
            id => matches!(etcd.keep_alive(id).await, Ok(Some(_))),
        };
        if !alive {
            // First time, or the lease lapsed (etcd was out of reach): anew.
            if let Ok((id, _)) = etcd.grant(TTL).await {
                if etcd.put(&layout.node(&me.node), me.advertise.as_bytes(), Some(id)).await.is_ok() {
                    *lease.lock() = id;
                }
            }
        }
        if let Ok(list) = read(&etcd, &layout).await {
            *view.nodes.lock() = list;
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Every announced node, and whether it holds the claim.
async fn read(etcd: &Etcd, layout: &Layout) -> Result<Vec<NodeInfo>, super::etcd::EtcdError> {
    let owner = super::ownership::owner(etcd, layout).await?;
    let prefix = layout.nodes();
    let (kvs, _) = etcd.range(&prefix, true).await?;
    let mut nodes: Vec<NodeInfo> = kvs
        .iter()
        .map(|kv| {
            let name = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            let serving = owner.as_ref().is_some_and(|o| o.node == name);
            NodeInfo { name, advertise: String::from_utf8_lossy(&kv.value).into_owned(), serving }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}
