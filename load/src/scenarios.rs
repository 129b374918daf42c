//! The scenarios that drive a broker: churn, steady, die, handshake.

mod die;

pub use die::die;

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use license_broker::client::{self, Client, ClientOptions};
use license_broker::value::{Labels, PoolId};

use crate::churn::{self, Monitor, Shape};
use crate::fleet::{self, Behaviour, Live, Stats};
use crate::report::{self, Errors, Lat, Report};
use crate::target::{LoadOrg, Target};

/// Options common to the scenarios.
#[derive(Clone, Debug)]
pub struct Params {
    pub duration: Duration,
    pub connections: usize,
    pub depth: usize,
    pub orgs: usize,
    pub runners: usize,
    pub quota: u32,
    pub victims: usize,
    pub rate: Option<f64>,
    pub lease_ttl: Duration,
    /// Worker threads of a spawned broker.
    pub broker_workers: Option<usize>,
    /// handshake: resume TLS sessions (tickets) instead of full handshakes.
    pub resume: bool,
    /// abuse: fail the run when a target (memory, latency) is missed.
    pub strict: bool,
    /// abuse: the attacker threads' nice value (0: the harness's own).
    pub attacker_nice: i32,
    /// abuse: the attackers share the runner's address (127.0.0.1).
    pub attack_from_runner: bool,
    /// steady, die: heartbeats in step at exactly a third of the TTL.
    pub lockstep: bool,
}

/// Quota given to pools that should never refuse for quota.
const UNBOUNDED: u32 = license_broker::core::MAX_QUOTA;

pub async fn churn(target: &Target, p: &Params) -> Result<Report> {
    let orgs = target.setup_orgs(p.orgs, UNBOUNDED).await?;
    churn_on(target, &orgs, p, Vec::new()).await
}

/// `churn` on orgs already set up, connection `i` carrying `labels[i % len]`
/// (none: plain acquires).
pub async fn churn_on(target: &Target, orgs: &[LoadOrg], p: &Params, labels: Vec<Labels>) -> Result<Report> {
    let orgs = orgs.to_vec();
    let opts: Vec<ClientOptions> = orgs.iter().map(|o| target.options(&o.key)).collect();
    let monitor = Monitor::start(target.options(&target.operator), orgs.clone()).await?;
    let shape = Shape { connections: p.connections, depth: p.depth, duration: p.duration, rate: p.rate, labels };
    let bar = report::progress(p.duration, "churn");
    let ticker = tokio::spawn(report::tick(bar, tokio::time::Instant::now() + p.duration));
    let out = churn::run(opts, orgs.clone(), shape).await?;
    ticker.abort();
    let (max_in_use, over) = monitor.finish().await;
    let leaked: u32 = target.pools(&orgs).await?.iter().map(|s| s.in_use).sum();

    let mut r = Report::new("churn", "broker");
    r.duration_s = out.elapsed.as_secs_f64();
    r.param("connections", p.connections);
    r.param("depth", p.depth);
    r.param("orgs", p.orgs);
    if let Some(rate) = p.rate {
        r.param("rate", rate);
    }
    r.throughput.insert("pairs_per_s".into(), out.pairs_per_s());
    r.latency("acquire", &out.acquire);
    r.latency("release", &out.release);
    r.errors = out.errors.0.clone();
    r.extra("max_in_use_sampled", max_in_use);
    r.check("no pool above quota", !over, format!("highest in-use sampled {max_in_use}"));
    r.check("no seat leaked", leaked == 0, format!("{leaked} seats in use after all releases"));
    r.extra("lost_in_flight", out.lost_in_flight);
    r.extra("reconnects", out.reconnects);
    r.check("no errors", out.errors.0.is_empty(), format!("{:?}", out.errors.0));
    r.check(
        "every broken connection came back",
        out.unrecovered == 0,
        format!("{} reconnects, {} never came back", out.reconnects, out.unrecovered),
    );
    r.check("made progress", out.pairs > 0, format!("{} pairs", out.pairs));
    Ok(r)
}

/// Starts a fleet of `runners` over `connections` connections of one org.
async fn start_fleet(
    target: &Target,
    key: &str,
    org: &crate::target::LoadOrg,
    runners: usize,
    connections: usize,
    b: Behaviour,
    nonce_base: u128,
) -> Result<(Live, Vec<tokio::task::JoinHandle<Stats>>)> {
    let live = Live::default();
    let per = runners.div_ceil(connections.max(1));
    // Every connection first, then every driver: a driver started as soon
    // as its own connection was up filled the pool while the others were
    // still connecting, before the caller's clock started (more so against
    // an older broker, which a newer client greets once per version).
    let mut clients = Vec::new();
    for c in 0..connections {
        let count = per.min(runners.saturating_sub(c * per));
        if count == 0 {
            break;
        }
        clients.push((Client::connect(&target.options(key)).await?, c, count));
    }
    let tasks = clients
        .into_iter()
        .map(|(client, c, count)| {
            let first = nonce_base + ((c as u128) << 64);
            tokio::spawn(fleet::drive(client, org.clone(), first, count, b, live.clone()))
        })
        .collect();
    Ok((live, tasks))
}

async fn stop_fleet(live: &Live, tasks: Vec<tokio::task::JoinHandle<Stats>>) -> Result<Stats> {
    live.stop.store(true, Ordering::Relaxed);
    let mut total = Stats::default();
    for t in tasks {
        total.merge(&t.await?);
    }
    Ok(total)
}

