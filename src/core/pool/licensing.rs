//! A pool's durable seat holders besides sessions: KSE grants (who is
//! licensed), node-locked activations (user → machine, a seat each) and
//! offline licenses (a seat each until they expire).
//!
//! `core::licensing` plans these changes; this file only holds them and
//! takes or returns their seats (see `limit`). Changed only by admin
//! requests and activations, which the shell serialises.

use serde::{Deserialize, Serialize};

use super::Pool;
use crate::core::error::Result;
use crate::core::hash::FastMap;
use crate::core::id::{Email, MachineId, OfflineId};
use crate::core::time::Millis;

/// What the pool's `licensing` lock guards.
#[derive(Default)]
pub(super) struct Licensing {
    /// Licensed users (KSE) and when each was granted.
    grants: FastMap<Email, Millis>,
    /// Node-locked activations: user → machine; each holds a seat.
    bindings: FastMap<Email, (MachineId, Millis)>,
    /// Every offline license created from the pool, expired ones included.
    offline: Vec<OfflineEntry>,
}

/// An offline license as the pool tracks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineEntry {
    /// Unique id.
    pub id: OfflineId,
    /// The machine it is bound to.
    pub machine: MachineId,
    /// When it was created.
    pub issued: Millis,
    /// When its seat comes back.
    pub expires: Millis,
    /// Who created it.
    pub created_by: Email,
    /// Whether it still holds its seat.
    pub active: bool,
}

impl Pool {
    /// Whether `email` holds a grant (KSE licensed user).
    pub fn has_grant(&self, email: &Email) -> bool {
        self.licensing.lock().grants.contains_key(email)
    }

    /// Licensed users: email, when granted, and the machine a node-locked
    /// activation bound them to.
    pub fn grants(&self) -> Vec<(Email, Millis, Option<MachineId>)> {
        let l = self.licensing.lock();
        let mut v: Vec<_> =
            l.grants.iter().map(|(e, t)| (e.clone(), *t, l.bindings.get(e).map(|(m, _)| m.clone()))).collect();
        v.sort();
        v
    }

    /// How many users hold a grant.
    pub fn grant_count(&self) -> usize {
        self.licensing.lock().grants.len()
    }

    /// Records a grant (idempotent).
    pub fn restore_grant(&self, email: &Email, at: Millis) {
        self.licensing.lock().grants.entry(email.clone()).or_insert(at);
    }

    /// Drops a grant; returns whether it was there.
    pub fn forget_grant(&self, email: &Email) -> bool {
        self.licensing.lock().grants.remove(email).is_some()
    }

    /// The machine a user's node-locked license is activated on.
    pub fn binding(&self, email: &Email) -> Option<MachineId> {
        self.licensing.lock().bindings.get(email).map(|(m, _)| m.clone())
    }

    /// Users whose node-locked license is activated on `machine`.
    pub fn bound_to(&self, machine: &MachineId) -> Vec<Email> {
        self.licensing.lock().bindings.iter().filter(|(_, (m, _))| m == machine).map(|(e, _)| e.clone()).collect()
    }

    /// Activates a user's license on a machine, taking a seat.
    pub fn bind(&self, email: &Email, machine: &MachineId, at: Millis) -> Result<()> {
        let mut l = self.licensing.lock();
        if l.bindings.contains_key(email) {
            return Ok(());
        }
        self.take_durable(true)?;
        l.bindings.insert(email.clone(), (machine.clone(), at));
        Ok(())
    }

    /// Restores a persisted activation at start (idempotent; no quota check:
    /// it passed one when it was made).
    pub fn restore_binding(&self, email: &Email, machine: &MachineId, at: Millis) {
        let mut l = self.licensing.lock();
        if !l.bindings.contains_key(email) {
            let _ = self.take_durable(false);
            l.bindings.insert(email.clone(), (machine.clone(), at));
        }
    }

    /// Frees a user's activation and its seat; returns the machine it was on.
    pub fn unbind(&self, email: &Email) -> Option<MachineId> {
        let (machine, _) = self.licensing.lock().bindings.remove(email)?;
        self.return_durable();
        // The machine may come due now (outside the licensing lock: `due`).
        self.note_machine(&machine);
        Some(machine)
    }

    /// The expiry of the active offline license bound to `machine`, if any.
    pub fn active_offline_for(&self, machine: &MachineId) -> Option<Millis> {
        self.licensing.lock().offline.iter().find(|o| o.active && &o.machine == machine).map(|o| o.expires)
    }

    /// Records a new offline license, taking a seat.
    pub fn reserve_offline(&self, entry: OfflineEntry) -> Result<()> {
        let mut l = self.licensing.lock();
        self.take_durable(true)?;
        l.offline.push(entry);
        Ok(())
    }

    /// Restores a persisted offline license (idempotent): it holds a seat
    /// until the broker's first expiry pass finds it expired. Returns
    /// whether it was new to memory.
    pub fn restore_offline(&self, entry: OfflineEntry) -> bool {
        let mut l = self.licensing.lock();
        if l.offline.iter().any(|o| o.id == entry.id) {
            return false;
        }
        if entry.active {
            let _ = self.take_durable(false);
        }
        l.offline.push(entry);
        true
    }

    /// Undoes `reserve_offline` whose commit failed (the pending change's undo).
    pub fn cancel_offline(&self, id: OfflineId) {
        let mut l = self.licensing.lock();
        let Some(i) = l.offline.iter().position(|o| o.id == id) else { return };
        let entry = l.offline.remove(i);
        if entry.active {
            self.return_durable();
        }
        drop(l);
        // The machine may come due sooner (outside the licensing lock: `due`).
        self.note_machine(&entry.machine);
    }

    /// Returns an offline license's seat at its expiry (once).
    pub fn expire_offline(&self, id: OfflineId) -> bool {
        let mut l = self.licensing.lock();
        match l.offline.iter_mut().find(|o| o.id == id && o.active) {
            Some(o) => {
                o.active = false;
                self.return_durable();
                true
            }
            None => false,
        }
    }

    /// Every offline license of the pool, oldest first.
    pub fn offline(&self) -> Vec<OfflineEntry> {
        self.licensing.lock().offline.clone()
    }

    /// Grants, activations and offline licenses holding a seat (for `status`).
    pub(crate) fn licensing_counts(&self) -> (u32, u32, u32) {
        let l = self.licensing.lock();
        (l.grants.len() as u32, l.bindings.len() as u32, l.offline.iter().filter(|o| o.active).count() as u32)
    }
}
