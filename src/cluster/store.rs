//! The records of a cluster, in etcd, behind the same `Store` trait as the
//! embedded redb file: one key per record (`PREFIX/r/TABLE/KEY`, postcard
//! value, the same keys and encoding as redb's tables), and every write a
//! transaction that first compares, for each org it touches, that org's
//! claim's create revision with this node's fence for it. A node that lost
//! an org (paused, partitioned, handed on) therefore writes nothing of
//! that org's, whatever it still believes. The broker's own records
//! (operator keys, the clock and lease marks) belong to no org and are
//! written by any node.
//!
//! A node loads only the broker's own records at start (`load`), and each
//! org's when it takes the org over (`load_orgs`); it then writes what its
//! hold of the org must have durable compared on the claim itself, before
//! the org has a fence (`commit_claimed`).
//!
//! The trait is synchronous (the shell calls it from blocking threads);
//! etcd's client is async. A small runtime of its own, on one thread,
//! runs the calls, so a blocking caller never waits on the runtime that
//! called it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::bridge::Bridge;
use super::etcd::{prefix_end, Compare, Etcd, EtcdError, Op};
pub use super::fences::Fences;
pub use super::layout::Layout;
use crate::core::{audit_key, event_key, AuditEntry, Change, Event, Millis, OrgName, Record, Table};
use crate::store::{Store, StoreError};

/// Most operations in one etcd transaction: etcd refuses more than 128 by
/// default (`--max-txn-ops`). A commit with more (only a checkpoint of many
/// pools' counters has that many) is written as several transactions,
/// each fenced; every change the core plans as one step is far smaller.
pub const MAX_TXN_OPS: usize = 120;

/// Records read per etcd call when loading.
pub const LOAD_PAGE: usize = 1000;

/// etcd calls in flight at once while loading the orgs a node takes over.
pub const LOAD_CONCURRENCY: usize = 32;

/// Bound of one of the store's etcd calls: longer than the ownership
/// loop's, since a page of records or a large commit takes longer than a
/// renewal; a node loading or writing an org's records has time (its
/// lease is renewed meanwhile).
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The records of a cluster in etcd, an org's written only under this
/// node's fence for it.
pub struct EtcdStore {
    etcd: Arc<Etcd>,
    layout: Layout,
    fences: Arc<Fences>,
    bridge: Bridge,
}

