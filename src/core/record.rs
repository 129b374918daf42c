//! Durable records: everything that is not a live lease.
//!
//! The core plans a change as a list of `Change`s, the shell commits them to
//! the store, and only then does the core apply them to memory. At startup
//! the store's records are applied in order to rebuild the directory. The
//! store never interprets a record beyond its key. Applying a record that
//! memory already holds (a reservation made before its commit) changes
//! nothing, so apply is idempotent. Where each record lives (its table and
//! key) is `table`'s.

use serde::{Deserialize, Serialize};

pub use super::audit::{audit_key, AuditAction, AuditEntry};
use super::event::Event;
use super::id::{Email, KeyHash, MachineId, OfflineId, OrgName, Role};
use super::pool::PoolId;
pub use super::table::Table;
use super::time::Millis;
use super::webhook::Webhook;

/// One durable fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// An organisation and its subscription end.
    Org {
        /// The org's name.
        name: OrgName,
        /// The subscription's last day (`YYYY-MM-DD` on the wire; midnight after it in records).
        subscription_end: Millis,
        /// When it was created.
        created: Millis,
    },
    /// A pool of an org and its quota.
    Pool {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The pool's quota.
        quota: u32,
    },
    /// A member of an org and their role.
    User {
        /// The org.
        org: OrgName,
        /// The user.
        email: Email,
        /// Their role.
        role: Role,
        /// When it was created.
        created: Millis,
    },
    /// An API key (by hash). `org: None` is an operator key.
    Key {
        /// The SHA-256 of the key.
        hash: KeyHash,
        /// The org (`None` for an operator key).
        org: Option<OrgName>,
        /// The user.
        email: Email,
        /// When it was created.
        created: Millis,
        /// Whether it is revoked.
        revoked: bool,
    },
    /// A machine registered in a (KRE) pool.
    Machine {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
        /// When it registered.
        registered: Millis,
    },
    /// A KSE license granted to a user.
    Grant {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The user.
        email: Email,
        /// When the grant was made.
        granted: Millis,
    },
    /// A node-locked KSE license activated on a machine; holds a seat.
    Binding {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The user.
        email: Email,
        /// The machine.
        machine: MachineId,
        /// When it was bound.
        bound: Millis,
    },
    /// An offline license; holds a seat until `expires`.
    Offline {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The license as kept.
        license: OfflineLicense,
    },
    /// One line of an org's audit trail (never read back into memory).
    Audit(AuditEntry),
    /// The latest time the broker has seen, so a clock that went backwards
    /// is noticed at the next start. (New variants go last: the index is the encoding.)
    Clock {
        /// The broker's clock when it was written.
        high_water: Millis,
    },
    /// A pool's admission statistics, so `status` keeps counting across restarts.
    Counters {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// Sessions admitted since the pool was created.
        admitted: u64,
        /// Acquires refused for quota since the pool was created.
        rejected: u64,
    },
    /// A pool's durable session ceiling: at no instant do its sessions hold
    /// more seats than the last value written (see `pool::limit::Bounds`).
    Ceiling {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// Most seats sessions may hold.
        seats: u32,
    },
    /// What a restart must honour of earlier runs' leases: their TTL, and
    /// until when seats are already held for runs before them.
    Leases {
        /// The lease TTL of the run that wrote it, in milliseconds.
        ttl_ms: u64,
        /// Seats reserved for earlier runs' sessions are held until then.
        hold_until: Millis,
    },
    /// A pool's session ends by reason (released, expired, revoked,
    /// connection closed), so the counts survive restarts.
    Ends {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// Sessions ended since the pool was created, by reason.
        by_reason: [u64; 4],
    },
    /// Failed authentications since the broker was first started.
    AuthFailures {
        /// How many.
        count: u64,
    },
    /// A user's cap on concurrent sessions in a pool (FlexNet's MAX).
    UserLimit {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The user.
        email: Email,
        /// Most sessions at once; `None`: no cap.
        max: Option<u32>,
    },
    /// A pool's admissions refused for reasons other than its quota, by
    /// reason (`Denial::ALL` order; a later reason appends), so the counts
    /// survive restarts.
    Denials {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// Refusals since the pool was created, by reason.
        by_reason: Vec<u64>,
    },
    /// Seat-milliseconds a pool's sessions have held since it was created,
    /// so `lbroker_seat_seconds_total` survives restarts.
    SeatTime {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// Seat-milliseconds.
        ms: u64,
    },
    /// A machine registered ephemeral (`runner --ephemeral`): released
    /// with its last session. The same key as `Machine`, so removing the
    /// machine removes either.
    EphemeralMachine {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
        /// When it registered.
        registered: Millis,
    },
    /// A pool's machine policy (`pool set --machine-idle`, `--ephemeral`);
    /// a pool without one keeps its machines until they are removed.
    PoolPolicy {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// How long an unused machine stays registered, in ms; `None`: forever.
        idle_ms: Option<u64>,
        /// Every registration is ephemeral.
        ephemeral: bool,
    },
    /// When each tracked machine of a pool was last used (written by the
    /// checkpoint), so an idle limit counts across restarts.
    LastUses {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// Machine and last use, sorted by machine.
        uses: Vec<(MachineId, Millis)>,
        /// Machines the broker released unused since the pool was created.
        expired: u64,
    },
    /// A cap on the sessions of a pool carrying a label (`pool::labels`).
    LabelLimit {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The label's key.
        key: String,
        /// The label's value.
        value: String,
        /// Most sessions carrying it at once; `None`: no cap.
        max: Option<u32>,
    },
    /// An event waiting in its org's outbox (docs/EVENTS.md), written in
    /// the commit of the change that caused it; never read back into memory.
    Event(Event),
    /// A webhook of an org (its URL, filters and secret).
    Webhook(Webhook),
    /// How far a webhook's deliveries have gone: the cursor of the last
    /// event delivered (or skipped by its filters).
    WebhookCursor {
        /// The org.
        org: OrgName,
        /// The webhook's id.
        id: String,
        /// The cursor.
        delivered: u64,
    },
    /// The last notice given before the org's subscription ends (14, 7
    /// or 1 days), for that end: none is given twice.
    SubscriptionNotice {
        /// The org.
        org: OrgName,
        /// The end it was given for.
        end: Millis,
        /// The notice, in days.
        days: u32,
    },
    /// A pool's alerts (`core::alerts`); none: not alerted on.
    PoolAlerts {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// A runner queued this long is told of, in ms.
        queue_wait_ms: Option<u64>,
        /// Busy this many minutes in a row, the pool is told of.
        busy_minutes: Option<u32>,
    },
    /// Seats of a pool reserved for the sessions carrying a label
    /// (`pool::lanes`).
    Reservation {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The label's key.
        key: String,
        /// The label's value.
        value: String,
        /// Seats reserved; 0: none (the reservation was removed).
        seats: u32,
    },
    /// A pool's sessions as a clean stop counted them (`pool::stop`): the
    /// next start holds just these for their runners, instead of every
    /// reserved seat and every cap's limit, and removes the record before
    /// it admits anything, so a later crash never reads it.
    Stopped {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// Sessions on the pool's reserved seats.
        reserved: u32,
        /// Sessions counted in each label cap that counted any: key,
        /// value, sessions (a cap not listed counted none).
        labels: Vec<(String, String, u32)>,
        /// Sessions counted in each user's cap that counted any.
        users: Vec<(Email, u32)>,
        /// The clock's high-water mark written in the same commit: the
        /// next start trusts the counts only if the store's mark is still
        /// this one, i.e. no broker ran on the store since (one older than
        /// the record would not remove it, and would leave it stale).
        stamp: Millis,
    },
}

