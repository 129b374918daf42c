//! The embedded single-node store: one redb file, one table per record
//! family, postcard values. Every commit is fsync'd before it returns.
//!
//! After an I/O error (a full disk, say) redb refuses every later write
//! until the database is closed and opened again. The store does that by
//! itself on the next call, so a broker whose disk filled up answers
//! `STORE_FAILURE` while it is full and works again once space is freed,
//! without a restart. Nothing acknowledged is lost: a failed commit changed
//! nothing, and reopening replays redb's own recovery.

use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Store, StoreError};
use crate::core::{audit_key, event_key, AuditEntry, Change, Event, Millis, OrgName, Record, Table};

/// A redb database file holding every durable record.
pub struct RedbStore {
    path: PathBuf,
    /// The open database; closed and reopened (under the write lock) after
    /// an error. `None` only while a reopen has failed (it is retried).
    db: RwLock<Option<Database>>,
    /// Set by a failed operation: the next one reopens the database first.
    failed: std::sync::atomic::AtomicBool,
}

fn def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(Box::new(e.into()))
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = create(path)?;
        Ok(RedbStore { path: path.to_path_buf(), db: RwLock::new(Some(db)), failed: false.into() })
    }

    /// Runs `f` on the database, reopening it first if the last operation
    /// failed, and remembering a failure for the next call.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering;
        // Relaxed: a stale read only delays the reopen by one call.
        if self.failed.load(Ordering::Relaxed) {
            let mut db = self.db.write();
            if self.failed.load(Ordering::Relaxed) {
                // redb holds a file lock: the old handle must close before the new one opens.
                drop(db.take());
                *db = Some(create(&self.path)?);
                self.failed.store(false, Ordering::Relaxed);
                tracing::info!(path = %self.path.display(), "store reopened after an error");
            }
        }
        let db = self.db.read();
        let result = match db.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Backend("the store is closed after an error; reopening it failed".into())),
        };
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// Redb's cache for reads and writes. The records that rebuild memory are
/// read once at start; what is read later (the audit trail, page by page)
/// streams through, so a small cache costs nothing, and the broker's
/// memory does not grow with what an Owner reads (redb's default is 1 GiB).
const CACHE_BYTES: usize = 32 << 20;

/// Opens (creating if needed) the database and every table, so reads never
/// meet a missing table (older data dirs gain the tables added since). A
/// file written by redb 2 is upgraded in place first (see `upgrade_v2`).
fn create(path: &Path) -> Result<Database, StoreError> {
    let open = || Database::builder().set_cache_size(CACHE_BYTES).create(path);
    let db = match open() {
        Err(redb::DatabaseError::UpgradeRequired(_)) => {
            upgrade_v2(path)?;
            open().map_err(backend)?
        }
        other => other.map_err(backend)?,
    };
    let tx = db.begin_write().map_err(backend)?;
    for table in Table::ALL {
        tx.open_table(def(table)).map_err(backend)?;
    }
    tx.commit().map_err(backend)?;
    Ok(db)
}

/// Rewrites a redb 2 file (format v2) in the format redb 3 and later read,
/// with redb 2.6's own `upgrade` (the one supported path: redb 3 dropped
/// format v2). The tables hold `&str` keys and byte values, whose encoding
/// did not change, so the records read back as written. A crash midway is
/// safe: the upgrade is one redb transaction.
fn upgrade_v2(path: &Path) -> Result<(), StoreError> {
    let failed = |e: &dyn std::fmt::Display| {
        StoreError::Backend(format!("upgrading {} from redb 2's file format: {e}", path.display()).into())
    };
    let mut old = redb2::Database::open(path).map_err(|e| failed(&e))?;
    let upgraded = old.upgrade().map_err(|e| failed(&e))?;
    drop(old);
    tracing::info!(path = %path.display(), upgraded, "store file upgraded from redb 2's format");
    Ok(())
}

impl Store for RedbStore {
    fn load(&self) -> Result<Vec<Record>, StoreError> {
        self.with_db(load)
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        self.with_db(|db| commit(db, changes))
    }

    fn audit_page(
        &self,
        org: &OrgName,
        after: Option<(Millis, u64)>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), StoreError> {
        self.with_db(|db| audit_page(db, org, after, limit))
    }

