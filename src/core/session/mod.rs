//! The live session table and its lease-expiry index.
//!
//! Sessions are spread over shards (see `shard`), each a lock around a slab
//! of sessions, an index from runner nonce to session, and an ordered set of
//! deadlines. A session, its nonce entry and its deadline live in the same
//! shard, so every
//! operation on one session takes exactly one lock, and removing a session
//! from its shard is the single point where its seat is returned: whoever
//! removes it (release, expiry, kill, connection close) returns the seat and
//! names the reason, so a seat comes back exactly once.
//!
//! Each shard publishes its earliest indexed deadline in an atomic so the
//! expiry task finds the next deadline without taking any lock. A
//! heartbeat only moves a session's deadline later, so it leaves the
//! session's entry where it was: the expiry meets it early and moves it then.

mod admit;
mod deadlines;
mod holds;
mod ids;
mod reads;
mod shard;
mod slab;

pub use ids::IdCipher;

use std::time::Duration;

use self::shard::{Shard, SHARD_ID_BITS};
use crate::core::error::{Error, Result};
use crate::core::id::{ConnId, Email, MachineId, Nonce, SessionId};
use crate::core::pool::{Pool, Tenure};
use crate::core::seats::Seats;
use crate::core::time::Millis;
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

/// Why a session ended. Every end carries exactly one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EndReason {
    /// The runner gave it back.
    Released,
    /// Its lease deadline passed without a heartbeat.
    Expired,
    /// An Owner or Admin ended it (kill, machine removal).
    Revoked,
    /// Its connection closed cleanly without releasing first.
    ConnectionClosed,
}

impl EndReason {
    /// Every reason, in the order `Counts::ends` keeps them.
    pub const ALL: [EndReason; 4] =
        [EndReason::Released, EndReason::Expired, EndReason::Revoked, EndReason::ConnectionClosed];

    /// Lowercase name for JSON and logs.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Released => "released",
            EndReason::Expired => "expired",
            EndReason::Revoked => "revoked",
            EndReason::ConnectionClosed => "connection_closed",
        }
    }
}

/// A pool's session statistics: admitted, refused for quota, and ended
/// by reason (`EndReason::ALL` order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sessions admitted.
    pub admitted: u64,
    /// Acquires refused with `QuotaExceeded`.
    pub rejected: u64,
    /// Sessions ended, by reason.
    pub ends: [u64; 4],
}

impl Counts {
    /// Both added up.
    pub fn plus(self, o: Counts) -> Counts {
        let mut ends = self.ends;
        for (e, more) in ends.iter_mut().zip(o.ends) {
            *e += more;
        }
        Counts { admitted: self.admitted + o.admitted, rejected: self.rejected + o.rejected, ends }
    }
}

/// What a new session needs besides its pool.
#[derive(Clone, Debug)]
pub struct SessionRequest {
    /// The registered machine the runner runs on.
    pub machine: MachineId,
    /// The user whose API key acquired it.
    pub user: Email,
    /// The runner instance's nonce (idempotency key).
    pub nonce: Nonce,
    /// The connection asking.
    pub conn: ConnId,
    /// The job's labels.
    pub labels: crate::value::Labels,
    /// The user's cap in the pool, if any: already counted for this
    /// session; the session returns it when it ends.
    pub cap: Option<Arc<Seats>>,
    /// The caps of the labels it carries, in a pool with label caps
    /// (`None` elsewhere, at no allocation): counted for this session as
    /// its cap is.
    pub label_caps: Option<Box<[Arc<Seats>]>>,
    /// The words of the reservations its labels match, in a pool with
    /// reservations (`None` elsewhere): its seat is one of theirs if one
    /// is free, else a shared one.
    pub reserved: Option<Box<[Arc<Seats>]>>,
    /// The machine's tenure, in a pool that tracks machine use: the
    /// session holds it from admission to its end.
    pub tenure: Option<Arc<Tenure>>,
}

