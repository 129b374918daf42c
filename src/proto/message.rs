//! Every message of the protocol. Field order is wire order: postcard
//! encodes structs as their fields in sequence and enums as a varint variant
//! index followed by the variant's fields, so never reorder, only append
//! new enum variants at the end.

use serde::{Deserialize, Serialize};

use super::error::WireError;
use super::info::{
    AuditEntry, EndReason, EndedSession, GrantInfo, KeyInfo, MachineInfo, NodeInfo, OfflineInfo, OrgInfo, PoolState,
    PoolStatus, SessionInfo, SessionView, UsagePoint, UserInfo, UserLimitInfo, WhatIfReport,
};
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
}

/// The lists `Req::List` pages through; each names the request it pages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ListOf {
    /// As `Status`, answered with `PageItems::Pools`; ordered by org, then pool.
    Status {
        /// The org (none: every visible org).
        org: Option<OrgName>,
    },
    /// As `ListSessions`: `PageItems::Sessions`, in the broker's table order.
    Sessions {
        /// The org.
        org: OrgName,
    },
    /// As `ListMachines`; by pool, then machine.
    Machines {
        /// The org.
        org: OrgName,
    },
    /// As `ListUsers`; by email.
    Users {
        /// The org.
        org: OrgName,
    },
    /// As `ListKeys`; by creation time, then id.
    Keys {
        /// The org.
        org: OrgName,
    },
    /// As `ListGrants`; by pool, then email.
    Grants {
        /// The org.
        org: OrgName,
        /// One pool, or every pool.
        pool: Option<PoolId>,
    },
    /// As `ListOffline`; by pool, then license id.
    Offline {
        /// The org.
        org: OrgName,
    },
    /// As `Audit`; oldest first.
    Audit {
        /// The org.
        org: OrgName,
    },
    /// As `ListOrgs`; by name.
    Orgs,
    /// As `ListUserLimits`; by email.
    UserLimits {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
    },
    /// The utilization history (added after the first version-4
    /// brokers): `PageItems::Usage`, by pool, then time; one point per
    /// step of `step_ms` (a whole number of minutes) that has data. Any
    /// member of the org, or the operator.
    Usage {
        /// The org.
        org: OrgName,
        /// One pool, or every pool of the org.
        pool: Option<PoolId>,
        /// Start of the range (Unix ms).
        from_ms: u64,
        /// End of the range (Unix ms).
        to_ms: u64,
        /// The step (ms).
        step_ms: u64,
    },
    /// Sessions that ended in the range (added after the first version-4
    /// brokers): `PageItems::Ended`, oldest end first. Any member of the
    /// org, or the operator.
    Ended {
        /// The org.
        org: OrgName,
        /// Start of the range (Unix ms).
        from_ms: u64,
        /// End of the range (Unix ms).
        to_ms: u64,
    },
}

/// Where a page ended: opaque to clients (at most `Cursor::MAX` bytes),
/// meaningful only to the broker and only for the list it came from. On the
/// wire a byte string (varint length, then the bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Cursor(pub Vec<u8>);

impl Cursor {
    /// The longest cursor the broker issues or accepts.
    pub const MAX: usize = 512;
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cursor, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Cursor;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "at most {} bytes", Cursor::MAX)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Cursor, E> {
                match v.len() <= Cursor::MAX {
                    true => Ok(Cursor(v.to_vec())),
                    false => Err(E::invalid_length(v.len(), &self)),
                }
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cursor({})", crate::value::hex(&self.0))
    }
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
        }
    }

    /// Whether the page is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A lease's proof, issued with every `Leased` and `Extended` answer and
/// echoed in `Reattach`: the broker's MAC over the org, pool, machine,
/// nonce, user, broker run and lease deadline. Opaque to clients; on the
/// wire a byte string (varint length 32, then the 32 bytes): one copy to
/// encode, where a fixed-size array would be 32 separate elements.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionToken(pub [u8; 32]);

impl Serialize for SessionToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SessionToken, D::Error> {
        struct Bytes32;
        impl<'de> serde::de::Visitor<'de> for Bytes32 {
            type Value = SessionToken;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SessionToken, E> {
                let bytes: [u8; 32] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(SessionToken(bytes))
            }
        }
        d.deserialize_bytes(Bytes32)
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionToken({})", crate::value::hex(&self.0))
    }
}

impl std::fmt::Display for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::value::hex(&self.0))
    }
}

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
}

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
            | Req::WhatIf { org, .. } => Some(org),
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

impl ListOf {
    /// The org the listing names, if any.
    pub fn org(&self) -> Option<&OrgName> {
        match self {
            ListOf::Status { org } => org.as_ref(),
            ListOf::Sessions { org }
            | ListOf::Machines { org }
            | ListOf::Users { org }
            | ListOf::Keys { org }
            | ListOf::Grants { org, .. }
            | ListOf::Offline { org }
            | ListOf::Audit { org }
            | ListOf::UserLimits { org, .. } => Some(org),
            ListOf::Usage { org, .. } | ListOf::Ended { org, .. } => Some(org),
            ListOf::Orgs => None,
        }
    }
}
