//! What the protocol says about things: the views a response carries
//! (status, sessions, machines, users, keys, grants, offline licenses,
//! audit lines) and why a session ended.
//!
//! These are the wire's own types, not the core's: postcard encodes a
//! struct as its fields in order and an enum as its variant index, so the
//! order here *is* the encoding. Never reorder; append only. The shell
//! converts the core's values into these at the boundary (`server::wire`),
//! so a change in the core can never change a byte on the wire.

use serde::{Deserialize, Serialize};

use crate::value::{Email, MachineId, Millis, OrgName, PoolId, Role, SessionId};

/// A pool's numbers for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The org that owns the pool.
    pub org: OrgName,
    /// Which pool.
    pub pool: PoolId,
    /// Licenses bought.
    pub quota: u32,
    /// Seats in use: live sessions, node-locked activations and live offline licenses.
    pub in_use: u32,
    /// Registered machine IDs.
    pub machines: u32,
    /// Sessions admitted since the broker started.
    pub admitted: u64,
    /// Acquires refused for quota since the broker started.
    pub rejected: u64,
    /// Licensed users (KSE grants).
    pub grants: u32,
    /// Node-locked activations (each holds a seat).
    pub activations: u32,
    /// Offline licenses holding a seat.
    pub offline: u32,
}

/// A pool's numbers and its wait queue (`Status` on version 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    /// The numbers every version gets.
    pub status: PoolStatus,
    /// Runners waiting in the pool's queue.
    pub waiting: u32,
}

/// A member's cap on concurrent sessions in a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLimitInfo {
    /// The member.
    pub email: Email,
    /// Most sessions at once (4294967295: no cap).
    pub max: u32,
    /// Their sessions in the pool now (counted since the cap was first set).
    pub sessions: u32,
}

/// A pool's cap on the sessions carrying a label (`ListOf::LabelLimits`,
/// version 5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelLimitInfo {
    /// The label's key.
    pub key: String,
    /// The label's value.
    pub value: String,
    /// Most sessions carrying it at once.
    pub max: u32,
    /// Sessions carrying it now (counted since the cap was set).
    pub sessions: u32,
}

/// Seats of a pool reserved for the sessions carrying a label
/// (`ListOf::Reservations`, version 6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationInfo {
    /// The pool.
    pub pool: PoolId,
    /// The label's key.
    pub key: String,
    /// The label's value.
    pub value: String,
    /// Seats reserved.
    pub seats: u32,
    /// Sessions sitting on them now.
    pub in_use: u32,
    /// Seats the reservation holds now: fewer than `seats` while the pool,
    /// full when it was made, still owes it some.
    pub held: u32,
}

/// A live session with its job labels (`ListSessions` on version 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// What every version gets.
    pub info: SessionInfo,
    /// Which pipeline or job holds it.
    pub labels: crate::value::Labels,
}

/// A public view of one live session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session.
    pub session: SessionId,
    /// Its pool, as `PRODUCT-KIND-TERM`.
    pub pool: PoolId,
    /// The machine it runs on.
    pub machine: MachineId,
    /// The user whose key acquired it.
    pub user: Email,
    /// When it started.
    pub started: Millis,
    /// When it expires unless renewed.
    pub deadline: Millis,
}

/// Why a session ended. Every end carries exactly one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum EndReason {
    /// The runner gave it back.
    Released,
    /// Its lease deadline passed without a heartbeat.
    Expired,
    /// An Owner or Admin ended it (kill, machine removal).
    Revoked,
    /// Its connection closed cleanly without releasing first.
    ConnectionClosed,
}

/// A registered machine, for `machine list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// The pool it is registered in.
    pub pool: PoolId,
    /// The machine.
    pub machine: MachineId,
    /// When it registered.
    pub registered: Millis,
}

/// A registered machine with its use, for `machine list` (version 5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineUseInfo {
    /// The pool it is registered in.
    pub pool: PoolId,
    /// The machine.
    pub machine: MachineId,
    /// When it registered.
    pub registered: Millis,
    /// When it was last used (registered, a session ended, a runner
    /// queued); none in a pool without a machine policy, which keeps none.
    pub last_use: Option<Millis>,
    /// Live sessions and queued runners on it now (tracked pools only).
    pub holds: u32,
    /// Released with its last session.
    pub ephemeral: bool,
}