/// Where a new session's seat may come from (a live session of the same
/// nonce is always re-attached instead).
#[derive(Debug)]
pub enum SeatFrom {
    /// A free seat under the pool's limit: a plain acquire.
    Free,
    /// The same for a runner that will queue if refused: a refusal is not
    /// counted as rejected (it waits instead).
    FreeOrQueue,
    /// One of the seats held after a restart for the previous run's
    /// sessions while any is left, else a free one: a runner of an earlier
    /// run re-attaching.
    HeldFirst,
    /// None: only the live session may be re-attached (a runner of this
    /// run whose session ended must not come back by re-attaching).
    Nowhere,
    /// The seat the wait queue granted this runner (already counted; if no
    /// session takes it, dropping the grant gives it back).
    Granted(super::queue::Grant),
}

impl SeatFrom {
    /// The reservation a granted seat is one of (`None`: a shared seat, or
    /// no grant).
    fn lane(&self) -> Option<Arc<Seats>> {
        match self {
            SeatFrom::Granted(grant) => grant.lane(),
            _ => None,
        }
    }
}

/// A successful acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The session.
    pub session: SessionId,
    /// When it expires unless renewed.
    pub deadline: Millis,
    /// True when the nonce already held this session (a retry or reconnect).
    pub reattached: bool,
}

/// A lease just renewed, as its holder's new token must describe it
/// (borrowed from the session table, for the duration of `renew`'s callback).
#[derive(Clone, Copy, Debug)]
pub struct Renewed<'a> {
    /// The new deadline.
    pub deadline: Millis,
    /// The session's pool.
    pub pool: super::pool::PoolId,
    /// The machine it runs on.
    pub machine: &'a MachineId,
    /// The runner instance's nonce.
    pub nonce: Nonce,
}

/// A public view of one live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session.
    pub session: SessionId,
    /// Its pool, as `PRODUCT-KIND-TERM`.
    pub pool: super::pool::PoolId,
    /// The machine it runs on.
    pub machine: MachineId,
    /// The user whose key acquired it.
    pub user: Email,
    /// When it started.
    pub started: Millis,
    /// When it expires unless renewed.
    pub deadline: Millis,
    /// The job's labels (pipeline, job), as the runner gave them.
    pub labels: crate::value::Labels,
}

/// Checks that `id` is live in `shard` and that `allow` accepts its holder;
/// returns its deadline. Anything else looks like an ended session, so an id
/// reveals nothing to a caller who may not use it.
fn vet(shard: &Shard, id: SessionId, allow: impl FnOnce(Holder<'_>) -> bool) -> Result<Millis> {
    let s = shard.get(id).ok_or(Error::SessionExpired)?;
    match allow(Holder { pool: shard.pool_of(s), user: &s.user, conn: s.conn }) {
        true => Ok(s.deadline),
        false => Err(Error::SessionExpired),
    }
}

/// Who holds a live session: what a caller is vetted against before it
/// may renew or end it.
#[derive(Clone, Copy)]
pub struct Holder<'a> {
    /// Its pool.
    pub pool: &'a Pool,
    /// The user whose key acquired it.
    pub user: &'a Email,
    /// The connection that acquired (or last re-attached to) it.
    pub conn: ConnId,
}

/// A session that has just ended, for notices, logs and the history.
#[derive(Clone, Debug)]
pub struct Ended {
    /// Its org (the pool is in `info`).
    pub org: crate::core::id::OrgName,
    /// What ended.
    pub info: SessionInfo,
    /// The connection that held it.
    pub conn: ConnId,
    /// Why.
    pub reason: EndReason,
    /// When.
    pub at: Millis,
    /// Its machine's tenure has no holder left (a tracked pool): the
    /// machine may be due for release now.
    pub machine_unheld: bool,
}

/// All live sessions of the broker.
pub struct SessionTable {
    shards: Box<[ShardCell]>,
    /// log2 of the shard count.
    shard_bits: u32,
    /// Seals and opens session ids.
    ids: IdCipher,
}