fn etcd_error(e: EtcdError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Each org's records as read (by org, then table), parents before
/// children: `Table::DIRECTORY`'s order, the keys after the users.
fn assemble(
    orgs: Vec<OrgName>,
    tables: &[Table],
    parts: Vec<Vec<Vec<Record>>>,
    mut keys: HashMap<OrgName, Vec<Record>>,
) -> Vec<(OrgName, Vec<Record>)> {
    let mut out = Vec::with_capacity(orgs.len());
    for (org, tables_read) in orgs.into_iter().zip(parts) {
        let mut records = Vec::new();
        for (table, read) in tables.iter().zip(tables_read) {
            records.extend(read);
            if *table == Table::Users {
                records.extend(keys.remove(&org).unwrap_or_default());
            }
        }
        // `r/orgs/acme` also starts `r/orgs/acme2`: keep the org's own.
        records.retain(|r| r.org() == Some(&org));
        out.push((org, records));
    }
    out
}

impl EtcdStore {
    /// A store on `etcd` under `layout`, writing an org's records while
    /// `fences` holds a fence for it.
    pub fn new(etcd: Arc<Etcd>, layout: Layout, fences: Arc<Fences>) -> Result<EtcdStore, StoreError> {
        let bridge = Bridge::new().map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(EtcdStore { etcd, layout, fences, bridge })
    }

    /// Before a node taking `org` over (its claim created at `fence`)
    /// serves it: writes what its hold must have durable first (the
    /// ceilings it raised, the removal of any counts a clean stop left,
    /// which it does not trust: `Broker::adopt_org`), each transaction compared on the
    /// claim itself, since the org has no fence in `Fences` until this is
    /// done. A chunk of `MAX_TXN_OPS` per transaction, in order. `true`
    /// once written (or there was nothing); `false`: the claim is gone
    /// (nothing more written, chunks before may have been: harmless, the
    /// claim's next owner reads them as it would this node's admissions').
    /// A change of another org, or of none, is refused (`Fenced`): the
    /// claim guards only its own org's.
    pub fn commit_claimed(&self, org: &OrgName, fence: i64, changes: &[Change]) -> Result<bool, StoreError> {
        let compare = vec![Compare::CreateRevision(self.layout.claim(org.as_str()), fence)];
        let mut txns = Vec::new();
        for chunk in changes.chunks(MAX_TXN_OPS) {
            if chunk.iter().any(|c| c.org() != Some(org)) {
                return Err(StoreError::Fenced);
            }
            txns.push(chunk.iter().map(|c| self.op(c)).collect::<Result<Vec<Op>, StoreError>>()?);
        }
        if txns.is_empty() {
            return Ok(true);
        }
        let etcd = self.etcd.clone();
        self.bridge.run(async move {
            for ops in txns {
                if !etcd.txn(&compare, &ops, &[]).await.map_err(etcd_error)?.succeeded {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// The etcd operation that makes `change`.
    fn op(&self, change: &Change) -> Result<Op, StoreError> {
        let (table, key) = change.key();
        let key = self.layout.record(table, &key);
        Ok(match change {
            Change::Put(record) => {
                let bytes = postcard::to_allocvec(record).map_err(|e| StoreError::Backend(Box::new(e)))?;
                Op::Put(key, bytes, None)
            }
            Change::RemoveMachine { .. }
            | Change::RemoveGrant { .. }
            | Change::RemoveBinding { .. }
            | Change::RemoveUser { .. }
            | Change::RemoveEvent { .. }
            | Change::RemoveWebhook { .. }
            | Change::RemoveWebhookCursor { .. }
            | Change::RemoveStopped { .. } => Op::Delete(key),
        })
    }

    /// The records of each of `orgs`, parents before children, as a node
    /// taking them over applies them (`Broker::adopt_org`). The keys table
    /// is read once for all of them.
    pub fn load_orgs(&self, orgs: &[OrgName]) -> Result<Vec<(OrgName, Vec<Record>)>, StoreError> {
        let (etcd, layout, orgs) = (self.etcd.clone(), self.layout.clone(), orgs.to_vec());
        self.bridge.run(async move {
            // Per table, whichever takes fewer calls: the whole table, a
            // page at a time, keeping the batch's orgs; or one range per
            // org. The ranges all at once, at most `LOAD_CONCURRENCY` calls
            // in flight: a takeover of many orgs waits for the slowest few
            // calls, not for the sum of them all.
            let tables: Vec<Table> =
                Table::DIRECTORY.into_iter().filter(|t| !matches!(t, Table::Keys | Table::Meta)).collect();
            let wanted: HashMap<&OrgName, usize> = orgs.iter().enumerate().map(|(i, o)| (o, i)).collect();
            let mut parts: Vec<Vec<Vec<Record>>> = vec![vec![Vec::new(); tables.len()]; orgs.len()];
            let limit = Arc::new(tokio::sync::Semaphore::new(LOAD_CONCURRENCY));
            let mut calls = tokio::task::JoinSet::new();
            for (t, table) in tables.iter().enumerate() {
                let whole = layout.table(*table).into_bytes();
                let pages =
                    etcd.count(&whole, &prefix_end(&whole)).await.map_err(etcd_error)?.div_ceil(LOAD_PAGE as u64);
                if pages <= orgs.len() as u64 {
                    for record in EtcdStore::table(&etcd, &layout, *table).await? {
                        if let Some(&o) = record.org().and_then(|org| wanted.get(org)) {
                            parts[o][t].push(record);
                        }
                    }
                    continue;
                }
                for (o, org) in orgs.iter().enumerate() {
                    // `r/orgs/acme` is the org's record; every other table's are under `ORG/`.
                    let start = match table {
                        Table::Orgs => layout.record(*table, org.as_str()),
                        _ => layout.record(*table, &format!("{org}/")),
                    };
                    let (etcd, limit, table) = (etcd.clone(), limit.clone(), *table);
                    calls.spawn(async move {
                        let _turn = limit.acquire_owned().await;
                        let end = prefix_end(&start);
                        (o, t, EtcdStore::range(&etcd, table, start, end).await)
                    });
                }
            }
            let keys = EtcdStore::keys_by_org(&etcd, &layout).await?;
            while let Some(done) = calls.join_next().await {
                let (o, t, records) = done.map_err(|e| StoreError::Backend(Box::new(e)))?;
                parts[o][t] = records?;
            }
            Ok(assemble(orgs, &tables, parts, keys))
        })
    }

    /// Every key record, by org.
    async fn keys_by_org(etcd: &Etcd, layout: &Layout) -> Result<HashMap<OrgName, Vec<Record>>, StoreError> {
        let mut keys: HashMap<OrgName, Vec<Record>> = HashMap::new();
        for record in EtcdStore::table(etcd, layout, Table::Keys).await? {
            if let Some(org) = record.org().cloned() {
                keys.entry(org).or_default().push(record);
            }
        }
        Ok(keys)
    }

    /// The names of every org in the cluster.
    pub fn org_names(&self) -> Result<BTreeSet<OrgName>, StoreError> {
        let (etcd, layout) = (self.etcd.clone(), self.layout.clone());
        self.bridge.run(async move {
            let orgs = EtcdStore::table(&etcd, &layout, Table::Orgs).await?;
            Ok(orgs.iter().filter_map(|r| r.org().cloned()).collect())
        })
    }

    /// Whether `org`'s record exists.
    pub fn has_org(&self, org: &OrgName) -> Result<bool, StoreError> {
        let (etcd, key) = (self.etcd.clone(), self.layout.record(Table::Orgs, org.as_str()));
        self.bridge.run(async move {
            let (kvs, _) = etcd.range(&key, false).await.map_err(etcd_error)?;
            Ok(!kvs.is_empty())
        })
    }

    /// An API key's record, read from etcd (for blocking callers; the
    /// broker's routing uses `read_key`, which it bounds).
    pub fn key(&self, hash: &crate::core::KeyHash) -> Result<Option<Record>, StoreError> {
        let (etcd, layout, hash) = (self.etcd.clone(), self.layout.clone(), *hash);
        self.bridge.run(async move { EtcdStore::read_key(&etcd, &layout, &hash).await })
    }

    /// An API key's record, read from etcd with `etcd` (a node routes a
    /// key of an org it does not serve by it): async, so that whoever asks
    /// bounds the wait and drops the call past it.
    pub async fn read_key(
        etcd: &Etcd,
        layout: &Layout,
        hash: &crate::core::KeyHash,
    ) -> Result<Option<Record>, StoreError> {
        let key = layout.record(Table::Keys, &hash.to_hex());
        let end = prefix_end(&key);
        Ok(EtcdStore::range(etcd, Table::Keys, key, end).await?.into_iter().next())
    }

    /// Every record of `table`, decoded; read `LOAD_PAGE` keys at a time,
    /// so no answer grows with the number of records.
    async fn table(etcd: &Etcd, layout: &Layout, table: Table) -> Result<Vec<Record>, StoreError> {
        let prefix = layout.table(table).into_bytes();
        let end = prefix_end(&prefix);
        EtcdStore::range(etcd, table, prefix, end).await
    }

    /// Every record of `table` from `start` to before `end`, decoded, a page at a time.
    async fn range(etcd: &Etcd, table: Table, start: Vec<u8>, end: Vec<u8>) -> Result<Vec<Record>, StoreError> {
        let (mut start, mut out) = (start, Vec::new());
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
        let pick = |r| match r {
            Record::Audit(e) => Some(e),
            _ => None,
        };
        self.org_range(Table::Audit, org, (start, limit, descending), pick)
    }

    /// Up to `limit` of `org`'s events from `start` (or its newest first, `descending`).
    fn events(
        &self,
        org: &OrgName,
        start: Vec<u8>,
        limit: usize,
        descending: bool,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let pick = |r| match r {
            Record::Event(e) => Some(e),
            _ => None,
        };
        self.org_range(Table::Events, org, (start, limit, descending), pick)
    }

    /// Up to `limit` records of `org` in `table` from `start` (or back from
    /// the last, `descending`), each `pick`ed (a record it refuses is corrupt).
    fn org_range<T: Send + 'static>(
        &self,
        table: Table,
        org: &OrgName,
        (start, limit, descending): (Vec<u8>, usize, bool),
        pick: fn(Record) -> Option<T>,
    ) -> Result<(Vec<T>, bool), StoreError> {
        if limit == 0 {
            // etcd reads a limit of 0 as none.
            return Ok((Vec::new(), false));
        }
        let etcd = self.etcd.clone();
        let end = prefix_end(&self.layout.record(table, &format!("{org}/")));
        self.bridge.run(async move {
            let (kvs, more) = etcd.range_in(&start, &end, limit, descending).await.map_err(etcd_error)?;
            let corrupt = |key: &[u8]| StoreError::Corrupt {
                table: table.name(),
                key: String::from_utf8_lossy(key).into_owned(),
            };
            let found = kvs
                .iter()
                .map(|kv| postcard::from_bytes::<Record>(&kv.value).ok().and_then(pick).ok_or_else(|| corrupt(&kv.key)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((found, more))
        })
    }
}

impl Store for EtcdStore {
    /// The broker's own records only (operator keys, the clock and lease
    /// marks): an org's records are loaded when a node takes it over.
    fn load(&self) -> Result<Vec<Record>, StoreError> {
        let (etcd, layout) = (self.etcd.clone(), self.layout.clone());
        self.bridge.run(async move {
            let mut out: Vec<Record> = EtcdStore::table(&etcd, &layout, Table::Keys).await?;
            out.retain(|r| r.org().is_none());
            out.extend(EtcdStore::table(&etcd, &layout, Table::Meta).await?);
            Ok(out)
        })
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut txns = Vec::new();
        for chunk in changes.chunks(MAX_TXN_OPS) {
            let mut ops = Vec::with_capacity(chunk.len());
            // Each org the chunk touches, compared with its fence (one
            // compare per org; at most as many as the chunk has changes).
            let mut compare = Vec::new();
            for org in chunk.iter().filter_map(Change::org).collect::<BTreeSet<_>>() {
                let fence = self.fences.get(org).ok_or(StoreError::Fenced)?;
                compare.push(Compare::CreateRevision(self.layout.claim(org.as_str()), fence));
            }
            for change in chunk {
                ops.push(self.op(change)?);
            }
            txns.push((compare, ops));
        }
        let etcd = self.etcd.clone();
        self.bridge.run(async move {
            for (compare, ops) in txns {
                let done = etcd.txn(&compare, &ops, &[]).await.map_err(etcd_error)?;
                if !done.succeeded {
                    // Another node's claim (or none) on one of the orgs:
                    // its lease lapsed, so this node's validity has too, and
                    // the placement loop drops the org at its next pass.
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

    fn events_after(&self, org: &OrgName, after: u64, limit: usize) -> Result<(Vec<Event>, bool), StoreError> {
        // Just past the key of the event given.
        let mut start = self.layout.record(Table::Events, &event_key(org, after));
        start.push(0);
        self.events(org, start, limit, false)
    }

    fn events_last(&self, org: &OrgName) -> Result<u64, StoreError> {
        let start = self.layout.record(Table::Events, &format!("{org}/"));
        let (last, _) = self.events(org, start, 1, true)?;
        Ok(last.first().map_or(0, |e| e.seq))
    }
}
