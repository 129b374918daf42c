//! A fleet of simulated runners, many per connection: each acquires, holds
//! its session for a while heartbeating as `license-broker runner` does
//! (`client::Beats`: a third of the TTL less a random fifth; or exactly a
//! third, in step, with `lockstep`), releases, and starts over. One driver task per connection batches whatever its
//! runners have due into a single pipelined write.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use license_broker::client::{Beats, Client, ClientError};
use license_broker::proto::ErrorCode;
use license_broker::proto::{Req, Resp};
use license_broker::value::{Nonce, PoolId, SessionId};
use tokio::time::Instant;

use crate::report::{Errors, Lat};
use crate::target::LoadOrg;

/// Most requests a driver sends in one write.
const BATCH: usize = 4096;

/// How runners behave.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Lease TTL (heartbeat every third).
    pub ttl: Duration,
    /// Mean hold time; `None` holds until stopped.
    pub hold: Option<Duration>,
    /// Acquisitions are spread over this long at the start.
    pub ramp: Duration,
    /// Heartbeat exactly every third of the TTL (runners before the
    /// spread did), not as the runner does now.
    pub lockstep: bool,
}

/// What one driver measured.
#[derive(Default)]
pub struct Stats {
    pub acquire: Lat,
    pub renew: Lat,
    pub release: Lat,
    pub acquired: u64,
    pub renewed: u64,
    pub released: u64,
    /// Heartbeats refused because the lease had expired (should be 0).
    pub lost: u64,
    pub errors: Errors,
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.acquire.merge(&o.acquire);
        self.renew.merge(&o.renew);
        self.release.merge(&o.release);
        self.acquired += o.acquired;
        self.renewed += o.renewed;
        self.released += o.released;
        self.lost += o.lost;
        self.errors.merge(&o.errors);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Step {
    Acquire,
    Renew,
    Release,
}

struct Runner {
    nonce: u128,
    session: Option<SessionId>,
    release_at: Instant,
}

/// Shared view of a running fleet.
#[derive(Clone, Default)]
pub struct Live {
    /// Sessions held right now across the fleet.
    pub held: Arc<AtomicI64>,
    /// Set to stop every driver (they release what they hold).
    pub stop: Arc<AtomicBool>,
}

/// Drives `count` runners over one connection until `live.stop`.
pub async fn drive(client: Client, org: LoadOrg, first_nonce: u128, count: usize, b: Behaviour, live: Live) -> Stats {
    let mut d = Driver::new(org, first_nonce, count, b, live);
    while !d.live.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let batch = d.due_now(now);
        if batch.is_empty() {
            let wake = d.due.peek().map_or(now + Duration::from_millis(50), |Reverse((at, _, _))| *at);
            tokio::time::sleep_until(wake.min(now + Duration::from_millis(50))).await;
            continue;
        }
        let reqs: Vec<Req> = batch.iter().map(|&(i, step)| request(&d.org, &d.runners[i], step)).collect();
        let results = client.call_batch_timed(reqs).await;
        let now = Instant::now();
        for ((i, step), (result, took)) in batch.into_iter().zip(results) {
            if let Some((at, step)) = d.answered(i, step, result, took, now) {
                d.due.push(Reverse((at, i, step)));
            }
        }
    }
    d.release_all(&client).await;
    client.close().await;
    d.stats
}

/// One connection's runners, when each is next due, and what they measured.
struct Driver {
    org: LoadOrg,
    b: Behaviour,
    live: Live,
    runners: Vec<Runner>,
    /// Each runner's next step, earliest first.
    due: BinaryHeap<Reverse<(Instant, usize, Step)>>,
    stats: Stats,
    /// The hold times' random state (seeded by the first nonce).
    rng: u64,
    /// A release that never comes: held until stopped.
    far: Instant,
    /// When heartbeats fall (as the runner's, or in step: `lockstep`).
    beats: Beats,
}

impl Driver {
    /// `count` runners, their acquisitions spread over the ramp.
    fn new(org: LoadOrg, first_nonce: u128, count: usize, b: Behaviour, live: Live) -> Driver {
        let start = Instant::now();
        let far = start + Duration::from_secs(86_400 * 365);
        let runners: Vec<Runner> =
            (0..count).map(|i| Runner { nonce: first_nonce + i as u128, session: None, release_at: far }).collect();
        let mut due: BinaryHeap<Reverse<(Instant, usize, Step)>> = BinaryHeap::with_capacity(count);
        for i in 0..count {
            let offset = b.ramp.mul_f64(i as f64 / count.max(1) as f64);
            due.push(Reverse((start + offset, i, Step::Acquire)));
        }
        let (stats, rng, beats) = (Stats::default(), first_nonce as u64 | 1, Beats::for_ttl(b.ttl.as_millis() as u64));
        Driver { org, b, live, runners, due, stats, rng, far, beats }
    }