/// A licensed user of a pool, for `licenses`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    /// The pool.
    pub pool: PoolId,
    /// The licensed user.
    pub email: Email,
    /// When the grant was made.
    pub granted: Millis,
    /// Where a node-locked license is activated (the pool's online licenses).
    pub machine: Option<MachineId>,
}

/// An offline license, for `offline list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineInfo {
    /// The pool whose seat it holds.
    pub pool: PoolId,
    /// Its id, 32 hex digits.
    pub id: String,
    /// Its machine.
    pub machine: MachineId,
    /// When it was created.
    pub issued: Millis,
    /// Its last valid day, `YYYY-MM-DD`.
    pub last_day: String,
    /// Who created it.
    pub created_by: Email,
    /// Whether it still holds its seat (false once expired).
    pub active: bool,
}

/// A member of an org, for `user list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user.
    pub email: Email,
    /// Their role.
    pub role: Role,
    /// When they were added.
    pub created: Millis,
}

/// An API key's metadata, for `key list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Its public id (first 6 bytes of the hash, hex).
    pub id: String,
    /// Whose key it is.
    pub email: Email,
    /// When it was created.
    pub created: Millis,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// Who did what to an org, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The org it concerns.
    pub org: OrgName,
    /// When.
    pub at: Millis,
    /// Orders entries of the same millisecond.
    pub seq: u64,
    /// Who (an email; the operator is `operator@localhost`).
    pub actor: Email,
    /// What.
    pub action: AuditAction,
    /// Particulars: pool, user, machine, quota, key id, license id.
    pub detail: String,
}

/// What an audit line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    /// An org was created (by the operator).
    OrgCreated,
    /// A pool was created or its quota changed (by the operator).
    QuotaChanged,
    /// A member was added.
    UserAdded,
    /// An API key was created.
    KeyCreated,
    /// An API key was revoked.
    KeyRevoked,
    /// A machine was removed from a pool.
    MachineRemoved,
    /// A KSE license was granted.
    Granted,
    /// A KSE license was revoked.
    GrantRevoked,
    /// A KSE license was activated (bound, or a floating session opened).
    Activated,
    /// An offline license was created.
    OfflineCreated,
    /// A member was removed from the org.
    UserRemoved,
    /// An Owner or Admin ended someone's session.
    SessionKilled,
    /// The operator renewed or changed an org's subscription.
    SubscriptionChanged,
    /// A user's sessions in a pool were capped or uncapped (version 3).
    UserLimitSet,
    /// The broker released a machine unused past its pool's idle limit,
    /// or an ephemeral machine after its last session (version 5).
    MachineExpired,
    /// The operator changed a pool's machine policy (version 5).
    PolicyChanged,
    /// The sessions carrying a label were capped or uncapped in a pool
    /// (version 5).
    LabelLimitSet,
    /// An event was sent again to a webhook on request (version 6).
    WebhookRedelivered,
    /// A pool's alerts were set (version 6).
    AlertsSet,
    /// Seats of a pool were reserved for a job label, or the reservation
    /// changed or removed (version 6).
    SeatsReserved,
}

/// A node of a cluster, for `nodes` (and the last line of `status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name (`serve --node-name`).
    pub name: String,
    /// Where clients reach it (`serve --advertise`).
    pub advertise: String,
    /// Whether it serves any org now.
    pub serving: bool,
    /// The orgs it serves, by name (at most 200 named; see `org_count`).
    pub orgs: Vec<String>,
    /// How many orgs it serves.
    pub org_count: u32,
}

/// An org, for `org list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgInfo {
    /// Its name.
    pub name: OrgName,
    /// Midnight UTC after the subscription's last day.
    pub subscription_end: Millis,
    /// When it was created.
    pub created: Millis,
    /// Its pools.
    pub pools: u32,
    /// Its members.
    pub users: u32,
}

impl EndReason {
    /// Lowercase name for JSON and logs.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Released => "released",
            EndReason::Expired => "expired",
            EndReason::Revoked => "revoked",
            EndReason::ConnectionClosed => "connection_closed",
        }
    }
}

