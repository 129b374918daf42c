//! `webhooks`: what webhooks cost the broker and how fast they deliver
//! (README, Performance), on loopback against spawned brokers:
//!
//! - event → receiver: an audited act (a member added) at a time, from the
//!   request sent (and from its answer) to the receiver holding the
//!   signed request, one webhook;
//! - broker CPU per acquire+release pair at a fixed rate with no webhook,
//!   and with 10 webhooks subscribed to every event while an act a tenth
//!   of a second makes events (the same acts in both arms; CPU from
//!   `/proc`), and the acquire p99 of the same churn with one receiver
//!   that answers in 10 s instead: three arms, each run on a fresh
//!   broker, interleaved round by round;
//! - the outbox's size on disk per million events (`lease.expired` with
//!   two labels, written in batches as the broker writes them, in a redb
//!   file of its own, in this process).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use license_broker::client::Client;
use license_broker::core::{Email, Event, EventBody, LeaseLost, Millis, OrgName};
use license_broker::value::{MachineId, PoolId, Role};

use crate::machine;
use crate::receiver::Receiver;
use crate::report::{Lat, Report};
use crate::scenarios::{self, Params};
use crate::target::{LoadOrg, Target};

/// Events timed from act to receiver.
const LATENCY_EVENTS: usize = 300;

/// Webhooks subscribed to everything in the CPU arm (an org's most).
const HOOKS: usize = 10;

/// How often an act makes an event while the churn runs.
const ACT_EVERY: Duration = Duration::from_millis(100);

/// The default churn rate, pairs/s: well under a shared 2-core machine's
/// ceiling, so CPU per pair is not the cost of falling behind.
const RATE: f64 = 20_000.0;

/// The three arms of a round.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Arm {
    None,
    TenHooks,
    SlowReceiver,
}

/// What one arm's run measured.
struct ArmRun {
    cpu_us_per_pair: f64,
    acquire_p99_us: u64,
    delivered: usize,
}

/// Runs the measures; the arms `rounds` times, interleaved.
pub async fn run(p: &Params, rounds: usize) -> Result<Report> {
    let before = machine::Before::now();
    let mut r = Report::new("webhooks", "broker");
    let rate = p.rate.unwrap_or(RATE);
    r.param("rate_pairs_per_s", rate);
    r.param("duration_s", p.duration.as_secs_f64());
    r.param("rounds", rounds);
    latency(p, &mut r).await?;
    arms(p, rate, rounds, &mut r).await?;
    let events = p.runners.max(1) as u64;
    eprintln!("webhooks: the outbox's size for {events} events");
    let bytes = outbox_bytes(events)?;
    r.param("outbox_events", events);
    r.extra("outbox_bytes_per_million_events", bytes as f64 * 1e6 / events as f64);
    let (state, busy) = before.after();
    eprintln!("{}", machine::describe(&state, busy));
    r.extra("machine", state);
    Ok(r)
}

/// A broker that may post to receivers on loopback, and an org of its own
/// for the events, with its Owner connected.
async fn broker(p: &Params) -> Result<(Target, LoadOrg, Client)> {
    let target = Target::spawn_extra(p.lease_ttl, p.broker_workers, &["--webhook-allow-private"])?;
    let org = target.setup_orgs(1, 10).await?.remove(0);
    let owner = target.client(&org.key).await?;
    Ok((target, org, owner))
}

/// Event → receiver, one act at a time.
async fn latency(p: &Params, r: &mut Report) -> Result<()> {
    eprintln!("webhooks: event → receiver, {LATENCY_EVENTS} acts one at a time");
    let (_target, org, owner) = broker(p).await?;
    let mut rx = Receiver::start(Duration::ZERO).await?;
    owner.add_webhook(&org.org, &rx.url(), vec!["audit.*".into()]).await?;
    // The delivery task starts within a second (`deliver::RECONCILE`).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut from_request, mut from_answer) = (Lat::new(), Lat::new());
    for i in 0..LATENCY_EVENTS {
        let email = format!("lat-{i}@load.example");
        let sent = Instant::now();
        owner.add_user(&org.org, &email, Role::User).await?;
        let answered = Instant::now();
        let at = loop {
            let (at, body) = tokio::time::timeout(Duration::from_secs(10), rx.got.recv())
                .await
                .context("no delivery within 10 s")?
                .context("the receiver stopped")?;
            if body.contains(&format!("user={email} ")) || body.contains(&format!("user={email}\"")) {
                break at;
            }
        };
        from_request.record(at.saturating_duration_since(sent));
        from_answer.record(at.saturating_duration_since(answered));
    }
    r.latency("event_to_receiver_from_request", &from_request);
    r.latency("event_to_receiver_from_answer", &from_answer);
    Ok(())
}

