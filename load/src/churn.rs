//! `churn`: C connections × D requests in flight each, acquire then release
//! as fast as possible (or at a paced rate), across O orgs. The same loop
//! drives the bare-QUIC echo server for the transport ceiling.
//!
//! A connection that breaks (the target restarted, say) reconnects with
//! capped, jittered backoff until the run's end; requests lost with it are
//! counted apart from refusals, and a connection that never comes back
//! fails the run.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use license_broker::client::{Backoff, Client, ClientError, ClientOptions};
use license_broker::proto::{ErrorCode, Req, Resp};
use license_broker::value::{Labels, Nonce, PoolId, SessionId};

use crate::report::{Errors, Lat};
use crate::target::LoadOrg;

/// Shape of a churn run.
#[derive(Clone, Debug)]
pub struct Shape {
    pub connections: usize,
    pub depth: usize,
    pub duration: Duration,
    /// Target acquire+release pairs per second in total; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Job labels: connection `i` acquires carrying `labels[i % len]` (a
    /// `Checkout` that does not wait); none: plain `Acquire`s.
    pub labels: Vec<Labels>,
}

/// What a churn run measured.
#[derive(Default)]
pub struct Outcome {
    pub pairs: u64,
    pub elapsed: Duration,
    pub acquire: Lat,
    pub release: Lat,
    /// Refusals and protocol errors (a healthy run has none).
    pub errors: Errors,
    /// Requests whose connection broke before they were answered, or that
    /// a draining broker turned away.
    pub lost_in_flight: u64,
    /// Times a broken connection was re-established.
    pub reconnects: u64,
    /// Connections that broke and could not reconnect before the run ended.
    pub unrecovered: u64,
}

impl Outcome {
    /// Sums the outcomes of per-connection tasks started at `start`.
    pub async fn gather(tasks: Vec<tokio::task::JoinHandle<Outcome>>, start: Instant) -> Result<Outcome> {
        let mut total = Outcome::default();
        for t in tasks {
            let o = t.await?;
            total.pairs += o.pairs;
            total.acquire.merge(&o.acquire);
            total.release.merge(&o.release);
            total.errors.merge(&o.errors);
            total.lost_in_flight += o.lost_in_flight;
            total.reconnects += o.reconnects;
            total.unrecovered += o.unrecovered;
        }
        total.elapsed = start.elapsed();
        Ok(total)
    }

    pub fn pairs_per_s(&self) -> f64 {
        self.pairs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs churn with one connection per `C`, each using org `i % O`.
pub async fn run(opts: Vec<ClientOptions>, orgs: Vec<LoadOrg>, shape: Shape) -> Result<Outcome> {
    let mut clients = Vec::with_capacity(shape.connections);
    for i in 0..shape.connections {
        clients.push(Client::connect(&opts[i % opts.len()]).await?);
    }
    let start = Instant::now();
    let deadline = start + shape.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let org = orgs[i % orgs.len()].clone();
        let shape = shape.clone();
        let stop = stop.clone();
        let opts = opts[i % opts.len()].clone();
        tasks.push(tokio::spawn(async move { connection(i as u64, client, opts, org, shape, deadline, stop).await }));
    }
    Outcome::gather(tasks, start).await
}

async fn connection(
    index: u64,
    mut client: Client,
    opts: ClientOptions,
    org: LoadOrg,
    shape: Shape,
    deadline: Instant,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut nonce = u128::from(index) << 64;
    let labels = (!shape.labels.is_empty()).then(|| &shape.labels[index as usize % shape.labels.len()]);
    // Pacing: each batch of D pairs gets D / (rate / C) seconds.
    let period = shape.rate.map(|r| Duration::from_secs_f64(shape.depth as f64 * shape.connections as f64 / r));
    // Connections start their pacing evenly spread over one period, so
    // paced load arrives smoothly instead of in synchronized bursts.
    let mut next = tokio::time::Instant::now()
        + period.map_or(Duration::ZERO, |p| p.mul_f64(index as f64 / shape.connections as f64));
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if let Some(p) = period {
            tokio::time::sleep_until(next).await;
            next += p;
        }
        let Some((broken, draining)) = round(&mut out, &client, (&org, labels), shape.depth, &mut nonce).await else {
            break; // the target is refusing everything; stop rather than spin
        };
        if draining && !broken {
            // The broker is going away: wait for it to close the connection
            // (then reconnect) instead of hammering it with refusals.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if broken {
            client.close_nowait();
            match reconnect(&opts, deadline, &stop).await {
                Some(c) => {
                    client = c;
                    out.reconnects += 1;
                }
                None => {
                    out.unrecovered += 1;
                    return out;
                }
            }
        }
    }
    client.close().await;
    out
}

