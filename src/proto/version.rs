//! What each protocol version a stream speaks can do, named once: the
//! broker answers a version N stream with exactly what version N's
//! document lists (docs/PROTOCOL.md, "Versions"), so old clients keep
//! working.
//!
//! The rule for values appended to an enum of an answer: a version N
//! stream is sent a value only if the first document of version N that
//! listed the enum listed it. A value appended later (in a later version,
//! or later in version N's own life) is sent to it as the nearest value its
//! document listed, the message or detail saying what happened. The tables
//! are here and nowhere else; a refusal or an audit entry pays for the
//! mapping, a granted request never does.

use super::{AuditAction, ErrorCode, ListOf, Req, MIN_VERSION, VERSION};

/// The protocol version of one stream (its `Hello`'s), known to be one
/// this build speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u16);

impl Version {
    /// The version this build speaks natively: nothing is mapped for it.
    pub const CURRENT: Version = Version(VERSION);

    /// The version `v`, if this build speaks it.
    pub fn new(v: u16) -> Option<Version> {
        (MIN_VERSION..=VERSION).contains(&v).then_some(Version(v))
    }

    /// Its number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Version 2 on: leases come with session tokens (`Leased`,
    /// `Extended`), so they survive a restart.
    pub fn tokens(self) -> bool {
        self.0 >= 2
    }

    /// Version 3 on: pools with their wait queue (`Pools`), sessions with
    /// their labels (`SessionViews`).
    pub fn queues_and_labels(self) -> bool {
        self.0 >= 3
    }

    /// Version 4 on: `Hello` may be answered with `Redirect` (earlier
    /// streams get an `Error` with `DRAINING` naming the node instead).
    pub fn redirects(self) -> bool {
        self.0 >= 4
    }

    /// Version 6 on: a report some node's history is missing from comes
    /// as `Partial`, naming the nodes (earlier streams get the answer alone).
    pub fn partial(self) -> bool {
        self.0 >= 6
    }

    /// How many counts of refusals by reason (`UsagePoint::denied`, in
    /// `ErrorCode::DENIALS`' order) this version's document listed: a
    /// reason appended since is left off its streams' points.
    pub fn denials(self) -> usize {
        match self.0 {
            ..=4 => 8,
            _ => ErrorCode::DENIALS.len(),
        }
    }

    /// Whether this version's document lists the request: a client of an
    /// older version never sends a later request, and one that does is
    /// answered as an unknown variant (`BAD_FRAME`).
    pub fn lists(self, req: &Req) -> bool {
        self >= Version::CURRENT || self.0 >= since(req)
    }

    /// The code a refusal is sent with on a stream of this version: itself
    /// when the version's first document listed it, else the nearest code
    /// that document did list (the message still says what happened).
    pub fn code(self, code: ErrorCode) -> ErrorCode {
        let listed = match self.0 {
            1 => ErrorCode::Internal,
            2 => ErrorCode::ResponseTooLarge,
            3 => ErrorCode::QueueTimeout,
            4 => ErrorCode::NotOwner,
            5 | 6 => ErrorCode::LabelLimit,
            _ => return code,
        };
        // Codes are numbered by their order (error.rs): never reordered.
        if (code as u8) <= (listed as u8) {
            return code;
        }
        match code {
            ErrorCode::OfflineNotAllowed | ErrorCode::ExpiryTooLate | ErrorCode::ResponseTooLarge => {
                ErrorCode::InvalidArgument
            }
            ErrorCode::NotLicensed | ErrorCode::AlreadyActivated | ErrorCode::OfflineIrrevocable => {
                ErrorCode::Forbidden
            }
            ErrorCode::NotOwner => ErrorCode::Draining,
            // GRANT_LIMIT, QUEUE_FULL, QUEUE_TIMEOUT, USER_LIMIT, LABEL_LIMIT: the
            // caller may have no more of what it asked for.
            _ => ErrorCode::QuotaExceeded,
        }
    }

    /// The audit action an entry is sent with on a stream of this version,
    /// or `None` when the version's first document listed the action.
    pub fn audit_action(self, action: AuditAction) -> Option<AuditAction> {
        let listed = match self.0 {
            1 => AuditAction::OfflineCreated,
            2 | 3 => AuditAction::SubscriptionChanged,
            4 => AuditAction::UserLimitSet,
            5 => AuditAction::LabelLimitSet,
            6 => AuditAction::SeatsReserved,
            _ => return None,
        };
        if (action as u8) <= (listed as u8) {
            return None;
        }
        Some(match action {
            // Removing a member revokes their keys.
            AuditAction::UserRemoved => AuditAction::KeyRevoked,
            // Removing a machine is the other act that ends its sessions;
            // an expiry removes one.
            AuditAction::SessionKilled | AuditAction::MachineExpired => AuditAction::MachineRemoved,
            // Subscriptions and caps change what the org may hold.
            _ => AuditAction::QuotaChanged,
        })
    }
}

