//! Where a cluster keeps what in etcd: every key of claims, node
//! announcements, shared secrets and records, under one prefix. Apart from
//! the store because ownership, secrets and membership name keys too, and
//! one place must spell them all.

use crate::core::Table;

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

    /// An org's claim: created with its lease by the node that serves it.
    pub fn claim(&self, org: &str) -> Vec<u8> {
        format!("{}claims/{org}", self.prefix).into_bytes()
    }

    /// The prefix of every org's claim.
    pub fn claims(&self) -> Vec<u8> {
        format!("{}claims/", self.prefix).into_bytes()
    }

    /// Where live nodes announce themselves (lease-bound).
    pub fn node(&self, name: &str) -> Vec<u8> {
        format!("{}nodes/{name}", self.prefix).into_bytes()
    }

    /// Where a live node says where its console is (lease-bound, under its
    /// announcement's key: read with the announcements, and ignored by
    /// nodes that predate it, whose announcement decoding skips it).
    pub fn console(&self, name: &str) -> Vec<u8> {
        format!("{}nodes/{name}/console", self.prefix).into_bytes()
    }

    /// The prefix of every node announcement.
    pub fn nodes(&self) -> Vec<u8> {
        format!("{}nodes/", self.prefix).into_bytes()
    }

    /// A secret the nodes share (a file of the data dir, by its path there).
    pub fn secret(&self, file: &str) -> Vec<u8> {
        format!("{}secrets/{file}", self.prefix).into_bytes()
    }

    pub(super) fn table(&self, table: Table) -> String {
        format!("{}r/{}/", self.prefix, table.name())
    }

    pub(super) fn record(&self, table: Table, key: &str) -> Vec<u8> {
        format!("{}{key}", self.table(table)).into_bytes()
    }
}
