//! Typed errors of the core and the documented wire codes they map to.
//!
//! Every refusal a client can see has exactly one `ErrorCode`; the table in
//! docs/PROTOCOL.md is generated from the same names and numbers, so keep
//! them in step.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::id::MachineId;
use super::licensing::OFFLINE_MAX_DAYS;
use super::pool_id::PoolId;
use super::time::{format_end_date, Millis};

/// Which limit an offline license's expiry ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryLimit {
    /// At most `OFFLINE_MAX_DAYS` after the day it is created.
    MaxDays,
    /// Never past the org's subscription.
    Subscription,
}

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
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 23] = [
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
    ];

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
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the core refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The pool is full.
    QuotaExceeded { quota: u32 },
    /// The pool's machine registrations are at the quota.
    MachineLimit { quota: u32 },
    /// Acquire named a machine that is not registered in the pool.
    MachineNotRegistered,
    /// The session is not live (it expired or already ended).
    SessionExpired,
    /// Unknown or revoked API key.
    Unauthorized,
    /// The caller may not do this; the text says which rule refused it.
    Forbidden(&'static str),
    /// A named thing does not exist.
    NotFound { what: &'static str, name: String },
    /// A thing being created already exists.
    AlreadyExists { what: &'static str, name: String },
    /// A field failed validation.
    Invalid { what: &'static str, reason: String },
    /// The org's subscription ended.
    SubscriptionExpired,
    /// The session table has no room (16.7 million sessions per shard).
    TableFull,
    /// Every license of the pool is granted.
    GrantLimit { quota: u32 },
    /// The user holds no grant of the pool.
    NotLicensed,
    /// The user's node-locked license is bound to another machine.
    AlreadyActivated { machine: MachineId },
    /// The pool cannot issue offline licenses: only annual node-locked pools can.
    OfflineNotAllowed { pool: PoolId },
    /// The requested expiry is past `limit`; `latest` is the end of the latest day allowed.
    ExpiryTooLate { limit: ExpiryLimit, latest: Millis },
    /// Offline licenses cannot be revoked or transferred; its seat returns at `expires`.
    OfflineIrrevocable { expires: Millis },
}

impl Error {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            Error::MachineLimit { .. } => ErrorCode::MachineLimit,
            Error::MachineNotRegistered => ErrorCode::MachineNotRegistered,
            Error::SessionExpired => ErrorCode::SessionExpired,
            Error::Unauthorized => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Error::Invalid { .. } => ErrorCode::InvalidArgument,
            Error::SubscriptionExpired => ErrorCode::SubscriptionExpired,
            Error::TableFull => ErrorCode::Internal,
            Error::GrantLimit { .. } => ErrorCode::GrantLimit,
            Error::NotLicensed => ErrorCode::NotLicensed,
            Error::AlreadyActivated { .. } => ErrorCode::AlreadyActivated,
            Error::OfflineNotAllowed { .. } => ErrorCode::OfflineNotAllowed,
            Error::ExpiryTooLate { .. } => ErrorCode::ExpiryTooLate,
            Error::OfflineIrrevocable { .. } => ErrorCode::OfflineIrrevocable,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid { what, reason: reason.into() }
    }

    pub(crate) fn not_found(what: &'static str, name: impl fmt::Display) -> Error {
        Error::NotFound { what, name: name.to_string() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::QuotaExceeded { quota } => {
                write!(
                    f,
                    "quota exceeded: all {quota} licenses of the pool are in use"
                )
            }
            Error::MachineLimit { quota } => {
                write!(
                    f,
                    "machine limit reached: the pool already has {quota} registered machines"
                )
            }
            Error::MachineNotRegistered => f.write_str("machine is not registered in this pool"),
            Error::SessionExpired => f.write_str("session expired or already ended"),
            Error::Unauthorized => f.write_str("unknown or revoked api key"),
            Error::Forbidden(why) => write!(f, "forbidden: {why}"),
            Error::NotFound { what, name } => write!(f, "{what} not found: {name}"),
            Error::AlreadyExists { what, name } => write!(f, "{what} already exists: {name}"),
            Error::Invalid { what, reason } => write!(f, "invalid {what}: {reason}"),
            Error::SubscriptionExpired => f.write_str("the organisation's subscription has ended"),
            Error::TableFull => f.write_str("the broker's session table is full"),
            Error::GrantLimit { quota } => {
                write!(f, "grant limit reached: all {quota} licenses of the pool are granted; revoke one first")
            }
            Error::NotLicensed => f.write_str("no license of this pool is granted to you; ask an Owner or Admin"),
            Error::AlreadyActivated { machine } => write!(
                f,
                "your license is already activated on machine {machine}; an Owner or Admin must free it first (machine remove)"
            ),
            Error::OfflineNotAllowed { pool } => {
                write!(f, "offline licenses are not allowed here: {pool} is not an annual node-locked pool")
            }
            Error::ExpiryTooLate { limit: ExpiryLimit::MaxDays, latest } => write!(
                f,
                "expiry too late: an offline license lasts at most {OFFLINE_MAX_DAYS} days: the latest expiry today is {}",
                format_end_date(*latest)
            ),
            Error::ExpiryTooLate { limit: ExpiryLimit::Subscription, latest } => write!(
                f,
                "expiry too late: the org's subscription ends {}; an offline license cannot outlive it",
                format_end_date(*latest)
            ),
            Error::OfflineIrrevocable { expires } => write!(
                f,
                "an offline license cannot be revoked or transferred; its seat returns by itself after {}",
                format_end_date(*expires)
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for core results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
