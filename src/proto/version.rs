//! What each protocol version a stream speaks can do, named once: the
//! broker answers a version N stream with exactly what version N's
//! document lists (docs/PROTOCOL.md), later values included, so old
//! clients keep working.

use super::{MIN_VERSION, VERSION};

/// The protocol version of one stream (its `Hello`'s), known to be one
/// this build speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u16);

impl Version {
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
    /// their labels (`SessionViews`), the audit actions of version 3.
    pub fn queues_and_labels(self) -> bool {
        self.0 >= 3
    }
}
