//! `abuse`: hostile connections against a spawned broker on its default
//! limits, while a legitimate runner keeps working.
//!
//! The attackers (`--connections`, 1,000 by default) come from eight
//! loopback addresses (127.0.0.2–9, so the per-address limits do not simply
//! refuse them all), in four equal kinds, each reconnecting (after a short
//! pause) whenever the broker closes it, until the attack ends:
//! - **silent**: completes the handshake and never sends a `Hello`;
//! - **never-read**: opens every stream it may and pipelines junk frames
//!   without ever reading an answer or granting flow-control credit;
//! - **slowloris**: opens every stream it may and sends most of a 64 KiB
//!   frame on each, never the rest;
//! - **failed-Hello flood**: sends `Hello`s with wrong keys as fast as the
//!   broker answers;
//!
//! and four on the web door (HTTPS; `web`): idle sockets, slow request
//! heads, reports never read, and wrong bearer keys as fast as answered.
//!
//! With `--attack-from-runner` they all come from the runner's own address
//! instead (127.0.0.1: a CI fleet behind one NAT address with an attacker
//! among it): the address's share of the strangers' budget is full, and
//! each new connection takes the place of the oldest stranger.
//!
//! Meanwhile a legitimate runner (127.0.0.1) acquires and releases on its
//! connection every 20 ms, and every 250 ms connects afresh, acquires and
//! releases. Measured: the broker's resident memory (baseline, peak during
//! the attack, and after the attackers leave, for up to 30 s), the
//! runner's latencies, and whether any of its connections was refused; and
//! from 127.0.0.1 a `/metrics` scrape every second (10 s timeout: missed
//! scrapes counted) and a signed-in org page every half second.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use license_broker::client::Client;
use license_broker::value::PoolId;

use self::legit::{legit_runner, Legit};
use crate::report::{Lat, Report};
use crate::scenarios::Params;
use crate::target::{LoadOrg, Target};
use crate::web::Web;

mod legit;
mod quic;
mod web;

/// Source addresses the attackers spread over.
const ATTACK_ADDRESSES: u8 = 8;
/// How long an attacker waits before reconnecting after being closed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);
/// Longest the memory may take to come back after the attack.
const RECOVERY: Duration = Duration::from_secs(30);
/// Targets (reported, and checked when `--strict`): peak RSS, recovery
/// ratio, the runner's p99.
const PEAK_TARGET: u64 = 256 << 20;
const RECOVERY_RATIO: f64 = 1.5;
const P99_TARGET: Duration = Duration::from_millis(10);
/// The web door's targets: a scrape's p99, a signed-in page's p99.
const SCRAPE_P99_TARGET: Duration = Duration::from_millis(100);
const PAGE_P99_TARGET: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Silent,
    NeverRead,
    Slowloris,
    FailedHellos,
    Web(web::WebKind),
}

const KINDS: [Kind; 8] = [
    Kind::Silent,
    Kind::NeverRead,
    Kind::Slowloris,
    Kind::FailedHellos,
    Kind::Web(web::WebKind::Idle),
    Kind::Web(web::WebKind::SlowHead),
    Kind::Web(web::WebKind::UnreadReport),
    Kind::Web(web::WebKind::FailedKeys),
];

/// A kind's name in the report (`web_idle`, `silent`...).
fn name(kind: Kind) -> String {
    match kind {
        Kind::Web(w) => format!("web_{w:?}").to_lowercase(),
        k => format!("{k:?}").to_lowercase(),
    }
}

/// What the attackers managed, by kind.
#[derive(Default)]
struct AttackStats {
    connected: [AtomicU64; 8],
    refused: [AtomicU64; 8],
}

