//! A durable change the core has planned (and, where seats compete, already
//! reserved in memory), waiting for the store's verdict.
//!
//! The caller commits `changes()` to its store and hands the result back to
//! `settle`: on success the changes are applied to memory; on failure the
//! reservation is undone. The undo travels with the change, so no caller
//! has to remember which undo belongs to which request, and forgetting to
//! settle is a compile-time warning (`#[must_use]`), not a leaked seat.

use super::broker::Broker;
use super::id::{Email, MachineId, OfflineId, SessionId};
use super::pool::Pool;
use super::record::Change;
use super::session::{EndReason, Ended};
use super::time::Millis;
use crate::sync::Arc;

/// Planned durable changes, the value they produce, and how to undo what
/// was reserved if they cannot be committed.
#[must_use = "commit its changes, then settle it with the commit's result"]
pub struct Pending<T> {
    changes: Vec<Change>,
    value: T,
    undo: Undo,
}

/// What a failed commit must take back from memory.
pub(crate) enum Undo {
    /// Nothing was reserved (admin plans, idempotent repeats).
    Nothing,
    /// A machine registration took a slot of the pool's machine cap.
    ForgetMachine(Arc<Pool>, MachineId),
    /// A (floating KSE) session took a seat.
    EndSession(SessionId),
    /// A node-locked activation took a seat.
    Unbind(Arc<Pool>, Email),
    /// An offline license took a seat and is tracked for expiry.
    CancelOffline(Arc<Pool>, OfflineId, Millis),
    /// Machines whose release was planned stay (see `machines`).
    Reopen(Vec<Arc<super::pool::Tenure>>),
}

impl<T> Pending<T> {
    /// Changes with nothing reserved in memory: applying them is the whole effect.
    pub fn plan(changes: Vec<Change>, value: T) -> Pending<T> {
        Pending { changes, value, undo: Undo::Nothing }
    }

    /// A result that needs no durable write at all.
    pub fn done(value: T) -> Pending<T> {
        Pending::plan(Vec::new(), value)
    }

    pub(crate) fn reserved(changes: Vec<Change>, value: T, undo: Undo) -> Pending<T> {
        Pending { changes, value, undo }
    }

    /// What the store must commit, atomically (empty: nothing to commit).
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// The value the change will produce, before it is settled.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Ends the change with the store's verdict: `Ok` applies it to memory
    /// and returns its value with any sessions the change ended (a removed
    /// machine's, a revoked grant's); `Err` undoes the reservation and
    /// passes the error on. `now` is when the verdict came (the time any
    /// session the change ends ends at).
    pub fn settle<E>(self, core: &Broker, committed: Result<(), E>, now: Millis) -> Result<(T, Vec<Ended>), E> {
        match committed {
            Ok(()) => {
                let ended = core.apply(&self.changes, now);
                Ok((self.value, ended))
            }
            Err(e) => {
                self.undo.run(core, now);
                Err(e)
            }
        }
    }
}

impl Undo {
    fn run(self, core: &Broker, now: Millis) {
        match self {
            Undo::Nothing => {}
            Undo::ForgetMachine(pool, machine) => {
                pool.forget_machine(&machine);
            }
            Undo::EndSession(session) => {
                let _ = core.end_session(session, EndReason::Released, now);
            }
            Undo::Unbind(pool, email) => {
                pool.unbind(&email);
            }
            Undo::CancelOffline(pool, id, expires) => {
                pool.cancel_offline(id);
                core.untrack_offline(id, expires);
            }
            Undo::Reopen(tenures) => tenures.iter().for_each(|t| t.reopen()),
        }
    }
}
