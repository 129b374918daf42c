//! Utilization history: per-minute rollups of every pool and the ended
//! sessions, kept in the data dir and queried by the dashboard, the JSON
//! and CSV API and `license-broker usage`.
//!
//! Derived from the lease events themselves, not by polling: the core
//! tallies each pool's minute where its sessions start and end (see
//! `core::usage`), and this module's task harvests the closed minutes once
//! a minute, adds the peak and trough of seats in use and the refusals
//! counted since the last harvest, and writes one batch. Each minute is
//! merged into its hour and its day in the same transaction, so a range
//! of a year is read from 365 day rows, not half a million minutes.
//!
//! Ended sessions reach the task through a bounded channel; when it is
//! full (a load test ending a million sessions a second) the session is
//! counted as dropped rather than slowing anyone down, and
//! `lbroker_history_dropped_total` says so. The task writes at most
//! `SESSIONS_PER_SECOND` a second.
//!
//! A restart loses the history of the minute it happened in (the core's
//! counters and seat time do not lose it: they are checkpointed).

mod busy;
mod db;
pub mod export;
pub mod filter;
pub mod preflight;
pub mod replay;
pub mod report;
mod what_if;

/// A page of ended sessions (session id, row), and the (end ms, session
/// id) cursor to go on from, if the range holds more.
pub type SessionsPage = (Vec<(u64, EndedRow)>, Option<(u64, u64)>);

pub use db::{DbError, EndedRow, Usage};
pub use what_if::{Recorded, WhatIf, MAX_DEMAND, MAX_SEAT_COUNTS};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::core::broker::Harvest;
use crate::core::usage::{minute_of, MINUTE_MS};
use crate::core::{Ended, Millis, OrgName, PoolId};

/// The history's file inside the data dir.
pub const FILE: &str = "history.redb";

/// Ended sessions the task writes per second at most (the rest are dropped
/// and counted). Far above what CI fleets end (a thousand runners with
/// one-minute jobs end 17 a second), far below a load test's million.
pub const SESSIONS_PER_SECOND: usize = 2_000;

/// A granularity of the rollups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Period {
    /// Minutes in the period.
    pub fn minutes(self) -> u64 {
        match self {
            Period::Minute => 1,
            Period::Hour => 60,
            Period::Day => 1440,
        }
    }

    /// Milliseconds in the period.
    pub fn ms(self) -> u64 {
        self.minutes() * MINUTE_MS
    }

    /// The coarsest period that divides `step_ms` (a step of 5 minutes
    /// reads minutes, of 6 hours reads hours).
    pub fn for_step(step_ms: u64) -> Period {
        [Period::Day, Period::Hour, Period::Minute]
            .into_iter()
            .find(|p| step_ms >= p.ms() && step_ms.is_multiple_of(p.ms()))
            .unwrap_or(Period::Minute)
    }
}

/// How long each granularity is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Minutes (and ended sessions): 35 days by default.
    pub minutes: Duration,
    /// Hours: 400 days by default.
    pub hours: Duration,
    /// Days: forever (`None`) by default.
    pub days: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Retention {
        const DAY: u64 = 86_400;
        Retention { minutes: Duration::from_secs(35 * DAY), hours: Duration::from_secs(400 * DAY), days: None }
    }
}

/// The history of one broker.
pub struct History {
    db: db::Db,
    path: PathBuf,
    retention: Retention,
    /// Ended sessions waiting for the task.
    tx: tokio::sync::mpsc::Sender<Ended>,
    rx: parking_lot::Mutex<Option<tokio::sync::mpsc::Receiver<Ended>>>,
    /// Ended sessions not kept because the channel was full.
    pub dropped_sessions: AtomicU64,
    /// Closed minutes the core dropped because no harvest came in time.
    pub dropped_minutes: AtomicU64,
    /// Where each pool's refusals per minute go as events, once told.
    events: parking_lot::Mutex<Option<tokio::sync::mpsc::Sender<crate::core::Event>>>,
    /// Refusal events that found the queue full.
    dropped_events: AtomicU64,
    /// What the last harvest needs from the one before.
    state: parking_lot::Mutex<State>,
    /// Reports read at once (see `READERS`).
    readers: Arc<tokio::sync::Semaphore>,
}

