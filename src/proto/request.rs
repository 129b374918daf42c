//! What a client sends: the frames of a stream (`Hello`, then pipelined
//! `Request`s) and every request body (`Req`; the lists `Req::List`
//! pages through are in `list`). The answers are in `response`, the opaque values the
//! broker issues and clients echo (tokens, cursors) in `token`.
//!
//! Field order is wire order: postcard encodes structs as their fields in
//! sequence and enums as a varint variant index followed by the variant's
//! fields, so never reorder, only append new enum variants at the end.

use serde::{Deserialize, Serialize};

use super::list::ListOf;
use super::token::{Cursor, SessionToken};
use crate::value::{Labels, MachineId, Nonce, OrgName, PoolId, Role, SessionId};

/// A frame from client to server on a bidirectional stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// Must be the first frame of every stream, and only the first.
    Hello(Hello),
    /// Any number may follow, pipelined.
    Request(Request),
}

impl ClientFrame {
    /// `Request`'s variant index on the wire (it follows `Hello`); the
    /// broker reads it to salvage the id of an undecodable request.
    pub const REQUEST_VARIANT: u32 = 1;
}

/// Opens a stream: protocol version and credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version; this build speaks `proto::VERSION`.
    pub version: u16,
    /// The caller's API key, as printed when it was created.
    pub api_key: String,
    /// Free text naming the client software, for logs.
    pub client: String,
}

/// One request; its `id` is echoed in the response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; responses may arrive in any order.
    pub id: u64,
    /// What is asked.
    pub body: Req,
}

