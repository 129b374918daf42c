//! The sans-I/O core: orgs, pools, machines, sessions, admission, leases and
//! expiry. It never reads a clock (every call takes `now`), never spawns,
//! never does I/O, and builds without tokio or quinn. Its shared state uses
//! only the primitives of `crate::sync`, so loom can model it as shipped.
//!
//! Reading order: `broker` (the type the shell calls) → `admission`
//! (tickets, sessions, registration, activation) → `pending` (a durable
//! change and its undo) → `admin` and `licensing` (planned admin changes) →
//! `directory` (who exists) → `machines` (machines released when unused) →
//! `pool` and `seats` (a pool's counters) →
//! `queue` (a pool's waiters and the seats handed to them) →
//! `session` (the lease table and its shards) → `record` (what the store
//! keeps) and `event` (what the outbox keeps) → `error`. Values (ids,
//! pool names, instants) come from `crate::value`.

pub mod admin;
pub mod admission;
pub mod alerts;
pub mod audit;
pub mod availability;
pub mod broker;
pub mod directory;
pub mod error;
pub mod event;
pub mod hash;
pub mod licensing;
pub mod machines;
pub mod pending;
pub mod pool;
pub mod queue;
mod reattach;
pub mod record;
pub mod reservations;
pub mod seats;
pub mod session;
pub mod table;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod usage;
pub mod webhook;

pub use crate::value::Labels;
/// The shared values (`crate::value`), under the names core modules use.
pub use crate::value::{id, pool_id, time};

#[cfg(all(test, not(broker_loom)))]
mod tests;
#[cfg(all(test, not(broker_loom)))]
mod tests_labels;
#[cfg(all(test, not(broker_loom)))]
mod tests_machines;
#[cfg(all(test, not(broker_loom)))]
mod tests_preflight;
#[cfg(all(test, not(broker_loom)))]
mod tests_queue;
#[cfg(all(test, not(broker_loom)))]
mod tests_reservations;
#[cfg(all(test, not(broker_loom)))]
mod tests_restart;

pub use admin::{KeyInfo, KeyRef, OrgInfo, UserInfo, MAX_QUOTA};
pub use admission::{Activation, Claimant, Target, Ticket, Waited};
pub use alerts::Alerts;
pub use availability::{wait_estimate, Availability, Line, Wait};
pub use broker::{Broker, Checkpointed, Config, Hold, MachineInfo};
pub use directory::Principal;
pub use error::{Error, ExpiryLimit, Result};
pub use event::{event_key, subscription_notice, Event, EventBody, LeaseLost, QueueWait};
pub use id::{ConnId, Email, KeyHash, MachineId, Nonce, OfflineId, OrgName, Role, SessionId};
pub use licensing::{GrantInfo, LicenseFields, OfflineInfo, OfflineOrder, OfflineWindow, OFFLINE_MAX_DAYS};
pub use machines::{Expired, MACHINES_PER_RELEASE};
pub use pending::Pending;
pub use pool::{
    Denial, Kind, MachineUse, OfflineEntry, Policy, PoolId, PoolStatus, PoolUid, Product, Registration, Term,
};
pub use queue::{Deliver, Grant, Joined, Place};
pub use record::{audit_key, AuditAction, AuditEntry, Change, OfflineLicense, Record, Table};
pub use session::{EndReason, Ended, Lease, Renewed, SessionInfo};
pub use time::{format_end_date, format_utc, parse_end_of_date, Millis, DAY_MS};
pub use webhook::{Secret, Webhook, WebhookView};
