//! `compare`: the broker against what a team would build instead (a Redis
//! Lua semaphore) and against the bare transport (a quinn echo server with
//! the same framing), same churn shape, same machine, one run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use license_broker::client::ClientOptions;
use license_broker::value::{MachineId, OrgName};
use serde_json::json;

use crate::churn::{self, Shape};
use crate::machine;
use crate::redis_sem::{self, RedisServer};
use crate::report::Report;
use crate::scenarios::{self, Params};
use crate::target::{LoadOrg, Target};

/// The echo server in a process of its own (like the broker and Redis).
pub struct Echo {
    child: Child,
    pub server: String,
    pub ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Echo {
    /// Starts it with `workers` async threads (like a spawned broker's).
    pub fn spawn(workers: Option<usize>) -> Result<Echo> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new(std::env::current_exe()?);
        if let Some(n) = workers {
            cmd.args(["--workers", &n.to_string()]);
        }
        let mut child = cmd
            .args(["echo-server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the echo server")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("echo stdout")?).read_line(&mut line)?;
        let server = line.trim().strip_prefix("listening on ").context("echo server did not start")?.to_string();
        Ok(Echo { child, server, ca: dir.path().join("tls/cert.pem"), _dir: dir })
    }

    fn options(&self) -> ClientOptions {
        ClientOptions {
            server_name: Some("localhost".into()),
            ..ClientOptions::new(self.server.clone(), Some(self.ca.clone()), "echo")
        }
    }

