//! `lanes`: `queue` with a lane. Half the pool's seats (quota Q) are
//! reserved for `pipeline=release`, and every other one of the R waiters
//! carries that label; seats are then freed one at a time, paced as in
//! `queue`. A reserved seat freed must go to the lane's head, a shared one
//! to the head of the whole queue, each at once.
//!
//! Measures the hand-off as `queue` does: from a holder's `Release` sent to
//! the admitted waiter's `Leased` read. Releases stop at R/4, so the lane
//! never runs dry (a reserved seat freed with nobody in its lane admits
//! nobody, by design, and would unpair the measure).
//!
//! Checks: every release admitted exactly one waiter; within each kind
//! (labelled, not) in queue order; never above the quota; the queue
//! empties when the waiters go away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use license_broker::client::{Checkout, Client};
use license_broker::value::{Labels, PoolId};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::queue::{connect, leave, pace_releases, settle_depth, settle_empty, spawn_readers, Held, Paced, INTERVAL};
use crate::report::{Errors, Lat, Report};
use crate::scenarios::Params;
use crate::target::{LoadOrg, Target};

const POOL: PoolId = PoolId::KRE_DEFAULT;

fn release_label() -> Labels {
    // Invariant: a valid label, written here.
    Labels::new([("pipeline".to_string(), "release".to_string())]).expect("a valid label")
}

/// Whether waiter `n` carries the lane's label.
fn labelled(n: u128) -> bool {
    n % 2 == 1
}

pub async fn run(target: &Target, p: &Params) -> Result<Report> {
    let (quota, reserved) = (p.quota, p.quota / 2);
    let org = target.setup_orgs(1, quota).await?.remove(0);
    let conns = connect(target, &org, p.connections).await?;
    conns[0].set_reservation((&org.org, POOL), ("pipeline", "release"), reserved).await?;
    let (held_tx, mut held_rx) = mpsc::unbounded_channel::<Held>();
    fill(&conns[0], &org, quota, reserved, &held_tx).await?;

    let positions = Arc::new(Mutex::new(HashMap::<u128, u32>::new()));
    let readers = spawn_readers(&conns, &positions);
    let admitted = Arc::new(Mutex::new(Vec::<(Instant, u128)>::new()));
    let errors = Arc::new(Mutex::new(Errors::default()));
    let waiters = spawn_waiters(&conns, &org, p, &held_tx, (&admitted, &errors));
    let depth = settle_depth(target, &org, p.runners as u32).await?;

    let releases = (p.runners / 4).min((p.duration.as_micros() / INTERVAL.as_micros()) as usize).max(1);
    let paced = pace_releases(target, &org, releases, &mut held_rx, &errors).await?;
    leave(waiters.into_iter().chain(readers).collect(), conns, (held_rx, held_tx)).await;
    let after = settle_empty(target, &org).await?;
    let admitted = std::mem::take(&mut *admitted.lock());
    let positions = std::mem::take(&mut *positions.lock());
    let errors = std::mem::take(&mut *errors.lock());
    Ok(report(Outcome { p, depth, admitted, positions, errors, paced }, after))
}

/// R waiters spread over the connections, every other one carrying the
/// lane's label; each admitted one becomes a holder, released in turn.
#[allow(clippy::type_complexity)]
fn spawn_waiters(
    conns: &[Arc<Client>],
    org: &LoadOrg,
    p: &Params,
    held_tx: &mpsc::UnboundedSender<Held>,
    (admitted, errors): (&Arc<Mutex<Vec<(Instant, u128)>>>, &Arc<Mutex<Errors>>),
) -> Vec<JoinHandle<()>> {
    let wait = p.duration + Duration::from_secs(60);
    let mut waiters = Vec::with_capacity(p.runners);
    for n in 0..p.runners as u128 {
        let client = conns[n as usize % conns.len()].clone();
        let (org, held_tx, admitted, errors) = (org.clone(), held_tx.clone(), admitted.clone(), errors.clone());
        waiters.push(tokio::spawn(async move {
            let labels = if labelled(n) { release_label() } else { Labels::default() };
            let co = Checkout { org: &org.org, pool: POOL, machine: &org.machine, nonce: n, wait, labels };
            match client.checkout(&co).await {
                Ok(lease) => {
                    admitted.lock().push((Instant::now(), n));
                    let _ = held_tx.send(Held { client, session: lease.session });
                }
                Err(e) => errors.lock().add(&e),
            }
        }));
    }
    waiters
}

