//! `admission`: what seats reserved and capped by job label cost an
//! admission over the wire (issue 27, README Performance), in one spawned
//! broker. Two orgs whose pools have the same quota: one plain, one with
//! 10 reservations (`pipeline=r0`..`r9`, `SEATS` each), 10 label caps
//! (`team=t0`..`t9`) and a cap on the user. The same churn (the same
//! labelled checkouts that do not wait) runs paced at a fixed rate against
//! each in turn, round after round (interleaved): broker CPU per
//! acquire+release pair (from /proc, `compare::cpu_per_pair`) and the
//! acquire p50/p99 of each arm, their medians and ratios.
//!
//! Half the connections carry a reserved label (`pipeline=rK`, connection
//! `2K` for K < 10, wrapping past 20 connections: with 16, eight of the
//! ten reservations are taken from; never more in flight on one than it
//! has seats up to 40 connections: the reserved-seat path, a
//! compare-and-swap of the reservation's word); the other half
//! `pipeline=pr`, which no reservation matches (the shared-seat path,
//! past a look at the 10). Every one carries a `team` label under a
//! cap and counts in the user's cap (their words' compare-and-swap). The
//! caps are set above anything the run holds: they count, never refuse.
//!
//! Checks: each churn's own (never above the quota, nothing leaked, no
//! errors); after the rounds, the capped pool's shared seats all taken:
//! an unlabelled acquire refused, a reserved one admitted. Sampled every
//! 250 ms and printed, not checked: the most sessions seen on reserved
//! and on shared seats (both paths taken). No check of a reservation or
//! cap against its size: the reservations list reports at most its seats
//! whatever happens, and the caps, set above anything the run holds, are
//! there to be counted, not reached (their rules are the core's tests and
//! loom models).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use license_broker::client::{Checkout, Client, ClientError};
use license_broker::proto::{ErrorCode, Req, Resp};
use license_broker::value::{Labels, Nonce, PoolId, SessionId};

use crate::compare::{self, LATENCY_DEPTH};
use crate::machine;
use crate::report::{Check, Report};
use crate::scenarios::{self, Params};
use crate::target::{LoadOrg, Target};

const POOL: PoolId = PoolId::KRE_DEFAULT;
/// Reservations, and label caps, on the capped pool.
const RESERVATIONS: u32 = 10;
/// Seats each reservation holds: twice what one connection has in flight.
const SEATS: u32 = 2 * LATENCY_DEPTH as u32;
/// The default pace, pairs/s: well under a shared 2-core machine's
/// ceiling, so CPU per pair is not the cost of falling behind.
const RATE: f64 = 20_000.0;
/// How often the sampler reads the pool's reservations, caps and use:
/// its requests cost the broker too, more in the capped pool (its lists
/// are longer), so rarely enough to stay out of the figures (at 20,000
/// pairs/s, four requests every 250 ms are under 1 in 1,000 requests).
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The Owner the harness's orgs are made with (`Target::setup_orgs`).
const OWNER: &str = "load@localhost";

/// What one arm's phase measured.
struct ArmRun {
    cpu_us_per_pair: f64,
    p50_us: u64,
    p99_us: u64,
}

/// What the sampler saw in a pool during a phase.
#[derive(Default)]
struct Seen {
    /// The most sessions seen on reserved seats (the reservations' count),
    /// and on shared ones (the `t5`..`t9` caps' count).
    reserved_max: u32,
    shared_max: u32,
    /// The most sessions the user's cap counted.
    user_max: u32,
}