    /// The wait until a runner's next heartbeat.
    fn beat(&mut self) -> Duration {
        match self.b.lockstep {
            true => self.beats.third(),
            false => self.beats.next_delay(),
        }
    }

    /// The steps due by `now`, at most a batch of them.
    fn due_now(&mut self, now: Instant) -> Vec<(usize, Step)> {
        let mut batch = Vec::new();
        while let Some(Reverse((at, i, step))) = self.due.peek().copied() {
            if at > now || batch.len() >= BATCH {
                break;
            }
            self.due.pop();
            batch.push((i, step));
        }
        batch
    }

    /// Runner `i`'s answer to `step`, counted; its next step, if any.
    fn answered(
        &mut self,
        i: usize,
        step: Step,
        result: Result<Resp, ClientError>,
        took: Duration,
        now: Instant,
    ) -> Option<(Instant, Step)> {
        let beat = self.beat();
        let (stats, live, r) = (&mut self.stats, &self.live, &mut self.runners[i]);
        match (step, result) {
            (Step::Acquire, Ok(Resp::Admitted { session, .. } | Resp::Leased { session, .. })) => {
                stats.acquire.record(took);
                stats.acquired += 1;
                live.held.fetch_add(1, Ordering::Relaxed);
                r.session = Some(session);
                r.release_at = match self.b.hold {
                    Some(mean) => now + mean.mul_f64(0.5 + (xorshift(&mut self.rng) % 1000) as f64 / 1000.0),
                    None => self.far,
                };
                Some(next_hold_step(r, now, beat))
            }
            (Step::Renew, Ok(_)) => {
                stats.renew.record(took);
                stats.renewed += 1;
                Some(next_hold_step(r, now, beat))
            }
            (Step::Release, Ok(_)) => {
                stats.release.record(took);
                stats.released += 1;
                live.held.fetch_sub(1, Ordering::Relaxed);
                r.session = None;
                r.nonce += 1u128 << 96; // a new runner instance
                Some((now, Step::Acquire))
            }
            (_, Err(e)) => Some(on_error(r, step, &e, now, stats, live)),
            (_, Ok(_)) => {
                stats.errors.add_named("UNEXPECTED_RESPONSE");
                None
            }
        }
    }

    /// Releases every session still held (the fleet is stopping).
    async fn release_all(&mut self, client: &Client) {
        let held: Vec<Req> =
            self.runners.iter().filter_map(|r| r.session.map(|session| Req::Release { session })).collect();
        for chunk in held.chunks(BATCH) {
            for (r, took) in client.call_batch_timed(chunk.to_vec()).await {
                match r {
                    Ok(_) => {
                        self.stats.release.record(took);
                        self.stats.released += 1;
                        self.live.held.fetch_sub(1, Ordering::Relaxed);
                    }
                    Err(e) => self.stats.errors.add(&e),
                }
            }
        }
    }
}

fn request(org: &LoadOrg, r: &Runner, step: Step) -> Req {
    match (step, r.session) {
        (Step::Renew, Some(session)) => Req::Renew { session },
        (Step::Release, Some(session)) => Req::Release { session },
        _ => Req::Acquire {
            org: org.org.clone(),
            pool: PoolId::KRE_DEFAULT,
            machine: org.machine.clone(),
            nonce: Nonce(r.nonce),
        },
    }
}

fn next_hold_step(r: &Runner, now: Instant, beat: Duration) -> (Instant, Step) {
    if r.release_at <= now + beat {
        (r.release_at.max(now), Step::Release)
    } else {
        (now + beat, Step::Renew)
    }
}

fn on_error(
    r: &mut Runner,
    step: Step,
    e: &ClientError,
    now: Instant,
    stats: &mut Stats,
    live: &Live,
) -> (Instant, Step) {
    stats.errors.add(e);
    if step != Step::Acquire && r.session.take().is_some() {
        live.held.fetch_sub(1, Ordering::Relaxed);
        if e.code() == Some(ErrorCode::SessionExpired) {
            stats.lost += 1;
        }
    }
    (now + Duration::from_millis(100), Step::Acquire)
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}