/// Request bodies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Req {
    /// Register a machine ID in a pool (idempotent).
    RegisterMachine {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
    },
    /// Take a session lease. `nonce` identifies the runner instance: the
    /// same nonce re-attaches to its live session instead of taking a seat.
    Acquire {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
        /// The runner instance's nonce: the same nonce re-attaches instead of taking a second seat.
        nonce: Nonce,
    },
    /// Heartbeat: extend the lease by the broker's TTL.
    Renew {
        /// The session.
        session: SessionId,
    },
    /// Give the seat back.
    Release {
        /// The session.
        session: SessionId,
    },
    /// Pool numbers of one org, or of all visible orgs.
    Status {
        /// The org.
        org: Option<OrgName>,
    },
    /// Operator: create an org; `subscription_end` is `YYYY-MM-DD` (inclusive).
    CreateOrg {
        /// The new org's name.
        name: OrgName,
        /// The subscription's last day (`YYYY-MM-DD` on the wire; midnight after it in records).
        subscription_end: String,
        /// Email of the org's first Owner.
        owner: String,
    },
    /// Operator: create a pool or set its quota.
    SetPool {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The pool's quota.
        quota: u32,
    },
    /// Owner/Admin: add a member.
    AddUser {
        /// The org.
        org: OrgName,
        /// The member.
        email: String,
        /// Their role.
        role: Role,
    },
    /// Owner/Admin: create an API key for a member.
    CreateKey {
        /// The org.
        org: OrgName,
        /// The member.
        email: String,
    },
    /// Owner/Admin: revoke a key, by its id or the full key.
    RevokeKey {
        /// The org.
        org: OrgName,
        /// The key's id (from `key list`) or the full key.
        key: String,
    },
    /// Owner/Admin: list the org's keys.
    ListKeys {
        /// The org.
        org: OrgName,
    },
    /// Owner/Admin: list the org's members.
    ListUsers {
        /// The org.
        org: OrgName,
    },
    /// Owner/Admin: list registered machines.
    ListMachines {
        /// The org.
        org: OrgName,
    },
    /// Owner/Admin: remove a machine from one pool, or all pools if `None`.
    RemoveMachine {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: Option<PoolId>,
        /// The machine.
        machine: MachineId,
    },
    /// Owner/Admin: list live sessions.
    ListSessions {
        /// The org.
        org: OrgName,
    },
    /// Owner/Admin: end a live session (reason: revoked).
    KillSession {
        /// The org.
        org: OrgName,
        /// The session.
        session: SessionId,
    },
    /// Owner/Admin: grant a KSE pool's license to a member.
    Grant {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The member.
        email: String,
    },
    /// Owner/Admin: revoke a grant (ends the user's sessions, frees an activation).
    RevokeGrant {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The member.
        email: String,
    },
    /// Owner/Admin: licensed users (and node-locked activations), one pool or all.
    ListGrants {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: Option<PoolId>,
    },
    /// A licensed user activates KSE: binds a node-locked license to the
    /// machine, or opens a leased session on a floating pool (`nonce` as in Acquire).
    Activate {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
        /// The runner instance's nonce: the same nonce re-attaches instead of taking a second seat.
        nonce: Nonce,
    },
    /// Owner/Admin: create an offline license; `expires` is its last valid day, `YYYY-MM-DD`.
    CreateOffline {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
        /// The license's last valid day, `YYYY-MM-DD`.
        expires: String,
    },
    /// Owner/Admin: list the org's offline licenses.
    ListOffline {
        /// The org.
        org: OrgName,
    },
    /// Owner/Admin: revoke an offline license (always refused: OFFLINE_IRREVOCABLE).
    RevokeOffline {
        /// The org.
        org: OrgName,
        /// The offline license's id (32 hex digits).
        license: String,
    },
    /// Owner/Admin: move an offline license to another machine (always refused).
    TransferOffline {
        /// The org.
        org: OrgName,
        /// The offline license's id (32 hex digits).
        license: String,
        /// The machine.
        machine: MachineId,
    },
    /// Any authenticated caller: the broker's offline-license public key.
    OfflinePublicKey,
    /// Owner/Admin: the org's audit trail.
    Audit {
        /// The org.
        org: OrgName,
    },
    /// Operator: every org.
    ListOrgs,
    /// Owner/Admin: remove a member (revokes their keys, frees their grants
    /// and activations, ends their sessions).
    RemoveUser {
        /// The org.
        org: OrgName,
        /// The member.
        email: String,
    },
    /// Operator: renew or change an org's subscription; `subscription_end`
    /// is its new last day, `YYYY-MM-DD`.
    SetSubscription {
        /// The org.
        org: OrgName,
        /// The new last day, `YYYY-MM-DD`.
        subscription_end: String,
    },
    /// Keep a lease across a broker restart (or a lost connection): the
    /// runner's live session if the broker still has it, else one of the
    /// seats the restarted broker holds for the previous run's runners.
    /// Any member may send it in any version; the caller must be the user
    /// the token was issued to.
    Reattach {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
        /// The runner instance's nonce, as acquired.
        nonce: Nonce,
        /// The latest token the broker issued for the lease.
        token: SessionToken,
    },
    /// Version 3: an `Acquire` with the job's labels that, with `wait_ms`
    /// above 0, waits in the pool's queue (first come, first admitted) for
    /// up to `wait_ms` when no seat is free. Answered with `Leased` when a
    /// seat is taken (at once, or later: other requests on the stream are
    /// answered meanwhile), else `QUEUE_TIMEOUT`, `QUEUE_FULL` or an
    /// acquire's refusal. While it waits, a `Queued` notice gives its position.
    Checkout {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The registered machine.
        machine: MachineId,
        /// The runner instance's nonce (idempotency key).
        nonce: Nonce,
        /// Longest wait, milliseconds (at most a day); 0 = do not wait.
        wait_ms: u64,
        /// Which pipeline or job this is (shown with the session).
        labels: Labels,
    },
    /// Version 3: replaces the labels of a session the caller holds (after
    /// a re-attach into a new session, say). Answered with `Done`.
    Label {
        /// The session.
        session: SessionId,
        /// Its labels.
        labels: Labels,
    },
    /// Version 3, Owner/Admin: caps how many sessions one member may hold
    /// at once in a pool (`max` none: no cap). Answered with `Done`.
    SetUserLimit {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The member.
        email: String,
        /// Most sessions at once.
        max: Option<u32>,
    },
    /// Version 3, Owner/Admin: a pool's per-user caps.
    ListUserLimits {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
    },
    /// Version 4: one page of a list, in the list's order, starting after
    /// `after` (the previous page's `next`; none: from the start). At most
    /// `limit` items (0: as many as fit), and never more than fit in one
    /// frame. Answered with `Page`. Who may ask is as for the list's own request.
    List {
        /// Which list.
        of: ListOf,
        /// Where the previous page ended.
        after: Option<Cursor>,
        /// Most items wanted (0: as many as fit in a frame).
        limit: u32,
    },
    /// Version 4 (added after the first version-4 brokers, which answer it
    /// with `BAD_REQUEST`): replay a pool's recorded demand over
    /// `from_ms..to_ms` against each seat count from `seats_min` to
    /// `seats_max` (at most 256 counts). Any member of the org, or the
    /// operator. Answered with `WhatIf`.
    WhatIf {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// Start of the range (Unix ms).
        from_ms: u64,
        /// End of the range (Unix ms).
        to_ms: u64,
        /// Fewest seats to replay.
        seats_min: u32,
        /// Most seats to replay.
        seats_max: u32,
    },
    /// The nodes of the cluster this broker belongs to, as etcd last said
    /// (an empty list from a single broker). Anyone authenticated.
    /// Answered with `Nodes`.
    Nodes,
    /// Which node of a cluster serves `org` (or should, if none does yet:
    /// where to create it). Anyone authenticated; the operator, whose key
    /// every node welcomes, asks before acting on an org. Answered with
    /// `Route` (an empty address: this node; a single broker always
    /// answers so).
    Route {
        /// The org.
        org: OrgName,
    },
    /// Preflight: would an acquire on `machine` in `org`'s `pool` be
    /// admitted now, and if not, the place in the queue and about how long
    /// the wait. Takes nothing, writes nothing. Any member. Answered with
    /// `Availability`.
    Check {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine the runner would run on.
        machine: MachineId,
    },
    /// Version 5: as `RegisterMachine`, the registration ephemeral: its
    /// slot is released with the machine's last session (`runner
    /// --ephemeral`). Answered with `Registered`.
    RegisterEphemeral {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
    },
    /// Version 5, operator: a pool's machine policy, set whole. Answered
    /// with `Done`.
    SetMachinePolicy {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// How long a machine with no session, activation, offline license
        /// or queued runner stays registered (ms); none: forever.
        machine_idle_ms: Option<u64>,
        /// Every registration in the pool is ephemeral.
        ephemeral: bool,
    },
    /// Version 5, Owner/Admin: caps how many sessions carrying the label
    /// `key=value` a pool holds at once (`max` none: the cap is removed).
    /// Running sessions are not cut. Answered with `Done`.
    SetLabelLimit {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The label's key.
        key: String,
        /// The label's value.
        value: String,
        /// Most sessions carrying it at once.
        max: Option<u32>,
    },
    /// Version 5: `org`'s events after the cursor `after` (docs/EVENTS.md),
    /// waiting up to `wait_ms` (at most 30 s) for a first one when there is
    /// none yet. Owners and Admins of the org. Answered with `Events`. A
    /// waiting request holds its stream: send it on a stream of its own.
    Events {
        /// The org.
        org: OrgName,
        /// The cursor to read after (0: from the oldest kept).
        after: u64,
        /// How long to wait for a first event, in milliseconds.
        wait_ms: u32,
    },
    /// Version 5: adds a webhook to `org`: its events (those `events`
    /// names: types, `family.*` or `*`; none: all) are POSTed to `url`,
    /// signed. Owners and Admins of the org, or the operator. Answered
    /// with `WebhookAdded` (its secret, shown this once).
    AddWebhook {
        /// The org.
        org: OrgName,
        /// `http://` or `https://`.
        url: String,
        /// Filters; empty: every event.
        events: Vec<String>,
    },
    /// Version 5: `org`'s webhooks. Answered with `Webhooks`.
    ListWebhooks {
        /// The org.
        org: OrgName,
    },
    /// Version 5: removes a webhook. Answered with `Done`.
    RemoveWebhook {
        /// The org.
        org: OrgName,
        /// The webhook's id.
        id: String,
    },
    /// Version 5: gives a webhook a new secret (the old one signs no
    /// more). Answered with `WebhookAdded` (the new secret, shown this once).
    RotateWebhookSecret {
        /// The org.
        org: OrgName,
        /// The webhook's id.
        id: String,
    },
    /// Version 5: a webhook's recent delivery attempts, oldest first.
    /// Answered with `Deliveries`.
    WebhookDeliveries {
        /// The org.
        org: OrgName,
        /// The webhook's id.
        id: String,
    },
    /// Version 6: sends one event the webhook was already given (at or
    /// before its delivered cursor, still in the outbox) once more, signed
    /// anew; audited (`WebhookRedelivered`). Answered with `Deliveries`:
    /// the one attempt.
    RedeliverWebhook {
        /// The org.
        org: OrgName,
        /// The webhook's id.
        id: String,
        /// The event's cursor.
        event: u64,
    },
    /// Version 6: a pool's alerts, set whole (docs/EVENTS.md,
    /// `queue.wait_exceeded`, `pool.busy`); none: not alerted on. Owners
    /// and Admins of the org, or the operator. Answered with `Done`.
    SetPoolAlerts {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// A runner queued this long is told of, in ms (1 s to 1 day).
        queue_alert_ms: Option<u64>,
        /// Busy this many minutes in a row, the pool is told of (1 to 1440).
        busy_minutes: Option<u32>,
    },
    /// Version 6, Owner/Admin: reserves `seats` seats of a pool for the
    /// sessions carrying the label `key=value` (0: removes the
    /// reservation); a pool's reservations add up to at most its quota
    /// (`INVALID_ARGUMENT` otherwise). Answered with `Done`.
    SetReservation {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The label's key.
        key: String,
        /// The label's value.
        value: String,
        /// Seats reserved.
        seats: u32,
    },
    /// Version 6: as `Check`, for a runner carrying `labels`: its label
    /// caps and the seats reserved for its labels count as they would for
    /// its `Checkout`. Answered with `Availability`.
    CheckLabelled {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine the runner would run on.
        machine: MachineId,
        /// The runner's job labels.
        labels: Labels,
    },
    /// Version 7: a `Reattach` carrying the job's labels: a new session
    /// (the broker restarted) carries them from its first instant, counted
    /// in the label caps they match; a live one is relabelled as `Label`
    /// would. Answered with `Leased`.
    ReattachLabelled {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
        /// The machine.
        machine: MachineId,
        /// The runner instance's nonce, as acquired.
        nonce: Nonce,
        /// The latest token the broker issued for the lease.
        token: SessionToken,
        /// The job's labels.
        labels: Labels,
    },
}