pub async fn steady(target: &Target, p: &Params) -> Result<Report> {
    let org = target.setup_orgs(1, p.runners as u32).await?.remove(0);
    let monitor = Monitor::start(target.options(&target.operator), vec![org.clone()]).await?;
    let b = Behaviour {
        ttl: p.lease_ttl,
        hold: Some(p.duration / 2),
        ramp: (p.duration / 4).min(p.lease_ttl / 3),
        lockstep: p.lockstep,
    };
    let started = std::time::Instant::now();
    let (live, tasks) = start_fleet(target, &org.key, &org, p.runners, p.connections, b, 1).await?;
    let mut rss_max = 0u64;
    let mut held_max = 0i64;
    let bar = report::progress(p.duration, "steady");
    let deadline = tokio::time::Instant::now() + p.duration;
    let mut last_tick = tokio::time::Instant::now();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        rss_max = rss_max.max(target.rss_bytes().unwrap_or(0));
        held_max = held_max.max(live.held.load(Ordering::Relaxed));
        if last_tick.elapsed() >= Duration::from_secs(1) {
            bar.inc(1);
            last_tick = tokio::time::Instant::now();
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let stats = stop_fleet(&live, tasks).await?;
    let (max_in_use, over) = monitor.finish().await;
    let leaked: u32 = target.pools(std::slice::from_ref(&org)).await?.iter().map(|s| s.in_use).sum();

    let mut r = Report::new("steady", "broker");
    r.duration_s = elapsed.as_secs_f64();
    r.param("runners", p.runners);
    r.param("connections", p.connections);
    r.param("lease_ttl_ms", p.lease_ttl.as_millis() as u64);
    r.param("lockstep", p.lockstep);
    r.throughput.insert("heartbeats_per_s".into(), stats.renewed as f64 / elapsed.as_secs_f64());
    r.throughput.insert("acquires_per_s".into(), stats.acquired as f64 / elapsed.as_secs_f64());
    r.latency("acquire", &stats.acquire);
    r.latency("renew", &stats.renew);
    r.latency("release", &stats.release);
    r.errors = stats.errors.0.clone();
    r.extra("live_sessions_max", held_max);
    if rss_max > 0 {
        r.extra("server_rss_bytes_max", rss_max);
        r.extra("server_rss_bytes_per_session", rss_max / (held_max.max(1) as u64));
    }
    r.check("no pool above quota", !over, format!("highest in-use sampled {max_in_use}"));
    r.check("no heartbeat found its lease expired", stats.lost == 0, format!("{} lost", stats.lost));
    r.check("no seat leaked", leaked == 0, format!("{leaked} seats in use after all releases"));
    Ok(r)
}

/// `handshake`: new connections per second, each authenticating and doing
/// one acquire, then closing cleanly (which releases the seat). With a full
/// TLS handshake every time (no resumption).
pub async fn handshake(
    server: &str,
    ca: &std::path::Path,
    key: &str,
    org: Option<crate::target::LoadOrg>,
    p: &Params,
) -> Result<(f64, Lat, Errors)> {
    if client::server_list(server).len() > 1 {
        anyhow::bail!("handshake measures one broker: give --server one address (a cluster's serving node)");
    }
    let (addr, name) = client::resolve(server, None).await?;
    let deadline = tokio::time::Instant::now() + p.duration;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..p.connections {
        let endpoint = client::endpoint_with(Some(ca), addr.is_ipv6(), p.resume)?;
        let (name, key, org) = (name.clone(), key.to_string(), org.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Lat::new();
            let mut errors = Errors::default();
            let mut done = 0u64;
            let mut nonce = (w as u128) << 64;
            while tokio::time::Instant::now() < deadline {
                let t = std::time::Instant::now();
                match Client::connect_on(endpoint.clone(), addr, &name, &key).await {
                    Ok(c) => {
                        nonce += 1;
                        let (o, m) = match &org {
                            Some(o) => (o.org.clone(), o.machine.clone()),
                            None => (
                                license_broker::value::OrgName::new("echo").unwrap_or_else(|_| unreachable!()),
                                license_broker::value::MachineId::new("echo").unwrap_or_else(|_| unreachable!()),
                            ),
                        };
                        match c.acquire(&o, PoolId::KRE_DEFAULT, &m, nonce).await {
                            Ok(_) => {
                                lat.record(t.elapsed());
                                done += 1;
                            }
                            Err(e) => errors.add(&e),
                        }
                        c.close_nowait();
                    }
                    Err(e) => errors.add(&e),
                }
            }
            (done, lat, errors)
        }));
    }
    let mut total = 0;
    let mut lat = Lat::new();
    let mut errors = Errors::default();
    for t in tasks {
        let (d, l, e) = t.await?;
        total += d;
        lat.merge(&l);
        errors.merge(&e);
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), lat, errors))
}

pub fn handshake_report(rate: f64, lat: &Lat, errors: &Errors, p: &Params, target: &str) -> Report {
    let mut r = Report::new("handshake", target);
    r.duration_s = p.duration.as_secs_f64();
    r.param("concurrency", p.connections);
    r.param("resume", p.resume);
    r.throughput.insert("handshakes_per_s".into(), rate);
    r.latency("connect+acquire", lat);
    r.errors = errors.0.clone();
    r.check("no errors", errors.0.is_empty(), format!("{:?}", errors.0));
    r
}
