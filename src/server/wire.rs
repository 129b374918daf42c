//! The boundary between the core and the wire: core errors become wire
//! codes with their messages, and the core's views become the protocol's
//! own types. Field by field, so the core can change shape without changing
//! a byte the clients read; a field added on one side and not the other
//! fails to compile here.

use crate::core::{self, Error};
use crate::proto::{self, ErrorCode, WireError};
use crate::value::Invalid;

impl From<Error> for WireError {
    fn from(e: Error) -> WireError {
        WireError::new(code(&e), e.to_string())
    }
}

impl From<Invalid> for WireError {
    fn from(e: Invalid) -> WireError {
        WireError::new(ErrorCode::InvalidArgument, e.to_string())
    }
}

/// The documented code of each core refusal.
fn code(e: &Error) -> ErrorCode {
    match e {
        Error::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
        Error::QueueFull { .. } => ErrorCode::QueueFull,
        Error::UserLimit { .. } => ErrorCode::UserLimit,
        Error::LabelLimit { .. } => ErrorCode::LabelLimit,
        Error::ReservedPastQuota { .. } => ErrorCode::InvalidArgument,
        Error::MachineLimit { .. } => ErrorCode::MachineLimit,
        Error::MachineNotRegistered => ErrorCode::MachineNotRegistered,
        Error::SessionExpired => ErrorCode::SessionExpired,
        Error::Unauthorized => ErrorCode::Unauthorized,
        Error::Forbidden(_) => ErrorCode::Forbidden,
        Error::NotFound { .. } => ErrorCode::NotFound,
        Error::AlreadyExists { .. } => ErrorCode::AlreadyExists,
        Error::Invalid { .. } => ErrorCode::InvalidArgument,
        Error::SubscriptionExpired => ErrorCode::SubscriptionExpired,
        Error::TableFull | Error::CeilingReached => ErrorCode::Internal,
        Error::GrantLimit { .. } => ErrorCode::GrantLimit,
        Error::NotLicensed => ErrorCode::NotLicensed,
        Error::AlreadyActivated { .. } => ErrorCode::AlreadyActivated,
        Error::OfflineNotAllowed { .. } => ErrorCode::OfflineNotAllowed,
        Error::ExpiryTooLate { .. } => ErrorCode::ExpiryTooLate,
        Error::OfflineIrrevocable { .. } => ErrorCode::OfflineIrrevocable,
    }
}

/// `From` for structs whose wire form has the same fields as the core's.
macro_rules! same_fields {
    ($($from:ty => $to:ident { $($field:ident),* $(,)? })*) => {$(
        impl From<$from> for proto::$to {
            fn from(v: $from) -> proto::$to {
                proto::$to { $($field: v.$field.into()),* }
            }
        }
    )*};
}

same_fields! {
    core::PoolStatus => PoolStatus {
        org, pool, quota, in_use, machines, admitted, rejected, grants, activations, offline,
    }
    core::SessionInfo => SessionInfo { session, pool, machine, user, started, deadline }
    core::MachineInfo => MachineInfo { pool, machine, registered }
    core::GrantInfo => GrantInfo { pool, email, granted, machine }
    core::OfflineInfo => OfflineInfo { pool, id, machine, issued, last_day, created_by, active }
    core::UserInfo => UserInfo { email, role, created }
    core::KeyInfo => KeyInfo { id, email, created, revoked }
    core::AuditEntry => AuditEntry { org, at, seq, actor, action, detail }
    core::OrgInfo => OrgInfo { name, subscription_end, created, pools, users }
}

impl From<core::EndReason> for proto::EndReason {
    fn from(r: core::EndReason) -> proto::EndReason {
        match r {
            core::EndReason::Released => proto::EndReason::Released,
            core::EndReason::Expired => proto::EndReason::Expired,
            core::EndReason::Revoked => proto::EndReason::Revoked,
            core::EndReason::ConnectionClosed => proto::EndReason::ConnectionClosed,
        }
    }
}

impl From<core::AuditAction> for proto::AuditAction {
    fn from(a: core::AuditAction) -> proto::AuditAction {
        use core::AuditAction as A;
        match a {
            A::OrgCreated => proto::AuditAction::OrgCreated,
            A::QuotaChanged => proto::AuditAction::QuotaChanged,
            A::UserAdded => proto::AuditAction::UserAdded,
            A::KeyCreated => proto::AuditAction::KeyCreated,
            A::KeyRevoked => proto::AuditAction::KeyRevoked,
            A::MachineRemoved => proto::AuditAction::MachineRemoved,
            A::Granted => proto::AuditAction::Granted,
            A::GrantRevoked => proto::AuditAction::GrantRevoked,
            A::Activated => proto::AuditAction::Activated,
            A::OfflineCreated => proto::AuditAction::OfflineCreated,
            A::UserRemoved => proto::AuditAction::UserRemoved,
            A::SessionKilled => proto::AuditAction::SessionKilled,
            A::SubscriptionChanged => proto::AuditAction::SubscriptionChanged,
            A::UserLimitSet => proto::AuditAction::UserLimitSet,
            A::MachineExpired => proto::AuditAction::MachineExpired,
            A::PolicyChanged => proto::AuditAction::PolicyChanged,
            A::LabelLimitSet => proto::AuditAction::LabelLimitSet,
            A::WebhookRedelivered => proto::AuditAction::WebhookRedelivered,
            A::AlertsSet => proto::AuditAction::AlertsSet,
            A::SeatsReserved => proto::AuditAction::SeatsReserved,
        }
    }
}

/// Converts every element of a core list into its wire form.
pub(super) fn list<T, U: From<T>>(v: Vec<T>) -> Vec<U> {
    v.into_iter().map(U::from).collect()
}
