//! The events the broker tells the outside about (docs/EVENTS.md): what
//! one is, as the outbox keeps it. The core only names them; numbering
//! them (an org's outbox sequence), writing them in the same commit as the
//! change that caused them, encoding and delivering them belong to the
//! shell (`crate::events`).
//!
//! An event's `seq` is its place in its org's outbox, the cursor a reader
//! resumes after; its idempotency key names the fact itself, so a fact
//! told twice (redelivered, re-read after a failover) carries the same key.

use serde::{Deserialize, Serialize};

use super::id::{Email, MachineId, OrgName};
use super::pool::PoolId;
use super::record::AuditEntry;
use super::time::Millis;

/// One event of an org's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The org it concerns.
    pub org: OrgName,
    /// Its place in the org's outbox: 1, 2, 3 … in commit order, never reused.
    pub seq: u64,
    /// When the fact happened.
    pub at: Millis,
    /// What happened. (New variants go last: the index is the encoding.)
    pub body: EventBody,
}

/// What an event says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventBody {
    /// An entry of the org's audit trail was written.
    Audit(AuditEntry),
    /// A session ended without its runner giving it back: its lease
    /// expired (no renewal in time) or it was revoked (killed, its machine,
    /// grant or member removed).
    Lease(LeaseLost),
}

/// A session its runner lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseLost {
    /// The pool.
    pub pool: PoolId,
    /// The session's id.
    pub session: u64,
    /// The machine it ran on.
    pub machine: MachineId,
    /// The user whose key held it.
    pub user: Email,
    /// When it started.
    pub started: Millis,
    /// Revoked (true) or expired (false).
    pub revoked: bool,
    /// The job's labels.
    pub labels: Vec<(String, String)>,
}

impl Event {
    /// The event's id: its org and its place there, unique in the broker.
    pub fn id(&self) -> String {
        format!("{}/{}", self.org, self.seq)
    }

    /// The event's type, `family.name` (docs/EVENTS.md lists each).
    pub fn kind(&self) -> String {
        match &self.body {
            EventBody::Audit(e) => format!("audit.{}", e.action.name()),
            EventBody::Lease(l) => format!("lease.{}", if l.revoked { "revoked" } else { "expired" }),
        }
    }

    /// The key that names the fact, the same however often it is told.
    pub fn idempotency_key(&self) -> String {
        match &self.body {
            EventBody::Audit(e) => format!("audit:{}:{:x}:{:x}", e.org, e.at.0, e.seq),
            // A session ends once.
            EventBody::Lease(l) => format!("lease:{}:{:016x}", self.org, l.session),
        }
    }
}

/// An outbox entry's key: `org/seq` in fixed-width hex, so an org's events
/// sort in their order.
pub fn event_key(org: &OrgName, seq: u64) -> String {
    format!("{org}/{seq:016x}")
}
