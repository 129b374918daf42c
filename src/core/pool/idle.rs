//! Which of a pool's machines have gone unused: the pool's machine policy,
//! the tenures it gives its machines, and the expiry's judgement of them.
//!
//! Read by registration, the expiry task and the lists, never per
//! admission. A machine is due for release when nobody holds its tenure
//! (no live session, no queued runner), no node-locked activation is bound
//! to it, any offline license bound to it has expired, and it has been
//! unused for the pool's idle limit (ephemeral: at once after its last
//! session; a registration never used gets one grace period to start one).

use std::time::Duration;

use super::access::Machine;
use super::tenure::{Policy, Quiet, Tenure};
use super::Pool;
use crate::core::id::MachineId;
use crate::core::time::Millis;
use crate::sync::{Arc, Ordering};

/// One registered machine as `machine list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineUse {
    /// The machine.
    pub machine: MachineId,
    /// When it registered.
    pub registered: Millis,
    /// When it was last used, where the pool tracks it (`None`: a pool
    /// without a machine policy, which keeps no such mark).
    pub last_use: Option<Millis>,
    /// Live sessions and queued runners on it now (tracked pools only).
    pub holds: u32,
    /// Released with its last session.
    pub ephemeral: bool,
}

impl Pool {
    /// The pool's machine policy.
    pub fn policy(&self) -> Policy {
        *self.policy.lock()
    }

    /// A new machine's tenure, if the pool (or the registration) asks for one.
    pub(super) fn new_tenure(&self, machine: &MachineId, now: Millis, ephemeral: bool) -> Option<Arc<Tenure>> {
        let indexed = || Tenure::indexed(now, ephemeral, self.due.clone(), machine.clone());
        (ephemeral || self.policy().tracks()).then(indexed)
    }

    /// Sets the policy. Machines without a tenure get one, counted as used
    /// at `now` (a policy never releases at once what it finds: each
    /// machine's idle time starts when it is set). Bumps the adoption
    /// epoch: the broker then counts the live sessions into the new
    /// tenures (`Broker::follow`), and an admission that raced it counts
    /// its own (`admit_from`). Every tracked machine is noted again in the
    /// index under the new policy (`due`).
    pub fn set_policy(&self, policy: Policy, now: Millis) {
        *self.policy.lock() = policy;
        let mut machines = self.machines.lock();
        let mut added = false;
        for (id, m) in machines.iter_mut().filter(|(_, m)| m.tenure.is_none() && policy.tracks()) {
            let tenure = Tenure::indexed(now, false, self.due.clone(), id.clone());
            tenure.used(now);
            m.tenure = Some(tenure);
            added = true;
        }
        let mut due = self.due.lock();
        due.set_policy(policy);
        for (id, t) in machines.iter().filter_map(|(id, m)| Some((id, m.tenure.as_ref()?))) {
            due.note(id, t.last_use(), t.ephemeral);
        }
        drop((due, machines));
        if added {
            self.bump_adoptions();
        }
    }

    /// Notes `machine` in the index again: something that kept it (an
    /// activation) is gone, so it may come due sooner.
    pub(super) fn note_machine(&self, machine: &MachineId) {
        if let Some(t) = self.machines.lock().get(machine).and_then(|m| m.tenure.as_ref()) {
            t.note();
        }
    }

    /// The tenure of a machine, if it has one (open or closed).
    pub fn tenure_of(&self, machine: &MachineId) -> Option<Arc<Tenure>> {
        self.machines.lock().get(machine).and_then(|m| m.tenure.clone())
    }

    /// Closes the tenure of committed machines due for release at `now`,
    /// at most `most` of them, and returns them. `grace` is how long a
    /// registration never used may wait for its first session. Takes only
    /// the machines the index (`due`) keys at or before `now`: each is
    /// judged, and released, moved to when it comes due, or dropped until
    /// something notes it again.
    pub fn close_idle(&self, now: Millis, grace: Duration, most: usize) -> Vec<(MachineId, Arc<Tenure>)> {
        let policy = self.policy();
        let machines = self.machines.lock();
        let mut index = self.due.lock();
        let mut out = Vec::new();
        while out.len() < most {
            let Some(id) = index.pop_due(now) else { break };
            let Some(m) = machines.get(&id) else { continue };
            match self.judge(&id, m, policy, grace) {
                Some((_, _, at)) if at > now => index.set(id, at),
                // A failed close: a hold was taken since; its give-back notes it.
                Some((t, quiet, _)) if t.close(quiet) => out.push((id, t.clone())),
                _ => {}
            }
        }
        out
    }

