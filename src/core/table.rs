//! The record families and their tables: where a store keeps each kind
//! of record, which are loaded at start, in what order. Apart from
//! `record` so that file holds what a record is, this one where it lives:
//! its table and its key there (`Record::key`, `Change::key`).

use std::fmt;

use super::audit::audit_key;
use super::event::event_key;
use super::id::OrgName;
use super::pool::PoolId;
use super::record::{Change, Record};

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
    /// What a clean stop or a handover counted for the next hold
    /// (`Record::Stopped`). A table of its own, which brokers older than
    /// the record never open (nor, in a cluster, read), so they still load
    /// a store or take an org over after one was written.
    Stops,
}

impl Table {
    /// Every table, parents first.
    pub const ALL: [Table; 14] = [
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
        Table::Stops,
    ];

    /// The tables that rebuild memory at startup.
    pub const DIRECTORY: [Table; 12] = [
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
        Table::Stops,
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
            Table::Stops => "stops",
        }
    }
}

impl Record {
    /// The record's table and key; a `Put` replaces the record with the same key.
    pub fn key(&self) -> (Table, String) {
        match self {
            Record::Org { name, .. } => (Table::Orgs, name.to_string()),
            Record::Pool { org, pool, .. } => (Table::Pools, format!("{org}/{pool}")),
            Record::User { org, email, .. } => (Table::Users, format!("{org}/{email}")),
            Record::Key { hash, .. } => (Table::Keys, hash.to_hex()),
            Record::Machine { org, pool, machine, .. } => (Table::Machines, in_pool(org, pool, machine)),
            Record::Grant { org, pool, email, .. } => (Table::Grants, in_pool(org, pool, email)),
            Record::Binding { org, pool, email, .. } => (Table::Bindings, in_pool(org, pool, email)),
            Record::Offline { org, pool, license } => (Table::Offline, in_pool(org, pool, license.id)),
            Record::Audit(e) => (Table::Audit, audit_key(&e.org, e.at, e.seq)),
            Record::Clock { .. } => (Table::Meta, "clock".to_string()),
            Record::Counters { org, pool, .. } => (Table::Counters, format!("{org}/{pool}")),
            Record::Ceiling { org, pool, .. } => (Table::Counters, format!("{org}/{pool}/ceiling")),
            Record::Leases { .. } => (Table::Meta, "leases".to_string()),
            Record::UserLimit { org, pool, email, .. } => (Table::Counters, format!("{org}/{pool}/limit/{email}")),
            Record::Ends { org, pool, .. } => (Table::Counters, format!("{org}/{pool}/ends")),
            Record::AuthFailures { .. } => (Table::Meta, "auth_failures".to_string()),
            Record::Denials { org, pool, .. } => (Table::Counters, format!("{org}/{pool}/denials")),
            Record::SeatTime { org, pool, .. } => (Table::Counters, format!("{org}/{pool}/seat-ms")),
            Record::EphemeralMachine { org, pool, machine, .. } => (Table::Machines, in_pool(org, pool, machine)),
            // After the pool's own record, before its machines (load order).
            Record::PoolPolicy { org, pool, .. } => (Table::Pools, format!("{org}/{pool}/policy")),
            Record::LastUses { org, pool, .. } => (Table::Counters, format!("{org}/{pool}/last-use")),
            Record::LabelLimit { org, pool, key, value, .. } => {
                (Table::Counters, format!("{org}/{pool}/label-limit/{key}={value}"))
            }
            Record::Event(e) => (Table::Events, event_key(&e.org, e.seq)),
            Record::Webhook(h) => (Table::Webhooks, format!("{}/{}", h.org, h.id)),
            Record::WebhookCursor { org, id, .. } => (Table::Webhooks, format!("{org}/{id}/cursor")),
            Record::SubscriptionNotice { org, .. } => (Table::Counters, format!("{org}/subscription-notice")),
            Record::PoolAlerts { org, pool, .. } => (Table::Counters, format!("{org}/{pool}/alerts")),
            Record::Reservation { org, pool, key, value, .. } => {
                (Table::Counters, format!("{org}/{pool}/reservation/{key}={value}"))
            }
            Record::Stopped { org, pool, .. } => (Table::Stops, stopped_key(org, pool)),
        }
    }
}

impl Change {
    /// The table and key this change touches.
    pub fn key(&self) -> (Table, String) {
        match self {
            Change::Put(r) => r.key(),
            Change::RemoveMachine { org, pool, machine } => (Table::Machines, in_pool(org, pool, machine)),
            Change::RemoveGrant { org, pool, email } => (Table::Grants, in_pool(org, pool, email)),
            Change::RemoveBinding { org, pool, email } => (Table::Bindings, in_pool(org, pool, email)),
            Change::RemoveUser { org, email } => (Table::Users, format!("{org}/{email}")),
            Change::RemoveEvent { org, seq } => (Table::Events, event_key(org, *seq)),
            Change::RemoveWebhook { org, id } => (Table::Webhooks, format!("{org}/{id}")),
            Change::RemoveWebhookCursor { org, id } => (Table::Webhooks, format!("{org}/{id}/cursor")),
            Change::RemoveStopped { org, pool } => (Table::Stops, stopped_key(org, pool)),
        }
    }
}

/// The key of a pool's `Stopped` record, written and removed.
fn stopped_key(org: &OrgName, pool: &PoolId) -> String {
    format!("{org}/{pool}/stopped")
}

/// The key of a per-pool record: a `Put` and the removal of the same
/// thing must agree on it, so both build it here.
fn in_pool(org: &OrgName, pool: &PoolId, item: impl fmt::Display) -> String {
    format!("{org}/{pool}/{item}")
}
