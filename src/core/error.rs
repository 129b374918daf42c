//! Typed errors of the core: one variant per refusal, with typed fields;
//! the message a person reads is rendered by `Display`. The wire code each
//! maps to is the shell's business (`server::wire`), so the core never
//! knows the protocol.

use std::fmt;

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

/// Why the core refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The pool is full.
    QuotaExceeded {
        /// The pool's quota.
        quota: u32,
    },
    /// The user holds as many sessions in the pool as their cap allows.
    UserLimit {
        /// The user's cap.
        max: u32,
    },
    /// Sessions carrying a label hold as many seats of the pool as its
    /// label cap allows.
    LabelLimit {
        /// The label's cap.
        max: u32,
    },
    /// The pool's wait queue holds its most waiters.
    QueueFull {
        /// Most waiters a pool's queue holds.
        max: u32,
    },
    /// The pool's machine registrations are at the quota.
    MachineLimit {
        /// The pool's quota.
        quota: u32,
    },
    /// Acquire named a machine that is not registered in the pool.
    MachineNotRegistered,
    /// The session is not live (it expired or already ended).
    SessionExpired,
    /// Unknown or revoked API key.
    Unauthorized,
    /// The caller may not do this; the text says which rule refused it.
    Forbidden(&'static str),
    /// A named thing does not exist.
    NotFound {
        /// What kind of thing (`"org"`, `"user"`, `"pool"`...).
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A thing being created already exists.
    AlreadyExists {
        /// What kind of thing (`"org"`, `"user"`, `"pool"`...).
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A field failed validation.
    Invalid {
        /// What kind of thing (`"org"`, `"user"`, `"pool"`...).
        what: &'static str,
        /// Why it was refused, for a person to read.
        reason: String,
    },
    /// The org's subscription ended.
    SubscriptionExpired,
    /// The session table has no room (16.7 million sessions per shard).
    TableFull,
    /// Every license of the pool is granted.
    GrantLimit {
        /// The pool's quota.
        quota: u32,
    },
    /// The user holds no grant of the pool.
    NotLicensed,
    /// The user's node-locked license is bound to another machine.
    AlreadyActivated {
        /// The machine.
        machine: MachineId,
    },
    /// The pool cannot issue offline licenses: only annual node-locked pools can.
    OfflineNotAllowed {
        /// The pool.
        pool: PoolId,
    },
    /// The requested expiry is past `limit`; `latest` is the end of the latest day allowed.
    ExpiryTooLate {
        /// Which limit applied.
        limit: ExpiryLimit,
        /// The end of the latest day allowed.
        latest: Millis,
    },
    /// Offline licenses cannot be revoked or transferred; its seat returns at `expires`.
    OfflineIrrevocable {
        /// The license's last valid day, `YYYY-MM-DD`.
        expires: Millis,
    },
    /// A pool's reservations by job label would add up to more than its quota.
    ReservedPastQuota {
        /// The pool's quota.
        quota: u32,
        /// What its reservations would add up to.
        reserved: u32,
    },
    /// The pool has free seats under its quota but not under its durable
    /// session ceiling: the shell must raise the ceiling (a durable write)
    /// and ask again. Never shown to a client.
    CeilingReached,
}

impl Error {
    /// The reason this refusal counts under in its pool's denials, if it
    /// is an admission's refusal other than the quota (which the seat
    /// counter counts where it refuses).
    pub fn denial(&self) -> Option<super::Denial> {
        use super::Denial;
        match self {
            Error::UserLimit { .. } => Some(Denial::UserLimit),
            Error::LabelLimit { .. } => Some(Denial::LabelLimit),
            Error::QueueFull { .. } => Some(Denial::QueueFull),
            Error::MachineNotRegistered => Some(Denial::MachineNotRegistered),
            Error::SubscriptionExpired => Some(Denial::SubscriptionExpired),
            Error::NotLicensed => Some(Denial::NotLicensed),
            Error::AlreadyActivated { .. } => Some(Denial::AlreadyActivated),
            _ => None,
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
            Error::CeilingReached => f.write_str("the pool's durable seat ceiling must be raised before admitting more"),
            Error::ReservedPastQuota { quota, reserved } => write!(f, "reservations of {reserved} seats > quota {quota}"),
            Error::QuotaExceeded { quota: 0 } => {
                f.write_str("quota exceeded: the pool has no licenses (quota 0); ask the operator to set one")
            }
            Error::QuotaExceeded { quota } => write!(f, "quota exceeded: all {quota} licenses of the pool are in use"),
            Error::UserLimit { max } => {
                write!(f, "user limit reached: this user may hold {max} sessions of the pool at once (`pool limit`)")
            }
            Error::LabelLimit { max } => write!(
                f,
                "label limit reached: sessions with this label may hold {max} seats of the pool at once \
                 (`pool limit --label`)"
            ),
            Error::QueueFull { max } => {
                write!(f, "the pool's wait queue is full ({max} runners wait); retry later")
            }
            Error::MachineLimit { quota } => {
                write!(f, "machine limit reached: the pool already has {quota} registered machines")
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

impl From<crate::value::Invalid> for Error {
    fn from(e: crate::value::Invalid) -> Error {
        Error::Invalid { what: e.what, reason: e.reason }
    }
}

/// Shorthand for core results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
