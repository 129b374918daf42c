//! Which orgs this node serves, each with the revision of its claim: the
//! fence every write of the org's records compares (`store`). Apart from
//! the store because the placement loop, the seat and the streams read it
//! as often as the store writes by it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::core::OrgName;

/// For each org this node serves, the revision that created its claim:
/// every write of the org's records is fenced on it, and an org without a
/// fence is not served (its writes refused). Shared with the placement loop.
#[derive(Debug, Default)]
pub struct Fences {
    map: RwLock<HashMap<OrgName, i64>>,
    /// Bumped by every change, so a stream may cache "this node serves my
    /// org" until it moves (`version`).
    version: AtomicU64,
}

impl Fences {
    /// The fence of `org`, if this node serves it.
    pub fn get(&self, org: &OrgName) -> Option<i64> {
        self.map.read().get(org).copied()
    }

    /// Serves `org` under the claim created at `revision`.
    pub fn set(&self, org: &OrgName, revision: i64) {
        self.map.write().insert(org.clone(), revision);
        self.bump();
    }

    /// Stops serving `org`: its writes are refused from now on.
    pub fn remove(&self, org: &OrgName) -> Option<i64> {
        let removed = self.map.write().remove(org);
        self.bump();
        removed
    }

    /// Stops serving every org.
    pub fn clear(&self) {
        self.map.write().clear();
        self.bump();
    }

    /// The orgs served and their fences.
    pub fn all(&self) -> Vec<(OrgName, i64)> {
        self.map.read().iter().map(|(o, f)| (o.clone(), *f)).collect()
    }

    /// Changes so far: an answer of `get` read at version v holds while
    /// the version is still v.
    pub fn version(&self) -> u64 {
        // Acquire: pairs with `bump`; a reader that sees the new version
        // reads the map as changed.
        self.version.load(Ordering::Acquire)
    }

    fn bump(&self) {
        // Release: after the map's change (see `version`).
        self.version.fetch_add(1, Ordering::Release);
    }
}
