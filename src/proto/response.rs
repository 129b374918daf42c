//! What the broker sends: the frames of a stream (`Welcome`, `Response`,
//! stream errors, redirects), every successful result (`Resp`, and a
//! page's items), and the notices it pushes on its own stream. What they
//! answer is in `request`.
//!
//! Field order is wire order: postcard encodes structs as their fields in
//! sequence and enums as a varint variant index followed by the variant's
//! fields, so never reorder, only append new enum variants at the end.

use serde::{Deserialize, Serialize};

use super::error::WireError;
use super::info::{
    AuditEntry, AvailabilityInfo, EndReason, EndedSession, GrantInfo, KeyInfo, LabelLimitInfo, MachineInfo,
    MachineUseInfo, NodeInfo, OfflineInfo, OrgInfo, PoolState, PoolStatus, ReservationInfo, SessionInfo, SessionView,
    UsagePoint, UserInfo, UserLimitInfo, WhatIfReport,
};
use super::token::{Cursor, SessionToken};
use crate::value::{MachineId, Nonce, OrgName, Role, SessionId};

/// A frame from server to client on a bidirectional stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// Accepts the `Hello`.
    Welcome(Welcome),
    /// Answers the request with the same id.
    Response(Response),
    /// A refusal not tied to a request (bad frame, wrong version, out of
    /// order). After `FRAME_TOO_LARGE` and `UNSUPPORTED_VERSION` the server
    /// finishes the stream.
    Error(WireError),
    /// Answers `Hello` on a node of a cluster that does not serve: the
    /// address of the node that does (`HOST:PORT`), or empty while none
    /// does (a failover is under way: retry shortly). The stream is finished.
    Redirect {
        /// Where to connect instead; empty when unknown.
        server: String,
    },
}

/// The server's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version the stream will speak.
    pub version: u16,
    /// Lease lifetime; heartbeat at a third of it.
    pub lease_ttl_ms: u64,
    /// The caller's org (`None` for the operator).
    pub org: Option<OrgName>,
    /// The caller's email.
    pub email: String,
    /// The caller's role.
    pub role: Role,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// Success or a typed error.
    pub outcome: Outcome,
}

/// Success or failure of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// It worked.
    Ok(Resp),
    /// It was refused; nothing changed.
    Err(WireError),
}

/// Successful results, one per request kind (some shared).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Resp {
    /// RegisterMachine: `new` is false if it was already registered.
    Registered {
        /// False if the machine was already registered.
        new: bool,
    },
    /// Acquire: the lease.
    Admitted {
        /// The session.
        session: SessionId,
        /// The lease deadline, Unix milliseconds.
        deadline_ms: u64,
        /// The lease TTL in milliseconds; heartbeat at a third of it.
        ttl_ms: u64,
        /// True when the nonce already held this session (a retry or reconnect).
        reattached: bool,
    },
    /// Renew: the new deadline (Unix ms).
    Renewed {
        /// The lease deadline, Unix milliseconds.
        deadline_ms: u64,
    },
    /// Release.
    Released,
    /// Status.
    Status(Vec<PoolStatus>),
    /// CreateOrg: the new Owner's key, shown once.
    OrgCreated {
        /// The new Owner's API key, shown once.
        owner_key: String,
    },
    /// SetPool, AddUser, RevokeKey, RemoveMachine.
    Done,
    /// CreateKey: the key, shown once, and its id.
    KeyCreated {
        /// The key's id (from `key list`) or the full key.
        key: String,
        /// Its id.
        id: String,
    },
    /// ListKeys.
    Keys(Vec<KeyInfo>),
    /// ListUsers.
    Users(Vec<UserInfo>),
    /// ListMachines.
    Machines(Vec<MachineInfo>),
    /// ListSessions.
    Sessions(Vec<SessionInfo>),
    /// KillSession.
    Killed,
    /// ListGrants.
    Grants(Vec<GrantInfo>),
    /// Activate: a node-locked binding (`session` none) or a floating session.
    Activated {
        /// The machine.
        machine: MachineId,
        /// The session.
        session: Option<SessionId>,
        /// The lease deadline, Unix milliseconds.
        deadline_ms: u64,
        /// The lease TTL in milliseconds; heartbeat at a third of it.
        ttl_ms: u64,
        /// True when nothing new was taken (already bound, or a re-attach).
        already: bool,
    },
    /// CreateOffline: the file's name and its exact content.
    OfflineCreated {
        /// The file's name (`KRE_<machine>.lic` or `KSE_<machine>.lic`).
        file_name: String,
        /// The file's exact content.
        content: String,
    },
    /// ListOffline.
    Offline(Vec<OfflineInfo>),
    /// OfflinePublicKey: PEM (SubjectPublicKeyInfo, Ed25519).
    PublicKey {
        /// The PEM text.
        pem: String,
    },
    /// Audit.
    AuditLog(Vec<AuditEntry>),
    /// ListOrgs.
    Orgs(Vec<OrgInfo>),
    /// Acquire (version 2) and Reattach: the lease and its token.
    Leased {
        /// The session.
        session: SessionId,
        /// The lease deadline, Unix milliseconds.
        deadline_ms: u64,
        /// The lease TTL in milliseconds; heartbeat at a third of it.
        ttl_ms: u64,
        /// True when the broker still had this nonce's live session (a
        /// retry or a reconnect); false when a seat was taken for it.
        reattached: bool,
        /// Keep the latest one: `Reattach` presents it after a restart.
        token: SessionToken,
    },
    /// Renew (version 2): the new deadline and a token for it.
    Extended {
        /// The lease deadline, Unix milliseconds.
        deadline_ms: u64,
        /// Replaces the previous token.
        token: SessionToken,
    },
    /// Status (version 3): each pool's numbers and its wait queue.
    Pools(Vec<PoolState>),
    /// ListSessions (version 3): each session with its labels.
    SessionViews(Vec<SessionView>),
    /// ListUserLimits: each capped member, the cap and their sessions.
    UserLimits(Vec<UserLimitInfo>),
    /// List (version 4): one page, and where the next one starts (none: this was the last).
    Page {
        /// The page's items.
        items: PageItems,
        /// Pass as `after` for the next page; none on the last page.
        next: Option<Cursor>,
    },
    /// WhatIf: one outcome per seat count.
    WhatIf(WhatIfReport),
    /// Nodes: the cluster's nodes (empty from a single broker).
    Nodes(Vec<NodeInfo>),
    /// Route: `HOST:PORT` of the node serving the org, or empty for the
    /// node that answered.
    Route {
        /// Where to connect; empty: here.
        server: String,
    },
    /// Check: the pool as an acquire would find it now.
    Availability(AvailabilityInfo),
    /// Events (version 5): each event's JSON document (docs/EVENTS.md),
    /// oldest first, as many as fit a frame; `next` is the cursor to ask
    /// after next (the last event's, or the one asked after).
    Events {
        /// The events, each one JSON object.
        events: Vec<String>,
        /// The cursor to read after next.
        next: u64,
    },
    /// AddWebhook, RotateWebhookSecret (version 5): the webhook's id and
    /// secret (shown this once).
    WebhookAdded {
        /// The webhook's id.
        id: String,
        /// The secret its requests are signed with.
        secret: String,
    },
    /// ListWebhooks (version 5).
    Webhooks(Vec<crate::proto::WebhookInfo>),
    /// WebhookDeliveries (version 5): recent attempts, oldest first.
    Deliveries(Vec<crate::proto::DeliveryInfo>),
    /// A report over a cluster's nodes (`List` of `Usage` or `Ended`,
    /// `WhatIf`) that lacks some node's part (version 6): the answer it
    /// would have been, and the nodes whose history is not in it.
    Partial {
        /// The answer (`Page` or `WhatIf`).
        answer: Box<Resp>,
        /// The nodes not in it, at most `MAX_MISSING`, in name order.
        missing: Vec<MissingNode>,
    },
}

