//! The peer: what a team would build instead of this broker. A counting
//! semaphore with expiring holders in Redis: a Lua script drops expired
//! holders from a sorted set, checks its size against the limit and adds the
//! holder with its deadline; release removes it. Driven with the same churn
//! shape (connections × pipelined depth) as the broker.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use redis::aio::MultiplexedConnection;

use crate::churn::{Outcome, Shape};

const ACQUIRE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2] + ARGV[3], ARGV[1])
  return 1
end
return 0
"#;

/// A redis-server on a free loopback port, stopped on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

/// Finds redis-server, installing Debian's package if it is missing and we may.
fn redis_binary() -> Result<String> {
    let found = |p: &str| Command::new(p).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    for p in ["redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if found(p) {
            return Ok(p.to_string());
        }
    }
    eprintln!("redis-server not found; installing Debian's redis-server with apt-get");
    let ok = Command::new("sh")
        .args([
            "-c",
            "(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok && found("redis-server") {
        return Ok("redis-server".into());
    }
    bail!("redis-server is not installed and could not be installed (apt-get install redis-server)")
}

impl RedisServer {
    pub fn start() -> Result<RedisServer> {
        let bin = redis_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not start listening on 127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RedisServer { child, port })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Churn against the Redis semaphore: each connection pipelines D acquires,
/// then D releases, until the duration ends.
pub async fn churn(port: u16, shape: Shape, limit: u64) -> Result<Outcome> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut setup = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(ACQUIRE).query_async(&mut setup).await?;
    let mut conns = Vec::new();
    for _ in 0..shape.connections {
        conns.push(client.get_multiplexed_async_connection().await?);
    }
    let start = Instant::now();
    let deadline = start + shape.duration;
    let mut tasks = Vec::new();
    for (i, con) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(connection(con, sha.clone(), (i, shape.depth), limit, deadline)));
    }
    Outcome::gather(tasks, start).await
}

/// Connection `i`'s churn until `deadline`: `depth` acquires pipelined,
/// then the releases of those admitted.
async fn connection(
    mut con: MultiplexedConnection,
    sha: String,
    (i, depth): (usize, usize),
    limit: u64,
    deadline: Instant,
) -> Outcome {
    let mut out = Outcome::default();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let holders: Vec<String> = (0..depth)
            .map(|_| {
                n += 1;
                format!("h{i}-{n}")
            })
            .collect();
        let Some(release) = acquire(&mut con, &sha, &holders, limit, &mut out).await else {
            continue;
        };
        let t = Instant::now();
        let removed: Result<Vec<i64>, _> = release.query_async(&mut con).await;
        match removed {
            Ok(v) => {
                let lat = t.elapsed();
                for _ in &v {
                    out.release.record(lat);
                }
                out.pairs += v.iter().filter(|x| **x == 1).count() as u64;
            }
            Err(_) => out.errors.add_named("REDIS"),
        }
    }
    out
}

/// The holders' acquires in one pipeline, each counted; the pipeline that
/// releases those admitted, or `None` when there is none to release.
async fn acquire(
    con: &mut MultiplexedConnection,
    sha: &str,
    holders: &[String],
    limit: u64,
    out: &mut Outcome,
) -> Option<redis::Pipeline> {
    let mut pipe = redis::pipe();
    let now = now_ms();
    for h in holders {
        pipe.cmd("EVALSHA").arg(sha).arg(1).arg("sem").arg(h).arg(now).arg(30_000).arg(limit);
    }
    let t = Instant::now();
    let Ok(admitted): Result<Vec<i64>, _> = pipe.query_async(con).await else {
        out.errors.add_named("REDIS");
        return None;
    };
    let lat = t.elapsed();
    let mut release = redis::pipe();
    let mut count = 0;
    for (h, a) in holders.iter().zip(&admitted) {
        if *a == 1 {
            out.acquire.record(lat);
            release.cmd("ZREM").arg("sem").arg(h);
            count += 1;
        } else {
            out.errors.add_named("QUOTA_EXCEEDED");
        }
    }
    (count > 0).then_some(release)
}
