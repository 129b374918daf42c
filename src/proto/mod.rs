//! The wire protocol: length-delimited frames of postcard-encoded messages.
//! Pure bytes in, values out: no sockets here. docs/PROTOCOL.md is the
//! normative description; keep it in step with `request`, `response` and
//! `token`.

pub mod decode;
pub mod error;
pub mod frame;
pub mod hot;
pub mod info;
pub mod list;
pub mod request;
pub mod response;
pub mod token;
pub mod version;
pub mod webhook;

pub use decode::{decode, decode_client, ClientDecoded, DecodeError};
pub use error::{ErrorCode, WireError};
pub use frame::{encode, FrameBuf, FrameError, MAX_FRAME};
pub use info::{
    AuditAction, AuditEntry, AvailabilityInfo, EndReason, EndedSession, GrantInfo, KeyInfo, LabelLimitInfo,
    MachineInfo, MachineUseInfo, NodeInfo, OfflineInfo, OrgInfo, PoolState, PoolStatus, ReservationInfo, SessionInfo,
    SessionView, UsagePoint, UserInfo, UserLimitInfo, WhatIfOutcome, WhatIfReport,
};
pub use list::ListOf;
pub use request::*;
pub use response::*;
pub use token::*;
pub use version::Version;
pub use webhook::{DeliveryInfo, WebhookInfo};

/// The protocol version this build speaks (first field of `Hello`).
/// Version 2 answers `Acquire` with `Leased` and `Renew` with `Extended`,
/// both carrying a session token (see `Req::Reattach`). Version 3 adds the
/// wait queue and job labels (`Req::Checkout`, `Req::Label`,
/// `Notice::Queued`), and answers `Status` with `Pools` (each pool's queue
/// depth too) and `ListSessions` with `SessionViews` (labels too).
/// Version 4 adds paged lists (`Req::List`, `Resp::Page`). Version 5 adds
/// machines that come and go (`Req::RegisterEphemeral`,
/// `Req::SetMachinePolicy`, `ListOf::MachineUses`, audit actions
/// `MachineExpired` and `PolicyChanged`) and the event stream and
/// webhooks (`Req::Events`, `Resp::Events`, `Req::AddWebhook` and the
/// other webhook requests). Version 6 adds reserved seats, pool alerts,
/// webhook redelivery and `Resp::Partial`; version 7 adds
/// `Req::ReattachLabelled` (a re-attach carrying the job's labels).
pub const VERSION: u16 = 7;

/// The oldest version the broker still speaks: a version 1 stream gets
/// `Admitted` and `Renewed`, without tokens.
pub const MIN_VERSION: u16 = 1;

/// The TLS ALPN protocol id.
pub const ALPN: &[u8] = b"lbroker/1";