/// The first version whose document lists the request.
fn since(req: &Req) -> u16 {
    match req {
        Req::Reattach { .. } => 2,
        Req::Checkout { .. } | Req::Label { .. } | Req::SetUserLimit { .. } | Req::ListUserLimits { .. } => 3,
        Req::List { of: ListOf::MachineUses { .. }, .. }
        | Req::RegisterEphemeral { .. }
        | Req::SetMachinePolicy { .. }
        | Req::SetLabelLimit { .. }
        | Req::List { of: ListOf::LabelLimits { .. }, .. }
        | Req::Events { .. }
        | Req::AddWebhook { .. }
        | Req::ListWebhooks { .. }
        | Req::RemoveWebhook { .. }
        | Req::RotateWebhookSecret { .. }
        | Req::WebhookDeliveries { .. } => 5,
        Req::RedeliverWebhook { .. }
        | Req::SetPoolAlerts { .. }
        | Req::SetReservation { .. }
        | Req::CheckLabelled { .. }
        | Req::List { of: ListOf::Reservations { .. }, .. } => 6,
        Req::ReattachLabelled { .. } => 7,
        Req::List { .. } | Req::WhatIf { .. } | Req::Nodes | Req::Route { .. } | Req::Check { .. } => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last code and action each version's first document listed.
    const LISTED: [(u16, ErrorCode, AuditAction); 6] = [
        (1, ErrorCode::Internal, AuditAction::OfflineCreated),
        (2, ErrorCode::ResponseTooLarge, AuditAction::SubscriptionChanged),
        (3, ErrorCode::QueueTimeout, AuditAction::SubscriptionChanged),
        (4, ErrorCode::NotOwner, AuditAction::UserLimitSet),
        (5, ErrorCode::LabelLimit, AuditAction::LabelLimitSet),
        (6, ErrorCode::LabelLimit, AuditAction::SeatsReserved),
    ];

    #[test]
    fn old_streams_get_only_codes_their_document_listed() {
        for (v, last, _) in LISTED {
            let version = Version::new(v).unwrap();
            for code in ErrorCode::ALL {
                let sent = version.code(code);
                assert!(sent as u8 <= last as u8, "version {v} sent {sent:?} for {code:?}");
                if code as u8 <= last as u8 {
                    assert_eq!(sent, code, "version {v} lists {code:?}");
                }
            }
        }
        assert!(ErrorCode::ALL.iter().all(|c| Version::CURRENT.code(*c) == *c));
    }

    #[test]
    fn old_streams_get_only_audit_actions_their_document_listed() {
        use AuditAction::*;
        let all = [
            OrgCreated,
            QuotaChanged,
            UserAdded,
            KeyCreated,
            KeyRevoked,
            MachineRemoved,
            Granted,
            GrantRevoked,
            Activated,
            OfflineCreated,
            UserRemoved,
            SessionKilled,
            SubscriptionChanged,
            UserLimitSet,
            MachineExpired,
            PolicyChanged,
            LabelLimitSet,
            WebhookRedelivered,
            AlertsSet,
            SeatsReserved,
        ];
        for (v, _, last) in LISTED {
            let version = Version::new(v).unwrap();
            for action in all {
                let sent = version.audit_action(action).unwrap_or(action);
                assert!(sent as u8 <= last as u8, "version {v} sent {sent:?} for {action:?}");
                assert_eq!(version.audit_action(action).is_none(), action as u8 <= last as u8);
            }
        }
        assert!(all.iter().all(|a| Version::CURRENT.audit_action(*a).is_none()));
    }

    #[test]
    fn old_streams_get_the_refusal_counts_their_document_listed() {
        for v in 1..=4 {
            let listed = Version::new(v).unwrap().denials();
            assert_eq!(ErrorCode::DENIALS[..listed].last(), Some(&ErrorCode::AlreadyActivated), "version {v}");
        }
        assert_eq!(Version::CURRENT.denials(), ErrorCode::DENIALS.len());
        assert_eq!(ErrorCode::DENIALS.last(), Some(&ErrorCode::LabelLimit));
    }

    #[test]
    fn only_version_4_streams_and_later_are_redirected() {
        let redirected: Vec<u16> = (MIN_VERSION..=VERSION).filter(|v| Version::new(*v).unwrap().redirects()).collect();
        assert_eq!(redirected, [4, 5, 6, 7]);
    }

    #[test]
    fn a_partial_report_goes_to_version_6_streams_and_later() {
        let partial: Vec<u16> = (MIN_VERSION..=VERSION).filter(|v| Version::new(*v).unwrap().partial()).collect();
        assert_eq!(partial, [6, 7]);
    }

    #[test]
    fn the_event_stream_is_listed_from_version_5() {
        let events = Req::Events { org: crate::value::OrgName::new("acme").unwrap(), after: 0, wait_ms: 0 };
        let listing: Vec<u16> = (MIN_VERSION..=VERSION).filter(|v| Version::new(*v).unwrap().lists(&events)).collect();
        assert_eq!(listing, [5, 6, 7]);
    }

    #[test]
    fn a_labelled_reattach_is_listed_from_version_7_alone() {
        use crate::value::{Labels, MachineId, Nonce, OrgName, PoolId};
        let req = Req::ReattachLabelled {
            org: OrgName::new("acme").unwrap(),
            pool: PoolId::KRE_DEFAULT,
            machine: MachineId::new("m").unwrap(),
            nonce: Nonce(1),
            token: crate::proto::SessionToken([0; 32]),
            labels: Labels::default(),
        };
        let listing: Vec<u16> = (MIN_VERSION..=VERSION).filter(|v| Version::new(*v).unwrap().lists(&req)).collect();
        assert_eq!(listing, [7]);
    }
}
