//! `ephemeral`: R ephemeral machines (`RegisterEphemeral`) churn through a
//! pool of Q machine slots and Q seats, each registering, taking a seat and
//! giving it back, never more than Q/4 at once: a seat and a machine slot
//! are always free for the next one, once the broker has released the
//! machines whose last session ended (issue 27: CI containers with a new
//! machine id per job).
//!
//! A refused registration is retried every 10 ms for up to 5 s, as a job
//! would rather than fail, and each refusal counted. Checks: no refusal
//! for want of a machine slot (`MACHINE_LIMIT`) while seats are free, registered machines never above the slots (sampled),
//! no other error, and every ephemeral machine gone once the churn ends.
//! What is left after the churn is told apart (`Leftovers`): a registration
//! never used (its job failed after registering, which the error check
//! shows) waits one lease TTL for a first session by design; a machine
//! still held, or used and let go but still registered, fails the check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use license_broker::client::{Client, ClientError};
use license_broker::proto::ErrorCode;
use license_broker::value::{MachineId, PoolId};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::queue::connect;
use crate::report::{Errors, Lat, Report};
use crate::scenarios::Params;
use crate::target::{LoadOrg, Target};

const POOL: PoolId = PoolId::KRE_DEFAULT;

pub async fn run(target: &Target, p: &Params) -> Result<Report> {
    let slots = p.quota;
    let org = target.setup_orgs(1, slots).await?.remove(0);
    let conns = connect(target, &org, p.connections).await?;
    let workers = (slots as usize / 4).clamp(1, 256);
    let (errors, lat) = (Arc::new(Mutex::new(Errors::default())), Arc::new(Mutex::new(Lat::new())));
    let (highest, done) = (AtomicU64::new(0), AtomicU64::new(0));
    let (start, ticks) = (Instant::now(), target.cpu_ticks());
    let tasks = spawn_jobs(&conns, &org, workers, p.runners as u64, (&errors, &lat));
    let churn = async {
        for t in tasks {
            let _ = t.await;
        }
        done.store(1, Ordering::Relaxed);
    };
    tokio::join!(churn, sample(target, &org, &highest, &done));
    let elapsed = start.elapsed();
    // The broker's CPU over the churn (a spawned broker only), per machine.
    let cpu_s = ticks.zip(target.cpu_ticks()).map(|(a, b)| crate::machine::ticks_to_s(b.saturating_sub(a)));
    let left = settle_machines(target, &org).await?;
    let leftovers = Leftovers::of(target, &org).await?;
    let errors = std::mem::take(&mut *errors.lock());
    let lat = std::mem::take(&mut *lat.lock());
    let mut r = Report::new("ephemeral", "broker");
    r.duration_s = elapsed.as_secs_f64();
    r.param("machines", p.runners);
    r.param("slots", slots);
    r.param("at_once", workers);
    r.throughput.insert("machines".into(), lat.stats().count as f64);
    r.latency("register+acquire+release", &lat);
    if let Some(cpu_s) = cpu_s {
        r.extra("broker_cpu_s", cpu_s);
        r.extra("broker_cpu_us_per_machine", cpu_s * 1e6 / (p.runners.max(1) as f64));
    }
    let limit = errors.0.get("MACHINE_LIMIT").copied().unwrap_or(0);
    let high = highest.load(Ordering::Relaxed);
    r.check("no machine-slot refusal while seats are free", limit == 0, format!("{limit} MACHINE_LIMIT"));
    r.check("never above the slots", high <= u64::from(slots), format!("highest registered sampled {high} of {slots}"));
    let others: Vec<_> = errors.0.iter().filter(|(k, _)| k.as_str() != "MACHINE_LIMIT").collect();
    r.check("no other error, every job ran", others.is_empty(), format!("{others:?}"));
    r.check("every used ephemeral machine released", leftovers.released(), leftovers.say(left));
    r.errors = errors.0;
    Ok(r)
}