/// A shard and its published earliest deadline, on cache lines of their
/// own so two cores working different shards never share a line.
#[repr(align(128))]
struct ShardCell {
    lock: Mutex<Shard>,
    /// The shard's earliest deadline (u64::MAX when empty), readable without its lock.
    earliest: AtomicU64,
}

/// Most entries of the expiry index handled (sessions expired, or moved
/// to their renewed deadlines) under one shard lock before letting others in.
const EXPIRE_BATCH: usize = 1024;

impl SessionTable {
    /// A table with `2^shard_bits` shards (more shards, less contention; at most 256).
    /// Ids are sealed with `ids` (see `ids`).
    pub fn new(shard_bits: u32, ids: IdCipher) -> SessionTable {
        let shard_bits = shard_bits.min(SHARD_ID_BITS);
        let n = 1usize << shard_bits;
        SessionTable {
            shards: (0..n)
                .map(|i| ShardCell { lock: Mutex::new(Shard::new(i, ids)), earliest: AtomicU64::new(u64::MAX) })
                .collect(),
            shard_bits,
            ids,
        }
    }

    /// The shard a runner nonce's session lives in (exposed so models can
    /// force same-shard and cross-shard races).
    pub fn shard_of_nonce(&self, pool: &Pool, nonce: Nonce) -> usize {
        // A cheap mix of nonce and pool; nonces are client-chosen random values.
        let x = (nonce.0 as u64) ^ ((nonce.0 >> 64) as u64) ^ pool.uid.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (x >> (64 - self.shard_bits.max(1))) as usize & ((1 << self.shard_bits) - 1)
    }

    /// The shard holding `id`, and `id` opened (see `ids`).
    fn locate(&self, id: SessionId) -> (usize, u64) {
        let inner = self.ids.open(id.0);
        ((inner & ((1 << self.shard_bits) - 1)) as usize, inner)
    }

    /// Locks the shard holding `id`, telling it what `id` opens to.
    fn lock_for(&self, id: SessionId) -> (usize, crate::sync::MutexGuard<'_, Shard>) {
        let (index, inner) = self.locate(id);
        let shard = self.shards[index].lock.lock();
        shard.know(id, inner);
        (index, shard)
    }

