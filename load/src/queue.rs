//! `queue`: R runners wait (`Wait`) for a full pool of quota Q; seats are
//! then freed one at a time, and each must go to the head waiter at once.
//!
//! Measures the hand-off: from the moment a holder's `Release` is sent to
//! the moment the waiter it admitted reads its `Leased` answer. Releases
//! are paced (one every `INTERVAL`), so each admission pairs with the
//! release just before it. Each admitted waiter becomes a holder, released
//! in turn later, so the queue stays about R deep throughout.
//!
//! Checks: every release admitted exactly one waiter, in queue order (the
//! positions the `Queued` notices gave), never above the quota, and the
//! queue empties when the waiters go away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use license_broker::client::Client;
use license_broker::proto::Notice;
use license_broker::value::{PoolId, SessionId};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::report::{Errors, Lat, Report};
use crate::scenarios::Params;
use crate::target::{LoadOrg, Target};

/// Time between two paced releases: long enough that one hand-off is over
/// before the next release, so each admission pairs with one release.
pub(crate) const INTERVAL: Duration = Duration::from_millis(3);

/// A seat someone holds, to release later.
pub(crate) struct Held {
    pub client: Arc<Client>,
    pub session: SessionId,
}

/// An admission as the waiter saw it.
struct Admitted {
    at: Instant,
    nonce: u128,
}

/// What the waiters share: the admissions they saw, the errors they met.
type Shared<T> = Arc<Mutex<T>>;

pub async fn run(target: &Target, p: &Params) -> Result<Report> {
    let org = target.setup_orgs(1, p.quota).await?.remove(0);
    let conns = connect(target, &org, p.connections).await?;
    let (held_tx, mut held_rx) = mpsc::unbounded_channel::<Held>();
    fill(&conns[0], &org, p.quota, &held_tx).await?;

    // R waiters, spread over the connections; their positions come as notices.
    let positions = Shared::default();
    let readers = spawn_readers(&conns, &positions);
    let (admitted, errors) = (Shared::default(), Shared::default());
    let waiters = spawn_waiters(&conns, &org, p, &held_tx, (&admitted, &errors));
    let depth = settle_depth(target, &org, p.runners as u32).await?;

    // Paced releases: each frees one seat for the head waiter.
    let releases = (p.runners / 2).min((p.duration.as_micros() / INTERVAL.as_micros()) as usize).max(1);
    let paced = pace_releases(target, &org, releases, &mut held_rx, &errors).await?;
    leave(waiters.into_iter().chain(readers).collect(), conns, (held_rx, held_tx)).await;
    let after = settle_empty(target, &org).await?;

    let admitted = std::mem::take(&mut *admitted.lock());
    let positions = std::mem::take(&mut *positions.lock());
    let errors = std::mem::take(&mut *errors.lock());
    report(Outcome { p, depth, admitted, positions, errors, paced, after })
}

/// Fills the pool of quota `quota` from one connection.
async fn fill(holder: &Arc<Client>, org: &LoadOrg, quota: u32, held: &mpsc::UnboundedSender<Held>) -> Result<()> {
    let fill: Vec<_> = (0..quota as u128).map(|n| acquire_req(org, u128::MAX - n)).collect();
    for r in holder.call_batch(fill).await {
        let session = leased(r.context("filling the pool")?)?;
        let _ = held.send(Held { client: holder.clone(), session });
    }
    Ok(())
}

/// R waiters (`Wait`), spread over the connections; each admitted one
/// becomes a holder, sent to be released in turn.
fn spawn_waiters(
    conns: &[Arc<Client>],
    org: &LoadOrg,
    p: &Params,
    held_tx: &mpsc::UnboundedSender<Held>,
    (admitted, errors): (&Shared<Vec<Admitted>>, &Shared<Errors>),
) -> Vec<JoinHandle<()>> {
    let wait = p.duration + Duration::from_secs(60);
    let mut waiters = Vec::with_capacity(p.runners);
    for n in 0..p.runners as u128 {
        let client = conns[n as usize % conns.len()].clone();
        let (org, held_tx, admitted, errors) = (org.clone(), held_tx.clone(), admitted.clone(), errors.clone());
        waiters.push(tokio::spawn(async move {
            match client.wait(&org.org, PoolId::KRE_DEFAULT, &org.machine, n, wait).await {
                Ok(lease) => {
                    admitted.lock().push(Admitted { at: Instant::now(), nonce: n });
                    let _ = held_tx.send(Held { client, session: lease.session });
                }
                Err(e) => errors.lock().add(&e),
            }
        }));
    }
    waiters
}

/// The paced releases of `queue` and `lanes`, and the pool they left.
pub(crate) struct Paced {
    /// When each release was sent, in order.
    pub released: Vec<Instant>,
    /// The highest in-use sampled (every 256 releases, and once after).
    pub highest: u32,
    /// In use once the last hand-off had landed.
    pub in_use_mid: u32,
    pub elapsed: Duration,
}

/// Releases `releases` held seats, one every `INTERVAL`, each the next
/// holder in admission order; gives up when none comes within 5 s.
pub(crate) async fn pace_releases(
    target: &Target,
    org: &LoadOrg,
    releases: usize,
    held_rx: &mut mpsc::UnboundedReceiver<Held>,
    errors: &Mutex<Errors>,
) -> Result<Paced> {
    let mut released = Vec::with_capacity(releases);
    let mut highest = 0;
    let start = Instant::now();
    for i in 0..releases {
        let next = tokio::time::timeout(Duration::from_secs(5), held_rx.recv()).await;
        let Ok(Some(h)) = next else {
            errors.lock().add_named("NO_ADMISSION_WITHIN_5S");
            break;
        };
        released.push(Instant::now());
        if let Err(e) = h.client.release(h.session).await {
            errors.lock().add(&e);
        }
        tokio::time::sleep(INTERVAL).await;
        if i % 256 == 0 {
            highest = highest.max(target.pools(std::slice::from_ref(org)).await?[0].in_use);
        }
    }
    let elapsed = start.elapsed();
    // Let the last hand-off land, then read the pool once more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let in_use_mid = target.pools(std::slice::from_ref(org)).await?[0].in_use;
    Ok(Paced { released, highest: highest.max(in_use_mid), in_use_mid, elapsed })
}