impl Req {
    /// The org the request names, if any (a cluster node answers for the
    /// orgs it serves: see `NOT_OWNER`). `CreateOrg` names an org that
    /// does not exist yet, so none.
    pub fn org(&self) -> Option<&OrgName> {
        match self {
            Req::RegisterMachine { org, .. }
            | Req::Acquire { org, .. }
            | Req::SetPool { org, .. }
            | Req::AddUser { org, .. }
            | Req::CreateKey { org, .. }
            | Req::RevokeKey { org, .. }
            | Req::ListKeys { org }
            | Req::ListUsers { org }
            | Req::ListMachines { org }
            | Req::RemoveMachine { org, .. }
            | Req::ListSessions { org }
            | Req::KillSession { org, .. }
            | Req::Grant { org, .. }
            | Req::RevokeGrant { org, .. }
            | Req::ListGrants { org, .. }
            | Req::Activate { org, .. }
            | Req::CreateOffline { org, .. }
            | Req::ListOffline { org }
            | Req::RevokeOffline { org, .. }
            | Req::TransferOffline { org, .. }
            | Req::Audit { org }
            | Req::RemoveUser { org, .. }
            | Req::SetSubscription { org, .. }
            | Req::Reattach { org, .. }
            | Req::Checkout { org, .. }
            | Req::SetUserLimit { org, .. }
            | Req::ListUserLimits { org, .. }
            | Req::WhatIf { org, .. }
            | Req::Check { org, .. }
            | Req::RegisterEphemeral { org, .. }
            | Req::SetMachinePolicy { org, .. }
            | Req::SetLabelLimit { org, .. }
            | Req::Events { org, .. }
            | Req::AddWebhook { org, .. }
            | Req::ListWebhooks { org }
            | Req::RemoveWebhook { org, .. }
            | Req::RotateWebhookSecret { org, .. }
            | Req::WebhookDeliveries { org, .. }
            | Req::RedeliverWebhook { org, .. }
            | Req::SetPoolAlerts { org, .. }
            | Req::SetReservation { org, .. }
            | Req::CheckLabelled { org, .. }
            | Req::ReattachLabelled { org, .. } => Some(org),
            Req::Status { org } => org.as_ref(),
            Req::List { of, .. } => of.org(),
            Req::Renew { .. }
            | Req::Release { .. }
            | Req::CreateOrg { .. }
            | Req::OfflinePublicKey
            | Req::ListOrgs
            | Req::Label { .. }
            | Req::Nodes
            | Req::Route { .. } => None,
        }
    }
}