pub async fn run(target: &Target, p: &Params) -> Result<Report> {
    let org = target.setup_orgs(1, 1_000).await?.remove(0);
    let runner = Client::connect(&target.options(&org.key)).await?;
    for n in 0..200u128 {
        let lease = runner.acquire(&org.org, PoolId::KRE_DEFAULT, &org.machine, n).await?;
        runner.release(lease.session).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = target.rss_bytes().context("the broker's memory (a spawned broker on Linux)")?;

    // The attack and the runner, side by side, for the run's duration.
    let ends = Instant::now() + p.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(AttackStats::default());
    let site = target.web()?.context("the spawned broker's web door")?;
    let door = Arc::new(web::Door::new(&site, &org.key, org.org.as_str()));
    let attack_rt = attack_runtime(p.attacker_nice)?;
    let attackers = launch(&attack_rt, target, p, door, (&stop, &stats))?;
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = sample_peak(target, &peak, &stop);
    let (legit, watched) = observe(target, &org, site, ends).await?;
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.abort();
    }
    // The attackers vanish with their runtime (their connections close).
    attack_rt.shutdown_background();
    let _ = sampler.await;
    let peak = peak.load(Ordering::Relaxed);
    let (after, recovered_in) = recovery(target, baseline).await;
    // The broker still serves after all of it.
    let alive = runner.status(Some(&org.org)).await.is_ok();
    runner.close().await;
    let memory = Memory { baseline, peak, after, recovered_in };
    Ok(report(p, &stats, (legit, watched), memory, alive))
}

/// The attackers' own runtime, optionally at a lower CPU priority
/// (`--attacker-nice`): on one box the attacker's own TLS work competes
/// with the broker for the same cores, which a remote attacker's would not.
fn attack_runtime(nice: i32) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            if nice > 0 {
                // SAFETY: setpriority on this thread's own id; no pointers.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
            }
        })
        .build()?)
}

/// Starts `p.connections` attackers on `rt`, spread over the attack
/// addresses (or all on the runner's, `--attack-from-runner`) and over the
/// kinds (`ABUSE_KINDS=Silent,NeverRead,web_idle,...` runs only those, to
/// see what each costs; any case).
fn launch(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    p: &Params,
    door: Arc<web::Door>,
    (stop, stats): (&Arc<AtomicBool>, &Arc<AttackStats>),
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let per_address = p.connections.div_ceil(usize::from(ATTACK_ADDRESSES));
    let kinds: Vec<Kind> = match std::env::var("ABUSE_KINDS") {
        Ok(v) => KINDS.iter().copied().filter(|k| v.split(',').any(|n| n.eq_ignore_ascii_case(&name(*k)))).collect(),
        Err(_) => KINDS.to_vec(),
    };
    let _in_attack_rt = rt.enter();
    let mut attackers = Vec::new();
    for a in 0..ATTACK_ADDRESSES {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, if p.attack_from_runner { 1 } else { 2 + a }));
        let endpoint = quic::attack_endpoint(ip, &target.ca)?;
        for i in 0..per_address.min(p.connections - usize::from(a) * per_address) {
            let kind = kinds[(usize::from(a) * per_address + i) % kinds.len()];
            let (endpoint, stop, stats) = (endpoint.clone(), stop.clone(), stats.clone());
            let server: SocketAddr = target.server.parse()?;
            let attacker = match kind {
                Kind::Web(w) => rt.spawn(attack_web(w, door.clone(), ip, stop, stats)),
                _ => rt.spawn(async move { quic::attack(kind, endpoint, server, stop, stats).await }),
            };
            attackers.push(attacker);
        }
    }
    Ok(attackers)
}