/// Fills the pool: its reserved seats with labelled sessions, the shared
/// ones with unlabelled ones.
async fn fill(
    c: &Arc<Client>,
    org: &LoadOrg,
    quota: u32,
    reserved: u32,
    held: &mpsc::UnboundedSender<Held>,
) -> Result<()> {
    for n in 0..quota as u128 {
        let labels = if n < u128::from(reserved) { release_label() } else { Labels::default() };
        let co = Checkout {
            org: &org.org,
            pool: POOL,
            machine: &org.machine,
            nonce: u128::MAX - n,
            wait: Duration::ZERO,
            labels,
        };
        let lease = c.checkout(&co).await.context("filling the pool")?;
        let _ = held.send(Held { client: c.clone(), session: lease.session });
    }
    Ok(())
}

struct Outcome<'a> {
    p: &'a Params,
    depth: u32,
    admitted: Vec<(Instant, u128)>,
    positions: HashMap<u128, u32>,
    errors: Errors,
    paced: Paced,
}

fn report(o: Outcome<'_>, after: (u32, u32)) -> Report {
    let mut admitted = o.admitted;
    admitted.sort_by_key(|a| a.0);
    let (released, in_use_mid, highest) = (&o.paced.released, o.paced.in_use_mid, o.paced.highest);
    let mut lat = Lat::new();
    for (rel, adm) in released.iter().zip(&admitted) {
        lat.record(adm.0.saturating_duration_since(*rel));
    }
    let inversions = |kind: bool| {
        let order: Vec<u32> =
            admitted.iter().filter(|a| labelled(a.1) == kind).filter_map(|a| o.positions.get(&a.1).copied()).collect();
        order.windows(2).filter(|w| w[0] > w[1]).count()
    };
    let lane = admitted.iter().filter(|a| labelled(a.1)).count();
    let mut r = Report::new("lanes", "broker");
    r.duration_s = o.paced.elapsed.as_secs_f64();
    r.param("runners", o.p.runners);
    r.param("quota", o.p.quota);
    r.param("reserved", o.p.quota / 2);
    r.param("connections", o.p.connections);
    r.param("release_interval_ms", INTERVAL.as_millis() as u64);
    r.throughput.insert("releases".into(), released.len() as f64);
    r.throughput.insert("admitted".into(), admitted.len() as f64);
    r.throughput.insert("admitted_from_the_lane".into(), lane as f64);
    r.latency("handoff", &lat);
    r.extra("queue_depth_before", o.depth);
    r.errors = o.errors.0.clone();
    r.check("all waiters queued", o.depth as usize == o.p.runners, format!("{} waiting of {}", o.depth, o.p.runners));
    r.check(
        "each release admitted exactly one waiter",
        admitted.len() == released.len(),
        format!("{} releases, {} admitted", released.len(), admitted.len()),
    );
    let (l, u) = (inversions(true), inversions(false));
    r.check("in queue order within each kind", l == 0 && u == 0, format!("{l} labelled, {u} unlabelled out of order"));
    r.check(
        "never above the quota",
        highest <= o.p.quota && in_use_mid == o.p.quota,
        format!("highest in-use sampled {highest}, {in_use_mid} after the releases (quota {})", o.p.quota),
    );
    r.check("no errors", o.errors.0.is_empty(), format!("{:?}", o.errors.0));
    r.check("waiters that left freed everything", after == (0, 0), format!("in_use {}, waiting {}", after.0, after.1));
    r
}