/// The three arms, interleaved round by round; medians reported.
async fn arms(p: &Params, rate: f64, rounds: usize, r: &mut Report) -> Result<()> {
    let mut runs: Vec<(Arm, ArmRun)> = Vec::new();
    for round in 0..rounds {
        for arm in [Arm::None, Arm::TenHooks, Arm::SlowReceiver] {
            eprintln!("webhooks: round {}/{rounds}, {arm:?}, churn at {rate} pairs/s", round + 1);
            runs.push((arm, arm_run(p, rate, arm).await?));
        }
    }
    let median = |arm: Arm, f: &dyn Fn(&ArmRun) -> f64| {
        let mut v: Vec<f64> = runs.iter().filter(|(a, _)| *a == arm).map(|(_, run)| f(run)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (name, arm) in [("none", Arm::None), ("ten_hooks", Arm::TenHooks), ("slow_receiver", Arm::SlowReceiver)] {
        let all = |f: &dyn Fn(&ArmRun) -> f64| -> Vec<f64> {
            runs.iter().filter(|(a, _)| *a == arm).map(|(_, run)| f(run)).collect()
        };
        r.extra(&format!("cpu_us_per_pair_{name}"), all(&|x| x.cpu_us_per_pair));
        r.extra(&format!("acquire_p99_us_{name}"), all(&|x| x.acquire_p99_us as f64));
        r.extra(&format!("delivered_{name}"), all(&|x| x.delivered as f64));
    }
    let cpu = |arm| median(arm, &|x| x.cpu_us_per_pair);
    let p99 = |arm| median(arm, &|x| x.acquire_p99_us as f64);
    r.extra("cpu_per_pair_ratio_ten_hooks_vs_none", cpu(Arm::TenHooks) / cpu(Arm::None));
    r.extra("acquire_p99_ratio_slow_receiver_vs_none", p99(Arm::SlowReceiver) / p99(Arm::None));
    let delivered = median(Arm::TenHooks, &|x| x.delivered as f64);
    r.check("ten webhooks delivered while the churn ran", delivered > 0.0, format!("median {delivered}"));
    Ok(())
}

/// One arm on a fresh broker: its webhooks and receiver, an act every
/// `ACT_EVERY` on the events' org, and the churn at `rate` on orgs of its own.
async fn arm_run(p: &Params, rate: f64, arm: Arm) -> Result<ArmRun> {
    let (target, org, owner) = broker(p).await?;
    let delay = if arm == Arm::SlowReceiver { Duration::from_secs(10) } else { Duration::ZERO };
    let mut rx = Receiver::start(delay).await?;
    let hooks = match arm {
        Arm::None => 0,
        Arm::TenHooks => HOOKS,
        Arm::SlowReceiver => 1,
    };
    for _ in 0..hooks {
        owner.add_webhook(&org.org, &rx.url(), Vec::new()).await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acts = tokio::spawn(act(owner, org.org.clone(), p.duration + Duration::from_secs(2)));
    let shape = Params { rate: Some(rate), orgs: 1, depth: 16, ..p.clone() };
    let ticks = target.cpu_ticks();
    let churn = scenarios::churn(&target, &shape).await?;
    let after = target.cpu_ticks();
    acts.abort();
    let pairs = churn.throughput["pairs_per_s"] * churn.duration_s;
    let cpu = ticks.zip(after).map(|(a, b)| machine::ticks_to_s(b.saturating_sub(a)) * 1e6 / pairs.max(1.0));
    let mut delivered = 0;
    while rx.got.try_recv().is_ok() {
        delivered += 1;
    }
    Ok(ArmRun {
        cpu_us_per_pair: cpu.context("no CPU figures from /proc")?,
        acquire_p99_us: churn.latency_us.get("acquire").map_or(0, |s| s.p99_us),
        delivered,
    })
}

/// Adds a member every `ACT_EVERY` (an `audit.user_added` event) for `span`.
async fn act(owner: Client, org: OrgName, span: Duration) {
    let end = Instant::now() + span;
    let mut i = 0u64;
    while Instant::now() < end {
        let _ = owner.add_user(&org, &format!("act-{i}@load.example"), Role::User).await;
        i += 1;
        tokio::time::sleep(ACT_EVERY).await;
    }
}

/// Bytes the outbox's redb file grew by for `n` events, written as the
/// broker's queue writes them (batches of 500, 10 orgs).
fn outbox_bytes(n: u64) -> Result<u64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outbox.redb");
    let store = license_broker::store::RedbStore::open(&path)?;
    let outbox = license_broker::events::Outbox::default();
    let start = std::fs::metadata(&path)?.len();
    let orgs: Vec<OrgName> = (0..10).map(|i| OrgName::new(format!("org-{i}"))).collect::<Result<_, _>>()?;
    let (machine, user) = (MachineId::new("ci-runner-0042")?, Email::new("ci-bot@example.com")?);
    let mut written = 0;
    while written < n {
        let batch: Vec<Event> = (written..(written + 500).min(n))
            .map(|i| {
                let lost = LeaseLost {
                    pool: PoolId::KRE_DEFAULT,
                    session: i,
                    machine: machine.clone(),
                    user: user.clone(),
                    started: Millis(1_796_000_000_000 + i),
                    revoked: false,
                    labels: vec![("pipeline".into(), "web-app".into()), ("job".into(), format!("build-{i}"))],
                };
                let org = orgs[(i % 10) as usize].clone();
                Event { org, seq: 0, at: Millis(1_796_000_060_000 + i), body: EventBody::Lease(lost) }
            })
            .collect();
        written += batch.len() as u64;
        outbox.append(&store, batch, |_| None)?;
    }
    drop(store);
    Ok(std::fs::metadata(&path)?.len().saturating_sub(start))
}