/// Samples the broker's RSS every 100 ms into `peak` until `stop`.
fn sample_peak(target: &Target, peak: &Arc<AtomicU64>, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let (peak, stop) = (peak.clone(), stop.clone());
    let pid_rss = target.rss_probe();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            if let Some(rss) = pid_rss() {
                peak.fetch_max(rss, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The legitimate runner and the web watchers until `ends`. The runner has
/// a runtime (and thread) of its own: the 1,000 attacker tasks in this
/// process must not delay it, only the broker may.
async fn observe(target: &Target, org: &LoadOrg, site: Web, ends: Instant) -> Result<(Legit, web::Watched)> {
    let watched = {
        let (key, name) = (org.key.clone(), org.org.to_string());
        tokio::task::spawn_blocking(move || web::watch(site, &key, &name, ends))
    };
    let legit = {
        let (opts, org) = (target.options(&org.key), org.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        tokio::task::spawn_blocking(move || runtime.block_on(legit_runner(opts, org, ends))).await??
    };
    Ok((legit, watched.await??))
}

/// The broker's memory over the run.
struct Memory {
    baseline: u64,
    /// The most sampled during the attack.
    peak: u64,
    /// The last read after it.
    after: u64,
    /// How long after the attack it came back near the baseline, if it did.
    recovered_in: Option<Duration>,
}

/// After: how long (at most `RECOVERY`) until the broker's memory is back
/// near its baseline; the last reading, and the time if it got there.
async fn recovery(target: &Target, baseline: u64) -> (u64, Option<Duration>) {
    let left = Instant::now();
    let mut after = target.rss_bytes().unwrap_or(0);
    while left.elapsed() < RECOVERY {
        after = target.rss_bytes().unwrap_or(after);
        if after as f64 <= baseline as f64 * RECOVERY_RATIO {
            return (after, Some(left.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (after, None)
}

fn report(p: &Params, stats: &AttackStats, (legit, watched): (Legit, web::Watched), m: Memory, alive: bool) -> Report {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut r = Report::new("abuse", "broker");
    r.duration_s = p.duration.as_secs_f64();
    r.param("hostile_connections", p.connections);
    r.param("attack_addresses", if p.attack_from_runner { 1 } else { ATTACK_ADDRESSES });
    r.param("attacker_nice", p.attacker_nice);
    r.param("attack_from_runner", p.attack_from_runner);
    for (i, kind) in KINDS.iter().enumerate() {
        let name = name(*kind);
        r.extra(&format!("attack_{name}_connections_made"), stats.connected[i].load(Ordering::Relaxed));
        r.extra(&format!("attack_{name}_refused"), stats.refused[i].load(Ordering::Relaxed));
    }
    r.latency("runner_acquire_release", &legit.pair);
    r.latency("runner_connect_acquire_release", &legit.fresh);
    r.latency("web_scrape", &watched.scrape);
    r.latency("web_signed_in_page", &watched.page);
    r.extra("web_scrapes_missed", watched.scrapes_missed);
    r.extra("web_pages_failed", watched.pages_failed);
    r.errors = legit.errors.0.clone();
    r.extra("broker_rss_baseline_mib", mib(m.baseline));
    r.extra("broker_rss_peak_mib", mib(m.peak));
    r.extra("broker_rss_after_mib", mib(m.after));
    r.extra("memory_back_within_s", m.recovered_in.map(|d| d.as_secs_f64()));
    r.extra("runner_connects", legit.connects);
    r.extra("runner_connects_refused", legit.refused);
    let targets = targets(&legit, &watched, &m);
    for (name, met) in targets {
        r.extra(name, met);
    }
    r.check(
        "the runner connected every time",
        legit.refused == 0 && legit.connects > 0,
        format!("{} connects, {} refused", legit.connects, legit.refused),
    );
    r.check("the runner's requests all succeeded", legit.errors.0.is_empty(), format!("{:?}", legit.errors.0));
    r.check("the broker serves after the attack", alive, "status answered");
    if p.strict {
        for (name, met) in targets {
            r.check(name, met, "");
        }
    }
    r
}

/// The speed and memory targets: reported always, checked with `--strict`.
fn targets(legit: &Legit, watched: &web::Watched, m: &Memory) -> [(&'static str, bool); 6] {
    let p99 = legit.pair.stats().p99_us;
    let under = |lat: &Lat, target: Duration| lat.stats().p99_us <= target.as_micros() as u64;
    [
        ("target_peak_rss_le_256mib", m.peak <= PEAK_TARGET),
        ("target_memory_back_le_1.5x_within_30s", m.recovered_in.is_some()),
        ("target_runner_p99_le_10ms", p99 <= P99_TARGET.as_micros() as u64),
        ("target_scrape_p99_le_100ms", under(&watched.scrape, SCRAPE_P99_TARGET)),
        ("target_no_scrape_missed", watched.scrapes_missed == 0 && watched.scrape.stats().count > 0),
        ("target_page_p99_le_200ms", under(&watched.page, PAGE_P99_TARGET)),
    ]
}

/// One web attacker: misbehaves as `kind` from `ip` until the broker ends
/// it, pauses, and again, until `stop`.
async fn attack_web(
    kind: web::WebKind,
    door: Arc<web::Door>,
    ip: IpAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<AttackStats>,
) {
    let k = KINDS.iter().position(|x| *x == Kind::Web(kind)).unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        let slot = if web::once(kind, &door, ip).await { &stats.connected[k] } else { &stats.refused[k] };
        slot.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}
