//! `die`: how fast a vanished runner's seat is reclaimed. Its own module
//! because it runs in phases of its own (a fleet fills the pool, victims
//! take the last seats and vanish, waiters poll for them), and the reclaim
//! is measured on the broker's clock (the leases' deadlines and the
//! waiters' admissions), not the harness's.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use license_broker::client::Client;
use license_broker::proto::{Req, Resp};
use license_broker::value::{Nonce, PoolId, SessionId};

use super::{start_fleet, stop_fleet, Params};
use crate::churn::Monitor;
use crate::fleet::{Behaviour, Stats};
use crate::report::{Errors, Lat, Report};
use crate::target::{LoadOrg, Target};

/// `die`: R live sessions (heartbeating) fill a pool of quota R; V of them
/// vanish; V waiters poll until admitted. Reclaim latency per seat = the
/// waiter's admission (broker time) minus the vanished lease's deadline.
pub async fn die(target: &Target, p: &Params) -> Result<Report> {
    let victims = p.victims.clamp(1, p.runners.max(1));
    let background = p.runners.saturating_sub(victims);
    let org = target.setup_orgs(1, p.runners as u32).await?.remove(0);
    let monitor = Monitor::start(target.options(&target.operator), vec![org.clone()]).await?;
    let b = Behaviour { ttl: p.lease_ttl, hold: None, ramp: Duration::ZERO, lockstep: p.lockstep };
    let (live, tasks) = start_fleet(target, &org.key, &org, background, p.connections, b, 1).await?;
    let fill_started = std::time::Instant::now();
    while (live.held.load(Ordering::Relaxed) as usize) < background {
        if fill_started.elapsed() > Duration::from_secs(300) {
            bail!("fleet never reached {background} sessions");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fill_s = fill_started.elapsed().as_secs_f64();

    let deadlines = vanish(target, &org, victims).await?;
    let waiter = Client::connect(&target.options(&org.key)).await?;
    let reclaimed = reclaim(&waiter, &org, &deadlines, p.lease_ttl).await;
    let sessions = reclaimed.sessions.iter().map(|&session| Req::Release { session }).collect();
    let _ = waiter.call_batch(sessions).await;
    waiter.close().await;
    let rss = target.rss_bytes();
    let stats = stop_fleet(&live, tasks).await?;
    let (max_in_use, over) = monitor.finish().await;
    let in_use = target.pools(std::slice::from_ref(&org)).await?[0].in_use;
    let end = End { stats, max_in_use, over, in_use, rss, fill_s, elapsed: fill_started.elapsed() };
    Ok(report(p, victims, &deadlines, reclaimed, end))
}

/// The victims take the last seats and vanish without a word; returns
/// their leases' deadlines (broker time), earliest first.
async fn vanish(target: &Target, org: &LoadOrg, victims: usize) -> Result<Vec<u64>> {
    let vc = Client::connect(&target.options(&org.key)).await?;
    let reqs: Vec<Req> = (0..victims).map(|i| acquire(org, (7u128 << 120) | i as u128)).collect();
    let mut deadlines = Vec::new();
    for r in vc.call_batch(reqs).await {
        if let Ok(Resp::Admitted { deadline_ms, .. } | Resp::Leased { deadline_ms, .. }) = r {
            deadlines.push(deadline_ms);
        }
    }
    vc.abandon();
    if deadlines.len() != victims {
        bail!("only {} of {victims} victims were admitted", deadlines.len());
    }
    deadlines.sort_unstable();
    Ok(deadlines)
}

/// What the waiters saw.
struct Reclaimed {
    /// Each admission's start (broker time), earliest first.
    admitted_at: Vec<u64>,
    /// Admissions before the first vanished lease's deadline.
    early: usize,
    errors: Errors,
    /// The waiters' sessions, to release.
    sessions: Vec<SessionId>,
}

/// One waiter per victim polls from just before the first deadline until
/// admitted, or until the last deadline and a lease TTL and 10 s are past.
async fn reclaim(waiter: &Client, org: &LoadOrg, deadlines: &[u64], lease_ttl: Duration) -> Reclaimed {
    let first = deadlines[0];
    let wait_ms = first.saturating_sub(unix_ms()).saturating_sub(100);
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let mut seen = Reclaimed { admitted_at: Vec::new(), early: 0, errors: Errors::default(), sessions: Vec::new() };
    let mut waiting: Vec<u128> = (0..deadlines.len()).map(|i| (9u128 << 120) | i as u128).collect();
    let give_up = deadlines[deadlines.len() - 1] + lease_ttl.as_millis() as u64 + 10_000;
    while !waiting.is_empty() && unix_ms() < give_up {
        let reqs: Vec<Req> = waiting.iter().map(|n| acquire(org, *n)).collect();
        let results = waiter.call_batch(reqs).await;
        let mut still = Vec::new();
        for (n, r) in waiting.iter().zip(results) {
            match r {
                Ok(
                    Resp::Admitted { session, deadline_ms, ttl_ms, .. }
                    | Resp::Leased { session, deadline_ms, ttl_ms, .. },
                ) => {
                    let at = deadline_ms - ttl_ms;
                    if at < first {
                        seen.early += 1;
                    }
                    seen.admitted_at.push(at);
                    seen.sessions.push(session);
                }
                Ok(_) => seen.errors.add_named("UNEXPECTED_RESPONSE"),
                Err(e) => {
                    if e.code().is_none() {
                        seen.errors.add(&e);
                    }
                    still.push(*n);
                }
            }
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    seen.admitted_at.sort_unstable();
    seen
}

/// How the run ended: the fleet's numbers and the pool's.
struct End {
    stats: Stats,
    max_in_use: u32,
    over: bool,
    /// In use once every runner had left.
    in_use: u32,
    rss: Option<u64>,
    fill_s: f64,
    elapsed: Duration,
}

fn report(p: &Params, victims: usize, deadlines: &[u64], seen: Reclaimed, end: End) -> Report {
    let mut reclaim = Lat::new();
    for (d, a) in deadlines.iter().zip(&seen.admitted_at) {
        reclaim.record_us(a.saturating_sub(*d) * 1000);
    }
    let mut r = Report::new("die", "broker");
    r.duration_s = end.elapsed.as_secs_f64();
    r.param("runners", p.runners);
    r.param("victims", victims);
    r.param("connections", p.connections);
    r.param("lease_ttl_ms", p.lease_ttl.as_millis() as u64);
    r.param("lockstep", p.lockstep);
    r.latency("reclaim", &reclaim);
    r.latency("renew", &end.stats.renew);
    r.extra("fill_seconds", end.fill_s);
    if let Some(rss) = end.rss {
        r.extra("server_rss_bytes", rss);
    }
    r.errors = seen.errors.0.clone();
    r.errors.extend(end.stats.errors.0.clone());
    let admitted = seen.admitted_at.len();
    r.check("every vanished seat was reclaimed", admitted == victims, format!("{admitted} of {victims}"));
    r.check("no waiter admitted before a deadline passed", seen.early == 0, format!("{} early", seen.early));
    let max_in_use = end.max_in_use;
    r.check("no pool above quota", !end.over, format!("highest in-use sampled {max_in_use}, quota {}", p.runners));
    r.check(
        "live runners kept their leases",
        end.stats.lost == 0,
        format!("{} heartbeats found their lease gone", end.stats.lost),
    );
    r.check("no seat leaked", end.in_use == 0, format!("{} in use after all runners left", end.in_use));
    r
}

fn acquire(org: &LoadOrg, nonce: u128) -> Req {
    Req::Acquire { org: org.org.clone(), pool: PoolId::KRE_DEFAULT, machine: org.machine.clone(), nonce: Nonce(nonce) }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