pub async fn run(p: &Params, rounds: usize) -> Result<Report> {
    let (before, started) = (machine::Before::now(), Instant::now());
    let rate = p.rate.unwrap_or(RATE);
    let shape = Params { rate: Some(rate), depth: LATENCY_DEPTH, ..p.clone() };
    let quota = p.quota.max(RESERVATIONS * SEATS + 2 * (p.connections * LATENCY_DEPTH) as u32);
    let target = Target::spawn(p.lease_ttl, p.broker_workers)?;
    let orgs = target.setup_orgs(2, quota).await?;
    let (plain, capped) = (&orgs[0], &orgs[1]);
    cap(&target, capped, quota).await?;
    let labels = labels(p.connections)?;
    let mut r = Report::new("admission", "broker");
    let mut runs: BTreeMap<&str, Vec<ArmRun>> = BTreeMap::new();
    let mut seen = Seen::default();
    for round in 1..=rounds {
        for (arm, org) in [("plain", plain), ("capped", capped)] {
            eprintln!("admission: round {round}/{rounds}, {arm} pool, churn at {rate} pairs/s");
            let (run, churn, s) = phase(&target, org, &shape, &labels).await?;
            r.invariants
                .extend(churn.invariants.into_iter().map(|c| Check { name: format!("{arm}: {}", c.name), ..c }));
            runs.entry(arm).or_default().push(run);
            if arm == "capped" {
                seen.merge(s);
            }
        }
    }
    summarize(&mut r, &runs);
    checks(&mut r, &seen);
    let (ok, detail) = respected(&target, capped, quota).await?;
    r.check("with the shared seats taken, only a reserved label is admitted", ok, detail);
    drop(target);
    r.duration_s = started.elapsed().as_secs_f64();
    r.param("rate_pairs_per_s", rate);
    r.param("quota", quota);
    r.param("rounds", rounds);
    r.param("connections", p.connections);
    r.param("depth", LATENCY_DEPTH);
    r.param("duration_s", p.duration.as_secs_f64());
    r.param("capped_pool", format!("{RESERVATIONS} reservations of {SEATS}, {RESERVATIONS} label caps, a user cap"));
    let (state, busy) = before.after();
    eprintln!("{}", machine::describe(&state, busy));
    r.extra("machine", machine::describe(&state, busy));
    r.extra("machine_state", state);
    Ok(r)
}

/// Connection `i`'s labels: a reserved one (even `i`) or one no
/// reservation matches, and a capped team: `t0`..`t4` for the first,
/// `t5`..`t9` for the second, so the caps of the latter count the
/// sessions on shared seats.
fn labels(connections: usize) -> Result<Vec<Labels>> {
    let of = |i: usize| {
        let (pipeline, team) = match i.is_multiple_of(2) {
            true => (format!("r{}", (i / 2) % RESERVATIONS as usize), (i / 2) % 5),
            false => ("pr".to_string(), 5 + (i / 2) % 5),
        };
        Labels::new([("pipeline".to_string(), pipeline), ("team".to_string(), format!("t{team}"))])
    };
    Ok((0..connections).map(of).collect::<Result<_, _>>()?)
}

/// The reservations and caps on `org`'s pool (caps at `quota`: never refusing).
async fn cap(target: &Target, org: &LoadOrg, quota: u32) -> Result<()> {
    let c = target.client(&org.key).await?;
    for k in 0..RESERVATIONS {
        c.set_reservation((&org.org, POOL), ("pipeline", &format!("r{k}")), SEATS).await?;
        c.set_label_limit((&org.org, POOL), ("team", &format!("t{k}")), Some(quota)).await?;
    }
    c.set_user_limit(&org.org, POOL, OWNER, Some(quota)).await?;
    c.close().await;
    Ok(())
}

/// One paced churn against `org`, sampled meanwhile (both arms alike, so
/// the sampler's own requests cost each the same).
async fn phase(target: &Target, org: &LoadOrg, shape: &Params, labels: &[Labels]) -> Result<(ArmRun, Report, Seen)> {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(target.client(&org.key).await?, org.clone(), stop.clone()));
    let churn = scenarios::churn_on(target, std::slice::from_ref(org), shape, labels.to_vec());
    let (churn, cpu) = compare::cpu_per_pair(target, churn).await?;
    stop.store(true, Ordering::Relaxed);
    let seen = sampler.await??;
    let (p50_us, p99_us) = churn.latency_us.get("acquire").map_or((0, 0), |s| (s.p50_us, s.p99_us));
    let cpu_us_per_pair = cpu.context("no CPU figures from /proc")?;
    Ok((ArmRun { cpu_us_per_pair, p50_us, p99_us }, churn, seen))
}

/// Every `SAMPLE_EVERY` until `stop`: the pool's reservations, caps and use.
async fn sample(c: Client, org: LoadOrg, stop: Arc<AtomicBool>) -> Result<Seen> {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let reserved = c.reservations(&org.org).await?;
        let caps = c.label_limits(&org.org, POOL).await?;
        let users = c.user_limits(&org.org, POOL).await?;
        let on_reserved: u32 = reserved.iter().map(|r| r.in_use).sum();
        let on_shared: u32 =
            caps.iter().filter(|l| l.key == "team" && l.value.as_str() >= "t5").map(|l| l.sessions).sum();
        seen.reserved_max = seen.reserved_max.max(on_reserved);
        seen.shared_max = seen.shared_max.max(on_shared);
        seen.user_max = seen.user_max.max(users.iter().map(|u| u.sessions).max().unwrap_or(0));
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    c.close().await;
    Ok(seen)
}

