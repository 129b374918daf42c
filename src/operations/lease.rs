//! Seats: acquire, re-attach, renew, release, register a machine, activate
//! KSE, and the wait queue's two ends (join, claim a granted seat).
//!
//! Every admission passes `admitting` first (a draining broker or a node
//! whose lease lapsed admits nothing), and meets the pool's durable
//! ceiling the same way: the ceiling is raised by a durable write, then the
//! admission is tried again (`with_room`). Refusals are counted by the
//! core where it refuses; the ones a door decides (a connection's queue
//! budget, a wait that timed out) are handed to it with their reason
//! (`deny`). `TicketCache` is what a door keeps per stream so that the hot
//! path skips the directory: the core decides what a ticket allows.

use super::{Caller, Operations};
use crate::core::{
    Activation, Broker, Claimant, ConnId, Deliver, Denial, Error, Grant, KeyHash, Labels, Lease, Millis, Nonce,
    Principal, Registration, Result as CoreResult, SessionId, Target, Ticket, Waited,
};
use crate::proto::{ErrorCode, WireError};

/// Most ceiling raises one admission waits for before giving up. A raise
/// makes room for every admission refused at the ceiling before it (and a
/// quarter more), so one waiting admission rarely needs a second.
const RAISES: usize = 8;

impl Operations {
    /// The hot path: a ticket from the door's cache (resolved on a miss)
    /// and one seat CAS. `None` when the pool's ceiling must be raised
    /// first: `acquire` does that, then admits.
    pub fn admit(
        &self,
        c: Caller<'_>,
        tickets: &mut TicketCache,
        target: &Target,
        (nonce, conn): (Nonce, ConnId),
    ) -> Option<Result<Lease, WireError>> {
        if let Err(e) = self.admitting() {
            return Some(Err(e));
        }
        let ticket = match tickets.get(&self.core, c.p, target) {
            Ok(t) => t,
            Err(e) => return Some(Err(e.into())),
        };
        match self.core.admit(ticket, nonce, conn, c.now) {
            Err(Error::CeilingReached) => None,
            other => Some(other.map_err(Into::into)),
        }
    }

    /// An acquire, raising the pool's ceiling as it needs to.
    pub async fn acquire(
        &self,
        c: Caller<'_>,
        target: &Target,
        nonce: Nonce,
        conn: ConnId,
    ) -> Result<Lease, WireError> {
        self.admitting()?;
        self.with_room(target, || self.core.acquire(c.p, target, nonce, conn, c.now)).await
    }

    /// An acquire that does not wait, with the job's labels (`who`).
    pub async fn acquire_as(&self, c: Caller<'_>, target: &Target, who: &Claimant) -> Result<Lease, WireError> {
        self.admitting()?;
        self.with_room(target, || self.core.acquire_as(c.p, target, who, c.now)).await
    }

    /// A runner keeps its lease across a restart or a lost connection, on
    /// the strength of what `vouch` checks (its door's session token): the
    /// lease's deadline as the token states it, and whether the token is of
    /// an earlier run (then one of the seats held for that run may be
    /// taken). Refused while draining before the token is looked at, and
    /// when the token's deadline has passed. `labels`: the job's, when the
    /// runner said them (`ReattachLabelled`; see `Broker::reattach_as`).
    pub async fn reattach(
        &self,
        c: Caller<'_>,
        target: &Target,
        (nonce, conn): (Nonce, ConnId),
        labels: Option<&Labels>,
        vouch: impl FnOnce() -> Result<(Millis, bool), WireError>,
    ) -> Result<Lease, WireError> {
        self.admitting()?;
        let (deadline, earlier) = vouch()?;
        if deadline <= c.now {
            return Err(WireError::new(
                ErrorCode::SessionExpired,
                "the lease's deadline passed before it was re-attached",
            ));
        }
        let core = &self.core;
        let Some(labels) = labels else {
            return self.with_room(target, || core.reattach(c.p, target, nonce, conn, c.now, earlier)).await;
        };
        let who = Claimant { nonce, conn, labels: labels.clone() };
        self.with_room(target, || core.reattach_as(c.p, target, &who, c.now, earlier)).await
    }

