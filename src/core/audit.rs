//! The audit trail's entries: what an act was (`AuditAction`, stored and
//! listed by its index, so actions are only ever appended), who did it and
//! when (`AuditEntry`), and the key that sorts an org's entries by time.
//! Apart from `record` so that file holds the record families, this one
//! what one of them, the audit line, says.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::id::{Email, OrgName};
use super::time::Millis;

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
    /// An Owner or Admin capped (or uncapped) a user's sessions in a pool.
    UserLimitSet,
    /// The broker released a machine left unused past its pool's idle
    /// limit, or an ephemeral machine after its last session.
    MachineExpired,
    /// The operator changed a pool's machine policy.
    PolicyChanged,
    /// An Owner or Admin capped (or uncapped) the sessions carrying a label.
    LabelLimitSet,
    /// An event was sent again to a webhook on request (`webhook redeliver`).
    WebhookRedelivered,
    /// A pool's alerts were set (`pool set --queue-alert`, `--busy-alert`).
    AlertsSet,
    /// An Owner or Admin reserved seats of a pool for a job label (or
    /// removed the reservation).
    SeatsReserved,
}

impl AuditAction {
    /// Every action, in the order of the encoding.
    pub const ALL: [AuditAction; 20] = [
        AuditAction::OrgCreated,
        AuditAction::QuotaChanged,
        AuditAction::UserAdded,
        AuditAction::KeyCreated,
        AuditAction::KeyRevoked,
        AuditAction::MachineRemoved,
        AuditAction::Granted,
        AuditAction::GrantRevoked,
        AuditAction::Activated,
        AuditAction::OfflineCreated,
        AuditAction::UserRemoved,
        AuditAction::SessionKilled,
        AuditAction::SubscriptionChanged,
        AuditAction::UserLimitSet,
        AuditAction::MachineExpired,
        AuditAction::PolicyChanged,
        AuditAction::LabelLimitSet,
        AuditAction::WebhookRedelivered,
        AuditAction::AlertsSet,
        AuditAction::SeatsReserved,
    ];

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

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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

/// An audit entry's key: `org/at/seq` in fixed-width hex, so an org's
/// entries sort by time, then sequence.
pub fn audit_key(org: &OrgName, at: Millis, seq: u64) -> String {
    format!("{org}/{:016x}/{seq:016x}", at.0)
}