    fn org() -> Result<LoadOrg> {
        Ok(LoadOrg { org: OrgName::new("echo")?, key: "echo".into(), machine: MachineId::new("echo")? })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests in flight per connection for the latency measurement.
pub const LATENCY_DEPTH: usize = 16;

/// What one broker binary did in `compare`'s broker phases.
struct BrokerRun {
    /// The churn at full speed (its latencies and invariants).
    churn: Report,
    pairs_per_s: f64,
    /// The most pairs/s of the latency shape (16 in flight).
    lat_max: f64,
    /// The same shape paced at a fixed rate (its p99, invariants).
    paced: Report,
    /// Broker CPU (user + system) per pair during the paced phase, µs.
    cpu_us_per_pair: Option<f64>,
    handshakes_per_s: f64,
}

impl BrokerRun {
    fn p99_half(&self) -> u64 {
        self.paced.latency_us.get("acquire").map_or(0, |s| s.p99_us)
    }

    fn json(&self, pace: f64) -> serde_json::Value {
        json!({
            "pairs_per_s": self.pairs_per_s,
            "latency_shape_max_pairs_per_s": self.lat_max,
            "paced_pairs_per_s": pace,
            "p99_acquire_us_at_pace": self.p99_half(),
            "cpu_us_per_pair_at_pace": self.cpu_us_per_pair,
            "handshakes_per_s": self.handshakes_per_s,
        })
    }
}

/// Runs the broker phases against `bin`: churn at full speed, the latency
/// shape at full speed, then paced at `pace` (or half that shape's rate),
/// then handshakes.
async fn broker_run(bin: &Path, p: &Params, pace: Option<f64>) -> Result<BrokerRun> {
    let target = Target::spawn_from(bin, p.lease_ttl, p.broker_workers, true, false, &[])?;
    let churn = scenarios::churn(&target, p).await?;
    let pairs_per_s = churn.throughput["pairs_per_s"];
    // Latency is measured with shallower pipelining (16 in flight), at half
    // the maximum rate of that same shape: with 64 requests per write the
    // p99 is mostly the batch queued ahead of each request.
    eprintln!("compare: broker churn, {LATENCY_DEPTH} in flight (latency shape)");
    let lat_shape = Params { depth: LATENCY_DEPTH, ..p.clone() };
    let lat_max = scenarios::churn(&target, &lat_shape).await?.throughput["pairs_per_s"];
    eprintln!("compare: broker churn at a fixed rate (latency, CPU per pair)");
    let half = Params { rate: Some(pace.unwrap_or(lat_max / 2.0)), ..lat_shape.clone() };
    let (paced, cpu_us_per_pair) = cpu_per_pair(&target, scenarios::churn(&target, &half)).await?;
    eprintln!("compare: broker handshakes");
    let horg = target.setup_orgs(1, license_broker::core::MAX_QUOTA).await?.remove(0);
    let hs = Params { connections: 32, ..p.clone() };
    let (handshakes_per_s, _, _) =
        scenarios::handshake(&target.server, &target.ca, &horg.key, Some(horg.clone()), &hs).await?;
    Ok(BrokerRun { churn, pairs_per_s, lat_max, paced, cpu_us_per_pair, handshakes_per_s })
}

/// A churn run against `target` (spawned: its CPU is read from /proc) and
/// the broker's CPU (user + system) per acquire+release pair meanwhile, µs
/// (`None`: no figures). Run it paced: at full speed CPU per pair is the
/// cost of falling behind as much as of the work.
pub async fn cpu_per_pair(
    target: &Target,
    churn: impl std::future::Future<Output = Result<Report>>,
) -> Result<(Report, Option<f64>)> {
    let ticks = target.cpu_ticks();
    let run = churn.await?;
    let pairs = run.throughput["pairs_per_s"] * run.duration_s;
    let cpu =
        ticks.zip(target.cpu_ticks()).map(|(a, b)| machine::ticks_to_s(b.saturating_sub(a)) * 1e6 / pairs.max(1.0));
    Ok((run, cpu))
}

/// The bare transport's phases: the ceiling, its latency control, handshakes.
struct EchoRun {
    /// The churn at full speed: the QUIC ceiling.
    full: churn::Outcome,
    /// The latency shape paced at the broker's half rate.
    paced: churn::Outcome,
    handshakes_per_s: f64,
}

/// Everything `compare` measured, in the order it ran.
struct Measured {
    redis: churn::Outcome,
    this: BrokerRun,
    /// The baseline broker's phases, when one was given.
    base: Option<BrokerRun>,
    /// The fixed rate of the paced phases: half this build's latency shape.
    pace: f64,
    echo: EchoRun,
    /// The machine's state over the run, and whether it was busy.
    machine: (serde_json::Value, bool),
}

/// `baseline`: an older broker binary, run after this build's with the
/// same shapes and the same fixed rate, so a change is priced in one sitting.
pub async fn run(p: &Params, baseline: Option<&Path>) -> Result<(Report, serde_json::Value)> {
    let m = measure(p, baseline).await?;
    let mut summary = summary(&m, p);
    let r = report(&m, p, &mut summary);
    Ok((r, summary))
}

/// Runs every phase: Redis, this broker, the baseline, the bare transport.
async fn measure(p: &Params, baseline: Option<&Path>) -> Result<Measured> {
    let machine = machine::Before::now();
    let shape = Shape { connections: p.connections, depth: p.depth, duration: p.duration, rate: None, labels: vec![] };
    eprintln!("compare: redis semaphore churn ({}s)", p.duration.as_secs());
    let redis = RedisServer::start()?;
    let redis_out = redis_sem::churn(redis.port, shape.clone(), 1_000_000).await?;
    drop(redis);

    eprintln!("compare: broker churn");
    let this = broker_run(&crate::target::broker_binary()?, p, None).await?;
    let pace = this.lat_max / 2.0;
    let base = match baseline {
        Some(bin) => {
            eprintln!("compare: the baseline broker ({}), same phases", bin.display());
            Some(broker_run(bin, p, Some(pace)).await?)
        }
        None => None,
    };
    let echo = echo_run(p, shape, pace).await?;
    Ok(Measured { redis: redis_out, this, base, pace, echo, machine: machine.after() })
}

/// The bare quinn echo server with the broker's shape, then paced at `pace`.
async fn echo_run(p: &Params, shape: Shape, pace: f64) -> Result<EchoRun> {
    eprintln!("compare: bare quinn echo churn");
    let echo = Echo::spawn(p.broker_workers)?;
    let full = churn::run(vec![echo.options()], vec![Echo::org()?], shape.clone()).await?;
    eprintln!("compare: bare quinn echo paced at the broker's half rate (latency control)");
    let paced_shape = Shape { rate: Some(pace), depth: LATENCY_DEPTH, ..shape };
    let paced = churn::run(vec![echo.options()], vec![Echo::org()?], paced_shape).await?;
    eprintln!("compare: bare quinn handshakes");
    let hs = Params { connections: 32, ..p.clone() };
    let (handshakes_per_s, _, _) = scenarios::handshake(&echo.server, &echo.ca, "echo", None, &hs).await?;
    Ok(EchoRun { full, paced, handshakes_per_s })
}

/// The `--json` summary: the ratios the README's Performance rows quote.
fn summary(m: &Measured, p: &Params) -> serde_json::Value {
    let (redis_rate, quic_rate, broker_rate) = (m.redis.pairs_per_s(), m.echo.full.pairs_per_s(), m.this.pairs_per_s);
    let echo_hs = m.echo.handshakes_per_s;
    json!({
        "broker_pairs_per_s": broker_rate,
        "redis_pairs_per_s": redis_rate,
        "ratio_vs_redis": broker_rate / redis_rate.max(1e-9),
        "quic_ceiling_per_s": quic_rate,
        "share_of_quic_ceiling": broker_rate / quic_rate.max(1e-9),
        "broker_p99_acquire_us_at_half_rate": m.this.p99_half(),
        "broker_cpu_us_per_pair_at_half_rate": m.this.cpu_us_per_pair,
        "latency_depth": LATENCY_DEPTH,
        "latency_shape_max_pairs_per_s": m.this.lat_max,
        "quic_p99_us_at_same_rate": m.echo.paced.acquire.stats().p99_us,
        "broker_handshakes_per_s": m.this.handshakes_per_s,
        "quic_handshakes_per_s": echo_hs,
        "handshake_share": m.this.handshakes_per_s / echo_hs.max(1e-9),
        "connections": p.connections,
        "depth": p.depth,
        "broker_workers": p.broker_workers,
        "load_workers": tokio::runtime::Handle::current().metrics().num_workers(),
        "duration_s": p.duration.as_secs_f64(),
        "redis_errors": m.redis.errors.0,
        "echo_errors": m.echo.full.errors.0,
        "machine": m.machine.0,
        "busy_machine": m.machine.1,
    })
}

/// The report: throughputs, the summary's ratios, the broker runs'
/// invariants; the baseline's comparison goes into `summary` too.
fn report(m: &Measured, p: &Params, summary: &mut serde_json::Value) -> Report {
    let mut r = Report::new("compare", "broker vs redis vs bare quinn");
    r.duration_s = p.duration.as_secs_f64();
    r.param("connections", p.connections);
    r.param("depth", p.depth);
    r.throughput.insert("broker_pairs_per_s".into(), m.this.pairs_per_s);
    r.throughput.insert("redis_pairs_per_s".into(), m.redis.pairs_per_s());
    r.throughput.insert("quic_ceiling_per_s".into(), m.echo.full.pairs_per_s());
    r.throughput.insert("broker_handshakes_per_s".into(), m.this.handshakes_per_s);
    r.throughput.insert("quic_handshakes_per_s".into(), m.echo.handshakes_per_s);
    for k in ["ratio_vs_redis", "share_of_quic_ceiling", "handshake_share", "broker_cpu_us_per_pair_at_half_rate"] {
        r.extra(k, summary[k].clone());
    }
    r.extra("broker_p99_acquire_us_at_half_rate", m.this.p99_half());
    r.extra("quic_p99_us_at_same_rate", m.echo.paced.acquire.stats().p99_us);
    if let Some(base) = &m.base {
        let vs = vs_baseline(&m.this, base);
        r.extra("baseline", base.json(m.pace));
        r.extra("vs_baseline", vs.clone());
        summary["baseline"] = base.json(m.pace);
        summary["vs_baseline"] = vs;
    }
    r.extra("machine", machine::describe(&summary["machine"], m.machine.1));
    r.latency_us = m.this.churn.latency_us.clone();
    r.invariants = invariants(m);
    r.check("redis semaphore made progress", m.redis.pairs > 0, format!("{} pairs", m.redis.pairs));
    r.check("echo made progress", m.echo.full.pairs > 0, format!("{} pairs", m.echo.full.pairs));
    r
}

/// The broker runs' invariants, the baseline's named as such.
fn invariants(m: &Measured) -> Vec<crate::report::Check> {
    let mut all = m.this.churn.invariants.clone();
    all.extend(m.this.paced.invariants.iter().cloned());
    if let Some(base) = &m.base {
        let named =
            |c: &crate::report::Check| crate::report::Check { name: format!("baseline: {}", c.name), ..c.clone() };
        all.extend(base.churn.invariants.iter().chain(&base.paced.invariants).map(named));
    }
    all
}

/// This build over the baseline, measure by measure (above 1: more of it).
fn vs_baseline(this: &BrokerRun, base: &BrokerRun) -> serde_json::Value {
    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    json!({
        "pairs_per_s": ratio(this.pairs_per_s, base.pairs_per_s),
        "latency_shape_max_pairs_per_s": ratio(this.lat_max, base.lat_max),
        "p99_acquire_us_at_pace": ratio(this.p99_half() as f64, base.p99_half() as f64),
        "cpu_us_per_pair_at_pace": this.cpu_us_per_pair.zip(base.cpu_us_per_pair).map(|(a, b)| ratio(a, b)),
        "handshakes_per_s": ratio(this.handshakes_per_s, base.handshakes_per_s),
    })
}
