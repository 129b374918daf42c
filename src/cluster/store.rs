//! The records of a cluster, in etcd, behind the same `Store` trait as the
//! embedded redb file: one key per record (`PREFIX/r/TABLE/KEY`, postcard
//! value, the same keys and encoding as redb's tables), and every write a
//! transaction that first compares the owner claim's create revision with
//! this node's fence. A node that lost its claim (paused, partitioned,
//! replaced) therefore writes nothing, whatever it still believes.
//!
//! The trait is synchronous (the shell calls it from blocking threads);
//! etcd's client is async. A small runtime of its own, on one thread,
//! runs the calls, so a blocking caller never waits on the runtime that
//! called it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::etcd::{prefix_end, Compare, Etcd, EtcdError, Op};
use crate::core::{audit_key, AuditEntry, Change, Millis, OrgName, Record, Table};
use crate::store::{Store, StoreError};

/// Most operations in one etcd transaction: etcd refuses more than 128 by
/// default (`--max-txn-ops`). A commit with more (only a checkpoint of many
/// pools' counters has that many) is written as several transactions,
/// each fenced; every change the core plans as one step is far smaller.
pub const MAX_TXN_OPS: usize = 120;

/// Records read per etcd call when loading.
pub const LOAD_PAGE: usize = 1000;

/// Bound of one of the store's etcd calls: longer than the ownership
/// loop's, since a page of records or a large commit takes longer than a
/// renewal; a node that holds the claim has time (its lease is renewed
/// meanwhile).
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The revision that created this node's owner claim, or 0 while it owns
/// nothing (every write refused). Shared with the ownership loop.
#[derive(Debug, Default)]
pub struct Fence(AtomicI64);

impl Fence {
    /// The current fence (0: none).
    pub fn get(&self) -> i64 {
        // Acquire: pairs with `set`, so a write sees the claim it is fenced on.
        self.0.load(Ordering::Acquire)
    }

    /// Sets the fence (0 to refuse every write from now on).
    pub fn set(&self, revision: i64) {
        self.0.store(revision, Ordering::Release);
    }
}

/// Where a cluster keeps what: every key under one prefix.
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// Keys under `prefix` (`/license-broker/` by default).
    pub fn new(prefix: &str) -> Layout {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Layout { prefix }
    }

    /// The owner claim: created with a lease by the node that serves.
    pub fn owner(&self) -> Vec<u8> {
        format!("{}owner", self.prefix).into_bytes()
    }

    /// Where live nodes announce themselves (lease-bound).
    pub fn node(&self, name: &str) -> Vec<u8> {
        format!("{}nodes/{name}", self.prefix).into_bytes()
    }

    /// The prefix of every node announcement.
    pub fn nodes(&self) -> Vec<u8> {
        format!("{}nodes/", self.prefix).into_bytes()
    }

    /// A secret the nodes share (a file of the data dir, by its path there).
    pub fn secret(&self, file: &str) -> Vec<u8> {
        format!("{}secrets/{file}", self.prefix).into_bytes()
    }

    fn table(&self, table: Table) -> String {
        format!("{}r/{}/", self.prefix, table.name())
    }

    fn record(&self, table: Table, key: &str) -> Vec<u8> {
        format!("{}{key}", self.table(table)).into_bytes()
    }
}

/// A one-thread runtime that runs etcd calls for synchronous callers.
struct Bridge {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    fn new() -> std::io::Result<Bridge> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-store")
            .enable_all()
            .build()?;
        Ok(Bridge { runtime: Some(runtime) })
    }

    /// Runs `f` on the bridge's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Backend("the etcd store is closed".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().unwrap_or_else(|_| Err(StoreError::Backend("the etcd store's runtime stopped".into())))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Not `drop(runtime)`: that blocks, and may run inside an async task.
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

/// The records of a cluster in etcd, written only under this node's fence.
pub struct EtcdStore {
    etcd: Arc<Etcd>,
    layout: Layout,
    fence: Arc<Fence>,
    bridge: Bridge,
}

