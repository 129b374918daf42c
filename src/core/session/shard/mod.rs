//! One shard of the session table: a slab of sessions, an index from
//! runner nonce to slot, and the shard's deadlines in order.
//!
//! Compact on purpose (a broker holds a million sessions): sessions sit in
//! a dense slab addressed by slot, so a `SessionId` is found without
//! hashing; the nonce index stores bare slot numbers and hashes through the
//! slab; a slot's generation makes stale ids of reused slots miss. Not
//! thread-safe by itself: `SessionTable` holds each shard under its lock.

use std::hash::BuildHasher;

use hashbrown::HashTable;

mod pools;

use super::deadlines::Deadlines;
use super::slab::Slab;
use super::{EndReason, Ended, SessionInfo};
use pools::keep;

use crate::core::hash::FastMap;
use crate::core::id::ConnId;
use crate::core::id::{Email, MachineId, Nonce, SessionId};
use crate::core::pool::Pool;
use crate::core::pool::PoolUid;
use crate::core::time::Millis;
use crate::core::usage::{Accrual, Closed};
use crate::sync::Arc;

/// Bits of a `SessionId` that name the shard (so at most 256 shards).
pub(super) const SHARD_ID_BITS: u32 = 8;
/// Bits that name the slot within a shard.
const SLOT_BITS: u32 = 24;
/// Most sessions one shard can hold.
pub(super) const MAX_SLOTS: usize = 1 << SLOT_BITS;

/// A live session.
pub(super) struct Live {
    /// The pool's uid; the pool itself is in the shard's `pools`.
    pub pool: PoolUid,
    pub machine: MachineId,
    pub user: Email,
    pub nonce: Words,
    pub conn: ConnId,
    pub started: Millis,
    pub deadline: Millis,
    /// Which job holds it; one pointer, none when unlabelled.
    pub labels: crate::value::Labels,
    /// Its user's cap in the pool and its labels' (see `pool::labels`),
    /// those it is counted in, and the reservation whose seat it sits on
    /// (`pool::lanes`; none: a shared seat of the pool).
    pub caps: super::holds::Caps,
    /// Its machine's tenure, in a pool that tracks machine use.
    pub tenure: Option<Arc<crate::core::pool::Tenure>>,
}

/// A runner nonce as two words: a `u128` field would align every session
/// to 16 bytes and pad each slot by 8 (8 MB a million sessions).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Words([u64; 2]);

impl From<Nonce> for Words {
    fn from(n: Nonce) -> Words {
        Words([(n.0 >> 64) as u64, n.0 as u64])
    }
}

impl Words {
    pub fn nonce(self) -> Nonce {
        Nonce((u128::from(self.0[0]) << 64) | u128::from(self.0[1]))
    }
}

struct Slot {
    /// Bumped every time the slot is freed, so old ids stop matching.
    generation: u32,
    /// How far the live session's entry in `deadlines` lies before its
    /// deadline, in ms: a heartbeat moves the deadline alone (see
    /// `next_due`). Kept here, beside `generation`, where it fills what
    /// would be padding: the entry is at `deadline - lag`.
    lag: u32,
    live: Option<Live>,
}

impl Slot {
    /// Where the live session's entry in `deadlines` is.
    fn indexed(&self, live: &Live) -> Millis {
        Millis(live.deadline.0 - u64::from(self.lag))
    }
}

pub(super) struct Shard {
    /// Seals the ids this shard hands out and opens those it is given.
    ids: super::IdCipher,
    /// The last id opened or sealed here, (world's, table's): one request
    /// looks its session up several times, and opening costs a few tens of
    /// nanoseconds; the table opens an id once, to find the shard, and
    /// tells the shard (`know`).
    known: std::cell::Cell<Option<(u64, u64)>>,
    index: u64,
    slots: Slab<Slot>,
    free: Vec<u32>,
    /// Slots of live sessions, found by (pool uid, nonce).
    by_nonce: HashTable<Indexed>,
    hasher: foldhash::fast::RandomState,
    /// Every live session once, under its `indexed` deadline, earliest
    /// first: a lower bound of its deadline, so nothing expires unseen.
    deadlines: Deadlines,
    /// The pools this shard has admitted into, with this shard's share of
    /// their statistics. Holding the `Arc` here (once per pool, not once
    /// per session) keeps reference-count traffic off the admission path.
    pools: FastMap<PoolUid, ShardPool>,
    /// Minutes closed here since the last harvest (see `usage`), at most
    /// `MAX_CLOSED`; past that they are dropped and counted.
    closed: Vec<(PoolUid, Closed)>,
    /// Closed minutes dropped because the harvest fell behind.
    dropped: u64,
    /// Sessions a request found past their deadline before the expiry
    /// task came to them (a late heartbeat, the same nonce acquiring
    /// again), ended there so their seats are free at once, and kept for
    /// the expiry task to announce like any other expiry (`take_found`).
    /// At most one per session that ended, until the task's next pass.
    found: Vec<Ended>,
}

