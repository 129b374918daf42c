//! How long a machine's registration lives when nobody uses it: the pool's
//! machine policy (an idle limit, ephemeral registrations) and, for each
//! machine of a pool that has one, its `Tenure`: who holds it now and
//! when it was last used.
//!
//! A pool without a policy tracks nothing: its machines have no tenure,
//! its sessions carry none, and an admission there costs nothing more.
//! In a pool with one, every session and every queued runner holds its
//! machine's tenure (one compare-and-swap to take, one to give back), and
//! the expiry task releases a machine only by closing its tenure with a
//! compare-and-swap that expects the exact word it judged idle: a session
//! started (or ended) in between changes the word, so the close fails and
//! the machine stays. A closed tenure admits nothing; its release commits,
//! or the tenure reopens. (Modelled in loom-tests.)

use std::time::Duration;

use super::due::Due;
use crate::core::id::MachineId;
use crate::core::time::Millis;
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering};

/// A pool's machine policy (`pool set --machine-idle`, `--ephemeral`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// How long a machine with no session, activation, offline license or
    /// queued runner stays registered; `None`: forever.
    pub idle: Option<Duration>,
    /// Every registration is ephemeral: released with its last session.
    pub ephemeral: bool,
}

impl Policy {
    /// Whether machines of the pool need a tenure at all.
    pub fn tracks(self) -> bool {
        self.idle.is_some() || self.ephemeral
    }
}

/// One tracked machine's holders and last use.
///
/// The word: bit 63 closed (its release is planned), bits 32..=62 a
/// wrapping count of holds given back (so a hold taken and given back
/// between the expiry task's look and its close still changes the word),
/// bits 0..=31 the holds now (live sessions and queued runners).
#[derive(Debug)]
pub struct Tenure {
    word: AtomicU64,
    /// When it was last used (registered, a session ended, a runner queued).
    last_use: AtomicU64,
    /// Whether it was ever used (a session ended on it, a runner queued on
    /// it, a policy found it), not only registered: said here, not guessed
    /// from the last use, which a use within the millisecond of the
    /// registration leaves equal to it.
    used: AtomicBool,
    /// Registered ephemeral (`runner --ephemeral`), whatever the pool's policy.
    pub ephemeral: bool,
    /// Its pool's index of machines by due time, and its machine there:
    /// noted when its last hold is given back or it reopens (`pool::due`).
    index: Option<(Arc<Due>, MachineId)>,
}

const CLOSED: u64 = 1 << 63;
const HOLDS: u64 = (1 << 32) - 1;
/// The given-back count, shifted down.
const GIVEN: u64 = (1 << 31) - 1;

/// What the expiry task judged idle: the word it saw and the last use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quiet {
    word: u64,
    /// When the machine was last used.
    pub since: Millis,
    /// Whether it was ever used (`Tenure::used`): a registration never
    /// used waits a grace for its first session instead.
    pub used: bool,
}

impl Tenure {
    /// A tenure last used at `at`, held by nobody.
    pub fn new(at: Millis, ephemeral: bool) -> Arc<Tenure> {
        Tenure::with_index(at, ephemeral, None)
    }

    /// A tenure as `new`, of `machine`, which notes it in `due`.
    pub(super) fn indexed(at: Millis, ephemeral: bool, due: Arc<Due>, machine: MachineId) -> Arc<Tenure> {
        Tenure::with_index(at, ephemeral, Some((due, machine)))
    }

    fn with_index(at: Millis, ephemeral: bool, index: Option<(Arc<Due>, MachineId)>) -> Arc<Tenure> {
        let (word, last_use, used) = (AtomicU64::new(0), AtomicU64::new(at.0), AtomicBool::new(false));
        Arc::new(Tenure { word, last_use, used, ephemeral, index })
    }

    /// Notes the machine in its pool's index: it may come due from its
    /// last use on (see `pool::due`).
    pub(super) fn note(&self) {
        if let Some((due, machine)) = &self.index {
            due.note(machine, self.last_use(), self.ephemeral);
        }
    }