impl AuditAction {
    /// Lowercase name for listings.
    pub fn name(self) -> &'static str {
        match self {
            AuditAction::OrgCreated => "org_created",
            AuditAction::QuotaChanged => "quota_changed",
            AuditAction::UserAdded => "user_added",
            AuditAction::KeyCreated => "key_created",
            AuditAction::KeyRevoked => "key_revoked",
            AuditAction::MachineRemoved => "machine_removed",
            AuditAction::Granted => "granted",
            AuditAction::GrantRevoked => "grant_revoked",
            AuditAction::Activated => "activated",
            AuditAction::OfflineCreated => "offline_created",
            AuditAction::UserRemoved => "user_removed",
            AuditAction::SessionKilled => "session_killed",
            AuditAction::SubscriptionChanged => "subscription_changed",
            AuditAction::UserLimitSet => "user_limit_set",
            AuditAction::MachineExpired => "machine_expired",
            AuditAction::PolicyChanged => "policy_changed",
            AuditAction::LabelLimitSet => "label_limit_set",
            AuditAction::WebhookRedelivered => "webhook_redelivered",
            AuditAction::AlertsSet => "alerts_set",
            AuditAction::SeatsReserved => "seats_reserved",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of a pool's utilization history (`ListOf::Usage`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsagePoint {
    /// The pool.
    pub pool: PoolId,
    /// The pool's quota now.
    pub quota_now: u32,
    /// When the step starts (Unix ms).
    pub start_ms: u64,
    /// Its length (ms).
    pub step_ms: u64,
    /// Most seats in use at any instant of the step.
    pub peak: u32,
    /// Fewest seats in use in the step's minutes that had any activity.
    pub trough: u32,
    /// The quota during the step (the highest).
    pub quota: u32,
    /// Seat-milliseconds held by sessions.
    pub seat_ms: u64,
    /// Sessions admitted.
    pub admitted: u64,
    /// Refusals by error code: `QUOTA_EXCEEDED`, then `USER_LIMIT`,
    /// `QUEUE_FULL`, `QUEUE_TIMEOUT`, `MACHINE_NOT_REGISTERED`,
    /// `SUBSCRIPTION_EXPIRED`, `NOT_LICENSED`, `ALREADY_ACTIVATED`, and
    /// on version 5 streams `LABEL_LIMIT`.
    pub denied: Vec<u64>,
    /// Sessions ended by reason: released, expired, revoked, connection closed.
    pub ends: [u64; 4],
    /// Runners that joined the pool's wait queue.
    pub queued: u64,
}

/// A session that ended (`ListOf::Ended`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedSession {
    /// The session.
    pub session: SessionId,
    /// Its pool.
    pub pool: String,
    /// The user whose key acquired it.
    pub user: String,
    /// The machine it ran on.
    pub machine: String,
    /// When it started (Unix ms).
    pub start_ms: u64,
    /// When it ended (Unix ms).
    pub end_ms: u64,
    /// Why: released, expired, revoked, connection_closed.
    pub reason: String,
    /// The job's labels.
    pub labels: Vec<(String, String)>,
}

/// A preflight's answer (`Req::Check`): the pool as an acquire would find
/// it now (see `core::availability` for how the wait is estimated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityInfo {
    /// The pool.
    pub pool: PoolId,
    /// Licenses bought.
    pub quota: u32,
    /// Seats held now.
    pub in_use: u32,
    /// Runners waiting in the pool's queue.
    pub waiting: u32,
    /// Why an acquire now would be refused; none: it would be admitted.
    pub refusal: Option<super::WireError>,
    /// Whether waiting in the queue can get a seat (the pool is full and
    /// nothing else stands in the way).
    pub worth_waiting: bool,
    /// The runner's place if it joined the queue now (1: next).
    pub place: u32,
    /// About how long until it would get a seat, in ms (0: now; none: no
    /// estimate, e.g. no session ended in the last day).
    pub wait_ms: Option<u64>,
    /// The pool's mean session length over the last day, in ms, when the
    /// runner would wait (none: no history, or no session in the last day).
    pub mean_ms: Option<u64>,
}

/// What a what-if replay found (`Req::WhatIf`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatIfReport {
    /// Sessions replayed.
    pub sessions: u64,
    /// Refusals for want of a seat replayed (as sessions of the median length).
    pub refusals: u64,
    /// That median (ms).
    pub median_ms: u64,
    /// The demand was cut short (too much of it).
    pub truncated: bool,
    /// One per seat count.
    pub outcomes: Vec<WhatIfOutcome>,
}

/// One seat count's replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatIfOutcome {
    /// Seats.
    pub seats: u32,
    /// Wishes granted.
    pub admitted: u64,
    /// Wishes refused.
    pub denied: u64,
    /// Time with every seat held (ms).
    pub at_capacity_ms: u64,
    /// The range's length (ms).
    pub span_ms: u64,
}
