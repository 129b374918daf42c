//! The history's own redb file, `history.redb` in the data dir.
//!
//! A file of its own rather than tables in the records' store: history is
//! written in batches (a minute's rollups, a second's ended sessions)
//! without an fsync per batch, so it never queues behind or slows the
//! fsync'd commits admissions wait for; a damaged or deleted history
//! loses charts, never a license record; and its size is its own to watch.
//! redb rather than SQLite: it is already in the tree (no C build), its
//! ordered tuple keys make every query a range scan, and retention a
//! range delete.
//!
//! Tables (postcard values):
//! - `minutes`, `hours`, `days`: (org, pool, period index) → `Usage`.
//! - `sessions`: (org, end ms, session id) → `EndedRow`.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Period, Retention};

type Key<'a> = (&'a str, &'a str, u64);

const MINUTES: TableDefinition<'static, Key<'static>, &'static [u8]> = TableDefinition::new("minutes");
const HOURS: TableDefinition<'static, Key<'static>, &'static [u8]> = TableDefinition::new("hours");
const DAYS: TableDefinition<'static, Key<'static>, &'static [u8]> = TableDefinition::new("days");
/// Most ended-session rows one page reads, kept by its filter or not.
pub const SCAN_MAX: usize = 200_000;

const SESSIONS: TableDefinition<'static, (&'static str, u64, u64), &'static [u8]> = TableDefinition::new("sessions");

fn table(p: Period) -> TableDefinition<'static, Key<'static>, &'static [u8]> {
    match p {
        Period::Minute => MINUTES,
        Period::Hour => HOURS,
        Period::Day => DAYS,
    }
}

/// What a pool did in one period (a minute, an hour or a day).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Most seats in use at any instant of the period.
    pub peak: u32,
    /// Fewest seats in use at any instant of the period (over the minutes
    /// that have a row: a pool with nothing at all has no row).
    pub trough: u32,
    /// The quota (the highest it was during the period).
    pub quota: u32,
    /// Seat-milliseconds held by sessions.
    pub seat_ms: u64,
    /// Sessions admitted.
    pub admitted: u64,
    /// Admissions refused, by error code: `QUOTA_EXCEEDED` first, then
    /// `Denial::ALL`'s order (a later reason appends).
    pub denied: Vec<u64>,
    /// Sessions ended, by reason (`EndReason::ALL` order).
    pub ends: [u64; 4],
    /// Runners that joined the pool's wait queue (`runner --wait`).
    pub queued: u64,
    /// Most users granted the pool (KSE's Licensed Users) at a harvest in
    /// the period (an idle pool is sampled on the hour only). Appended
    /// after `queued`: rows written before it decode through `UsageV1`
    /// with 0.
    pub assigned: u32,
    /// Most node-locked activations and live offline licenses at a harvest
    /// in the period (the licenses bound to a machine; sessions are `peak`).
    pub activated: u32,
    /// Machines the broker released unused (idle limit, ephemeral).
    /// Appended after `activated`: older rows decode through `UsageV2` or
    /// `UsageV1` with 0.
    pub expired: u64,
}

/// A `Usage` as rows held it before `expired` was appended.
#[derive(Deserialize)]
struct UsageV2 {
    v1: UsageV1,
    assigned: u32,
    activated: u32,
}

/// A `Usage` as a row holds it: postcard is not self-describing, so a row
/// written before a field was appended is read by the shape it was
/// written in (it runs out before the new fields; a row of the new shape
/// never decodes as the old, which would leave bytes over).
#[derive(Deserialize)]
struct UsageV1 {
    peak: u32,
    trough: u32,
    quota: u32,
    seat_ms: u64,
    admitted: u64,
    denied: Vec<u64>,
    ends: [u64; 4],
    queued: u64,
}

/// Reads a stored `Usage` of either shape.
fn decode(bytes: &[u8]) -> Result<Usage, DbError> {
    if let Ok(u) = postcard::from_bytes::<Usage>(bytes) {
        return Ok(u);
    }
    if let Ok((v2, [])) = postcard::take_from_bytes::<UsageV2>(bytes) {
        return Ok(Usage { assigned: v2.assigned, activated: v2.activated, ..from_v1(v2.v1) });
    }
    let (v1, rest) = postcard::take_from_bytes::<UsageV1>(bytes).map_err(err)?;
    if !rest.is_empty() {
        return Err(DbError(format!("a usage row has {} bytes over", rest.len())));
    }
    Ok(from_v1(v1))
}

/// A first-shape row, its later fields 0.
fn from_v1(v1: UsageV1) -> Usage {
    let UsageV1 { peak, trough, quota, seat_ms, admitted, denied, ends, queued } = v1;
    Usage { peak, trough, quota, seat_ms, admitted, denied, ends, queued, assigned: 0, activated: 0, expired: 0 }
}