    fn audit_latest(&self, org: &OrgName, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(def(Table::Audit)).map_err(backend)?;
            let (start, end) = (format!("{org}/"), format!("{org}0"));
            let mut out = Vec::new();
            for row in t.range::<&str>(start.as_str()..end.as_str()).map_err(backend)?.rev().take(limit) {
                let (k, v) = row.map_err(backend)?;
                match postcard::from_bytes::<Record>(v.value()) {
                    Ok(Record::Audit(e)) => out.push(e),
                    _ => return Err(StoreError::Corrupt { table: Table::Audit.name(), key: k.value().to_string() }),
                }
            }
            Ok(out)
        })
    }

    fn events_after(&self, org: &OrgName, after: u64, limit: usize) -> Result<(Vec<Event>, bool), StoreError> {
        self.with_db(|db| events_after(db, org, after, limit))
    }

    fn events_last(&self, org: &OrgName) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(def(Table::Events)).map_err(backend)?;
            let (start, end) = (format!("{org}/"), format!("{org}0"));
            match t.range::<&str>(start.as_str()..end.as_str()).map_err(backend)?.next_back() {
                Some(row) => {
                    let (k, v) = row.map_err(backend)?;
                    decode_event(k.value(), v.value()).map(|e| e.seq)
                }
                None => Ok(0),
            }
        })
    }
}

fn decode_event(key: &str, value: &[u8]) -> Result<Event, StoreError> {
    match postcard::from_bytes::<Record>(value) {
        Ok(Record::Event(e)) => Ok(e),
        _ => Err(StoreError::Corrupt { table: Table::Events.name(), key: key.to_string() }),
    }
}

/// An org's events after `after`: keys are `org/seq` (fixed-width hex, so
/// they sort by sequence; '/' sorts before '0', so the end bound is `org0`).
fn events_after(db: &Database, org: &OrgName, after: u64, limit: usize) -> Result<(Vec<Event>, bool), StoreError> {
    use std::ops::Bound;
    let tx = db.begin_read().map_err(backend)?;
    let t = tx.open_table(def(Table::Events)).map_err(backend)?;
    let (start, end) = (event_key(org, after), format!("{org}0"));
    let range = (Bound::Excluded(start.as_str()), Bound::Excluded(end.as_str()));
    let mut out = Vec::new();
    for row in t.range::<&str>(range).map_err(backend)? {
        if out.len() == limit {
            return Ok((out, true));
        }
        let (k, v) = row.map_err(backend)?;
        out.push(decode_event(k.value(), v.value())?);
    }
    Ok((out, false))
}

fn load(db: &Database) -> Result<Vec<Record>, StoreError> {
    let tx = db.begin_read().map_err(backend)?;
    let mut out = Vec::new();
    for table in Table::DIRECTORY {
        let t = tx.open_table(def(table)).map_err(backend)?;
        for row in t.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let record: Record = postcard::from_bytes(v.value())
                .map_err(|_| StoreError::Corrupt { table: table.name(), key: k.value().to_string() })?;
            out.push(record);
        }
    }
    Ok(out)
}

fn commit(db: &Database, changes: &[Change]) -> Result<(), StoreError> {
    // redb's default durability is Immediate: commit() returns after fsync.
    let tx = db.begin_write().map_err(backend)?;
    for change in changes {
        let (table, key) = change.key();
        let mut t = tx.open_table(def(table)).map_err(backend)?;
        match change {
            Change::Put(record) => {
                let bytes = postcard::to_allocvec(record).map_err(|e| StoreError::Backend(Box::new(e)))?;
                t.insert(key.as_str(), bytes.as_slice()).map_err(backend)?;
            }
            Change::RemoveMachine { .. }
            | Change::RemoveGrant { .. }
            | Change::RemoveBinding { .. }
            | Change::RemoveUser { .. }
            | Change::RemoveEvent { .. }
            | Change::RemoveWebhook { .. }
            | Change::RemoveWebhookCursor { .. }
            | Change::RemoveStopped { .. } => {
                t.remove(key.as_str()).map_err(backend)?;
            }
        }
    }
    tx.commit().map_err(backend)
}