    /// When the first of the pool's machines may come due (a hint for the
    /// machine task's sleep, never later than the first one due;
    /// `close_idle` judges).
    pub fn next_idle(&self) -> Option<Millis> {
        self.due.first()
    }

    /// A machine's tenure, its quiet state and when it comes due, if it is
    /// open, unheld and due at all: not while a node-locked activation is
    /// bound to it, nor before an offline license bound to it expires.
    fn judge<'m>(
        &self,
        id: &MachineId,
        m: &'m Machine,
        policy: Policy,
        grace: Duration,
    ) -> Option<(&'m Arc<Tenure>, Quiet, Millis)> {
        let t = m.tenure.as_ref().filter(|_| m.admits())?;
        let quiet = t.quiet()?;
        let due = due(&quiet, m.registered, t.ephemeral || policy.ephemeral, policy.idle, grace)?;
        if !self.bound_to(id).is_empty() {
            return None;
        }
        Some((t, quiet, self.active_offline_for(id).map_or(due, |until| due.max(until))))
    }

    /// Every committed machine with its use, sorted by id.
    pub fn machine_uses(&self) -> Vec<MachineUse> {
        let policy = self.policy();
        let machines = self.machines.lock();
        let mut v: Vec<MachineUse> = machines
            .iter()
            .filter(|(_, m)| m.committed)
            .map(|(id, m)| MachineUse {
                machine: id.clone(),
                registered: m.registered,
                last_use: m.tenure.as_ref().map(|t| t.last_use()),
                holds: m.tenure.as_ref().map_or(0, |t| t.holds()),
                ephemeral: m.tenure.as_ref().is_some_and(|t| t.ephemeral) || policy.ephemeral,
            })
            .collect();
        v.sort_by(|a, b| a.machine.cmp(&b.machine));
        v
    }

    /// Every tracked machine's last use (what the checkpoint keeps).
    pub fn last_uses(&self) -> Vec<(MachineId, Millis)> {
        let machines = self.machines.lock();
        let mut v: Vec<_> =
            machines.iter().filter_map(|(id, m)| Some((id.clone(), m.tenure.as_ref()?.last_use()))).collect();
        v.sort();
        v
    }

    /// Restores what a checkpoint kept (after the machines): their last
    /// uses, and how many machines were released before.
    pub fn restore_last_uses(&self, uses: &[(MachineId, Millis)], expired: u64) {
        // Relaxed: a statistic, restored before anything reads it.
        self.expired.fetch_max(expired, Ordering::Relaxed);
        let machines = self.machines.lock();
        for (id, at) in uses {
            // The record keeps times, not uses: a last use after the
            // registration is one (within its millisecond is taken as none).
            let Some((t, registered)) = machines.get(id).and_then(|m| Some((m.tenure.as_ref()?, m.registered))) else {
                continue;
            };
            if *at > registered {
                t.used(*at);
            }
        }
    }

    /// Counts a machine released unused.
    pub fn count_expired(&self) {
        // Relaxed: a statistic.
        self.expired.fetch_add(1, Ordering::Relaxed);
    }

    /// Machines released unused since the pool was created.
    pub fn expired(&self) -> u64 {
        // Relaxed: a statistic.
        self.expired.load(Ordering::Relaxed)
    }
}

/// When a machine judged `quiet` (registered at `registered`) is due.
fn due(quiet: &Quiet, registered: Millis, ephemeral: bool, idle: Option<Duration>, grace: Duration) -> Option<Millis> {
    match ephemeral {
        // Never used: one grace period to start its first session.
        true if !quiet.used => Some(registered.after(grace)),
        true => Some(quiet.since),
        false => idle.map(|d| quiet.since.after(d)),
    }
}