impl Usage {
    /// Folds `o` (a later or concurrent part of the same period) in.
    pub fn merge(&mut self, o: &Usage) {
        self.peak = self.peak.max(o.peak);
        self.trough = self.trough.min(o.trough);
        self.quota = self.quota.max(o.quota);
        self.seat_ms += o.seat_ms;
        self.admitted += o.admitted;
        if self.denied.len() < o.denied.len() {
            self.denied.resize(o.denied.len(), 0);
        }
        for (d, n) in self.denied.iter_mut().zip(&o.denied) {
            *d += n;
        }
        for (e, n) in self.ends.iter_mut().zip(o.ends) {
            *e += n;
        }
        self.queued += o.queued;
        self.assigned = self.assigned.max(o.assigned);
        self.activated = self.activated.max(o.activated);
        self.expired += o.expired;
    }

    /// KSE licenses activated at most in the period, as the vendor's chart
    /// counts them: node-locked activations and offline licenses bound to
    /// machines (`activated`) or, on a floating pool, sessions at once
    /// (`peak`). The one reading for the console's chart and the API.
    pub fn licenses_activated(&self) -> u32 {
        self.activated.max(self.peak)
    }

    /// Refusals of every reason.
    pub fn denials(&self) -> u64 {
        self.denied.iter().sum()
    }
}

/// One ended session as the history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedRow {
    /// Its pool.
    pub pool: String,
    /// The user whose key acquired it.
    pub user: String,
    /// The machine it ran on.
    pub machine: String,
    /// When it started (ms since 1970).
    pub start: u64,
    /// When it ended.
    pub end: u64,
    /// Why (`EndReason::name`).
    pub reason: String,
    /// The job's labels (pipeline, job), as the runner gave them.
    pub labels: Vec<(String, String)>,
}

/// Why the history could not be read or written.
#[derive(Debug)]
pub struct DbError(pub String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "history store: {}", self.0)
    }
}

impl std::error::Error for DbError {}

fn err(e: impl std::fmt::Display) -> DbError {
    DbError(e.to_string())
}

/// The history file.
pub struct Db {
    db: Database,
}

/// Reads stream through; rollups are small. redb's default cache is 1 GiB.
const CACHE_BYTES: usize = 16 << 20;

/// A batch of rows to write in one transaction.
#[derive(Default, Debug)]
pub struct Batch {
    /// (org, pool, minute) → what the minute adds.
    pub minutes: Vec<((String, String, u64), Usage)>,
    /// Ended sessions: (org, session id, row).
    pub sessions: Vec<(String, u64, EndedRow)>,
}

