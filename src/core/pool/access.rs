//! Where and how much a pool may be used: its registered machines (capped
//! by the quota, durable before they admit) and its per-user caps.
//!
//! Both change rarely (by registration or by admins) and are read at
//! ticket resolution, not per admission, so each sits behind a plain lock.
//! The epochs here let an admission that raced a removal or a new cap
//! check again after inserting its session.

use super::tenure::Tenure;
use super::Pool;
use crate::core::error::{Error, Result};
use crate::core::id::{Email, MachineId};
use crate::core::seats::{SeatCount, Seats};
use crate::core::time::Millis;
use crate::sync::{Arc, Ordering};

/// Whether a machine registration added a machine or found it already there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Registration {
    /// The machine was already registered; nothing changed.
    Known,
    /// The machine took a new slot; its pending change persists it, or gives the slot back if the commit fails.
    New,
}

/// A machine registration: it counts toward the cap from the moment it is
/// planned, but admits sessions only once its record is durable, so nobody
/// runs on a registration a crash could still lose.
#[derive(Clone, Debug)]
pub(super) struct Machine {
    pub registered: Millis,
    pub committed: bool,
    /// Its holders and last use, in a pool with a machine policy (or for
    /// an ephemeral registration); `None` costs an admission nothing.
    pub tenure: Option<Arc<Tenure>>,
}

impl Machine {
    /// Registered durably and not on its way out (its tenure closed).
    pub fn admits(&self) -> bool {
        self.committed && !self.tenure.as_ref().is_some_and(|t| t.is_closed())
    }
}

impl Pool {
    /// Plans a machine's registration unless the pool's machine count is at
    /// its quota: the machine takes its slot now, and admits sessions once
    /// `restore_machine` applies its committed record. Re-registering a known
    /// machine is idempotent and always allowed, unless its release is
    /// planned (`MachineNotRegistered`: register again once it is done).
    /// `ephemeral` marks the registration so (the pool's policy may too).
    pub fn register_machine(&self, machine: &MachineId, now: Millis, ephemeral: bool) -> Result<Registration> {
        let mut machines = self.machines.lock();
        // A pending registration of the same machine is in flight under the
        // shell's writer lock; reporting it as known takes no second slot.
        if let Some(m) = machines.get(machine) {
            return match m.tenure.as_ref().is_some_and(|t| t.is_closed()) {
                true => Err(Error::MachineNotRegistered),
                false => Ok(Registration::Known),
            };
        }
        self.room_for_machine(machines.len())?;
        let tenure = self.new_tenure(machine, now, ephemeral);
        machines.insert(machine.clone(), Machine { registered: now, committed: false, tenure });
        Ok(Registration::New)
    }

    /// What `register_machine` would answer, registering nothing (the preflight).
    pub fn would_register(&self, machine: &MachineId) -> Result<()> {
        let machines = self.machines.lock();
        match machines.contains_key(machine) {
            true => Ok(()),
            false => self.room_for_machine(machines.len()),
        }
    }

    /// Refuses a new machine when `registered` (pending included) fill the quota.
    fn room_for_machine(&self, registered: usize) -> Result<()> {
        let quota = self.quota();
        if quota == 0 {
            // No licenses at all: say so, rather than "machine limit".
            return Err(Error::QuotaExceeded { quota });
        }
        if registered >= quota as usize {
            return Err(Error::MachineLimit { quota });
        }
        Ok(())
    }

