//! Durable records behind a small trait, so the core never knows where
//! records live. `redb` is the single-node backend; a distributed backend
//! (fenced etcd transactions, `cluster::store`) implements the same calls.

mod redb_store;

pub use redb_store::RedbStore;

use crate::core::{AuditEntry, Change, Event, Millis, OrgName, Record};

/// Why the store could not load or commit. A failed commit changed nothing.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written (the backend's error is the source).
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A stored record could not be decoded (corruption or a newer format).
    Corrupt {
        /// The table.
        table: &'static str,
        /// The key's id (from `key list`) or the full key.
        key: String,
    },
    /// This node no longer owns the cluster's records (another node's
    /// claim replaced its own, or it never had one): nothing was written.
    Fenced,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Backend(e) => write!(f, "store failure: {e}"),
            StoreError::Corrupt { table, key } => write!(f, "corrupt record {table}/{key}"),
            StoreError::Fenced => {
                f.write_str("this node no longer serves (another node owns the records now); nothing was written")
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Backend(e) => Some(e.as_ref()),
            StoreError::Corrupt { .. } | StoreError::Fenced => None,
        }
    }
}

/// Where durable records live.
pub trait Store: Send + Sync + 'static {
    /// Every record that rebuilds memory, parents before children (orgs,
    /// pools, users, keys, machines, grants, bindings, offline licenses).
    fn load(&self) -> Result<Vec<Record>, StoreError>;

    /// Applies all changes atomically and durably (fsync'd) or none of them.
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError>;

    /// Up to `limit` entries of an org's audit trail, oldest first, after
    /// the entry at (`at`, `seq`) if given; and whether more follow.
    fn audit_page(
        &self,
        org: &OrgName,
        after: Option<(Millis, u64)>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), StoreError>;

    /// The latest `limit` entries of an org's audit trail, newest first.
    fn audit_latest(&self, org: &OrgName, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Up to `limit` events of an org's outbox, oldest first, from the
    /// first whose `seq` is greater than `after`; and whether more follow.
    fn events_after(&self, org: &OrgName, after: u64, limit: usize) -> Result<(Vec<Event>, bool), StoreError>;

    /// The `seq` of the newest event of an org's outbox (0: none yet).
    fn events_last(&self, org: &OrgName) -> Result<u64, StoreError>;
}