impl Db {
    /// Opens (creating if needed) the history at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        for t in [MINUTES, HOURS, DAYS] {
            tx.open_table(t).map_err(err)?;
        }
        tx.open_table(SESSIONS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Db { db })
    }

    /// Writes a batch: minutes merged into any row already there (a
    /// restart within a minute), and into their hour and day.
    ///
    /// Not fsync'd (`Durability::None`): a crash may lose the batches since
    /// the last durable commit, never corrupt the file; `write_durable`
    /// (once a minute) makes everything before it durable.
    pub fn write(&self, batch: &Batch, durable: bool) -> Result<(), DbError> {
        let mut tx = self.db.begin_write().map_err(err)?;
        if !durable {
            tx.set_durability(Durability::None).map_err(err)?;
        }
        {
            for period in [Period::Minute, Period::Hour, Period::Day] {
                let mut t = tx.open_table(table(period)).map_err(err)?;
                // Several minutes of a batch fall in one hour: merge in memory first.
                let mut merged: std::collections::BTreeMap<(&str, &str, u64), Usage> = Default::default();
                for ((org, pool, minute), u) in &batch.minutes {
                    let k = (org.as_str(), pool.as_str(), minute / period.minutes());
                    match merged.get_mut(&k) {
                        Some(m) => m.merge(u),
                        None => _ = merged.insert(k, u.clone()),
                    }
                }
                for (k, u) in merged {
                    let old = match t.get(k).map_err(err)? {
                        Some(old) => Some(decode(old.value())?),
                        None => None,
                    };
                    let row = match old {
                        Some(mut row) => {
                            row.merge(&u);
                            row
                        }
                        None => u,
                    };
                    t.insert(k, postcard::to_allocvec(&row).map_err(err)?.as_slice()).map_err(err)?;
                }
            }
            let mut t = tx.open_table(SESSIONS).map_err(err)?;
            for (org, id, row) in &batch.sessions {
                t.insert((org.as_str(), row.end, *id), postcard::to_allocvec(row).map_err(err)?.as_slice())
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Rows of `org`'s `pool` for periods `from..to` of `period`.
    pub fn usage(
        &self,
        period: Period,
        org: &str,
        pool: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Usage)>, DbError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(table(period)).map_err(err)?;
        let mut out = Vec::new();
        for row in t.range((org, pool, from)..(org, pool, to)).map_err(err)? {
            let (k, v) = row.map_err(err)?;
            out.push((k.value().2, decode(v.value())?));
        }
        Ok(out)
    }

    /// Up to `limit` sessions of `org` that ended in `from..to` ms and
    /// that `keep` keeps, oldest end first, after (end, id) `after`,
    /// reading at most `scan` rows; and the (end, id) to go on from when
    /// the range holds more.
    pub fn sessions(
        &self,
        org: &str,
        (from, to): (u64, u64),
        after: Option<(u64, u64)>,
        (limit, scan): (usize, usize),
        keep: &dyn Fn(&EndedRow) -> bool,
    ) -> Result<super::SessionsPage, DbError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(SESSIONS).map_err(err)?;
        let start = match after {
            Some((end, id)) => (org, end, id.saturating_add(1)),
            None => (org, from, 0),
        };
        let (mut out, mut read, mut last) = (Vec::new(), 0, None);
        for row in t.range(start..(org, to, 0)).map_err(err)? {
            if out.len() == limit || read == scan {
                return Ok((out, last));
            }
            let (k, v) = row.map_err(err)?;
            let (_, end, id) = k.value();
            let r: EndedRow = postcard::from_bytes(v.value()).map_err(err)?;
            (read, last) = (read + 1, Some((end, id)));
            if keep(&r) {
                out.push((id, r));
            }
        }
        Ok((out, None))
    }

    /// Deletes what `keep` no longer keeps, as of minute `now`, for the
    /// given (org, pool)s and orgs.
    pub fn prune(&self, keep: &Retention, now_minute: u64, pools: &[(String, String)]) -> Result<(), DbError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            for (period, kept) in
                [(Period::Minute, Some(keep.minutes)), (Period::Hour, Some(keep.hours)), (Period::Day, keep.days)]
            {
                let Some(kept) = kept else { continue };
                let cutoff = now_minute.saturating_sub(kept.as_secs() / 60) / period.minutes();
                let mut t = tx.open_table(table(period)).map_err(err)?;
                for (org, pool) in pools {
                    t.retain_in((org.as_str(), pool.as_str(), 0)..(org.as_str(), pool.as_str(), cutoff), |_, _| false)
                        .map_err(err)?;
                }
            }
            let cutoff_ms = now_minute.saturating_sub(keep.minutes.as_secs() / 60) * 60_000;
            let mut t = tx.open_table(SESSIONS).map_err(err)?;
            let orgs: std::collections::BTreeSet<&str> = pools.iter().map(|(o, _)| o.as_str()).collect();
            for org in orgs {
                t.retain_in((org, 0, 0)..(org, cutoff_ms, 0), |_, _| false).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Bytes the rows take in the file (stored plus metadata; the file
    /// itself grows in regions and keeps freed pages, so it is larger).
    pub fn data_bytes(&self) -> Result<u64, DbError> {
        let tx = self.db.begin_write().map_err(err)?;
        let s = tx.stats().map_err(err)?;
        let bytes = s.stored_bytes() + s.metadata_bytes();
        tx.abort().map_err(err)?;
        Ok(bytes)
    }

    /// Bytes the file takes on disk.
    pub fn file_bytes(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row written before `assigned` and `activated` were appended reads
    /// with them 0, one written before `expired` with it 0; a row of
    /// today's shape reads back as written.
    #[test]
    fn rows_of_either_shape_decode() {
        let old = (3u32, 1u32, 5u32, 90_000u64, 2u64, vec![1u64, 0, 4], [1u64, 0, 0, 2], 6u64);
        let u = decode(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!((u.peak, u.trough, u.quota, u.seat_ms, u.admitted), (3, 1, 5, 90_000, 2));
        assert_eq!((u.denied, u.ends, u.queued, u.assigned, u.activated), (vec![1, 0, 4], [1, 0, 0, 2], 6, 0, 0));
        let second = (old, 7u32, 3u32);
        let u = decode(&postcard::to_allocvec(&second).unwrap()).unwrap();
        assert_eq!((u.queued, u.assigned, u.activated, u.expired), (6, 7, 3, 0));
        let new = Usage { peak: 1, assigned: 7, activated: 3, expired: 2, denied: vec![0; 2], ..Usage::default() };
        assert_eq!(decode(&postcard::to_allocvec(&new).unwrap()).unwrap(), new);
        assert!(decode(&[0xff; 3]).is_err(), "garbage is an error, not a row");
    }
}
