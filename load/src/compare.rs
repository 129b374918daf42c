//! `compare`: the broker against what a team would build instead (a Redis
//! Lua semaphore) and against the bare transport (a quinn echo server with
//! the same framing), same churn shape, same machine, one run.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use license_broker::client::ClientOptions;
use license_broker::value::{MachineId, OrgName};
use serde_json::json;

use crate::churn::{self, Shape};
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
const LATENCY_DEPTH: usize = 16;

pub async fn run(p: &Params) -> Result<(Report, serde_json::Value)> {
    let shape = Shape { connections: p.connections, depth: p.depth, duration: p.duration, rate: None };
    eprintln!("compare: redis semaphore churn ({}s)", p.duration.as_secs());
    let redis = RedisServer::start()?;
    let redis_out = redis_sem::churn(redis.port, shape.clone(), 1_000_000).await?;
    drop(redis);

    eprintln!("compare: broker churn");
    let target = Target::spawn(p.lease_ttl, p.broker_workers)?;
    let broker = scenarios::churn(&target, p).await?;
    let broker_rate = broker.throughput["pairs_per_s"];
    // Latency is measured with shallower pipelining (16 in flight), at half
    // the maximum rate of that same shape: with 64 requests per write the
    // p99 is mostly the batch queued ahead of each request.
    eprintln!("compare: broker churn, {LATENCY_DEPTH} in flight (latency shape)");
    let lat_shape = Params { depth: LATENCY_DEPTH, ..p.clone() };
    let lat_max = scenarios::churn(&target, &lat_shape).await?.throughput["pairs_per_s"];
    eprintln!("compare: broker churn at half that rate (latency)");
    let half = Params { rate: Some(lat_max / 2.0), ..lat_shape.clone() };
    let paced = scenarios::churn(&target, &half).await?;
    eprintln!("compare: broker handshakes");
    let horg = target.setup_orgs(1, license_broker::core::MAX_QUOTA).await?.remove(0);
    let hs = Params { connections: 32, ..p.clone() };
    let (broker_hs, _, _) =
        scenarios::handshake(&target.server, &target.ca, &horg.key, Some(horg.clone()), &hs).await?;
    drop(target);

    eprintln!("compare: bare quinn echo churn");
    let echo = Echo::spawn(p.broker_workers)?;
    let echo_out = churn::run(vec![echo.options()], vec![Echo::org()?], shape.clone()).await?;
    eprintln!("compare: bare quinn echo paced at the broker's half rate (latency control)");
    let paced_shape = Shape { rate: Some(lat_max / 2.0), depth: LATENCY_DEPTH, ..shape };
    let echo_paced = churn::run(vec![echo.options()], vec![Echo::org()?], paced_shape).await?;
    eprintln!("compare: bare quinn handshakes");
    let (echo_hs, _, _) = scenarios::handshake(&echo.server, &echo.ca, "echo", None, &hs).await?;
    drop(echo);

    let redis_rate = redis_out.pairs_per_s();
    let quic_rate = echo_out.pairs_per_s();
    let p99_half = paced.latency_us.get("acquire").map_or(0, |s| s.p99_us);
    let summary = json!({
        "broker_pairs_per_s": broker_rate,
        "redis_pairs_per_s": redis_rate,
        "ratio_vs_redis": broker_rate / redis_rate.max(1e-9),
        "quic_ceiling_per_s": quic_rate,
        "share_of_quic_ceiling": broker_rate / quic_rate.max(1e-9),
        "broker_p99_acquire_us_at_half_rate": p99_half,
        "latency_depth": LATENCY_DEPTH,
        "latency_shape_max_pairs_per_s": lat_max,
        "quic_p99_us_at_same_rate": echo_paced.acquire.stats().p99_us,
        "broker_handshakes_per_s": broker_hs,
        "quic_handshakes_per_s": echo_hs,
        "handshake_share": broker_hs / echo_hs.max(1e-9),
        "connections": p.connections,
        "depth": p.depth,
        "broker_workers": p.broker_workers,
        "load_workers": tokio::runtime::Handle::current().metrics().num_workers(),
        "duration_s": p.duration.as_secs_f64(),
        "redis_errors": redis_out.errors.0,
        "echo_errors": echo_out.errors.0,
    });
    let mut r = Report::new("compare", "broker vs redis vs bare quinn");
    r.duration_s = p.duration.as_secs_f64();
    r.param("connections", p.connections);
    r.param("depth", p.depth);
    r.throughput.insert("broker_pairs_per_s".into(), broker_rate);
    r.throughput.insert("redis_pairs_per_s".into(), redis_rate);
    r.throughput.insert("quic_ceiling_per_s".into(), quic_rate);
    r.throughput.insert("broker_handshakes_per_s".into(), broker_hs);
    r.throughput.insert("quic_handshakes_per_s".into(), echo_hs);
    r.extra("ratio_vs_redis", summary["ratio_vs_redis"].clone());
    r.extra("share_of_quic_ceiling", summary["share_of_quic_ceiling"].clone());
    r.extra("handshake_share", summary["handshake_share"].clone());
    r.extra("broker_p99_acquire_us_at_half_rate", p99_half);
    r.extra("quic_p99_us_at_same_rate", echo_paced.acquire.stats().p99_us);
    r.latency_us = broker.latency_us.clone();
    r.invariants = broker.invariants.clone();
    r.invariants.extend(paced.invariants.iter().cloned());
    r.check("redis semaphore made progress", redis_out.pairs > 0, format!("{} pairs", redis_out.pairs));
    r.check("echo made progress", echo_out.pairs > 0, format!("{} pairs", echo_out.pairs));
    Ok((r, summary))
}
