//! `restart`: N runners hold leases; the spawned broker is killed with
//! SIGKILL under them and started again on the same data dir; every runner
//! re-attaches with its session token. Measures the restart (spawn to
//! answering), how long until every runner has re-attached, and the
//! broker's memory; checks that nobody lost a lease and that runners who
//! believe they hold a seat (re-attached ones plus newcomers admitted
//! during the hold) never exceed the quota.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use license_broker::client::Client;
use license_broker::proto::{Req, Resp, SessionToken};
use license_broker::value::{Nonce, PoolId};

use crate::report::{Errors, Lat, Report};
use crate::scenarios::Params;
use crate::target::{LoadOrg, Target};

/// Requests sent together on one connection.
const BATCH: usize = 512;
/// Newcomers that try to take a seat while the restarted broker holds them.
const NEWCOMERS: usize = 100;

/// One runner's lease as it knows it.
#[derive(Clone, Copy)]
pub(crate) struct Held {
    nonce: u128,
    token: SessionToken,
}

pub async fn run(target: &mut Target, p: &Params) -> Result<Report> {
    let n = p.runners.max(1);
    // A tenth more seats than runners: the restarted broker must hold the
    // runners' seats against newcomers even though the pool has room.
    let quota = (n + n / 10).max(1) as u32;
    let org = target.setup_orgs(1, quota).await?.remove(0);
    let connections = p.connections.clamp(1, n);

    let acquire_started = Instant::now();
    let held = admit_all(target, &org, connections, n).await?;
    let acquire_s = acquire_started.elapsed().as_secs_f64();
    let rss_before = target.rss_bytes();

    let crashed = Instant::now();
    target.crash()?;
    let listening = target.restart().await?;
    let ready = Instant::now();
    let back = reattach_all(target, &org, connections, held, (ready, ready)).await?;
    let all_reattached_s = (back.last - crashed).as_secs_f64();

    let newcomers = newcomers(target, &org).await?;
    let rss = (rss_before, target.rss_bytes());
    let in_use = target.pools(std::slice::from_ref(&org)).await?[0].in_use;
    let shape = (n, quota, connections);
    let o = Outcome { back, acquire_s, listening, all_reattached_s, newcomers, in_use, rss, started: acquire_started };
    Ok(report(p, shape, o))
}

/// Newcomers during the hold: every seat they get is one nobody else
/// believes in. How many of `NEWCOMERS` were admitted.
async fn newcomers(target: &Target, org: &LoadOrg) -> Result<usize> {
    let probe = Client::connect(&target.options(&org.key)).await?;
    let reqs = (0..NEWCOMERS).map(|i| acquire_req(org, (5u128 << 120) | i as u128)).collect();
    let newcomers = probe
        .call_batch(reqs)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Resp::Leased { .. } | Resp::Admitted { .. })))
        .count();
    probe.close().await;
    Ok(newcomers)
}

/// What the run saw after the crash.
struct Outcome {
    back: Reattached,
    acquire_s: f64,
    /// From the restart's spawn to the broker answering.
    listening: std::time::Duration,
    all_reattached_s: f64,
    newcomers: usize,
    /// The pool's seats in use at the end.
    in_use: u32,
    /// The broker's RSS before the crash and at the end.
    rss: (Option<u64>, Option<u64>),
    started: Instant,
}

/// The report of `run`; `shape` is (runners, quota, connections).
fn report(p: &Params, (n, quota, connections): (usize, u32, usize), o: Outcome) -> Report {
    let reattached = o.back.back.len();
    let lost = n - reattached;
    let (newcomers, all_reattached_s) = (o.newcomers, o.all_reattached_s);
    let believers = reattached + newcomers;
    let mut r = Report::new("restart", "broker");
    r.duration_s = (Instant::now() - o.started).as_secs_f64();
    r.param("runners", n);
    r.param("quota", quota);
    r.param("connections", connections);
    r.param("lease_ttl_s", p.lease_ttl.as_secs_f64());
    r.latency("reattach_after_restart", &o.back.lat);
    r.errors = o.back.errors.0.clone();
    r.extra("acquire_s", o.acquire_s);
    r.extra("restart_to_answering_ms", o.listening.as_millis() as u64);
    r.extra("crash_to_all_reattached_s", all_reattached_s);
    r.extra("reattached", reattached);
    r.extra("lost", lost);
    r.extra("newcomers_admitted_during_hold", newcomers);
    r.extra("believers", believers);
    r.extra("in_use_after", o.in_use);
    if let Some(b) = o.rss.0 {
        r.extra("broker_rss_before_mib", b / (1 << 20));
    }
    if let Some(b) = o.rss.1 {
        r.extra("broker_rss_after_mib", b / (1 << 20));
    }
    r.check("every runner re-attached, none lost", lost == 0, format!("{reattached} of {n} re-attached"));
    r.check(
        "all re-attached within one lease TTL of the crash",
        all_reattached_s < p.lease_ttl.as_secs_f64(),
        format!("{all_reattached_s:.2} s after the crash (TTL {:?})", p.lease_ttl),
    );
    r.check(
        "believers never above the quota",
        believers <= quota as usize,
        format!("{reattached} re-attached + {newcomers} newcomers admitted, quota {quota}"),
    );
    r.check("the pool's seats in use within the quota", o.in_use <= quota, format!("in use {}", o.in_use));
    r
}

