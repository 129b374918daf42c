//! Values every layer shares: validated names and ids, pool names, instants
//! and UTC days. Each is parsed once ("parse, don't validate"): holding an
//! `OrgName` means it is valid. No rules live here, and nothing here knows
//! the core, the wire or the store; the core and `proto` both build on it,
//! so neither needs the other.

pub mod denial;
pub mod id;
pub mod labels;
pub mod pool_id;
pub mod time;

use std::fmt;

pub use denial::Denial;
pub use id::{hex, unhex, ConnId, Email, KeyHash, MachineId, Nonce, OfflineId, OrgName, Role, SessionId};
pub use labels::Labels;
pub use pool_id::{Kind, PoolId, Product, Term};
pub use time::{format_end_date, format_utc, parse_end_of_date, Millis, DAY_MS};

/// A value that failed validation: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The field (`"org name"`, `"email"`, `"date"`...).
    pub what: &'static str,
    /// Why it was refused, for a person to read.
    pub reason: String,
}

impl Invalid {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Invalid {
        Invalid { what, reason: reason.into() }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.what, self.reason)
    }
}

impl std::error::Error for Invalid {}
