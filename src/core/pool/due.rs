//! When each of a pool's tracked machines may come due: an ordered index
//! of (time, machine), so the machine task takes only the machines whose
//! time has come, and sleeps until the first key, instead of scanning
//! every tracked machine twice a pass.
//!
//! A key is never later than the machine's due time; the rule itself
//! stays in `idle` (`judge`), which the pass applies to every machine it
//! takes: released if due, moved to its exact time if not yet, dropped if
//! nothing can make it due (held, bound to an activation, closed, not yet
//! durable, or a pool that tracks nothing). Whatever can make a machine due
//! sooner notes it again (the earlier key wins): its last hold given back
//! (`Tenure::give_back`), its registration made durable, a policy set, an
//! activation undone, a release that failed to commit (`Tenure::reopen`).
//! A last use only grows, and an offline license only delays a release
//! (the pass moves the key to its expiry), so neither needs a note.
//!
//! A hold given back changes its tenure's word before it notes, and the
//! pass judges under this lock: a machine the pass found held and dropped
//! is noted again after the pass lets go. Lock order: a session shard, the
//! pool's machines, this index, the pool's licensing; nothing holding this
//! lock takes a shard's or the machines' lock.

use std::collections::BTreeSet;

use super::tenure::Policy;
use crate::core::hash::FastMap;
use crate::core::id::MachineId;
use crate::core::time::Millis;
use crate::sync::{Mutex, MutexGuard};

/// A pool's index of its tracked machines by the earliest time each may
/// come due (shared with each machine's tenure, which notes its machine).
pub struct Due(Mutex<Order>);

/// What the index's lock guards.
#[derive(Default)]
pub(super) struct Order {
    /// (key, machine), earliest first.
    by_time: BTreeSet<(Millis, MachineId)>,
    /// Each indexed machine's key: one entry a machine.
    keys: FastMap<MachineId, Millis>,
    /// The pool's policy, as the keys of notes are computed from it (set
    /// with the pool's, under this lock, before every machine is noted again).
    policy: Policy,
}

impl Default for Due {
    fn default() -> Due {
        Due(Mutex::new(Order::default()))
    }
}

impl std::fmt::Debug for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Due")
    }
}

impl Due {
    /// The index, locked (see the module's lock order).
    pub(super) fn lock(&self) -> MutexGuard<'_, Order> {
        self.0.lock()
    }

    /// Notes a machine last used at `since` (see `Order::note`).
    pub fn note(&self, machine: &MachineId, since: Millis, ephemeral: bool) {
        self.lock().note(machine, since, ephemeral);
    }

    /// The earliest key, if any machine is indexed.
    pub fn first(&self) -> Option<Millis> {
        self.lock().by_time.first().map(|(at, _)| *at)
    }
}

impl Order {
    /// Notes a machine last used at `since`, ephemeral or not: the earliest
    /// it may come due under the pool's policy (an ephemeral machine at its
    /// last use, or one grace period after its registration if it was never
    /// used; any other after the idle limit; never, with no idle limit).
    /// An earlier key already there stays.
    pub fn note(&mut self, machine: &MachineId, since: Millis, ephemeral: bool) {
        let key = match ephemeral || self.policy.ephemeral {
            true => Some(since),
            false => self.policy.idle.map(|d| since.after(d)),
        };
        match (key, self.keys.get(machine)) {
            (Some(key), Some(&old)) if key < old => self.set(machine.clone(), key),
            (Some(key), None) => self.set(machine.clone(), key),
            _ => {}
        }
    }

    /// Sets the pool's policy (before its machines are noted again).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Keys `machine` at exactly `at`.
    pub fn set(&mut self, machine: MachineId, at: Millis) {
        if let Some(old) = self.keys.insert(machine.clone(), at) {
            self.by_time.remove(&(old, machine.clone()));
        }
        self.by_time.insert((at, machine));
    }

    /// Drops `machine` from the index.
    pub fn forget(&mut self, machine: &MachineId) {
        if let Some(old) = self.keys.remove(machine) {
            self.by_time.remove(&(old, machine.clone()));
        }
    }

    /// Takes out the earliest machine keyed at or before `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<MachineId> {
        self.by_time.first().filter(|(at, _)| *at <= now)?;
        let (_, machine) = self.by_time.pop_first()?;
        self.keys.remove(&machine);
        Some(machine)
    }

    /// How many machines are indexed.
    #[cfg(all(test, not(broker_loom)))]
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use std::time::Duration;

    use super::*;

    fn m(s: &str) -> MachineId {
        MachineId::new(s).unwrap()
    }

    #[test]
    fn the_earlier_key_wins_and_only_due_machines_come_out_in_order() {
        let due = Due::default();
        due.lock().set_policy(Policy { idle: Some(Duration::from_millis(100)), ephemeral: false });
        due.note(&m("a"), Millis(50), false); // 150
        due.note(&m("b"), Millis(10), false); // 110
        due.note(&m("a"), Millis(90), false); // 190: later, the 150 stays
        due.note(&m("c"), Millis(0), true); // ephemeral: 0
        assert_eq!(due.first(), Some(Millis(0)));
        let mut order = due.lock();
        assert_eq!(order.len(), 3, "one entry a machine");
        assert_eq!(order.pop_due(Millis(149)), Some(m("c")));
        assert_eq!(order.pop_due(Millis(149)), Some(m("b")));
        assert_eq!(order.pop_due(Millis(149)), None, "a is not due before 150");
        assert_eq!(order.pop_due(Millis(150)), Some(m("a")));
        assert_eq!(order.len(), 0);
    }

    #[test]
    fn a_pool_without_an_idle_limit_keys_only_ephemeral_machines() {
        let due = Due::default();
        due.note(&m("a"), Millis(5), false);
        assert_eq!(due.first(), None, "never due");
        due.note(&m("b"), Millis(5), true);
        let mut order = due.lock();
        order.set(m("b"), Millis(40));
        order.forget(&m("a"));
        assert_eq!(order.pop_due(Millis(39)), None, "moved to its exact time");
        assert_eq!(order.pop_due(Millis(40)), Some(m("b")));
    }
}