/// `n` runners (nonces 0 to n-1) take a seat each, spread over
/// `connections` connections, and leave without a word (`restart` and
/// `failover` kill the broker under them next).
pub(crate) async fn admit_all(target: &Target, org: &LoadOrg, connections: usize, n: usize) -> Result<Vec<Held>> {
    let mut held = Vec::with_capacity(n);
    for part in on_connections(target, org, connections, (0..n).map(|i| i as u128).collect(), acquire).await? {
        held.extend(part?.0);
    }
    if held.len() != n {
        bail!("only {} of {n} runners were admitted", held.len());
    }
    Ok(held)
}

/// Every runner's re-attach, merged over the connections.
pub(crate) struct Reattached {
    /// The runners that came back, with their new tokens.
    pub back: Vec<Held>,
    /// Each re-attach from `ready`.
    pub lat: Lat,
    pub errors: Errors,
    /// When the last connection's share was done (`since` at the earliest).
    pub last: Instant,
}

/// Every runner in `held` re-attaches (to whichever node serves the org
/// now), spread over `connections` connections; returns when the last one
/// has. Latency counts from `ready`.
pub(crate) async fn reattach_all(
    target: &Target,
    org: &LoadOrg,
    connections: usize,
    held: Vec<Held>,
    (ready, since): (Instant, Instant),
) -> Result<Reattached> {
    let mut all =
        Reattached { back: Vec::with_capacity(held.len()), lat: Lat::new(), errors: Errors::default(), last: since };
    let work = move |client, org, held| reattach(client, org, held, ready);
    for part in on_connections(target, org, connections, held, work).await? {
        let (done, part_lat, part_errors, finished) = part?;
        all.back.extend(done);
        all.lat.merge(&part_lat);
        all.errors.merge(&part_errors);
        all.last = all.last.max(finished);
    }
    Ok(all)
}

/// What one connection's share of the runners came back with.
type Part = (Vec<Held>, Lat, Errors, Instant);

/// Runs `work` over `connections` connections, each with its share of `items`.
pub(crate) async fn on_connections<T, F, Fut>(
    target: &Target,
    org: &LoadOrg,
    connections: usize,
    items: Vec<T>,
    work: F,
) -> Result<Vec<Result<Part>>>
where
    T: Send + 'static,
    F: Fn(Client, LoadOrg, Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Result<Part>> + Send + 'static,
{
    let mut shares: Vec<Vec<T>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % connections].push(item);
    }
    // Connected all at once: one connection's wait for a node (a dead one
    // of a cluster, say) must not delay the others'.
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..shares.len() {
        let opts = target.options(&org.key);
        connecting.spawn(async move { (i, Client::connect(&opts).await) });
    }
    let mut clients: Vec<Option<Client>> = (0..shares.len()).map(|_| None).collect();
    while let Some(joined) = connecting.join_next().await {
        let (i, client) = joined?;
        clients[i] = Some(client?);
    }
    let mut tasks = Vec::new();
    for (share, client) in shares.into_iter().zip(clients) {
        let client = client.context("a connection went missing")?;
        tasks.push(tokio::spawn(work(client, org.clone(), share)));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(anyhow::Error::from).and_then(|r| r));
    }
    Ok(out)
}

fn acquire_req(org: &LoadOrg, nonce: u128) -> Req {
    Req::Acquire { org: org.org.clone(), pool: PoolId::KRE_DEFAULT, machine: org.machine.clone(), nonce: Nonce(nonce) }
}

async fn acquire(client: Client, org: LoadOrg, nonces: Vec<u128>) -> Result<Part> {
    let mut held = Vec::with_capacity(nonces.len());
    let mut errors = Errors::default();
    for chunk in nonces.chunks(BATCH) {
        let reqs = chunk.iter().map(|n| acquire_req(&org, *n)).collect();
        for (nonce, r) in chunk.iter().zip(client.call_batch(reqs).await) {
            match r {
                Ok(Resp::Leased { token, .. }) => held.push(Held { nonce: *nonce, token }),
                Ok(other) => bail!("an acquire answered {other:?}"),
                Err(e) => errors.add(&e),
            }
        }
    }
    // The crash comes next: leave without a word (a clean close would end the sessions).
    client.abandon();
    Ok((held, Lat::new(), errors, Instant::now()))
}

/// Re-attaches a share of the runners; latency counts from `ready`, when
/// the restarted broker first answered.
async fn reattach(client: Client, org: LoadOrg, held: Vec<Held>, ready: Instant) -> Result<Part> {
    let started = ready;
    let mut lat = Lat::new();
    let mut errors = Errors::default();
    let mut back = Vec::with_capacity(held.len());
    for chunk in held.chunks(BATCH) {
        let reqs = chunk
            .iter()
            .map(|h| Req::Reattach {
                org: org.org.clone(),
                pool: PoolId::KRE_DEFAULT,
                machine: org.machine.clone(),
                nonce: Nonce(h.nonce),
                token: h.token,
            })
            .collect();
        for (h, r) in chunk.iter().zip(client.call_batch(reqs).await) {
            match r {
                Ok(Resp::Leased { token, .. }) => {
                    lat.record(started.elapsed());
                    back.push(Held { nonce: h.nonce, token });
                }
                Ok(other) => bail!("a re-attach answered {other:?}"),
                Err(e) => errors.add(&e),
            }
        }
    }
    let finished = Instant::now();
    client.abandon();
    Ok((back, lat, errors, finished))
}
