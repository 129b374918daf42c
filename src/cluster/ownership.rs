//! Which node serves which org: each node holds one etcd lease for its
//! life in the cluster (its announcement under `nodes/NAME` is bound to
//! it), and claims an org by creating `claims/ORG` under that lease, only
//! if absent. A claim's create revision is the fence every durable write
//! of the org's records compares (`store`); the lease's keep-alives tell
//! the node how long it may go on admitting for its orgs (`Validity`).
//! When the lease lapses, every claim of the node goes with it, at once.
//!
//! The safety argument, in full in docs/CLUSTER.md: etcd deletes a claim
//! no sooner than one TTL after it last renewed the lease, and the lease's
//! renewal reached etcd after this node sent it; so measured from the
//! *send*, the claim lasts at least one TTL. The node stops admitting and
//! renewing a margin before that (`MARGIN`), on its own monotonic clock,
//! which keeps running while the process is paused: a node woken from a
//! SIGSTOP past its validity refuses before it reads a single request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::etcd::{Compare, Etcd, EtcdError, Op};
use super::store::Layout;

/// The TTL of the owner's etcd lease: etcd's smallest with its default
/// election timeout (it rounds smaller ones up to this).
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// How often the owner renews its lease: four times a TTL, so three
/// renewals in a row may fail before it stops serving.
pub const KEEPALIVE_EVERY: Duration = Duration::from_millis(500);

/// How long before the earliest moment etcd could drop the claim the owner
/// stops serving. It covers clock-rate differences (ppm) and the coarse
/// clock's resolution (a few ms) with room to spare.
pub const MARGIN: Duration = Duration::from_millis(400);

/// Milliseconds on the monotonic clock since the first call (it counts
/// while the process is stopped, and a read costs a vDSO call).
pub fn monotonic_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    // Starts at 1, so that 0 always means "never valid".
    let epoch = EPOCH.get_or_init(|| {
        let now = std::time::Instant::now();
        now.checked_sub(Duration::from_millis(1)).unwrap_or(now)
    });
    epoch.elapsed().as_millis() as u64
}

/// Until when (monotonic ms) this node may admit and renew as the owner.
#[derive(Debug, Default)]
pub struct Validity(AtomicU64);

impl Validity {
    /// Whether the node may still serve now.
    pub fn valid(&self) -> bool {
        self.valid_at(monotonic_ms())
    }

    /// Whether the node may serve at `now_ms` (monotonic).
    pub fn valid_at(&self, now_ms: u64) -> bool {
        // Relaxed: the value only moves forward while owned and to 0 once
        // lost; a stale read is at most one renewal old, which `MARGIN` covers.
        now_ms < self.0.load(Ordering::Relaxed)
    }

    /// A renewal sent at `sent_ms` was granted `ttl`: serve until its margin.
    pub fn renewed(&self, sent_ms: u64, ttl: Duration) {
        let until = sent_ms + (ttl.saturating_sub(MARGIN)).as_millis() as u64;
        self.0.fetch_max(until, Ordering::Relaxed);
    }

    /// How long the node may still serve from now (zero once lapsed).
    pub fn left(&self) -> Duration {
        // Relaxed: as `valid_at`.
        Duration::from_millis(self.0.load(Ordering::Relaxed).saturating_sub(monotonic_ms()))
    }

    /// Stops serving at once (the lease is gone, or the node steps down).
    pub fn lose(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// This node's lease: its announcement and every claim it makes are bound to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeLease(pub i64);

/// Who holds a claim (or announces itself), as its value says: the node's
/// name and the address clients reach it at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The node's name.
    pub node: String,
    /// `HOST:PORT` for clients.
    pub advertise: String,
}

impl Owner {
    /// The claim's value.
    pub fn encode(&self) -> Vec<u8> {
        format!("{}\n{}", self.node, self.advertise).into_bytes()
    }

    /// Reads a claim's value (`None` if it is not one).
    pub fn decode(v: &[u8]) -> Option<Owner> {
        let s = std::str::from_utf8(v).ok()?;
        let (node, advertise) = s.split_once('\n')?;
        Some(Owner { node: node.to_string(), advertise: advertise.to_string() })
    }
}

/// An org's claim as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// Who holds it.
    pub owner: Owner,
    /// The lease it is bound to (a node's current lease, or a previous
    /// run's that has not lapsed yet).
    pub lease: i64,
    /// Its create revision: the fence.
    pub fence: i64,
}

