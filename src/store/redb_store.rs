//! The embedded single-node store: one redb file, one table per record
//! family, postcard values. Every commit is fsync'd before it returns.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use super::{Store, StoreError};
use crate::core::{AuditEntry, Change, OrgName, Record, Table};

/// A redb database file holding every durable record.
pub struct RedbStore {
    db: Database,
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
        let db = Database::create(path).map_err(backend)?;
        // Create every table up front so reads never meet a missing table.
        let tx = db.begin_write().map_err(backend)?;
        for table in Table::ALL {
            tx.open_table(def(table)).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Vec<Record>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
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

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        // redb's default durability is Immediate: commit() returns after fsync.
        let tx = self.db.begin_write().map_err(backend)?;
        for change in changes {
            let (table, key) = change.key();
            let mut t = tx.open_table(def(table)).map_err(backend)?;
            match change {
                Change::Put(record) => {
                    let bytes = postcard::to_allocvec(record).map_err(|e| StoreError::Backend(Box::new(e)))?;
                    t.insert(key.as_str(), bytes.as_slice()).map_err(backend)?;
                }
                Change::RemoveMachine { .. } | Change::RemoveGrant { .. } | Change::RemoveBinding { .. } => {
                    t.remove(key.as_str()).map_err(backend)?;
                }
            }
        }
        tx.commit().map_err(backend)
    }

    fn audit(&self, org: &OrgName) -> Result<Vec<AuditEntry>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(def(Table::Audit)).map_err(backend)?;
        // Keys are `org/at/seq`; '/' sorts before '0' (the end bound is `org0`).
        let (start, end) = (format!("{org}/"), format!("{org}0"));
        let mut out = Vec::new();
        for row in t.range(start.as_str()..end.as_str()).map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            match postcard::from_bytes::<Record>(v.value()) {
                Ok(Record::Audit(e)) => out.push(e),
                _ => return Err(StoreError::Corrupt { table: Table::Audit.name(), key: k.value().to_string() }),
            }
        }
        Ok(out)
    }
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
}