fn audit_page(
    db: &Database,
    org: &OrgName,
    after: Option<(Millis, u64)>,
    limit: usize,
) -> Result<(Vec<AuditEntry>, bool), StoreError> {
    use std::ops::Bound;
    let tx = db.begin_read().map_err(backend)?;
    let t = tx.open_table(def(Table::Audit)).map_err(backend)?;
    // Keys are `org/at/seq` (fixed-width hex, so they sort by time, then
    // sequence); '/' sorts before '0', so the end bound is `org0`.
    let start = match after {
        None => Bound::Included(format!("{org}/")),
        Some((at, seq)) => Bound::Excluded(audit_key(org, at, seq)),
    };
    let end = format!("{org}0");
    let range = (start.as_ref().map(String::as_str), Bound::Excluded(end.as_str()));
    let mut out = Vec::new();
    for row in t.range::<&str>(range).map_err(backend)? {
        if out.len() == limit {
            return Ok((out, true));
        }
        let (k, v) = row.map_err(backend)?;
        match postcard::from_bytes::<Record>(v.value()) {
            Ok(Record::Audit(e)) => out.push(e),
            _ => return Err(StoreError::Corrupt { table: Table::Audit.name(), key: k.value().to_string() }),
        }
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Millis, OrgName, PoolId};

    #[test]
    fn records_survive_reopen_and_removal_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let org = OrgName::new("acme").unwrap();
        let machine = crate::core::MachineId::new("m1").unwrap();
        {
            let s = RedbStore::open(&path).unwrap();
            s.commit(&[
                Change::Put(Record::Org { name: org.clone(), subscription_end: Millis(5), created: Millis(1) }),
                Change::Put(Record::Pool { org: org.clone(), pool: PoolId::KRE_DEFAULT, quota: 3 }),
                Change::Put(Record::Machine {
                    org: org.clone(),
                    pool: PoolId::KRE_DEFAULT,
                    machine: machine.clone(),
                    registered: Millis(2),
                }),
            ])
            .unwrap();
            s.commit(&[Change::Put(Record::Pool { org: org.clone(), pool: PoolId::KRE_DEFAULT, quota: 7 })]).unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        let records = s.load().unwrap();
        assert_eq!(records.len(), 3);
        assert!(matches!(records[0], Record::Org { .. }));
        assert!(records.contains(&Record::Pool { org: org.clone(), pool: PoolId::KRE_DEFAULT, quota: 7 }));
        s.commit(&[Change::RemoveMachine { org, pool: PoolId::KRE_DEFAULT, machine }]).unwrap();
        assert_eq!(s.load().unwrap().len(), 2);
    }

    /// A full disk: commits fail (and change nothing) while it is full, and
    /// succeed again once space is freed, with no restart. Needs root to
    /// mount a small tmpfs; says so and checks nothing where it cannot.
    #[test]
    fn reopens_itself_after_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED reopens_itself_after_a_full_disk: cannot mount a tmpfs here (needs root)");
            return;
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(dir.path());
        let s = RedbStore::open(&dir.path().join("db.redb")).unwrap();
        let pool = |n: u32| {
            Change::Put(Record::Pool {
                org: OrgName::new(format!("org{n}")).unwrap(),
                pool: PoolId::KRE_DEFAULT,
                quota: n,
            })
        };
        s.commit(&[pool(1)]).unwrap();
        // Fill the disk.
        let filler = dir.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        drop(f);
        let big: Vec<Change> = (2..2000).map(pool).collect();
        assert!(s.commit(&big).is_err(), "a commit on a full disk fails");
        assert!(s.commit(&[pool(2)]).is_err(), "and so does the next one while it is full");
        std::fs::remove_file(&filler).unwrap();
        s.commit(&[pool(3)]).expect("works again once space is freed, without a restart");
        let records = s.load().unwrap();
        let quotas: Vec<u32> = records
            .iter()
            .filter_map(|r| match r {
                Record::Pool { quota, .. } => Some(*quota),
                _ => None,
            })
            .collect();
        assert_eq!(quotas, vec![1, 3], "what was acknowledged is there, what failed is not");
    }
}