    /// Takes a hold unless the machine's release is planned (or, beyond
    /// any session table's size, 2^32 - 1 holds are taken already).
    pub fn take(&self) -> bool {
        // AcqRel: a close that succeeds after this must see the hold, and
        // one that succeeded before it is seen here (the word is one RMW order).
        let open = |w: u64| w & CLOSED == 0 && w & HOLDS < HOLDS;
        self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| open(w).then_some(w + 1)).is_ok()
    }

    /// Gives a hold back, the machine last used at `now` (`None`: no new
    /// use); returns the holds left.
    pub fn give_back(&self, now: Option<Millis>) -> u32 {
        if let Some(now) = now {
            self.used(now);
        }
        // AcqRel: the last-use store above is seen by whoever sees this word.
        let before = self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            // Invariant: every give-back follows its take, so holds > 0.
            debug_assert!(w & HOLDS > 0, "tenure given back twice");
            let given = ((w >> 32) & GIVEN).wrapping_add(1) & GIVEN;
            Some((w & CLOSED) | given << 32 | (w & HOLDS).saturating_sub(1))
        });
        // Invariant: the closure never refuses.
        let left = ((before.unwrap_or_else(|w| w) & HOLDS) as u32).saturating_sub(1);
        if left == 0 {
            // After the word changed: a pass that saw it held notes it after.
            self.note();
        }
        left
    }

    /// Marks the machine used at `now` (never moves the mark back).
    pub fn used(&self, now: Millis) {
        // Relaxed (both): published by the word's RMW that follows
        // (give_back, take) or read as a hint that a close re-judges (`quiet`).
        self.last_use.fetch_max(now.0, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
    }

    /// When the machine was last used.
    pub fn last_use(&self) -> Millis {
        // Relaxed: see `used`.
        Millis(self.last_use.load(Ordering::Relaxed))
    }

    /// Live sessions and queued runners on the machine.
    pub fn holds(&self) -> u32 {
        (self.word.load(Ordering::Acquire) & HOLDS) as u32
    }

    /// The machine's state if nobody holds it and it is open.
    pub fn quiet(&self) -> Option<Quiet> {
        // Acquire: pairs with give_back's release, so `last_use` is the
        // one stored before the word was seen.
        let word = self.word.load(Ordering::Acquire);
        // Relaxed: as `last_use`, published by the word's RMW.
        let used = || self.used.load(Ordering::Relaxed);
        (word & (CLOSED | HOLDS) == 0).then(|| Quiet { word, since: self.last_use(), used: used() })
    }

    /// Closes the tenure if its word is still the one judged quiet: from
    /// then on nobody takes a hold. False if anything happened since.
    pub fn close(&self, seen: Quiet) -> bool {
        // AcqRel: see `take`.
        self.word.compare_exchange(seen.word, seen.word | CLOSED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Opens a closed tenure again (its release was not committed).
    pub fn reopen(&self) {
        // AcqRel: see `take`.
        self.word.fetch_and(!CLOSED, Ordering::AcqRel);
        self.note();
    }

    /// Whether its release is planned.
    pub fn is_closed(&self) -> bool {
        self.word.load(Ordering::Acquire) & CLOSED != 0
    }
}

impl Tenure {
    /// A queued runner's hold, the machine used at `now`; refused once
    /// the machine's release is planned.
    pub fn hold(tenure: &Arc<Tenure>, now: Millis) -> crate::core::error::Result<WaiterHold> {
        tenure.used(now);
        match tenure.take() {
            true => Ok(WaiterHold(tenure.clone())),
            false => Err(crate::core::error::Error::MachineNotRegistered),
        }
    }
}

/// A queued runner's hold on its machine: given back when the runner's
/// place is dropped (it was admitted, gave up, or its connection closed).
#[derive(Debug)]
pub struct WaiterHold(pub(crate) Arc<Tenure>);

impl Drop for WaiterHold {
    fn drop(&mut self) {
        // The runner was last seen when it queued (`Broker::join` marked it).
        let _ = self.0.give_back(None);
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_hold_taken_and_given_back_defeats_a_close_judged_before_it() {
        let t = Tenure::new(Millis(0), false);
        let seen = t.quiet().unwrap();
        assert!(t.take());
        assert_eq!(t.quiet(), None, "held");
        t.give_back(Some(Millis(5)));
        assert!(!t.close(seen), "something happened since it was judged");
        let now = t.quiet().unwrap();
        assert_eq!(now.since, Millis(5));
        assert!(t.close(now));
        assert!(!t.take(), "closed: nobody takes it");
        t.reopen();
        assert!(t.take());
    }
}
