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
//!
//! Here, `History` (the rows' store and its queries); `rollup` turns a
//! harvest into rows, `task` runs the harvests and writes, `period` names
//! the granularities and their retention.

mod busy;
mod db;
pub mod export;
pub mod filter;
mod period;
pub mod preflight;
pub mod replay;
pub mod report;
mod rollup;
mod task;
mod what_if;

/// A page of ended sessions (session id, row), and the (end ms, session
/// id) cursor to go on from, if the range holds more.
pub type SessionsPage = (Vec<(u64, EndedRow)>, Option<(u64, u64)>);

pub use db::{DbError, EndedRow, Usage};
pub use period::{Period, Retention};
pub(crate) use task::run;
pub use what_if::{Recorded, WhatIf, MAX_DEMAND, MAX_SEAT_COUNTS};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::core::broker::Harvest;
use crate::core::usage::{minute_of, MINUTE_MS};
use crate::core::{Ended, Millis, OrgName, PoolId};
use rollup::{rollup, row_of, State};

/// The history's file inside the data dir.
pub const FILE: &str = "history.redb";

/// Ended sessions the task writes per second at most (the rest are dropped
/// and counted). Far above what CI fleets end (a thousand runners with
/// one-minute jobs end 17 a second), far below a load test's million.
pub const SESSIONS_PER_SECOND: usize = 2_000;

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

#[cfg(test)]
mod tests;