/// Joins the cluster: a new lease, and `me` announced under it. On
/// success `validity` is set from the grant.
pub async fn join(etcd: &Etcd, layout: &Layout, me: &Owner, validity: &Validity) -> Result<NodeLease, EtcdError> {
    let sent = monotonic_ms();
    let (lease, ttl) = etcd.grant(LEASE_TTL).await?;
    if let Err(e) = etcd.put(&layout.node(&me.node), &me.encode(), Some(lease)).await {
        let _ = etcd.revoke(lease).await;
        return Err(e);
    }
    validity.renewed(sent, ttl);
    Ok(NodeLease(lease))
}

/// Claims `org` under this node's lease if nobody holds it: its fence, or
/// `None` if another claim is there.
pub async fn claim(
    etcd: &Etcd,
    layout: &Layout,
    org: &str,
    me: &Owner,
    lease: NodeLease,
) -> Result<Option<i64>, EtcdError> {
    let key = layout.claim(org);
    let done = etcd
        .txn(
            &[Compare::CreateRevision(key.clone(), 0)],
            &[Op::Put(key.clone(), me.encode(), Some(lease.0)), Op::Get(key)],
            &[],
        )
        .await?;
    let read = done.reads.first().and_then(|kvs| kvs.first());
    Ok(read.filter(|_| done.succeeded).map(|kv| kv.create_revision))
}

/// Gives up the claim on an org created at `fence` (if it is still that
/// claim), so another node may take the org at once.
pub async fn release(etcd: &Etcd, layout: &Layout, org: &str, fence: i64) -> Result<bool, EtcdError> {
    let key = layout.claim(org);
    let done = etcd.txn(&[Compare::CreateRevision(key.clone(), fence)], &[Op::Delete(key)], &[]).await?;
    Ok(done.succeeded)
}

/// Every org's claim, by org name.
pub async fn claims(etcd: &Etcd, layout: &Layout) -> Result<Vec<(String, Claimed)>, EtcdError> {
    let prefix = layout.claims();
    let end = super::etcd::prefix_end(&prefix);
    let (mut start, mut out) = (prefix.clone(), Vec::new());
    loop {
        let (kvs, more) = etcd.range_in(&start, &end, super::store::LOAD_PAGE, false).await?;
        for kv in &kvs {
            let org = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            if let Some(owner) = Owner::decode(&kv.value) {
                out.push((org, Claimed { owner, lease: kv.lease, fence: kv.create_revision }));
            }
        }
        match (more, kvs.last()) {
            (true, Some(last)) => {
                start = last.key.clone();
                start.push(0);
            }
            _ => return Ok(out),
        }
    }
}

/// etcd's current revision (it moves with every write and every expiry),
/// read with one small range.
pub async fn revision(etcd: &Etcd, layout: &Layout) -> Result<i64, EtcdError> {
    let (_, revision) = etcd.range(&layout.claims(), false).await?;
    Ok(revision)
}

/// Every announced node (a node's announcement lives as long as its
/// lease), and each node's console address, by node name.
pub async fn nodes(etcd: &Etcd, layout: &Layout) -> Result<(Vec<(Owner, i64)>, HashMap<String, String>), EtcdError> {
    let prefix = layout.nodes();
    let (kvs, _) = etcd.range(&prefix, true).await?;
    let mut consoles = HashMap::new();
    for kv in &kvs {
        let name = kv.key.strip_prefix(prefix.as_slice()).and_then(|k| k.strip_suffix(b"/console"));
        if let (Some(name), Ok(url)) = (name, std::str::from_utf8(&kv.value)) {
            consoles.insert(String::from_utf8_lossy(name).into_owned(), url.to_string());
        }
    }
    let nodes = kvs.iter().filter_map(|kv| Owner::decode(&kv.value).map(|o| (o, kv.lease))).collect();
    Ok((nodes, consoles))
}

