//! The record families and their tables: where a store keeps each kind
//! of record, which are loaded at start, in what order. Apart from
//! `record` so that file holds what a record is, this one where it lives.

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
    /// KSE grants.
    Grants,
    /// Node-locked activations.
    Bindings,
    /// Offline licenses.
    Offline,
    /// The audit trail (appended, listed per org, never loaded at start).
    Audit,
    /// Admission statistics and session ceilings per pool.
    Counters,
    /// Broker-wide facts (the clock's high-water mark, the lease hold).
    Meta,
    /// Each org's event outbox (appended, read by the stream and the
    /// webhooks, trimmed past its retention, never loaded at start).
    Events,
    /// Each org's webhooks and how far their deliveries have gone.
    Webhooks,
}

impl Table {
    /// Every table, parents first.
    pub const ALL: [Table; 13] = [
        Table::Orgs,
        Table::Pools,
        Table::Users,
        Table::Keys,
        Table::Machines,
        Table::Grants,
        Table::Bindings,
        Table::Offline,
        Table::Audit,
        Table::Counters,
        Table::Meta,
        Table::Events,
        Table::Webhooks,
    ];

    /// The tables that rebuild memory at startup.
    pub const DIRECTORY: [Table; 11] = [
        Table::Orgs,
        Table::Pools,
        Table::Users,
        Table::Keys,
        Table::Machines,
        Table::Grants,
        Table::Bindings,
        Table::Offline,
        Table::Counters,
        Table::Meta,
        Table::Webhooks,
    ];

    /// The table's name in a store.
    pub fn name(self) -> &'static str {
        match self {
            Table::Orgs => "orgs",
            Table::Pools => "pools",
            Table::Users => "users",
            Table::Keys => "keys",
            Table::Machines => "machines",
            Table::Grants => "grants",
            Table::Bindings => "bindings",
            Table::Offline => "offline",
            Table::Audit => "audit",
            Table::Counters => "counters",
            Table::Meta => "meta",
            Table::Events => "events",
            Table::Webhooks => "webhooks",
        }
    }
}