impl Seen {
    fn merge(&mut self, o: Seen) {
        self.reserved_max = self.reserved_max.max(o.reserved_max);
        self.shared_max = self.shared_max.max(o.shared_max);
        self.user_max = self.user_max.max(o.user_max);
    }
}

/// One figure of an arm's run.
type Measure = fn(&ArmRun) -> f64;

/// Each arm's runs, their medians, and the capped arm's over the plain one's.
fn summarize(r: &mut Report, runs: &BTreeMap<&str, Vec<ArmRun>>) {
    let median = |arm: &str, f: Measure| {
        let mut v: Vec<f64> = runs.get(arm).map_or(Vec::new(), |v| v.iter().map(f).collect());
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let measures: [(&str, Measure); 3] = [
        ("cpu_us_per_pair", |x| x.cpu_us_per_pair),
        ("acquire_p50_us", |x| x.p50_us as f64),
        ("acquire_p99_us", |x| x.p99_us as f64),
    ];
    for (name, f) in measures {
        for (arm, v) in runs {
            r.extra(&format!("{name}_{arm}"), v.iter().map(f).collect::<Vec<f64>>());
        }
        let (plain, capped) = (median("plain", f), median("capped", f));
        r.extra(&format!("{name}_median_plain_capped"), [plain, capped]);
        r.extra(&format!("{name}_ratio_capped_vs_plain"), capped / plain);
    }
}

/// The sampler's findings: sizes kept (a check), and the paths seen taken
/// (figures: a sample every 250 ms may miss sessions held a millisecond,
/// so a short run can see none without anything being wrong).
fn checks(r: &mut Report, seen: &Seen) {
    r.extra("capped_most_seen_on_reserved_seats", seen.reserved_max);
    r.extra("capped_most_seen_on_shared_seats", seen.shared_max);
    r.extra("capped_most_counted_by_the_user_cap", seen.user_max);
}

/// Takes every shared seat of `org`'s pool unlabelled, then asks for one
/// more unlabelled (must be refused for the quota) and one carrying a
/// reserved label (must be admitted); gives every seat back.
async fn respected(target: &Target, org: &LoadOrg, quota: u32) -> Result<(bool, String)> {
    let c = target.client(&org.key).await?;
    let shared = quota - RESERVATIONS * SEATS;
    let base = 1u128 << 100;
    let mut held: Vec<SessionId> = Vec::new();
    for chunk in (0..u128::from(shared)).collect::<Vec<_>>().chunks(64) {
        let (o, m) = (&org.org, &org.machine);
        let reqs = chunk.iter().map(|n| Req::Acquire {
            org: o.clone(),
            pool: POOL,
            machine: m.clone(),
            nonce: Nonce(base + n),
        });
        for (answer, _) in c.call_batch_timed(reqs.collect()).await {
            if let Ok(Resp::Admitted { session, .. } | Resp::Leased { session, .. }) = answer {
                held.push(session);
            }
        }
    }
    let plain = c.acquire(&org.org, POOL, &org.machine, base - 1).await;
    let refused = matches!(&plain, Err(ClientError::Rejected(w)) if w.code == ErrorCode::QuotaExceeded);
    let r0 = Labels::new([("pipeline".to_string(), "r0".to_string())])?;
    let co = Checkout {
        org: &org.org,
        pool: POOL,
        machine: &org.machine,
        nonce: base - 2,
        wait: Duration::ZERO,
        labels: r0,
    };
    let labelled = c.checkout(&co).await;
    let detail = format!(
        "{} of {shared} shared seats taken; one more unlabelled: {}; pipeline=r0: {}",
        held.len(),
        plain.as_ref().map_or_else(|e| e.to_string(), |_| "admitted".into()),
        labelled.as_ref().map_or_else(|e| e.to_string(), |_| "admitted".into()),
    );
    held.extend(labelled.as_ref().ok().map(|l| l.session));
    held.extend(plain.as_ref().ok().map(|l| l.session));
    for chunk in held.chunks(64) {
        let _ = c.call_batch_timed(chunk.iter().map(|s| Req::Release { session: *s }).collect()).await;
    }
    c.close().await;
    Ok((held.len() as u32 == shared + 1 && refused && labelled.is_ok(), detail))
}
