//! Durable records: everything that is not a live lease.
//!
//! The core plans a change as a list of `Change`s, the shell commits them to
//! the store, and only then does the core apply them to memory. At startup
//! the store's records are applied in order to rebuild the directory. The
//! store never interprets a record beyond its key.

use serde::{Deserialize, Serialize};

use super::id::{Email, KeyHash, MachineId, OrgName, Role};
use super::pool::PoolId;
use super::time::Millis;

/// One durable fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// An organisation and its subscription end.
    Org {
        name: OrgName,
        subscription_end: Millis,
        created: Millis,
    },
    /// A pool of an org and its quota.
    Pool {
        org: OrgName,
        pool: PoolId,
        quota: u32,
    },
    /// A member of an org and their role.
    User {
        org: OrgName,
        email: Email,
        role: Role,
        created: Millis,
    },
    /// An API key (by hash). `org: None` is an operator key.
    Key {
        hash: KeyHash,
        org: Option<OrgName>,
        email: Email,
        created: Millis,
        revoked: bool,
    },
    /// A machine registered in a pool.
    Machine {
        org: OrgName,
        pool: PoolId,
        machine: MachineId,
        registered: Millis,
    },
}

/// One step of a durable transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Insert or overwrite the record with the same key.
    Put(Record),
    /// Remove a machine registration.
    RemoveMachine {
        org: OrgName,
        pool: PoolId,
        machine: MachineId,
    },
}

impl Record {
    /// The record's table and key; a `Put` replaces the record with the same key.
    pub fn key(&self) -> (Table, String) {
        match self {
            Record::Org { name, .. } => (Table::Orgs, name.to_string()),
            Record::Pool { org, pool, .. } => (Table::Pools, format!("{org}/{pool}")),
            Record::User { org, email, .. } => (Table::Users, format!("{org}/{email}")),
            Record::Key { hash, .. } => (
                Table::Keys,
                hash.0.iter().map(|b| format!("{b:02x}")).collect(),
            ),
            Record::Machine {
                org, pool, machine, ..
            } => (Table::Machines, format!("{org}/{pool}/{machine}")),
        }
    }
}

impl Change {
    /// The table and key this change touches.
    pub fn key(&self) -> (Table, String) {
        match self {
            Change::Put(r) => r.key(),
            Change::RemoveMachine { org, pool, machine } => {
                (Table::Machines, format!("{org}/{pool}/{machine}"))
            }
        }
    }
}

/// The record families; a store keeps one table (or key prefix) per family.
/// Loading replays them in this order, so parents precede children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Orgs.
    Orgs,
    /// Pools.
    Pools,
    /// Users.
    Users,
    /// API keys.
    Keys,
    /// Machine registrations.
    Machines,
}

impl Table {
    /// Every table, parents first.
    pub const ALL: [Table; 5] = [
        Table::Orgs,
        Table::Pools,
        Table::Users,
        Table::Keys,
        Table::Machines,
    ];

    /// The table's name in a store.
    pub fn name(self) -> &'static str {
        match self {
            Table::Orgs => "orgs",
            Table::Pools => "pools",
            Table::Users => "users",
            Table::Keys => "keys",
            Table::Machines => "machines",
        }
    }
}