    /// Extends a live session's lease to `now + ttl`. `allow` vets the caller
    /// against the session's holder; `then` sees the renewed lease (under
    /// the shard's lock, so without copying it) and makes the result.
    /// A session whose deadline has passed is ended as expired and refused;
    /// the expiry task announces the end at its next pass (`expire`).
    pub fn renew<R>(
        &self,
        id: SessionId,
        now: Millis,
        ttl: Duration,
        allow: impl FnOnce(Holder<'_>) -> bool,
        then: impl FnOnce(Renewed<'_>) -> R,
    ) -> Result<R> {
        let (index, mut shard) = self.lock_for(id);
        if vet(&shard, id, allow)? <= now {
            shard.end_found_expired(id, now);
            self.publish(index, &shard);
            return Err(Error::SessionExpired);
        }
        let deadline = now.after(ttl);
        shard.set_deadline(id, deadline);
        self.publish(index, &shard);
        // Invariant: vetted live above, under this same lock.
        let s = shard.get(id).expect("vetted live above");
        Ok(then(Renewed { deadline, pool: shard.pool_of(s).id, machine: &s.machine, nonce: s.nonce.nonce() }))
    }

    /// Replaces a live session's labels if `allow` accepts its holder,
    /// and moves it into the label caps its new labels match and out of
    /// those they no longer do (counted regardless, as a session older
    /// than a cap: a relabel is never refused).
    pub fn label(
        &self,
        id: SessionId,
        labels: crate::value::Labels,
        allow: impl FnOnce(Holder<'_>) -> bool,
    ) -> Result<()> {
        let (_, mut shard) = self.lock_for(id);
        vet(&shard, id, allow)?;
        if shard.get(id).is_some_and(|s| s.labels == labels) {
            // The same labels (a re-attach's, say): nothing moves.
            return Ok(());
        }
        let caps = shard.get(id).and_then(|s| shard.pool_of(s).label_caps());
        // Invariant: vetted live above, under this same lock.
        let live = shard.get_mut(id).expect("vetted live above");
        live.labels = labels;
        holds::relabel(live, caps.as_deref().map_or(&[], Vec::as_slice));
        Ok(())
    }

    /// Ends a live session at `now` for `reason` if `allow` accepts it, returning its seat.
    pub fn end(
        &self,
        id: SessionId,
        reason: EndReason,
        now: Millis,
        allow: impl FnOnce(Holder<'_>) -> bool,
    ) -> Result<Ended> {
        let (index, mut shard) = self.lock_for(id);
        vet(&shard, id, allow)?;
        let ended = shard.end(id, reason, now).ok_or(Error::SessionExpired)?;
        self.publish(index, &shard);
        Ok(ended)
    }

    /// Ends every live session matching `pred` (admin sweeps: a removed
    /// machine, a revoked grant). Linear in live sessions; admin-rate only.
    pub fn end_where(
        &self,
        reason: EndReason,
        now: Millis,
        pred: impl FnMut(&Pool, &MachineId, &Email) -> bool,
    ) -> Vec<Ended> {
        let mut out = Vec::new();
        self.each_where(pred, |shard, id| out.extend(shard.end(id, reason, now)));
        out
    }

    /// Ends every session `pred` picks because its org moved to another
    /// node (`Shard::hand_on`: seat time counted, the end not).
    pub fn hand_on_where(&self, now: Millis, pred: impl FnMut(&Pool, &MachineId, &Email) -> bool) {
        self.each_where(pred, |shard, id| shard.hand_on(id, now));
    }

    /// Runs `f` on each session `pred` picks, shard by shard under its lock.
    fn each_where(
        &self,
        mut pred: impl FnMut(&Pool, &MachineId, &Email) -> bool,
        mut f: impl FnMut(&mut Shard, SessionId),
    ) {
        for (index, cell) in self.shards.iter().enumerate() {
            let mut shard = cell.lock.lock();
            let ids: Vec<SessionId> =
                shard.iter().filter(|(_, s)| pred(shard.pool_of(s), &s.machine, &s.user)).map(|(id, _)| id).collect();
            for id in ids {
                f(&mut shard, id);
            }
            self.publish(index, &shard);
        }
    }

    /// No live session's lease ends before this (a renewed one may end
    /// later: `expire` then moves it), read without locking.
    pub fn next_deadline(&self) -> Option<Millis> {
        // Acquire pairs with the Release in `publish`; the value is a hint
        // that `expire` re-checks under the shard lock.
        let min = self.shards.iter().map(|c| c.earliest.load(Ordering::Acquire)).min().unwrap_or(u64::MAX);
        (min != u64::MAX).then_some(Millis(min))
    }

    /// Ends every session whose deadline is at or before `now`.
    pub fn expire(&self, now: Millis) -> Vec<Ended> {
        let mut out = Vec::new();
        for (index, cell) in self.shards.iter().enumerate() {
            while cell.earliest.load(Ordering::Acquire) <= now.0 {
                let mut shard = cell.lock.lock();
                out.append(&mut shard.take_found());
                let mut budget = EXPIRE_BATCH;
                while let Some((deadline, id)) = shard.next_due(now, &mut budget) {
                    match shard.end(id, EndReason::Expired, now) {
                        Some(ended) => out.push(ended),
                        // Unreachable while the shard keeps its indexes in
                        // step; dropping the entry keeps this loop finite.
                        None => shard.forget_deadline(deadline, id),
                    }
                }
                self.publish(index, &shard);
            }
        }
        out
    }

    fn publish(&self, index: usize, shard: &Shard) {
        let first = shard.due_at().map_or(u64::MAX, |d| d.0);
        let cell = &self.shards[index].earliest;
        // Relaxed load: only the lock holder stores, so it reads its own
        // last store; skipping unchanged stores keeps the line quiet.
        if cell.load(Ordering::Relaxed) != first {
            // Release: pairs with the Acquire loads in next_deadline/expire.
            cell.store(first, Ordering::Release);
        }
    }
}