/// Reports (usage, sessions, what-if, a dashboard page) computed at once,
/// over every transport. One can hold tens of MB (a sessions export of
/// 100,000 rows, a what-if over 2,000,000 demand entries); with this bound
/// the broker holds at most a few of them, however many ops connections and
/// QUIC streams ask, and the rest wait their turn.
pub const READERS: usize = 2;

#[derive(Default)]
struct State {
    /// The minute the last harvest closed up to (exclusive).
    harvested_to: Option<u64>,
    /// Each pool's refusal counts and queue joins at the last harvest.
    denied: std::collections::HashMap<(OrgName, PoolId), (Vec<u64>, u64, u64)>,
    /// Each pool's run of busy minutes (`busy`).
    busy: busy::Runs,
}

/// Ended sessions the channel holds: about two seconds at the write rate.
const CHANNEL: usize = 2 * SESSIONS_PER_SECOND;

impl History {
    /// Opens (creating if needed) the history in `data_dir`.
    pub fn open(data_dir: &Path, retention: Retention) -> Result<History, DbError> {
        let path = data_dir.join(FILE);
        let db = db::Db::open(&path)?;
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL);
        Ok(History {
            db,
            path,
            retention,
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            dropped_sessions: AtomicU64::new(0),
            dropped_minutes: AtomicU64::new(0),
            events: parking_lot::Mutex::new(None),
            dropped_events: AtomicU64::new(0),
            state: Default::default(),
            readers: Arc::new(tokio::sync::Semaphore::new(READERS)),
        })
    }

    /// Waits for a turn to read a report; hold the permit while reading.
    /// (`None` only if the semaphore were closed, which it never is.)
    pub async fn reading(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.readers.clone().acquire_owned().await.ok()
    }

    /// How long each granularity is kept.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Hands an ended session to the history without waiting (dropped and
    /// counted if the history is behind).
    pub fn ended(&self, e: Ended) {
        if self.tx.try_send(e).is_err() {
            // Relaxed: a statistic.
            self.dropped_sessions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes the rows take (see `Db::data_bytes`).
    pub fn data_bytes(&self) -> Result<u64, DbError> {
        self.db.data_bytes()
    }

    /// Bytes the history file takes on disk.
    pub fn file_bytes(&self) -> u64 {
        db::Db::file_bytes(&self.path)
    }

    /// Turns a harvest at `now` into the rows it adds (see `rollup`) and
    /// writes them; each minute of a pool that refused admissions is also
    /// an event (`pool.refused`, to whoever `send_events_to` named).
    pub fn record(&self, h: Harvest, now: Millis, sessions: Vec<Ended>, durable: bool) -> Result<(), DbError> {
        // Relaxed: a statistic.
        self.dropped_minutes.fetch_add(h.dropped, Ordering::Relaxed);
        let (minutes, turns) = {
            let mut state = self.state.lock();
            let minutes = rollup(&h, now, &mut state);
            let turns = busy::turns(&mut state.busy, &minutes, &h.pools, minute_of(now), now);
            (minutes, turns)
        };
        self.refusals(&minutes, now);
        self.tell(turns);
        let sessions = sessions.into_iter().map(row_of).collect();
        self.db.write(&db::Batch { minutes, sessions }, durable)
    }

    /// Where the refusals of each pool and minute go as events (the
    /// operations' queue to the outbox).
    pub fn send_events_to(&self, tx: tokio::sync::mpsc::Sender<crate::core::Event>) {
        *self.events.lock() = Some(tx);
    }

    /// Refusal events that found the queue full (aggregated already: counted, not queued).
    pub fn events_dropped(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// Queues `events` for the outbox; never waits (a full queue counts them).
    fn tell(&self, events: Vec<crate::core::Event>) {
        let Some(tx) = self.events.lock().clone() else { return };
        for e in events {
            if tx.try_send(e).is_err() {
                self.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One `pool.refused` event per row that refused admissions; never waits.
    fn refusals(&self, minutes: &[((String, String, u64), Usage)], now: Millis) {
        let Some(tx) = self.events.lock().clone() else { return };
        for ((org, pool, minute), u) in minutes.iter().filter(|(_, u)| u.denied.iter().any(|n| *n > 0)) {
            let (Ok(org), Ok(pool)) = (OrgName::new(org.as_str()), pool.parse::<PoolId>()) else { continue };
            let body = crate::core::EventBody::Refused { pool, minute: *minute, denied: u.denied.clone() };
            if tx.try_send(crate::core::Event { org, seq: 0, at: now, body }).is_err() {
                self.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes rows as they are (merged into any already there, and into
    /// their hours and days): for tools that seed a history (benchmarks,
    /// imports), not for the broker, which records harvests.
    pub fn write_rows(
        &self,
        minutes: Vec<((String, String, u64), Usage)>,
        sessions: Vec<(String, u64, EndedRow)>,
    ) -> Result<(), DbError> {
        self.db.write(&db::Batch { minutes, sessions }, false)
    }

    /// Writes ended sessions only.
    pub fn record_sessions(&self, sessions: Vec<Ended>) -> Result<(), DbError> {
        let sessions = sessions.into_iter().map(row_of).collect();
        self.db.write(&db::Batch { minutes: Vec::new(), sessions }, false)
    }

    /// Deletes what the retention no longer keeps, for these pools.
    pub fn prune(&self, now: Millis, pools: &[(String, String)]) -> Result<(), DbError> {
        self.db.prune(&self.retention, minute_of(now), pools)
    }

    /// `org`'s `pool` from `from` to `to` in steps of `step_ms` (rounded to
    /// a whole number of the period it reads): one point per step that has
    /// data, oldest first.
    pub fn usage(&self, org: &str, pool: &str, from: Millis, to: Millis, step_ms: u64) -> Result<Vec<Point>, DbError> {
        let period = Period::for_step(step_ms);
        let per = (step_ms / period.ms()).max(1);
        let (first, last) = (from.0 / period.ms(), to.0.div_ceil(period.ms()));
        let rows = self.db.usage(period, org, pool, first, last)?;
        let mut out: Vec<Point> = Vec::new();
        for (index, u) in rows {
            let start = (index / per) * per * period.ms();
            match out.last_mut() {
                Some(p) if p.start == start => p.usage.merge(&u),
                _ => out.push(Point { start, step_ms: per * period.ms(), usage: u }),
            }
        }
        Ok(out)
    }

    /// Up to `limit` sessions of `org` that ended in `from..to` and that
    /// `keep` keeps, oldest end first, after the (end ms, session id)
    /// cursor; and the cursor to go on from, if the range holds more (a
    /// page stops after `SCAN_MAX` rows read, kept or not, so a filter
    /// that keeps few rows answers in bounded time: the next page goes on).
    pub fn sessions(
        &self,
        org: &str,
        (from, to): (Millis, Millis),
        after: Option<(u64, u64)>,
        limit: usize,
        keep: &dyn Fn(&EndedRow) -> bool,
    ) -> Result<SessionsPage, DbError> {
        self.db.sessions(org, (from.0, to.0), after, (limit, db::SCAN_MAX), keep)
    }

    /// Takes the ended-session receiver (once: the task owns it).
    fn take_receiver(&self) -> Option<tokio::sync::mpsc::Receiver<Ended>> {
        self.rx.lock().take()
    }
}

/// One step of a usage series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// When the step starts (ms since 1970).
    pub start: u64,
    /// Its length in ms.
    pub step_ms: u64,
    /// What the pool did in it.
    pub usage: Usage,
}

impl Point {
    /// Average seats in use over the step.
    pub fn average(&self) -> f64 {
        self.usage.seat_ms as f64 / self.step_ms as f64
    }
}

fn row_of(e: Ended) -> (String, u64, EndedRow) {
    let i = e.info;
    let row = EndedRow {
        pool: i.pool.to_string(),
        user: i.user.to_string(),
        machine: i.machine.to_string(),
        start: i.started.0,
        end: e.at.0,
        reason: e.reason.name().to_string(),
        labels: i.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    (e.org.to_string(), i.session.0, row)
}

/// Most minutes one harvest writes for a pool whose sessions were held
/// through minutes without events (the harvest stalled, or the broker was
/// suspended): older ones are beyond any retention worth writing.
const MAX_IDLE_MINUTES: u64 = 35 * 1440;

/// The rows a harvest at `now` adds: each pool's closed minutes (the
/// shards' shares summed), idle minutes expanded, the peak and trough
/// since the last harvest on every minute since it, and the refusals
/// counted since then (other than the quota's, which the minutes carry),
/// the runners that joined the wait queue and the machines released
/// unused, on the last closed minute.
fn rollup(h: &Harvest, now: Millis, state: &mut State) -> Vec<((String, String, u64), Usage)> {
    let to = minute_of(now);
    let from = state.harvested_to.unwrap_or(to.saturating_sub(1)).clamp(to.saturating_sub(1440), to);
    let mut rows = closed_minutes(h, to.saturating_sub(MAX_IDLE_MINUTES));
    for s in &h.pools {
        let (org, pool) = (s.org.to_string(), s.pool.to_string());
        let (newly, queued, expired) = since_last(state, s);
        for m in from..to {
            let key = (org.clone(), pool.clone(), m);
            // An idle pool's licenses (KSE grants, activations) are sampled
            // on the hour only: the chart is per day, and a pool with users
            // but no use must not cost a row a minute.
            let sampled = (s.assigned > 0 || s.activated > 0) && m.is_multiple_of(60);
            if s.peak == 0 && !sampled && !rows.contains_key(&key) {
                continue;
            }
            let u = rows.entry(key).or_insert_with(blank);
            u.peak = u.peak.max(s.peak);
            u.assigned = u.assigned.max(s.assigned);
            u.activated = u.activated.max(s.activated);
            u.trough = s.trough;
            u.quota = s.quota;
        }
        // Minutes the extremes do not cover (before the last harvest) still get the quota.
        for (_, u) in rows.range_mut((org.clone(), pool.clone(), 0)..(org.clone(), pool.clone(), from)) {
            u.quota = s.quota;
        }
        if (queued > 0 || expired > 0 || newly.iter().any(|n| *n > 0)) && to > 0 {
            let u = rows.entry((org, pool, to - 1)).or_insert_with(blank);
            u.quota = s.quota;
            for (d, n) in u.denied[1..].iter_mut().zip(newly) {
                *d += n;
            }
            u.queued += queued;
            u.expired += expired;
        }
    }
    state.harvested_to = Some(to);
    rows.into_iter().collect()
}

/// Rows keyed by (org, pool, minute).
type Rows = std::collections::BTreeMap<(String, String, u64), Usage>;

/// A minute's row with nothing in it yet.
fn blank() -> Usage {
    Usage { denied: vec![0; crate::proto::ErrorCode::DENIALS.len()], ..Usage::default() }
}

/// Each pool's closed minutes, the shards' shares summed, and the idle
/// minutes after each expanded (back to `oldest` at most).
fn closed_minutes(h: &Harvest, oldest: u64) -> Rows {
    let mut rows = Rows::new();
    for (org, pool, c) in &h.minutes {
        let key = |m: u64| (org.to_string(), pool.to_string(), m);
        let u = rows.entry(key(c.minute)).or_insert_with(blank);
        u.seat_ms += c.tally.seat_ms;
        u.admitted += c.tally.admitted;
        u.denied[0] += c.tally.rejected;
        for (e, n) in u.ends.iter_mut().zip(c.tally.ends) {
            *e += n;
        }
        for m in (c.minute + 1).max(oldest)..=c.minute + c.idle {
            let u = rows.entry(key(m)).or_insert_with(blank);
            u.seat_ms += c.held * MINUTE_MS;
            // Nothing changed in an idle minute: its level is what was held.
            u.peak = u.peak.max(c.held as u32);
            u.trough = u.peak;
        }
    }
    rows
}

/// A pool's refusals (by reason) and queue joins since the last harvest
/// (none at the first: its counts only seed the next difference).
fn since_last(state: &mut State, s: &crate::core::broker::PoolSample) -> (Vec<u64>, u64, u64) {
    let last = state.denied.insert((s.org.clone(), s.pool), (s.denied.to_vec(), s.queued, s.expired));
    match last {
        Some((last, queued, expired)) => (
            s.denied.iter().zip(last.iter().chain(std::iter::repeat(&0))).map(|(n, l)| n.saturating_sub(*l)).collect(),
            s.queued.saturating_sub(queued),
            s.expired.saturating_sub(expired),
        ),
        None => (vec![0; s.denied.len()], 0, 0),
    }
}

/// The history's task: harvests the core at every minute boundary and
/// writes the rows, writes ended sessions every second, prunes once an
/// hour, until `stop` fires.
pub(crate) async fn run(
    core: Arc<crate::core::Broker>,
    clock: crate::clock::Clock,
    history: Arc<History>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let shared = Source { core, clock };
    let Some(mut rx) = history.take_receiver() else { return };
    // The first harvest seeds the extremes and the refusal counts.
    harvest(&shared, &history, Vec::new()).await;
    let mut pruned_hour = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {
                // Sessions ended while draining are kept (the minute in
                // progress is not: see the module docs).
                let mut last = Vec::new();
                while let Ok(e) = rx.try_recv() {
                    last.push(e);
                }
                let h = history.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || h.record_sessions(last)).await {
                    tracing::warn!("ended sessions not written at shutdown: {e}");
                }
                return;
            }
        }
        let mut sessions = Vec::new();
        while sessions.len() < SESSIONS_PER_SECOND {
            match rx.try_recv() {
                Ok(e) => sessions.push(e),
                Err(_) => break,
            }
        }
        let now = shared.clock.now();
        let due = history.state.lock().harvested_to.is_none_or(|to| minute_of(now) > to);
        if due {
            harvest(&shared, &history, sessions).await;
            let hour = minute_of(now) / 60;
            if pruned_hour != Some(hour) {
                pruned_hour = Some(hour);
                prune(&shared, &history).await;
            }
        } else if !sessions.is_empty() {
            let h = history.clone();
            match tokio::task::spawn_blocking(move || h.record_sessions(sessions)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("ended sessions not written: {e}"),
                Err(e) => tracing::warn!("ended sessions not written: {e}"),
            }
        }
    }
}

/// What the history's task reads: the core it harvests, and the clock.
#[derive(Clone)]
struct Source {
    core: Arc<crate::core::Broker>,
    clock: crate::clock::Clock,
}

async fn harvest(shared: &Source, history: &Arc<History>, sessions: Vec<Ended>) {
    let (s, h) = (shared.clone(), history.clone());
    let done = tokio::task::spawn_blocking(move || {
        let now = s.clock.now();
        let harvest = s.core.harvest(now);
        h.record(harvest, now, sessions, true)
    });
    match done.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("history not written: {e}"),
        Err(e) => tracing::warn!("history not written: {e}"),
    }
}

async fn prune(shared: &Source, history: &Arc<History>) {
    let (s, h) = (shared.clone(), history.clone());
    let done = tokio::task::spawn_blocking(move || {
        let (pools, _) = s.core.census();
        let pools: Vec<(String, String)> = pools.iter().map(|p| (p.org.to_string(), p.pool.to_string())).collect();
        h.prune(s.clock.now(), &pools)
    });
    if let Ok(Err(e)) = done.await {
        tracing::warn!("history not pruned: {e}");
    }
}

#[cfg(test)]
mod tests;