/// An offline license as the broker keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineLicense {
    /// Unique id (random, chosen by the shell).
    pub id: OfflineId,
    /// The machine it is bound to.
    pub machine: MachineId,
    /// When it was created.
    pub issued: Millis,
    /// When its seat comes back: midnight UTC after its last valid day.
    pub expires: Millis,
    /// Who created it.
    pub created_by: Email,
    /// The signed file as handed out.
    pub file: String,
}

/// One step of a durable transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Insert or overwrite the record with the same key.
    Put(Record),
    /// Remove a machine registration.
    RemoveMachine {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
    },
    /// Remove a KSE grant.
    RemoveGrant {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The user.
        email: Email,
    },
    /// Remove a node-locked activation (its seat comes back).
    RemoveBinding {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The user.
        email: Email,
    },
    /// Remove a member of an org (their keys are revoked by the same change set).
    RemoveUser {
        /// The org.
        org: OrgName,
        /// The member.
        email: Email,
    },
    /// Remove a webhook.
    RemoveWebhook {
        /// The org.
        org: OrgName,
        /// The webhook's id.
        id: String,
    },
    /// Remove a webhook's delivery cursor (with the webhook).
    RemoveWebhookCursor {
        /// The org.
        org: OrgName,
        /// The webhook's id.
        id: String,
    },
    /// Remove an event past the outbox's retention.
    RemoveEvent {
        /// The org.
        org: OrgName,
        /// Its place in the org's outbox.
        seq: u64,
    },
    /// Remove a pool's `Stopped` record (the start that read it).
    RemoveStopped {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
    },
}

impl Record {
    /// The org the record belongs to; `None` for the broker's own records
    /// (operator keys, the clock and lease marks, the failure count).
    pub fn org(&self) -> Option<&OrgName> {
        match self {
            Record::Org { name, .. } => Some(name),
            Record::Pool { org, .. }
            | Record::User { org, .. }
            | Record::Machine { org, .. }
            | Record::Grant { org, .. }
            | Record::Binding { org, .. }
            | Record::Offline { org, .. }
            | Record::Counters { org, .. }
            | Record::Ceiling { org, .. }
            | Record::UserLimit { org, .. }
            | Record::Ends { org, .. }
            | Record::Denials { org, .. }
            | Record::SeatTime { org, .. }
            | Record::EphemeralMachine { org, .. }
            | Record::PoolPolicy { org, .. }
            | Record::LastUses { org, .. }
            | Record::LabelLimit { org, .. }
            | Record::PoolAlerts { org, .. } => Some(org),
            Record::Reservation { org, .. } | Record::Stopped { org, .. } => Some(org),
            Record::Key { org, .. } => org.as_ref(),
            Record::Audit(e) => Some(&e.org),
            Record::Event(e) => Some(&e.org),
            Record::Webhook(h) => Some(&h.org),
            Record::WebhookCursor { org, .. } | Record::SubscriptionNotice { org, .. } => Some(org),
            Record::Clock { .. } | Record::Leases { .. } | Record::AuthFailures { .. } => None,
        }
    }
}

impl Change {
    /// The org whose records the change touches (`Record::org`).
    pub fn org(&self) -> Option<&OrgName> {
        match self {
            Change::Put(r) => r.org(),
            Change::RemoveMachine { org, .. }
            | Change::RemoveGrant { org, .. }
            | Change::RemoveBinding { org, .. }
            | Change::RemoveUser { org, .. }
            | Change::RemoveEvent { org, .. }
            | Change::RemoveStopped { org, .. }
            | Change::RemoveWebhook { org, .. }
            | Change::RemoveWebhookCursor { org, .. } => Some(org),
        }
    }
}
