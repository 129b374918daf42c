//! The protocol's error codes and the error a client reads.
//!
//! Every refusal a client can see has exactly one `ErrorCode`; the table in
//! docs/PROTOCOL.md is checked against these names and numbers
//! (tests/protocol_doc.rs), so keep them in step. Codes are numbered by
//! their order here: never reorder, only append.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::value::Denial;

/// The stable, documented error codes of the protocol.
///
/// Numbers are part of the wire format and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A frame could not be decoded.
    BadFrame,
    /// A frame's declared length exceeds the limit.
    FrameTooLarge,
    /// The client speaks a protocol version this broker does not.
    UnsupportedVersion,
    /// A request arrived before `Hello`, or `Hello` arrived twice.
    OutOfOrder,
    /// A field failed validation (bad name, email, machine id, quota...).
    InvalidArgument,
    /// The API key is unknown or revoked.
    Unauthorized,
    /// The caller's role or org does not allow this request.
    Forbidden,
    /// The named org, pool, user, key, machine or session does not exist.
    NotFound,
    /// The thing being created already exists.
    AlreadyExists,
    /// The pool holds as many sessions as its quota.
    QuotaExceeded,
    /// The pool has as many registered machines as its quota.
    MachineLimit,
    /// The machine must be registered in the pool before acquiring.
    MachineNotRegistered,
    /// The session has expired or already ended.
    SessionExpired,
    /// The org's subscription has ended.
    SubscriptionExpired,
    /// The broker is shutting down and admits nothing new.
    Draining,
    /// The durable store failed; nothing was changed.
    StoreFailure,
    /// An unexpected internal error.
    Internal,
    /// Every license of the pool is granted; revoke one first.
    GrantLimit,
    /// The user holds no grant of this (KSE) pool.
    NotLicensed,
    /// The user's node-locked license is activated on another machine.
    AlreadyActivated,
    /// Offline licenses come only from annual node-locked pools.
    OfflineNotAllowed,
    /// The offline license would outlive its limit (60 days, or the subscription).
    ExpiryTooLate,
    /// Offline licenses cannot be revoked or transferred.
    OfflineIrrevocable,
    /// The answer would not fit in one frame; ask for less.
    ResponseTooLarge,
    /// The pool's wait queue is full; retry later.
    QueueFull,
    /// No seat came within the time the waiter asked to wait.
    QueueTimeout,
    /// The user holds as many sessions of the pool as their cap allows.
    UserLimit,
    /// This node of a cluster does not serve (it lost its claim, or never
    /// had it): reconnect, and any node redirects to the one that does.
    NotOwner,
    /// Sessions carrying one of the caller's labels hold as many seats of
    /// the pool as its label cap allows (version 5; earlier streams get
    /// `QUOTA_EXCEEDED`).
    LabelLimit,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 29] = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::OutOfOrder,
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::QuotaExceeded,
        ErrorCode::MachineLimit,
        ErrorCode::MachineNotRegistered,
        ErrorCode::SessionExpired,
        ErrorCode::SubscriptionExpired,
        ErrorCode::Draining,
        ErrorCode::StoreFailure,
        ErrorCode::Internal,
        ErrorCode::GrantLimit,
        ErrorCode::NotLicensed,
        ErrorCode::AlreadyActivated,
        ErrorCode::OfflineNotAllowed,
        ErrorCode::ExpiryTooLate,
        ErrorCode::OfflineIrrevocable,
        ErrorCode::ResponseTooLarge,
        ErrorCode::QueueFull,
        ErrorCode::QueueTimeout,
        ErrorCode::UserLimit,
        ErrorCode::NotOwner,
        ErrorCode::LabelLimit,
    ];

    /// The codes a pool's refused admissions are counted under, in the
    /// order their counts are kept: `QUOTA_EXCEEDED` (the seat counter's
    /// own count) first, then each `Denial` in `Denial::ALL`'s order. The
    /// one list `/metrics`' `reason` label and the reports' columns use.
    pub const DENIALS: [ErrorCode; 1 + Denial::ALL.len()] = {
        let mut codes = [ErrorCode::QuotaExceeded; 1 + Denial::ALL.len()];
        let mut i = 0;
        while i < Denial::ALL.len() {
            codes[i + 1] = ErrorCode::of_denial(Denial::ALL[i]);
            i += 1;
        }
        codes
    };

    /// The documented code of a refusal counted as `d`.
    pub const fn of_denial(d: Denial) -> ErrorCode {
        match d {
            Denial::UserLimit => ErrorCode::UserLimit,
            Denial::QueueFull => ErrorCode::QueueFull,
            Denial::QueueTimeout => ErrorCode::QueueTimeout,
            Denial::MachineNotRegistered => ErrorCode::MachineNotRegistered,
            Denial::SubscriptionExpired => ErrorCode::SubscriptionExpired,
            Denial::NotLicensed => ErrorCode::NotLicensed,
            Denial::AlreadyActivated => ErrorCode::AlreadyActivated,
            Denial::LabelLimit => ErrorCode::LabelLimit,
        }
    }

    /// The SCREAMING_SNAKE name used in JSON output and the docs.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::OutOfOrder => "OUT_OF_ORDER",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::MachineLimit => "MACHINE_LIMIT",
            ErrorCode::MachineNotRegistered => "MACHINE_NOT_REGISTERED",
            ErrorCode::SessionExpired => "SESSION_EXPIRED",
            ErrorCode::SubscriptionExpired => "SUBSCRIPTION_EXPIRED",
            ErrorCode::Draining => "DRAINING",
            ErrorCode::StoreFailure => "STORE_FAILURE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::GrantLimit => "GRANT_LIMIT",
            ErrorCode::NotLicensed => "NOT_LICENSED",
            ErrorCode::AlreadyActivated => "ALREADY_ACTIVATED",
            ErrorCode::OfflineNotAllowed => "OFFLINE_NOT_ALLOWED",
            ErrorCode::ExpiryTooLate => "EXPIRY_TOO_LATE",
            ErrorCode::OfflineIrrevocable => "OFFLINE_IRREVOCABLE",
            ErrorCode::ResponseTooLarge => "RESPONSE_TOO_LARGE",
            ErrorCode::QueueFull => "QUEUE_FULL",
            ErrorCode::QueueTimeout => "QUEUE_TIMEOUT",
            ErrorCode::UserLimit => "USER_LIMIT",
            ErrorCode::NotOwner => "NOT_OWNER",
            ErrorCode::LabelLimit => "LABEL_LIMIT",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed error with a human message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// The documented code.
    pub code: ErrorCode,
    /// What a person should read.
    pub message: String,
}

impl WireError {
    /// A wire error from a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError { code, message: message.into() }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for WireError {}