    /// Heartbeat: the session's new deadline, made into the door's answer
    /// by `answer` (the QUIC door adds a token for the new deadline).
    pub fn renew<R>(
        &self,
        c: Caller<'_>,
        session: SessionId,
        answer: impl FnOnce(crate::core::Renewed<'_>) -> R,
    ) -> Result<R, WireError> {
        // A node whose claim lapsed extends nobody's belief in a seat.
        self.valid()?;
        // A lease found run out is ended by the core, its end kept for the
        // expiry task, which needs no wake: it sleeps until the earliest
        // deadline, at or before this one's, so it is due already.
        Ok(self.core.renew_with(c.p, session, c.now, answer)?)
    }

    /// The holder gives its seat back.
    pub fn release(&self, c: Caller<'_>, session: SessionId) -> Result<(), WireError> {
        let ended = self.core.release(c.p, session, c.now)?;
        self.ended(ended);
        Ok(())
    }

    /// A connection closed cleanly: the sessions it held end.
    pub fn close_connection(&self, conn: ConnId, held: Vec<SessionId>) {
        let ended = self.core.close_connection(conn, held, self.clock.now());
        self.announce(ended);
    }

    /// Registers a machine in a pool (`ephemeral`: released with its last
    /// session); true when it is new there.
    pub async fn register(&self, c: Caller<'_>, target: &Target, ephemeral: bool) -> Result<bool, WireError> {
        self.admitting()?;
        if self.core.is_registered(c.p, target)? {
            return Ok(false);
        }
        let _writer = self.writer.lock().await;
        let planned = self.core.register(c.p, target, c.now, ephemeral);
        if let Err(crate::core::Error::MachineLimit { quota }) = &planned {
            self.machine_limit(target, *quota, c.now);
        }
        let registration = self.settle(planned?).await?;
        // A registration no session uses is due after a grace: the machine
        // task must know when to look.
        self.wake_machines();
        Ok(registration == Registration::New)
    }

    /// KSE activation: a node-locked binding or a floating lease, audited durably.
    pub async fn activate(
        &self,
        c: Caller<'_>,
        target: &Target,
        nonce: Nonce,
        conn: ConnId,
    ) -> Result<Activation, WireError> {
        self.admitting()?;
        let _writer = self.writer.lock().await;
        let pending = self.with_room(target, || self.core.activate(c.p, target, nonce, conn, c.now)).await?;
        self.settle(pending).await
    }

    /// Admits now if a seat is free and nobody waits, else joins the
    /// pool's queue: `deliver` gets the seat when one frees (see `claim`).
    /// `make` builds each attempt's deliverer (a ceiling raise retries).
    pub async fn join_queue(
        &self,
        c: Caller<'_>,
        target: &Target,
        who: &Claimant,
        mut make: impl FnMut() -> Deliver,
    ) -> Result<Waited, WireError> {
        self.admitting()?;
        self.with_room(target, || self.core.wait(c.p, target, who, c.now, make())).await
    }

    /// Turns a granted seat into the waiter's session, with every rule
    /// checked again: the key (`key`: the waiter's, looked up again), the
    /// org still served here, the machine, the grant, the subscription.
    pub fn claim(
        &self,
        key: &KeyHash,
        target: &Target,
        who: &Claimant,
        grant: Grant,
    ) -> Result<(Principal, Lease), WireError> {
        let p = self.core.authenticate(key)?;
        // Seconds may have passed since the request arrived: is the org still served here?
        self.owning(Some(&target.org))?;
        self.admitting()?;
        let lease = self.core.claim(&p, target, who, self.clock.now(), grant)?;
        Ok((p, lease))
    }

    /// Counts a refusal decided by a door's budget or deadline (a
    /// connection's wait budget, a wait that timed out) in the pool's
    /// denials, as the core counts its own.
    pub fn deny(&self, target: &Target, why: Denial) {
        self.core.note_denial(&target.org, target.pool, why);
    }

    /// Runs `admit` until it stops meeting the pool's ceiling, raising the
    /// ceiling durably before each retry.
    async fn with_room<T>(&self, target: &Target, mut admit: impl FnMut() -> CoreResult<T>) -> Result<T, WireError> {
        for _ in 0..RAISES {
            match admit() {
                Err(Error::CeilingReached) => self.raise_ceiling(&target.org, target.pool).await?,
                other => return other.map_err(Into::into),
            }
        }
        Err(WireError::new(ErrorCode::Internal, "the pool's seat ceiling could not be raised in time; retry"))
    }
}

/// Admission tickets a stream has resolved, valid while the directory
/// version is unchanged: saves the directory lock and the machine lookup on
/// every acquire. The core decides what a ticket allows; this only caches.
#[derive(Default)]
pub struct TicketCache {
    version: u64,
    entries: Vec<Ticket>,
}

/// Most tickets (pool × machine pairs) a stream remembers.
const TICKETS: usize = 64;

impl TicketCache {
    /// The cached ticket for `target`, resolving (and caching) it on a miss.
    fn get(&mut self, core: &Broker, p: &Principal, target: &Target) -> CoreResult<&Ticket> {
        let version = core.version();
        if version != self.version {
            self.entries.clear();
            self.version = version;
        }
        let found = self.entries.iter().position(|t| t.is_for(&target.org, target.pool, &target.machine));
        let index = match found {
            Some(i) => i,
            None => {
                let ticket = core.resolve(p, target)?;
                if self.entries.len() >= TICKETS {
                    self.entries.remove(0);
                }
                self.entries.push(ticket);
                self.entries.len() - 1
            }
        };
        Ok(&self.entries[index])
    }
}