/// Says where this node's console is, under its lease.
pub async fn announce_console(
    etcd: &Etcd,
    layout: &Layout,
    name: &str,
    url: &str,
    lease: NodeLease,
) -> Result<(), EtcdError> {
    etcd.put(&layout.console(name), url.as_bytes(), Some(lease.0)).await.map(drop)
}

/// Keeps the node's lease alive until it is lost: renews every
/// `KEEPALIVE_EVERY`, extending `validity` from each renewal's send time.
/// Returns when the lease is gone or validity has lapsed (etcd unreachable
/// for longer than the margin allows): at the lapse itself, not when an
/// etcd call that hangs gives up, so the node closes its connections at
/// its valid-until whatever etcd does.
pub async fn keep(etcd: &Etcd, lease: NodeLease, validity: &Validity) {
    loop {
        let sent = monotonic_ms();
        let renewed = tokio::select! {
            r = etcd.keep_alive(lease.0) => Some(r),
            _ = tokio::time::sleep(validity.left()) => None,
        };
        match renewed {
            Some(Ok(Some(ttl))) => validity.renewed(sent, ttl),
            Some(Ok(None)) => {
                tracing::warn!(lease = lease.0, "this node's etcd lease is gone: it stops serving its orgs");
                validity.lose();
                return;
            }
            Some(Err(e)) => tracing::warn!("renewing this node's etcd lease: {e}"),
            None => {}
        }
        if !validity.valid() {
            tracing::warn!("this node's etcd lease could not be renewed in time: it stops serving its orgs");
            return;
        }
        tokio::time::sleep(KEEPALIVE_EVERY.min(validity.left())).await;
    }
}

/// Whether a node's lease was renewed lately, as etcd's leader says: at
/// least a second left of a lease granted for `LEASE_TTL` (etcd rounds
/// the time left down to whole seconds), so renewed within the last
/// second, while a live node renews every `KEEPALIVE_EVERY`. A node whose
/// renewals stopped reaching etcd (cut off, paused) fails this about a
/// second after its last renewal, before it stops serving (`MARGIN`
/// before its lease may lapse) and well before its claims lapse: the
/// others stop sending clients there first. `None` if etcd did not say.
pub async fn renewed_lately(etcd: &Etcd, lease: i64) -> Option<bool> {
    match etcd.time_to_live(lease).await {
        Ok(Some((left, granted))) => Some(left >= 1 && left >= granted - 1),
        Ok(None) => Some(false),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_runs_from_the_send_and_is_lost_at_once() {
        let v = Validity::default();
        assert!(!v.valid(), "a node that never claimed serves nothing");
        v.renewed(monotonic_ms(), LEASE_TTL);
        assert!(v.valid());
        v.lose();
        assert!(!v.valid());
        let ttl = LEASE_TTL.as_millis() as u64;
        v.renewed(10_000, LEASE_TTL);
        assert!(v.valid_at(10_000 + ttl - MARGIN.as_millis() as u64 - 1));
        assert!(
            !v.valid_at(10_000 + ttl - MARGIN.as_millis() as u64),
            "stops a margin before etcd could drop the claim"
        );
        assert!(!v.valid_at(10_000 + ttl), "a renewal sent a TTL ago gives nothing: the claim may be gone");
    }

    #[tokio::test]
    async fn a_renewal_that_hangs_does_not_keep_the_node_past_its_valid_until() {
        // An etcd behind a link that swallows everything: it accepts, reads, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let etcd = Etcd::new(&[format!("http://{addr}")], Duration::from_secs(30)).unwrap();
        let validity = Validity::default();
        validity.renewed(monotonic_ms(), MARGIN + Duration::from_millis(300));
        let keeper = tokio::spawn(async move {
            keep(&etcd, NodeLease(1), &validity).await;
            validity.valid()
        });
        // It returns at its valid-until (300 ms), not when the call gives up (30 s).
        let valid = tokio::time::timeout(Duration::from_secs(10), keeper).await.expect("keep returned").unwrap();
        assert!(!valid, "it returned because its validity lapsed");
    }

    #[test]
    fn owner_values_round_trip() {
        let o = Owner { node: "b1".into(), advertise: "10.0.0.1:4433".into() };
        assert_eq!(Owner::decode(&o.encode()), Some(o));
        assert_eq!(Owner::decode(b"no newline"), None);
    }
}