/// A node whose part of a report is missing (`Resp::Partial`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingNode {
    /// The node's name (at most 64 bytes).
    pub node: String,
    /// Why, in words (at most 160 bytes).
    pub why: String,
}

/// Most nodes a `Resp::Partial` names: with its bounded fields, the list
/// fits in the room a report's page leaves in its frame.
pub const MAX_MISSING: usize = 8;

/// A server-pushed notice, on the server's unidirectional stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Notice {
    /// A session held through this connection ended without the runner asking.
    SessionEnded {
        /// The session.
        session: SessionId,
        /// Why.
        reason: EndReason,
    },
    /// The server is shutting down within `grace_ms`; admits nothing new.
    Draining {
        /// How long the broker waits for clients to leave, in milliseconds.
        grace_ms: u64,
    },
    /// A waiting `Checkout` joined its pool's queue.
    Queued {
        /// The waiting runner's nonce (as in its `Checkout`).
        nonce: Nonce,
        /// Its place: 1 is admitted at the next free seat.
        position: u32,
    },
}

/// One page's items: the list `ListOf` asked for, in the element types of
/// the unpaged answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PageItems {
    /// Status.
    Pools(Vec<PoolState>),
    /// Sessions, with their labels.
    Sessions(Vec<SessionView>),
    /// Machines.
    Machines(Vec<MachineInfo>),
    /// Users.
    Users(Vec<UserInfo>),
    /// Keys.
    Keys(Vec<KeyInfo>),
    /// Grants.
    Grants(Vec<GrantInfo>),
    /// Offline licenses.
    Offline(Vec<OfflineInfo>),
    /// Audit entries.
    Audit(Vec<AuditEntry>),
    /// Orgs.
    Orgs(Vec<OrgInfo>),
    /// Per-user caps.
    UserLimits(Vec<UserLimitInfo>),
    /// Utilization history points.
    Usage(Vec<UsagePoint>),
    /// Ended sessions.
    Ended(Vec<EndedSession>),
    /// Machines with their last use (version 5).
    MachineUses(Vec<MachineUseInfo>),
    /// Label caps (version 5).
    LabelLimits(Vec<LabelLimitInfo>),
    /// Reservations by job label (version 6).
    Reservations(Vec<ReservationInfo>),
}

impl PageItems {
    /// How many items the page holds.
    pub fn len(&self) -> usize {
        match self {
            PageItems::Pools(v) => v.len(),
            PageItems::Sessions(v) => v.len(),
            PageItems::Machines(v) => v.len(),
            PageItems::Users(v) => v.len(),
            PageItems::Keys(v) => v.len(),
            PageItems::Grants(v) => v.len(),
            PageItems::Offline(v) => v.len(),
            PageItems::Audit(v) => v.len(),
            PageItems::Orgs(v) => v.len(),
            PageItems::UserLimits(v) => v.len(),
            PageItems::Usage(v) => v.len(),
            PageItems::Ended(v) => v.len(),
            PageItems::MachineUses(v) => v.len(),
            PageItems::LabelLimits(v) => v.len(),
            PageItems::Reservations(v) => v.len(),
        }
    }

    /// Whether the page is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