/// `workers` tasks over the connections, together running jobs 0 to
/// `total` once each (`one`), each job's time recorded in `lat`.
fn spawn_jobs(
    conns: &[Arc<Client>],
    org: &LoadOrg,
    workers: usize,
    total: u64,
    (errors, lat): (&Arc<Mutex<Errors>>, &Arc<Mutex<Lat>>),
) -> Vec<JoinHandle<()>> {
    let next = Arc::new(AtomicU64::new(0));
    (0..workers)
        .map(|w| {
            let (c, org, next, errors, lat) =
                (conns[w % conns.len()].clone(), org.clone(), next.clone(), errors.clone(), lat.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let began = Instant::now();
                    match one(&c, &org, i, &errors).await {
                        Ok(()) => lat.lock().record(began.elapsed()),
                        Err(e) => errors.lock().add(&e),
                    }
                }
            })
        })
        .collect()
}

/// Every ephemeral machine goes with its last session; the load org's own
/// stays. Waits (at most 10 s) for that; returns the machines seen last.
async fn settle_machines(target: &Target, org: &LoadOrg) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = target.pools(std::slice::from_ref(org)).await?[0].machines;
        if m <= 1 || Instant::now() >= deadline {
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ephemeral machines still registered after the churn, told apart.
#[derive(Default)]
struct Leftovers {
    /// Registered, never used: their job failed after registering (the
    /// error check counts it); by design they wait one lease TTL.
    never_used: u32,
    /// A session or a queued runner still on them.
    held: Vec<String>,
    /// Used, let go, and still registered: what the check is for.
    let_go: Vec<String>,
}

impl Leftovers {
    /// Reads `org`'s machines with their last use and holds (its owner's `machine list`).
    async fn of(target: &Target, org: &LoadOrg) -> Result<Leftovers> {
        let owner = target.client(&org.key).await?;
        let uses = owner.machine_uses(&org.org).await;
        owner.close().await;
        let mut out = Leftovers::default();
        for u in uses?.into_iter().filter(|u| u.ephemeral) {
            match (u.holds, u.last_use.is_some_and(|l| l > u.registered)) {
                (0, false) => out.never_used += 1,
                (0, true) => out.let_go.push(u.machine.to_string()),
                _ => out.held.push(u.machine.to_string()),
            }
        }
        Ok(out)
    }

    /// Whether every machine a job used went with its last session.
    fn released(&self) -> bool {
        self.held.is_empty() && self.let_go.is_empty()
    }

    /// The check's detail: `left` registered machines (the org's own included).
    fn say(&self, left: u32) -> String {
        let (never, held, let_go) = (self.never_used, &self.held, &self.let_go);
        format!(
            "{left} machines registered after the churn (the org's own included): {never} never used (waiting \
             one lease TTL for a first session, by design), held {held:?}, used and let go {let_go:?}"
        )
    }
}

/// Tries a refused registration is given (10 ms apart: a job's runner
/// retrying for up to 5 s), each refusal counted.
const TRIES: u32 = 500;

/// One job's machine: registered ephemeral (retried while the slots are
/// full, each refusal counted in `errors`), a seat taken and given back.
async fn one(c: &Client, org: &LoadOrg, i: u64, errors: &Mutex<Errors>) -> Result<(), ClientError> {
    // Invariant: a valid machine id, written here.
    let machine = MachineId::new(format!("eph-{i}")).expect("a valid machine id");
    for left in (0..TRIES).rev() {
        match c.register_ephemeral(&org.org, POOL, &machine).await {
            Err(e) if e.code() == Some(ErrorCode::MachineLimit) && left > 0 => {
                errors.lock().add(&e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => {
                other?;
                break;
            }
        }
    }
    let lease = c.acquire(&org.org, POOL, &machine, u128::from(i)).await?;
    c.release(lease.session).await
}

/// Samples the registered machines every 100 ms, keeping the highest,
/// until the churn is `done`.
async fn sample(target: &Target, org: &LoadOrg, highest: &AtomicU64, done: &AtomicU64) {
    while done.load(Ordering::Relaxed) == 0 {
        if let Ok(p) = target.pools(std::slice::from_ref(org)).await {
            highest.fetch_max(u64::from(p[0].machines), Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
