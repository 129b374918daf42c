//! `license-load`: drives a broker over real QUIC on loopback and reports
//! latency percentiles, throughput, errors by code, and whether the broker's
//! invariants held. Every loop is bounded in time and stops by itself.

mod abuse;
mod admission;
mod burst;
mod churn;
mod compare;
mod console;
mod dashboard;
mod echo;
mod ephemeral;
mod failover;
mod fleet;
mod lanes;
mod lists;
mod machine;
mod preflight;
mod queue;
mod receiver;
mod redis_sem;
mod report;
mod restart;
mod scenarios;
mod scrape;
mod target;
mod web;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use crate::report::Report;

// The same allocator as the broker, so neither side of a comparison pays
// for glibc malloc's pauses that the other does not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use crate::scenarios::Params;
use crate::target::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// C connections × D in flight: acquire then release, as fast as possible.
    Churn,
    /// R runners holding sessions for random times, heartbeating.
    Steady,
    /// R runners ask at once for a pool of quota Q < R.
    Burst,
    /// Runners vanish; measures how fast their seats are reclaimed.
    Die,
    /// New connections per second, each authenticating and acquiring once.
    Handshake,
    /// Broker vs a Redis semaphore vs bare quinn, same shape, one run.
    Compare,
    /// N runners hold leases; the spawned broker is killed (SIGKILL) and
    /// restarted under them; every runner re-attaches with its token.
    Restart,
    /// R runners wait in a full pool's queue (quota Q, default 64); seats
    /// are freed one at a time: the hand-off to the head waiter, in order.
    Queue,
    /// `queue` with a lane: half the seats reserved for `pipeline=release`,
    /// every other waiter carrying it; reserved seats freed go to the
    /// lane's head, shared ones to the queue's (hand-off latency, order).
    Lanes,
    /// R ephemeral machines (default 100,000) churn through a pool of Q
    /// machine slots and seats (default 1,000), Q/4 at once: refusals for
    /// want of a slot, registered machines never above Q.
    Ephemeral,
    /// 1,000 hostile connections (--connections: silent, never-read,
    /// slowloris, failed-Hello floods) against a broker on its default
    /// limits, while a runner works: the broker's memory and the runner's
    /// latency.
    Abuse,
    /// A million live sessions (R) and as many audit entries: the CLI's
    /// `session list` and `audit` page through them; time and CLI memory.
    Lists,
    /// `/metrics` scraped with many orgs (--orgs, 10,000 by default):
    /// the scrape's latency.
    Scrape,
    /// The dashboard's org page over a year of minute history (seeded):
    /// page latency per range, and the history's size on disk.
    Dashboard,
    /// The license console's pages for an org of 10,000 members, 1,000
    /// machines, 10,000 live sessions and a year of history (seeded):
    /// each page's server time (Server-Timing) and request time.
    Console,
    /// Three broker nodes on a three-member etcd (spawned; needs etcd):
    /// the serving node killed --kills times under N runners: time until
    /// a node serves and every runner re-attached; etcd writes per 1,000
    /// admissions; clustered vs standalone churn.
    Failover,
    /// How good `check`'s estimate of the wait is on two synthetic CI days
    /// (a pure replay, no broker): the estimate against the wait each
    /// queued job then got, for a pool of --quota seats (default 20).
    Preflight,
    /// Webhooks (spawned brokers, receivers on loopback): event → receiver
    /// p50/p99; broker CPU per pair at a fixed rate (--rate, 20,000) with
    /// 10 webhooks subscribed to everything vs none, and the acquire p99
    /// with a receiver that answers in 10 s (interleaved rounds); the
    /// outbox's size on disk per million events.
    Webhooks,
    /// Admission cost with 10 reservations and caps on the pool vs none
    /// (one spawned broker, interleaved --rounds): broker CPU per pair
    /// and acquire p50/p99 at a fixed rate (--rate, 20,000).
    Admission,
    /// (internal) the bare-quinn echo server used by `compare`.
    #[value(hide = true)]
    EchoServer,
}

