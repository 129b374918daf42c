//! The lists `Req::List` pages through (protocol version 4 on), apart
//! from the requests: each names the request whose answer it pages, and
//! new lists are appended here as new requests are to `Req`. As there:
//! field order is wire order, and variants are only ever appended.

use serde::{Deserialize, Serialize};

use crate::value::{OrgName, PoolId};

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
    /// Version 5: registered machines with their last use:
    /// `PageItems::MachineUses`, by pool, then machine. Owner, Admin.
    MachineUses {
        /// The org.
        org: OrgName,
    },
    /// Version 5: a pool's label caps: `PageItems::LabelLimits`, by key,
    /// then value. Owner, Admin.
    LabelLimits {
        /// The org.
        org: OrgName,
        /// The pool.
        pool: PoolId,
    },
    /// Version 6: the reservations of the org's pools:
    /// `PageItems::Reservations`, by pool, then key, then value. Members.
    Reservations {
        /// The org.
        org: OrgName,
    },
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
            | ListOf::UserLimits { org, .. }
            | ListOf::MachineUses { org }
            | ListOf::LabelLimits { org, .. }
            | ListOf::Reservations { org } => Some(org),
            ListOf::Usage { org, .. } | ListOf::Ended { org, .. } => Some(org),
            ListOf::Orgs => None,
        }
    }
}