/// Everyone leaves: closing the connections ends the waits and the seats.
/// The held seats' channel goes first, so each connection's last handle
/// is the one closed here.
pub(crate) async fn leave(
    tasks: Vec<JoinHandle<()>>,
    conns: Vec<Arc<Client>>,
    held: (mpsc::UnboundedReceiver<Held>, mpsc::UnboundedSender<Held>),
) {
    for task in &tasks {
        task.abort();
    }
    drop(held);
    for task in tasks {
        let _ = task.await;
    }
    for c in conns {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
}

struct Outcome<'a> {
    p: &'a Params,
    depth: u32,
    admitted: Vec<Admitted>,
    positions: HashMap<u128, u32>,
    errors: Errors,
    paced: Paced,
    after: (u32, u32),
}

fn report(o: Outcome<'_>) -> Result<Report> {
    let mut admitted = o.admitted;
    admitted.sort_by_key(|a| a.at);
    let released = &o.paced.released;
    let mut lat = Lat::new();
    for (rel, adm) in released.iter().zip(&admitted) {
        lat.record(adm.at.saturating_duration_since(*rel));
    }
    let order: Vec<u32> = admitted.iter().filter_map(|a| o.positions.get(&a.nonce).copied()).collect();
    let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();

    let mut r = Report::new("queue", "broker");
    r.duration_s = o.paced.elapsed.as_secs_f64();
    r.param("runners", o.p.runners);
    r.param("quota", o.p.quota);
    r.param("connections", o.p.connections);
    r.param("release_interval_ms", INTERVAL.as_millis() as u64);
    r.throughput.insert("releases".into(), released.len() as f64);
    r.throughput.insert("admitted".into(), admitted.len() as f64);
    r.latency("handoff", &lat);
    r.extra("queue_depth_before", o.depth);
    r.errors = o.errors.0.clone();
    r.check(
        "all waiters queued",
        o.depth as usize == o.p.runners && o.positions.len() == o.p.runners,
        format!("status said {} waiting, {} positions told, {} runners", o.depth, o.positions.len(), o.p.runners),
    );
    r.check(
        "each release admitted exactly one waiter",
        admitted.len() == released.len(),
        format!("{} releases, {} admitted", released.len(), admitted.len()),
    );
    r.check(
        "admitted in queue order",
        inversions == 0 && order.len() == admitted.len(),
        format!("{inversions} out-of-order admissions of {}", order.len()),
    );
    let (highest, mid) = (o.paced.highest, o.paced.in_use_mid);
    r.check(
        "never above the quota",
        highest <= o.p.quota && mid == o.p.quota,
        format!("highest in-use sampled {highest}, {mid} after the releases (quota {})", o.p.quota),
    );
    r.check("no errors", o.errors.0.is_empty(), format!("{:?}", o.errors.0));
    r.check(
        "waiters that left freed everything",
        o.after == (0, 0),
        format!("in_use {}, waiting {} after every client closed", o.after.0, o.after.1),
    );
    Ok(r)
}

pub(crate) async fn connect(target: &Target, org: &LoadOrg, n: usize) -> Result<Vec<Arc<Client>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Arc::new(target.client(&org.key).await?));
    }
    Ok(out)
}

/// One reader per connection, noting each waiter's position as told.
pub(crate) fn spawn_readers(conns: &[Arc<Client>], positions: &Shared<HashMap<u128, u32>>) -> Vec<JoinHandle<()>> {
    conns.iter().map(|c| tokio::spawn(read_positions(c.clone(), positions.clone()))).collect()
}

fn acquire_req(org: &LoadOrg, nonce: u128) -> license_broker::proto::Req {
    use license_broker::value::Nonce;
    license_broker::proto::Req::Acquire {
        org: org.org.clone(),
        pool: PoolId::KRE_DEFAULT,
        machine: org.machine.clone(),
        nonce: Nonce(nonce),
    }
}

fn leased(r: license_broker::proto::Resp) -> Result<SessionId> {
    use license_broker::proto::Resp;
    match r {
        Resp::Leased { session, .. } | Resp::Admitted { session, .. } => Ok(session),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

async fn read_positions(client: Arc<Client>, positions: Arc<Mutex<HashMap<u128, u32>>>) {
    while let Some(n) = client.next_notice().await {
        if let Notice::Queued { nonce, position } = n {
            positions.lock().insert(nonce.0, position);
        }
    }
}

/// Waits (at most 30 s) until the pool's queue is `want` deep; returns the depth seen last.
pub(crate) async fn settle_depth(target: &Target, org: &LoadOrg, want: u32) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let depth = target.queue(org).await?;
        if depth >= want || Instant::now() >= deadline {
            return Ok(depth);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 10 s) until the pool is empty; returns (in_use, waiting) seen last.
pub(crate) async fn settle_empty(target: &Target, org: &LoadOrg) -> Result<(u32, u32)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let in_use = target.pools(std::slice::from_ref(org)).await?[0].in_use;
        let waiting = target.queue(org).await?;
        if (in_use, waiting) == (0, 0) || Instant::now() >= deadline {
            return Ok((in_use, waiting));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