    /// Removes a machine registration; returns whether it was there.
    pub fn forget_machine(&self, machine: &MachineId) -> bool {
        let mut machines = self.machines.lock();
        let removed = machines.remove(machine).is_some();
        self.due.lock().forget(machine);
        drop(machines);
        if removed {
            // Release: pairs with the Acquire in `machine_epoch`; the mutexes
            // around the machine set and the session shards already order the
            // removal, the sweep and a racing acquire (see Broker::admit).
            self.removals.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// `email`'s cap in this pool, if one was ever set.
    pub fn cap_of(&self, email: &Email) -> Option<Arc<Seats>> {
        self.caps.lock().users.get(email).cloned()
    }

    /// How many caps were created (see `cap_epoch`).
    pub fn cap_epoch(&self) -> u64 {
        // Acquire: pairs with the AcqRel in `set_cap`.
        self.cap_epoch.load(Ordering::Acquire)
    }

    /// Sets `email`'s cap to `max` (`None`: unlimited). Returns the cap if
    /// it is new, for the caller to count the user's live sessions into it.
    /// Lowering a cap ends nothing: like a lowered quota, no new session is
    /// admitted until the user is below it.
    pub fn set_cap(&self, email: &Email, max: Option<u32>) -> Option<Arc<Seats>> {
        let limit = max.unwrap_or(u32::MAX);
        let mut caps = self.caps.lock();
        if let Some(cap) = caps.users.get(email) {
            let _ = cap.update(|c| Some(SeatCount { limit, ..c }));
            return None;
        }
        let cap = Arc::new(Seats::new(limit));
        caps.users.insert(email.clone(), cap.clone());
        self.bump_adoptions();
        Some(cap)
    }

    /// After a new cap or new tenures: admissions resolved before it count
    /// themselves in (see `cap_epoch`).
    pub(super) fn bump_adoptions(&self) {
        // AcqRel: the new cap or tenure is in its map before any reader sees the bump.
        self.cap_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Every user cap: (user, max, sessions counted). The places a cap
    /// holds after a restart for runners still to re-attach (`cap_hold`)
    /// are not sessions.
    pub fn caps(&self) -> Vec<(Email, u32, u32)> {
        let held = self.caps_held();
        let row = |(e, w): (&Email, &Arc<Seats>)| {
            let now = w.count();
            (e.clone(), now.limit, now.in_use.saturating_sub(super::cap_hold::held_in(&held, w)))
        };
        let mut out: Vec<_> = self.caps.lock().users.iter().map(row).collect();
        out.sort();
        out
    }

    /// How many machine removals this pool has seen.
    pub fn machine_epoch(&self) -> u64 {
        // Acquire: pairs with the Release in `forget_machine`.
        self.removals.load(Ordering::Acquire)
    }

    /// Applies a committed registration (at startup, or after its commit):
    /// no cap check, the store only ever holds registrations that passed it.
    /// A registration planned in this run keeps its tenure. Durable, it
    /// may come due: noted in the index (`due`).
    pub fn restore_machine(&self, machine: MachineId, registered: Millis, ephemeral: bool) {
        let mut machines = self.machines.lock();
        let m = machines.entry(machine.clone()).or_insert_with(|| {
            let tenure = self.new_tenure(&machine, registered, ephemeral);
            Machine { registered, committed: true, tenure }
        });
        m.committed = true;
        if let Some(t) = &m.tenure {
            t.note();
        }
    }

    /// Whether the machine is registered durably (and so may run sessions).
    pub fn has_machine(&self, machine: &MachineId) -> bool {
        self.machines.lock().get(machine).is_some_and(Machine::admits)
    }

    /// The machine's tenure if it may run sessions: `None` if it may not,
    /// `Some(None)` if its pool tracks nothing (one lock, as `has_machine`).
    pub fn machine_tenure(&self, machine: &MachineId) -> Option<Option<Arc<Tenure>>> {
        self.machines.lock().get(machine).filter(|m| m.admits()).map(|m| m.tenure.clone())
    }

    /// Registered machines with their registration times, sorted by id.
    pub fn machines(&self) -> Vec<(MachineId, Millis)> {
        let machines = self.machines.lock();
        let mut v: Vec<_> =
            machines.iter().filter(|(_, m)| m.committed).map(|(id, m)| (id.clone(), m.registered)).collect();
        v.sort();
        v
    }

    /// How many machines are registered durably (for `status`).
    pub(crate) fn machine_count(&self) -> u32 {
        self.machines.lock().values().filter(|m| m.committed).count() as u32
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;
    use crate::core::id::OrgName;
    use crate::core::pool::{PoolId, PoolUid};

    fn pool(quota: u32) -> Pool {
        Pool::new(PoolUid(1), OrgName::new("acme").unwrap(), PoolId::KRE_DEFAULT, quota, Millis::MAX)
    }

    #[test]
    fn machines_capped_by_quota_and_idempotent() {
        let p = pool(2);
        let m = |s: &str| MachineId::new(s).unwrap();
        assert_eq!(p.register_machine(&m("a"), Millis(1), false), Ok(Registration::New));
        assert_eq!(p.register_machine(&m("a"), Millis(2), false), Ok(Registration::Known));
        assert_eq!(p.register_machine(&m("b"), Millis(3), false), Ok(Registration::New));
        assert_eq!(p.register_machine(&m("c"), Millis(4), false), Err(Error::MachineLimit { quota: 2 }));
        assert!(p.forget_machine(&m("a")));
        assert_eq!(p.register_machine(&m("c"), Millis(5), false), Ok(Registration::New));
    }
}