/// An entry of the nonce index: a session's slot, and the hash of its
/// (pool, nonce), so that growing the index rehashes from the index alone
/// (reading each session instead, a cache miss apiece, was a tenth of a
/// million-lease fill) and a probe reads a session only when its hash matches.
#[derive(Clone, Copy)]
struct Indexed {
    slot: u32,
    hash: u32,
}

/// The index's 64-bit hash of a kept 32-bit one: its low bits pick the
/// bucket and its top seven the tag, both from the 32 kept.
fn spread(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

/// A pool as one shard sees it.
pub(super) struct ShardPool {
    pub pool: Arc<Pool>,
    /// Sessions this shard admitted into the pool since start.
    pub admitted: u64,
    /// Acquires this shard refused for quota since start.
    pub rejected: u64,
    /// Sessions of the pool this shard ended since start, by reason.
    pub ends: [u64; 4],
    /// The open minute's activity and the seat time (see `usage`).
    pub accrual: Accrual,
}

impl Shard {
    pub fn new(index: usize, ids: super::IdCipher) -> Shard {
        Shard {
            ids,
            known: std::cell::Cell::new(None),
            index: index as u64,
            slots: Slab::new(),
            free: Vec::new(),
            by_nonce: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            deadlines: Deadlines::default(),
            pools: FastMap::default(),
            found: Vec::new(),
            closed: Vec::new(),
            dropped: 0,
        }
    }

    /// The world's id of the session in `slot`: (generation, slot, shard)
    /// sealed (see `ids`).
    fn id_of(&self, slot: u32) -> SessionId {
        let generation = u64::from(self.slots[slot as usize].generation);
        let inner = (generation << 32) | (u64::from(slot) << SHARD_ID_BITS) | self.index;
        let outer = self.ids.seal(inner);
        self.known.set(Some((outer, inner)));
        SessionId(outer)
    }

    /// Records that the world's `id` is the table's `inner` (already opened).
    pub fn know(&self, id: SessionId, inner: u64) {
        self.known.set(Some((id.0, inner)));
    }

    fn slot_of(&self, id: SessionId) -> Option<usize> {
        let inner = match self.known.get() {
            Some((outer, inner)) if outer == id.0 => inner,
            _ => {
                let inner = self.ids.open(id.0);
                self.known.set(Some((id.0, inner)));
                inner
            }
        };
        if inner & ((1 << SHARD_ID_BITS) - 1) != self.index {
            return None;
        }
        let slot = ((inner >> SHARD_ID_BITS) as usize) & (MAX_SLOTS - 1);
        let s = self.slots.get(slot)?;
        (u64::from(s.generation) == inner >> 32 && s.live.is_some()).then_some(slot)
    }

    pub fn get(&self, id: SessionId) -> Option<&Live> {
        self.slot_of(id).and_then(|s| self.slots[s].live.as_ref())
    }

    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Live> {
        let s = self.slot_of(id)?;
        self.slots[s].live.as_mut()
    }

    /// The 32 bits of a (pool, nonce) hash the nonce index keeps.
    fn nonce_hash(hasher: &foldhash::fast::RandomState, pool: PoolUid, nonce: Nonce) -> u32 {
        (hasher.hash_one((pool, nonce.0)) >> 32) as u32
    }

    /// The live session a runner nonce holds in a pool.
    pub fn find_nonce(&self, pool: PoolUid, nonce: Nonce) -> Option<SessionId> {
        let hash = Self::nonce_hash(&self.hasher, pool, nonce);
        let slots = &self.slots;
        let found = self.by_nonce.find(spread(hash), |e| {
            e.hash == hash
                && slots[e.slot as usize].live.as_ref().is_some_and(|l| l.pool == pool && l.nonce == Words::from(nonce))
        })?;
        Some(self.id_of(found.slot))
    }

    /// Stores a new session; `None` if the shard is full.
    pub fn insert(&mut self, live: Live) -> Option<SessionId> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(Slot { generation: 0, lag: 0, live: None });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let (pool, nonce, deadline) = (live.pool, live.nonce.nonce(), live.deadline);
        let s = &mut self.slots[slot as usize];
        (s.lag, s.live) = (0, Some(live));
        let hash = Self::nonce_hash(&self.hasher, pool, nonce);
        self.by_nonce.insert_unique(spread(hash), Indexed { slot, hash }, |e| spread(e.hash));
        let id = self.id_of(slot);
        self.deadlines.insert(deadline, id);
        Some(id)
    }

    /// Moves a live session's deadline. A later one leaves the session's
    /// entry in `deadlines` where it is, so a heartbeat touches no tree
    /// (`next_due` moves the entry when it comes up, once per lease rather
    /// than once per heartbeat); an earlier one (or one too far on for
    /// the slot's `lag`) moves the entry now.
    pub fn set_deadline(&mut self, id: SessionId, deadline: Millis) {
        let Some(s) = self.slot_of(id) else { return };
        let Shard { slots, deadlines, .. } = self;
        let slot = &mut slots[s];
        let Some(live) = slot.live.as_ref() else { return };
        let indexed = slot.indexed(live);
        match deadline.0.checked_sub(indexed.0).and_then(|lag| u32::try_from(lag).ok()) {
            Some(lag) => slot.lag = lag,
            None => {
                deadlines.remove(indexed, id);
                slot.lag = 0;
                deadlines.insert(deadline, id);
            }
        }
        // Invariant: checked live above; nothing in between frees it.
        slot.live.as_mut().expect("live above").deadline = deadline;
    }

    /// The first session whose deadline is at or before `now`, with its
    /// entry; on the way, moves the entries of sessions renewed since they
    /// were indexed to their deadlines (each past `now`, so this ends).
    /// Each entry handled takes one from `budget`; none is left, `None`.
    pub fn next_due(&mut self, now: Millis, budget: &mut usize) -> Option<(Millis, SessionId)> {
        loop {
            *budget = budget.checked_sub(1)?;
            let (indexed, id) = self.deadlines.first().filter(|(d, _)| *d <= now)?;
            let s = self.slot_of(id);
            let Shard { slots, deadlines, .. } = self;
            let Some(slot) = s.map(|s| &mut slots[s]) else { return Some((indexed, id)) };
            let Some(deadline) = slot.live.as_ref().map(|l| l.deadline).filter(|d| *d > now) else {
                // Due (or, never expected, an entry with no session, which
                // the caller drops): the caller ends it.
                return Some((indexed, id));
            };
            deadlines.remove(indexed, id);
            slot.lag = 0;
            deadlines.insert(deadline, id);
        }
    }

    /// Ends a session: removes it, returns its seat, and says why. Built on
    /// `remove`, so each session ends (and its seat comes back) at most once.
    pub fn end(&mut self, id: SessionId, reason: EndReason, now: Millis) -> Option<Ended> {
        self.finish(id, reason, true, now)
    }

    /// Ends session `id`, found past its deadline by a request at `now`,
    /// keeping its end for the expiry task (`take_found`).
    pub fn end_found_expired(&mut self, id: SessionId, now: Millis) {
        if let Some(ended) = self.end(id, EndReason::Expired, now) {
            self.found.push(ended);
        }
    }

    /// The ends `end_found_expired` kept, to announce.
    pub fn take_found(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.found)
    }

    /// The instant the expiry task should next look at this shard: now
    /// (zero) while it keeps found ends to announce, else its earliest
    /// indexed deadline: no session of the shard expires before it (a
    /// renewed one may expire later).
    pub fn due_at(&self) -> Option<Millis> {
        match self.found.is_empty() {
            true => self.deadlines.first().map(|(d, _)| d),
            false => Some(Millis(0)),
        }
    }

    /// Ends session `id` at `now` because its org moved to another node
    /// (a cluster's handover): its seat time counts, its end does not (the
    /// runner re-attaches there, and the session's end is counted there).
    pub fn hand_on(&mut self, id: SessionId, now: Millis) {
        let _ = self.finish(id, EndReason::ConnectionClosed, false, now);
    }

    /// Ends session `id`: its end counted for `reason` if `counted`.
    fn finish(&mut self, id: SessionId, reason: EndReason, counted: bool, now: Millis) -> Option<Ended> {
        let live = self.remove(id)?;
        live.caps.release();
        let machine_unheld = live.tenure.as_ref().is_some_and(|t| t.give_back(Some(now)) == 0);
        let Shard { pools, closed, dropped, .. } = self;
        // Invariant: as in `pool_of`, the session's pool is registered here.
        let entry = pools.get_mut(&live.pool).expect("a session's pool is registered in its shard");
        entry.ends[reason as usize] += u64::from(counted);
        let counted = counted.then_some(reason as usize);
        entry.accrual.end(live.started, now, counted, &mut keep(closed, dropped, live.pool));
        let pool = &entry.pool;
        if reason == EndReason::Expired {
            pool.note_expiry(now);
        }
        match live.caps.lane() {
            None => pool.return_seat(),
            Some(lane) => pool.return_reserved_seat(lane, true),
        }
        let org = pool.org.clone();
        let pool = pool.id;
        // The session is gone from the table: its names move into the
        // record of its end instead of being copied (a release is hot).
        let Live { machine, user, labels, started, deadline, conn, .. } = live;
        let info = SessionInfo { session: id, pool, machine, user, started, deadline, labels };
        Some(Ended { org, info, conn, reason, at: now, machine_unheld })
    }

    /// A public view of a live session.
    pub fn info(&self, live: &Live, id: SessionId) -> SessionInfo {
        SessionInfo {
            session: id,
            pool: self.pool_of(live).id,
            machine: live.machine.clone(),
            user: live.user.clone(),
            started: live.started,
            deadline: live.deadline,
            labels: live.labels.clone(),
        }
    }

    /// The single removal point: drops the session and its index entries.
    /// Only `end` calls it, and returns the seat for each `Some`.
    fn remove(&mut self, id: SessionId) -> Option<Live> {
        let s = self.slot_of(id)?;
        let slot = &mut self.slots[s];
        let live = slot.live.take()?;
        self.deadlines.remove(slot.indexed(&live), id);
        let hash = Self::nonce_hash(&self.hasher, live.pool, live.nonce.nonce());
        if let Ok(entry) = self.by_nonce.find_entry(spread(hash), |e| e.slot as usize == s) {
            entry.remove();
        }
        let slot = &mut self.slots[s];
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(s as u32);
        Some(live)
    }

    /// Drops a deadline entry with no session behind it (never expected;
    /// keeps the expiry loop terminating whatever happens).
    pub fn forget_deadline(&mut self, deadline: Millis, id: SessionId) {
        self.deadlines.remove(deadline, id);
    }

    /// Live sessions of this shard.
    pub fn iter(&self) -> impl Iterator<Item = (SessionId, &Live)> + '_ {
        self.iter_from(0)
    }

    /// Live sessions in slot order, from slot `first` on.
    pub fn iter_from(&self, first: usize) -> impl Iterator<Item = (SessionId, &Live)> + '_ {
        self.slots.iter_from(first).filter_map(move |(s, slot)| slot.live.as_ref().map(|l| (self.id_of(s as u32), l)))
    }

    /// Every live session, to change in place (never its pool, nonce or deadline).
    pub fn lives_mut(&mut self) -> impl Iterator<Item = &mut Live> + '_ {
        self.slots.iter_mut().filter_map(|slot| slot.live.as_mut())
    }

    pub fn len(&self) -> usize {
        self.by_nonce.len()
    }

    /// The pool a live session of this shard belongs to.
    pub fn pool_of(&self, live: &Live) -> &Arc<Pool> {
        // Invariant: `admit` registered the pool before any session of it
        // was inserted, and entries are never removed.
        &self.pools.get(&live.pool).expect("a session's pool is registered in its shard").pool
    }
}

#[cfg(test)]
mod tests {
    /// A million live sessions are a million slots: a field that pads the
    /// slot costs its size in megabytes (issue 26 holds the broker of a
    /// million sessions to 300 MiB).
    #[test]
    fn a_slot_stays_small() {
        assert!(std::mem::size_of::<super::Slot>() <= 112, "{}", std::mem::size_of::<super::Slot>());
    }
}