fn etcd_error(e: EtcdError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl EtcdStore {
    /// A store on `etcd` under `layout`, writing while `fence` is set.
    pub fn new(etcd: Arc<Etcd>, layout: Layout, fence: Arc<Fence>) -> Result<EtcdStore, StoreError> {
        let bridge = Bridge::new().map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(EtcdStore { etcd, layout, fence, bridge })
    }

    /// Every record of `table`, decoded; read `LOAD_PAGE` keys at a time,
    /// so no answer grows with the number of records.
    async fn table(etcd: &Etcd, layout: &Layout, table: Table) -> Result<Vec<Record>, StoreError> {
        let prefix = layout.table(table).into_bytes();
        let end = prefix_end(&prefix);
        let (mut start, mut out) = (prefix, Vec::new());
        loop {
            let (kvs, more) = etcd.range_in(&start, &end, LOAD_PAGE, false).await.map_err(etcd_error)?;
            for kv in &kvs {
                out.push(postcard::from_bytes(&kv.value).map_err(|_| StoreError::Corrupt {
                    table: table.name(),
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                })?);
            }
            match (more, kvs.last()) {
                (true, Some(last)) => {
                    // Just past the last key read.
                    start = last.key.clone();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    fn audit(
        &self,
        org: &OrgName,
        start: Vec<u8>,
        limit: usize,
        descending: bool,
    ) -> Result<(Vec<AuditEntry>, bool), StoreError> {
        if limit == 0 {
            // etcd reads a limit of 0 as none.
            return Ok((Vec::new(), false));
        }
        let etcd = self.etcd.clone();
        let end = prefix_end(&self.layout.record(Table::Audit, &format!("{org}/")));
        self.bridge.run(async move {
            let (kvs, more) = etcd.range_in(&start, &end, limit, descending).await.map_err(etcd_error)?;
            let entries = kvs
                .iter()
                .map(|kv| match postcard::from_bytes::<Record>(&kv.value) {
                    Ok(Record::Audit(e)) => Ok(e),
                    _ => Err(StoreError::Corrupt {
                        table: Table::Audit.name(),
                        key: String::from_utf8_lossy(&kv.key).into_owned(),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((entries, more))
        })
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Vec<Record>, StoreError> {
        let (etcd, layout) = (self.etcd.clone(), self.layout.clone());
        self.bridge.run(async move {
            let mut out = Vec::new();
            // Parents before children: the order of `Table::DIRECTORY`.
            for table in Table::DIRECTORY {
                out.extend(EtcdStore::table(&etcd, &layout, table).await?);
            }
            Ok(out)
        })
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let fence = self.fence.get();
        if fence == 0 {
            return Err(StoreError::Fenced);
        }
        let mut txns = Vec::new();
        for chunk in changes.chunks(MAX_TXN_OPS) {
            let mut ops = Vec::with_capacity(chunk.len());
            for change in chunk {
                let (table, key) = change.key();
                let key = self.layout.record(table, &key);
                ops.push(match change {
                    Change::Put(record) => {
                        let bytes = postcard::to_allocvec(record).map_err(|e| StoreError::Backend(Box::new(e)))?;
                        Op::Put(key, bytes, None)
                    }
                    Change::RemoveMachine { .. }
                    | Change::RemoveGrant { .. }
                    | Change::RemoveBinding { .. }
                    | Change::RemoveUser { .. } => Op::Delete(key),
                });
            }
            txns.push(ops);
        }
        let (etcd, owner) = (self.etcd.clone(), self.layout.owner());
        let fence_handle = self.fence.clone();
        self.bridge.run(async move {
            for ops in txns {
                let compare = [Compare::CreateRevision(owner.clone(), fence)];
                let done = etcd.txn(&compare, &ops, &[]).await.map_err(etcd_error)?;
                if !done.succeeded {
                    // Another node's claim (or none): this node serves no more.
                    fence_handle.set(0);
                    return Err(StoreError::Fenced);
                }
            }
            Ok(())
        })
    }

    fn audit_page(
        &self,
        org: &OrgName,
        after: Option<(Millis, u64)>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), StoreError> {
        let start = match after {
            None => self.layout.record(Table::Audit, &format!("{org}/")),
            Some((at, seq)) => {
                // Just past the key of the entry given.
                let mut k = self.layout.record(Table::Audit, &audit_key(org, at, seq));
                k.push(0);
                k
            }
        };
        self.audit(org, start, limit, false)
    }

    fn audit_latest(&self, org: &OrgName, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let start = self.layout.record(Table::Audit, &format!("{org}/"));
        self.audit(org, start, limit, true).map(|(entries, _)| entries)
    }
}