/// Load harness for license-broker (loopback only).
#[derive(Parser, Debug)]
#[command(name = "license-load", version, about)]
struct Args {
    scenario: Scenario,
    /// Start a broker of our own from the built binary (the default without --server).
    #[arg(long, conflicts_with = "server")]
    spawn: bool,
    /// A running broker on loopback, or a cluster's nodes (a,b,c).
    #[arg(long, env = "LB_SERVER", requires_all = ["ca", "api_key"])]
    server: Option<String>,
    /// Its certificate.
    #[arg(long, env = "LB_CA")]
    ca: Option<PathBuf>,
    /// The operator's API key (the harness creates orgs of its own).
    #[arg(long, env = "LB_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Connections (default 16; abuse: hostile connections, 1,000).
    #[arg(long)]
    connections: Option<usize>,
    /// Requests in flight per connection (compare measures latency at 16).
    #[arg(long)]
    depth: Option<usize>,
    /// Orgs to spread churn over (4), or to scrape (10,000).
    #[arg(long)]
    orgs: Option<usize>,
    /// Simulated runners (steady, burst, die, restart; waiters in queue;
    /// webhooks: events written for the outbox's size, 1,000,000).
    #[arg(long)]
    runners: Option<usize>,
    /// Pool quota (burst).
    #[arg(long)]
    quota: Option<u32>,
    /// Runners that vanish (die).
    #[arg(long)]
    victims: Option<usize>,
    /// Pace churn at this many pairs per second in total.
    #[arg(long)]
    rate: Option<f64>,
    /// Lease TTL of a spawned broker (default: 2s for die, 30s otherwise).
    #[arg(long, value_parser = humantime::parse_duration)]
    lease_ttl: Option<Duration>,
    /// This harness's own async worker threads (default: one per CPU; for
    /// compare, half of them: the servers get the other half).
    #[arg(long)]
    workers: Option<usize>,
    /// Worker threads of a spawned broker and echo server (default: one per
    /// CPU; for compare, half of them, as Redis gets one thread).
    #[arg(long)]
    broker_workers: Option<usize>,
    /// Print a JSON report instead of a table.
    #[arg(long)]
    json: bool,
    /// handshake: resume TLS sessions from tickets (as reconnecting runners
    /// do) instead of making a full handshake every time.
    #[arg(long)]
    resume: bool,
    /// abuse: fail when a target is missed (peak memory ≤ 256 MiB, back to
    /// ≤ 1.5× within 30 s, runner p99 ≤ 10 ms), not only an invariant;
    /// failover: when a node does not serve within 3 s of a kill (p99).
    #[arg(long)]
    strict: bool,
    /// abuse: run the attackers at this nice value (e.g. 10), so their own
    /// TLS work yields to the broker's, as a remote attacker's would.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    attacker_nice: i32,
    /// abuse: the attackers connect from the runner's own address
    /// (127.0.0.1, as a CI fleet and an attacker behind one NAT address)
    /// instead of eight addresses of their own.
    #[arg(long)]
    attack_from_runner: bool,
    /// steady, die: heartbeat exactly every third of the TTL, all in step
    /// (runners did before they spread their beats), not as the runner does.
    #[arg(long)]
    lockstep: bool,
    /// dashboard: keep the broker running this long after measuring (to
    /// look at the seeded dashboard; its address and Owner key are printed).
    #[arg(long, value_parser = humantime::parse_duration)]
    keep: Option<Duration>,
    /// dashboard: days of minute history to seed.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=3650))]
    days: u64,
    /// webhooks, admission: rounds of the interleaved arms (webhooks: none, 10
    /// webhooks, a slow receiver; admission: a plain pool, a capped one).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=50))]
    rounds: u64,
    /// failover: how many times the serving node is killed.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// failover: orgs (each with a pool) spread over the nodes besides the
    /// runners' org; per kill, how long until every org of the killed node
    /// is served by another.
    #[arg(long, default_value_t = 300)]
    spread_orgs: usize,
    /// compare: an older broker binary to run with the same shapes after
    /// this build's (prints both and this one's ratio to it).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// (echo-server) address to listen on.
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// (echo-server) where to keep its certificate.
    #[arg(long, hide = true)]
    data_dir: Option<PathBuf>,
}

