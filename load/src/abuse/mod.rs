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
use license_broker::client::{Client, ClientOptions};
use license_broker::proto::{encode, ClientFrame, Hello, VERSION};
use license_broker::value::PoolId;
use parking_lot::Mutex;

use crate::report::{Errors, Lat, Report};
use crate::scenarios::Params;
use crate::target::{LoadOrg, Target};

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
    let mut attackers = Vec::new();
    let per_address = p.connections.div_ceil(usize::from(ATTACK_ADDRESSES));
    // ABUSE_KINDS=Silent,NeverRead,web_idle,... runs only those kinds (to
    // see what each costs; any case).
    let kinds: Vec<Kind> = match std::env::var("ABUSE_KINDS") {
        Ok(v) => KINDS.iter().copied().filter(|k| v.split(',').any(|n| n.eq_ignore_ascii_case(&name(*k)))).collect(),
        Err(_) => KINDS.to_vec(),
    };
    let site = target.web()?.context("the spawned broker's web door")?;
    let door = Arc::new(web::Door::new(&site, &org.key, org.org.as_str()));
    // The attackers run on a runtime of their own, optionally at a lower
    // CPU priority (`--attacker-nice`): on one box the attacker's own TLS
    // work competes with the broker for the same cores, which a remote
    // attacker's would not.
    let nice = p.attacker_nice;
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            if nice > 0 {
                // SAFETY: setpriority on this thread's own id; no pointers.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
            }
        })
        .build()?;
    let _in_attack_rt = attack_rt.enter();
    for a in 0..ATTACK_ADDRESSES {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, if p.attack_from_runner { 1 } else { 2 + a }));
        let endpoint = attack_endpoint(ip, &target.ca)?;
        for i in 0..per_address.min(p.connections - usize::from(a) * per_address) {
            let kind = kinds[(usize::from(a) * per_address + i) % kinds.len()];
            let (endpoint, stop, stats) = (endpoint.clone(), stop.clone(), stats.clone());
            let server: SocketAddr = target.server.parse()?;
            let attacker = match kind {
                Kind::Web(w) => attack_rt.spawn(attack_web(w, door.clone(), ip, stop, stats)),
                _ => attack_rt.spawn(async move { attack(kind, endpoint, server, stop, stats).await }),
            };
            attackers.push(attacker);
        }
    }
    drop(_in_attack_rt);
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
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
    };
    // The runner has a runtime (and thread) of its own: the 1,000 attacker
    // tasks in this process must not delay it, only the broker may.
    let watched = {
        let (key, name) = (org.key.clone(), org.org.to_string());
        tokio::task::spawn_blocking(move || web::watch(site, &key, &name, ends))
    };
    let legit = {
        let (opts, org) = (target.options(&org.key), org.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        tokio::task::spawn_blocking(move || runtime.block_on(legit_runner(opts, org, ends))).await??
    };
    let watched = watched.await??;
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.abort();
    }
    // The attackers vanish with their runtime (their connections close).
    attack_rt.shutdown_background();
    let _ = sampler.await;
    let peak = peak.load(Ordering::Relaxed);

    // After: how long until the broker's memory is back near its baseline.
    let left = Instant::now();
    let mut after = target.rss_bytes().unwrap_or(0);
    let mut recovered_in = None;
    while left.elapsed() < RECOVERY {
        after = target.rss_bytes().unwrap_or(after);
        if after as f64 <= baseline as f64 * RECOVERY_RATIO {
            recovered_in = Some(left.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The broker still serves after all of it.
    let alive = runner.status(Some(&org.org)).await.is_ok();
    runner.close().await;

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
    r.extra("broker_rss_baseline_mib", mib(baseline));
    r.extra("broker_rss_peak_mib", mib(peak));
    r.extra("broker_rss_after_mib", mib(after));
    r.extra("memory_back_within_s", recovered_in.map(|d| d.as_secs_f64()));
    r.extra("runner_connects", legit.connects);
    r.extra("runner_connects_refused", legit.refused);
    let p99 = legit.pair.stats().p99_us;
    let under = |lat: &Lat, target: Duration| lat.stats().p99_us <= target.as_micros() as u64;
    let targets = [
        ("target_peak_rss_le_256mib", peak <= PEAK_TARGET),
        ("target_memory_back_le_1.5x_within_30s", recovered_in.is_some()),
        ("target_runner_p99_le_10ms", p99 <= P99_TARGET.as_micros() as u64),
        ("target_scrape_p99_le_100ms", under(&watched.scrape, SCRAPE_P99_TARGET)),
        ("target_no_scrape_missed", watched.scrapes_missed == 0 && watched.scrape.stats().count > 0),
        ("target_page_p99_le_200ms", under(&watched.page, PAGE_P99_TARGET)),
    ];
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
    Ok(r)
}

/// What the legitimate runner saw.
struct Legit {
    pair: Lat,
    fresh: Lat,
    connects: u64,
    refused: u64,
    errors: Errors,
}

/// Acquire+release on the runner's connection every 20 ms; a fresh
/// connection's connect+acquire+release every 250 ms; until `ends`.
async fn legit_runner(opts: ClientOptions, org: LoadOrg, ends: Instant) -> Result<Legit> {
    // Its own connection, made on this runtime: its I/O is driven here too.
    let runner = Client::connect(&opts).await?;
    let out = Arc::new(Mutex::new(Legit {
        pair: Lat::new(),
        fresh: Lat::new(),
        connects: 0,
        refused: 0,
        errors: Errors::default(),
    }));
    let fresh = {
        let (opts, org, out) = (opts.clone(), org.clone(), out.clone());
        tokio::spawn(async move {
            let mut nonce = 1u128 << 100;
            while Instant::now() < ends {
                let started = Instant::now();
                nonce += 1;
                let (refused, r, elapsed) = match Client::connect(&opts).await {
                    Ok(c) => {
                        let r = match c.acquire(&org.org, PoolId::KRE_DEFAULT, &org.machine, nonce).await {
                            Ok(lease) => c.release(lease.session).await,
                            Err(e) => Err(e),
                        };
                        let elapsed = started.elapsed();
                        c.close().await;
                        (false, r, elapsed)
                    }
                    Err(e) => (true, Err(e), started.elapsed()),
                };
                {
                    let mut o = out.lock();
                    o.connects += 1;
                    o.refused += u64::from(refused);
                    match r {
                        Ok(()) => o.fresh.record(elapsed),
                        Err(e) => o.errors.add(&e),
                    }
                }
                tokio::time::sleep(Duration::from_millis(250).saturating_sub(started.elapsed())).await;
            }
        })
    };
    let mut nonce = 1u128 << 90;
    while Instant::now() < ends {
        let started = Instant::now();
        nonce += 1;
        let r = match runner.acquire(&org.org, PoolId::KRE_DEFAULT, &org.machine, nonce).await {
            Ok(lease) => runner.release(lease.session).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => out.lock().pair.record(started.elapsed()),
            Err(e) => out.lock().errors.add(&e),
        }
        tokio::time::sleep(Duration::from_millis(20).saturating_sub(started.elapsed())).await;
    }
    let _ = fresh.await;
    runner.close().await;
    let o = out.lock();
    Ok(Legit {
        pair: o.pair.clone(),
        fresh: o.fresh.clone(),
        connects: o.connects,
        refused: o.refused,
        errors: o.errors.clone(),
    })
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

/// A QUIC client endpoint on `ip` (any loopback address) trusting `ca`,
/// without session resumption (every attacker pays a full handshake).
fn attack_endpoint(ip: IpAddr, ca: &std::path::Path) -> Result<quinn::Endpoint> {
    let mut ep = quinn::Endpoint::client(SocketAddr::new(ip, 0)).with_context(|| format!("binding {ip}"))?;
    let mut config = license_broker::tls::client_config_with(Some(ca), false)?;
    let mut transport = quinn::TransportConfig::default();
    // The attacker keeps its connections alive with PINGs (the broker must
    // close silent ones itself).
    transport.keep_alive_interval(Some(Duration::from_secs(1)));
    config.transport_config(Arc::new(transport));
    ep.set_default_client_config(config);
    Ok(ep)
}

/// One attacker: connects, misbehaves as `kind` until the broker closes
/// it, pauses, and again, until `stop`.
async fn attack(
    kind: Kind,
    endpoint: quinn::Endpoint,
    server: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<AttackStats>,
) {
    let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        let conn = match endpoint.connect(server, "localhost") {
            Ok(connecting) => connecting.await,
            Err(_) => {
                stats.refused[k].fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        let conn = match conn {
            Ok(c) => c,
            Err(_) => {
                stats.refused[k].fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        stats.connected[k].fetch_add(1, Ordering::Relaxed);
        match kind {
            // The web door's kinds run in `attack_web`.
            Kind::Silent | Kind::Web(_) => {}
            Kind::NeverRead => never_read(&conn).await,
            Kind::Slowloris => slowloris(&conn).await,
            Kind::FailedHellos => failed_hellos(&conn).await,
        }
        let _ = conn.closed().await;
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// Every stream the broker allows, each pipelining junk frames (a valid
/// length, an undecodable body) until flow control stops it; never reads.
async fn never_read(conn: &quinn::Connection) {
    let mut junk = Vec::new();
    for _ in 0..1024 {
        junk.extend_from_slice(&8u32.to_be_bytes());
        junk.extend_from_slice(&[0xff; 8]);
    }
    let mut writers = Vec::new();
    while let Ok(Ok((mut send, recv))) = tokio::time::timeout(Duration::from_millis(200), conn.open_bi()).await {
        let junk = junk.clone();
        writers.push(tokio::spawn(async move {
            let _keep = recv;
            while send.write_all(&junk).await.is_ok() {}
        }));
        if writers.len() >= 64 {
            break;
        }
    }
    let _ = conn.closed().await;
    for w in writers {
        w.abort();
    }
}

/// Every stream the broker allows, each holding most of a 64 KiB frame.
async fn slowloris(conn: &quinn::Connection) {
    let mut partial = (64u32 * 1024).to_be_bytes().to_vec();
    partial.extend(std::iter::repeat_n(0x01, 60 * 1024));
    let mut held = Vec::new();
    while let Ok(Ok((mut send, recv))) = tokio::time::timeout(Duration::from_millis(200), conn.open_bi()).await {
        if tokio::time::timeout(Duration::from_secs(2), send.write_all(&partial)).await.is_err() {
            break;
        }
        held.push((send, recv));
        if held.len() >= 64 {
            break;
        }
    }
    let _ = conn.closed().await;
}

/// `Hello`s with wrong keys, one stream, as fast as the broker answers.
async fn failed_hellos(conn: &quinn::Connection) {
    let Ok((mut send, mut recv)) = conn.open_bi().await else { return };
    let mut hello = Vec::new();
    let frame = ClientFrame::Hello(Hello { version: VERSION, api_key: "lbk_guess".into(), client: "abuse".into() });
    encode(&frame, &mut hello);
    let mut buf = vec![0u8; 4096];
    loop {
        if send.write_all(&hello).await.is_err() {
            return;
        }
        match recv.read(&mut buf).await {
            Ok(Some(_)) => {}
            _ => return,
        }
    }
}