/// One round on a connection: `depth` acquires pipelined (carrying the
/// connection's labels, if any), then the releases of those admitted. Whether the connection broke and whether
/// the broker is draining; `None` when the target refuses everything.
async fn round(
    out: &mut Outcome,
    client: &Client,
    (org, labels): (&LoadOrg, Option<&Labels>),
    depth: usize,
    nonce: &mut u128,
) -> Option<(bool, bool)> {
    let acquires: Vec<Req> = (0..depth)
        .map(|_| {
            *nonce += 1;
            acquire(org, Nonce(*nonce), labels)
        })
        .collect();
    let mut sessions = Vec::with_capacity(depth);
    let (mut broken, mut draining) = (false, false);
    for (r, t) in client.call_batch_timed(acquires).await {
        match r {
            Ok(Resp::Admitted { session, .. } | Resp::Leased { session, .. }) => {
                out.acquire.record(t);
                sessions.push(session);
            }
            Ok(_) => out.errors.add_named("UNEXPECTED_RESPONSE"),
            Err(e) => match out.failed(&e) {
                Failure::Broken => broken = true,
                Failure::Draining => draining = true,
                Failure::Refused => {}
            },
        }
    }
    if sessions.is_empty() && out.errors.0.values().sum::<u64>() > 1000 {
        return None;
    }
    let releases: Vec<Req> = sessions.iter().map(|s: &SessionId| Req::Release { session: *s }).collect();
    for (r, t) in client.call_batch_timed(releases).await {
        match r {
            Ok(_) => {
                out.release.record(t);
                out.pairs += 1;
            }
            Err(e) => broken |= out.failed(&e) == Failure::Broken,
        }
    }
    Some((broken, draining))
}

/// An acquire for `org`'s KRE pool, carrying `labels` if any.
fn acquire(org: &LoadOrg, nonce: Nonce, labels: Option<&Labels>) -> Req {
    let (org, pool, machine) = (org.org.clone(), PoolId::KRE_DEFAULT, org.machine.clone());
    match labels {
        None => Req::Acquire { org, pool, machine, nonce },
        Some(l) => Req::Checkout { org, pool, machine, nonce, wait_ms: 0, labels: l.clone() },
    }
}

/// What a failed request says about its connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The connection is gone: reconnect.
    Broken,
    /// The broker is shutting down: it will close the connection soon.
    Draining,
    /// A refusal or protocol error: counted, the connection carries on.
    Refused,
}

impl Outcome {
    /// Counts a failed request and says what it means for the connection.
    fn failed(&mut self, e: &ClientError) -> Failure {
        match e {
            ClientError::Closed(_) | ClientError::Connect { .. } => {
                self.lost_in_flight += 1;
                Failure::Broken
            }
            ClientError::Rejected(w) if w.code == ErrorCode::Draining => {
                self.lost_in_flight += 1;
                Failure::Draining
            }
            other => {
                self.errors.add(other);
                Failure::Refused
            }
        }
    }
}

/// Connects again with backoff until the run ends; `None` if it never could.
async fn reconnect(opts: &ClientOptions, deadline: Instant, stop: &AtomicBool) -> Option<Client> {
    let mut backoff = Backoff::reconnect();
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if let Ok(c) = Client::connect(opts).await {
            return Some(c);
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
    None
}

/// Samples the broker's pools while a run goes on; records the highest
/// in-use seen per pool and whether any exceeded its quota.
pub struct Monitor {
    pub max_in_use: Arc<AtomicU32>,
    pub over_quota: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Samples every 100 ms, as each org's Owner (`opts` with the org's
    /// key: on a cluster, each connection goes to the node serving its
    /// org), reconnecting if a broker goes away, until `finish`.
    pub async fn start(opts: ClientOptions, orgs: Vec<LoadOrg>) -> Result<Monitor> {
        let mut clients = Vec::with_capacity(orgs.len());
        for org in &orgs {
            let opts = ClientOptions { api_key: org.key.clone(), ..opts.clone() };
            clients.push((Client::connect(&opts).await?, opts));
        }
        let max_in_use = Arc::new(AtomicU32::new(0));
        let over_quota = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, o, s) = (max_in_use.clone(), over_quota.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let far = Instant::now() + Duration::from_secs(365 * 86_400);
            while !s.load(Ordering::Relaxed) {
                for (org, (client, opts)) in orgs.iter().zip(clients.iter_mut()) {
                    match client.status(Some(&org.org)).await {
                        Ok(pools) => {
                            for p in pools {
                                m.fetch_max(p.in_use, Ordering::Relaxed);
                                if p.in_use > p.quota {
                                    o.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(ClientError::Closed(_)) => match reconnect(opts, far, &s).await {
                            Some(c) => *client = c,
                            None => return,
                        },
                        Err(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for (client, _) in clients {
                client.close().await;
            }
        });
        Ok(Monitor { max_in_use, over_quota, stop, task })
    }

    pub async fn finish(self) -> (u32, bool) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (self.max_in_use.load(Ordering::Relaxed), self.over_quota.load(Ordering::Relaxed))
    }
}