/// Half the machine's CPUs (at least one): `compare` splits the machine
/// between the servers and the load generator, so neither starves the other.
fn half_the_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.scenario == Scenario::Compare {
        args.workers = args.workers.or(Some(half_the_cores()));
        args.broker_workers = args.broker_workers.or(Some(half_the_cores()));
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers.filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the scenario; `Ok(false)` when an invariant failed.
async fn run(a: Args) -> Result<bool> {
    if a.scenario == Scenario::EchoServer {
        let dir = a.data_dir.context("--data-dir is required")?;
        target::require_loopback(&a.listen.to_string())?;
        echo::serve(a.listen, &dir).await?;
        return Ok(true);
    }
    let p = params(&a);
    if let Some(done) = own_harness(&a, &p).await {
        return done;
    }
    let mut target = target_of(&a, &p)?;
    let report = scenario(&a, &p, &mut target).await?;
    emit(&report, a.json, None);
    Ok(report.passed())
}

/// The scenario's parameters: the flags, or each scenario's defaults.
fn params(a: &Args) -> Params {
    let ttl = a.lease_ttl.unwrap_or(match a.scenario {
        Scenario::Die => Duration::from_secs(2),
        // Short enough that the kills come often, long enough to outlast a failover.
        Scenario::Failover => Duration::from_secs(10),
        _ => Duration::from_secs(30),
    });
    let runners = a.runners.unwrap_or(match a.scenario {
        Scenario::Burst => 1000,
        Scenario::Die => 1000,
        Scenario::Restart => 100_000,
        Scenario::Failover => 1_000,
        Scenario::Lists => 1_000_000,
        // webhooks: the events written for the outbox's size.
        Scenario::Webhooks => 1_000_000,
        Scenario::Ephemeral => 100_000,
        _ => 10_000,
    });
    Params {
        duration: a.duration,
        connections: a.connections.unwrap_or(if a.scenario == Scenario::Abuse { 1_000 } else { 16 }).max(1),
        depth: a.depth.unwrap_or(64).max(1),
        orgs: a.orgs.unwrap_or(if a.scenario == Scenario::Scrape { 10_000 } else { 4 }).max(1),
        runners,
        quota: a.quota.unwrap_or(match a.scenario {
            Scenario::Queue | Scenario::Lanes => 64,
            Scenario::Ephemeral => 1_000,
            _ => (runners as u32 / 2).max(1),
        }),
        victims: a.victims.unwrap_or((runners / 10).clamp(1, 100)),
        rate: a.rate,
        lease_ttl: ttl,
        broker_workers: a.broker_workers,
        resume: a.resume,
        strict: a.strict,
        attacker_nice: a.attacker_nice,
        attack_from_runner: a.attack_from_runner,
        lockstep: a.lockstep,
    }
}

/// The broker the scenario runs against: `--server`'s, or one spawned.
fn target_of(a: &Args, p: &Params) -> Result<Target> {
    if matches!(
        a.scenario,
        Scenario::Restart
            | Scenario::Lists
            | Scenario::Abuse
            | Scenario::Scrape
            | Scenario::Dashboard
            | Scenario::Console
    ) && a.server.is_some()
    {
        bail!("restart, lists and abuse watch, stop or start the broker process, so they always spawn their own");
    }
    Ok(match &a.server {
        Some(s) => Target::remote(s.clone(), a.ca.clone().context("--ca")?, a.api_key.clone().context("--api-key")?)?,
        None => {
            let http =
                matches!(a.scenario, Scenario::Scrape | Scenario::Dashboard | Scenario::Abuse | Scenario::Console);
            Target::spawn_with(p.lease_ttl, p.broker_workers, a.scenario != Scenario::Abuse, http)?
        }
    })
}

/// Runs a scenario that drives `target`.
async fn scenario(a: &Args, p: &Params, target: &mut Target) -> Result<Report> {
    Ok(match a.scenario {
        Scenario::Churn => scenarios::churn(target, p).await?,
        Scenario::Steady => scenarios::steady(target, p).await?,
        Scenario::Burst => burst::run(target, p.runners, p.quota, p.connections).await?,
        Scenario::Die => scenarios::die(target, p).await?,
        Scenario::Restart => restart::run(target, p).await?,
        Scenario::Queue => queue::run(target, p).await?,
        Scenario::Lanes => lanes::run(target, p).await?,
        Scenario::Ephemeral => ephemeral::run(target, p).await?,
        Scenario::Lists => lists::run(target, p).await?,
        Scenario::Abuse => abuse::run(target, p).await?,
        Scenario::Scrape => scrape::run(target, p).await?,
        Scenario::Dashboard => dashboard::run(target, a.days, a.keep).await?,
        Scenario::Console => console::run(target, a.days).await?,
        Scenario::Handshake => {
            let org = target.setup_orgs(1, license_broker::core::MAX_QUOTA).await?.remove(0);
            let (rate, lat, errors) =
                scenarios::handshake(&target.server, &target.ca, &org.key, Some(org.clone()), p).await?;
            scenarios::handshake_report(rate, &lat, &errors, p, "broker")
        }
        Scenario::Compare
        | Scenario::EchoServer
        | Scenario::Failover
        | Scenario::Preflight
        | Scenario::Webhooks
        | Scenario::Admission => {
            unreachable!("handled above")
        }
    })
}

/// The scenarios that bring their own servers (or none): their outcome,
/// or `None` for one that runs against a broker.
async fn own_harness(a: &Args, p: &Params) -> Option<Result<bool>> {
    let own = matches!(
        a.scenario,
        Scenario::Compare | Scenario::Failover | Scenario::Preflight | Scenario::Webhooks | Scenario::Admission
    );
    if own && a.server.is_some() {
        let why = "compare, failover, preflight, webhooks and admission always bring their own servers (or none)";
        return Some(Err(anyhow::anyhow!(why)));
    }
    let (report, summary) = match a.scenario {
        Scenario::Compare => match compare::run(p, a.baseline.as_deref()).await {
            Ok((report, summary)) => (report, Some(summary)),
            Err(e) => return Some(Err(e)),
        },
        Scenario::Failover => match failover::run(p, a.kills, a.spread_orgs).await {
            Ok(report) => (report, None),
            Err(e) => return Some(Err(e)),
        },
        Scenario::Preflight => (preflight::run(a.quota.unwrap_or(20)), None),
        Scenario::Webhooks => match webhooks::run(p, a.rounds as usize).await {
            Ok(report) => (report, None),
            Err(e) => return Some(Err(e)),
        },
        Scenario::Admission => match admission::run(p, a.rounds as usize).await {
            Ok(report) => (report, None),
            Err(e) => return Some(Err(e)),
        },
        _ => return None,
    };
    emit(&report, a.json, summary);
    Some(Ok(report.passed()))
}

fn emit(report: &Report, json: bool, summary: Option<serde_json::Value>) {
    if json {
        let mut v = serde_json::to_value(report).unwrap_or_default();
        if let (Some(obj), Some(serde_json::Value::Object(extra))) = (v.as_object_mut(), summary) {
            obj.extend(extra);
        }
        println!("{v}");
    } else {
        report.print_human();
    }
}
