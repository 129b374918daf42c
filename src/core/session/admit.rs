//! Admission into the session table: a new session on a seat of its
//! pool, or the nonce's live session re-attached without a second seat.
//! Apart from the table's other operations because it alone decides where
//! a new session's seat comes from (a shared seat, a reserved one, a held
//! one, a queue's grant) and takes and gives back the caps it counts in.

use std::time::Duration;

use super::shard::{Live, Shard, MAX_SLOTS};
use super::{holds, Lease, SeatFrom, SessionRequest, SessionTable};
use crate::core::error::{Error, Result};
use crate::core::pool::Pool;
use crate::core::seats::Seats;
use crate::core::time::Millis;
use crate::sync::Arc;

impl SessionTable {
    /// Admits a session, or re-attaches the nonce's existing live session
    /// (renewing it) without taking a second seat; `seat` says where a new
    /// session's seat may come from.
    pub fn acquire(
        &self,
        pool: &Arc<Pool>,
        req: SessionRequest,
        now: Millis,
        ttl: Duration,
        seat: SeatFrom,
    ) -> Result<Lease> {
        let index = self.shard_of_nonce(pool, req.nonce);
        let mut shard = self.shards[index].lock.lock();
        let result = match Self::reattach_nonce(&mut shard, pool, &req, now.after(ttl), now) {
            Some(lease) => Ok(lease),
            None => Self::admit_new(&mut shard, pool, req, (now, ttl), seat),
        };
        self.publish(index, &shard);
        result
    }

    /// The nonce's live session, moved to the asking connection and renewed
    /// to `deadline`, if it has one. One whose lease ran out before the
    /// expiry task got to it is ended now, so its seat is free for this
    /// very acquire; the expiry task announces the end (`Shard::found`).
    fn reattach_nonce(
        shard: &mut Shard,
        pool: &Pool,
        req: &SessionRequest,
        deadline: Millis,
        now: Millis,
    ) -> Option<Lease> {
        let id = shard.find_nonce(pool.uid, req.nonce)?;
        if let Some(s) = shard.get_mut(id).filter(|s| s.deadline > now) {
            s.conn = req.conn;
            shard.set_deadline(id, deadline);
            return Some(Lease { session: id, deadline, reattached: true });
        }
        shard.end_found_expired(id, now);
        None
    }

    /// A new session: the machine's tenure and the user's and labels' caps
    /// first (a refusal leaves the pool untouched), then the pool's seat;
    /// the session returns them all when it ends.
    fn admit_new(
        shard: &mut Shard,
        pool: &Arc<Pool>,
        req: SessionRequest,
        (now, ttl): (Millis, Duration),
        seat: SeatFrom,
    ) -> Result<Lease> {
        if shard.len() >= MAX_SLOTS {
            return Err(Error::TableFull);
        }
        Self::take_holds(&req, &seat)?;
        let (lane, started) = Self::seat_for(shard, pool, &req, now, seat);
        let now = started.inspect_err(|_| Self::give_holds(&req))?;
        let deadline = now.after(ttl);
        let live = Live {
            pool: pool.uid,
            machine: req.machine,
            user: req.user,
            nonce: req.nonce.into(),
            conn: req.conn,
            started: now,
            deadline,
            labels: req.labels,
            caps: holds::Caps::new(req.cap, req.label_caps, lane),
            tenure: req.tenure,
        };
        // Invariant: the shard has room (checked above, under the same lock).
        let id = shard.insert(live).expect("shard has a free slot");
        Ok(Lease { session: id, deadline, reattached: false })
    }

    /// A new session's seat: one reserved for its labels first (a pool
    /// without reservations: one branch), else where `seat` says. The
    /// reservation the seat is one of, and when the session starts.
    fn seat_for(
        shard: &mut Shard,
        pool: &Arc<Pool>,
        req: &SessionRequest,
        now: Millis,
        seat: SeatFrom,
    ) -> (Option<Arc<Seats>>, Result<Millis>) {
        let reserved = match (&req.reserved, &seat) {
            (Some(words), SeatFrom::Free | SeatFrom::FreeOrQueue) if pool.open_at(now).is_ok() => {
                Pool::take_reserved_seat(words)
            }
            _ => None,
        };
        match reserved {
            Some(lane) => (Some(lane), Ok(shard.admit_granted(pool, now))),
            None => (seat.lane(), Self::take_seat(shard, pool, now, seat)),
        }
    }

    /// Takes a new session's seat from where `seat` says. A held seat is
    /// already counted in the pool's seats; the session takes it over (and
    /// returns it when it ends, as any other). Says when the session
    /// starts: `now`, or the expiry that freed its seat if that was later
    /// (see `Pool::admitted_at`).
    #[inline]
    fn take_seat(shard: &mut Shard, pool: &Arc<Pool>, now: Millis, seat: SeatFrom) -> Result<Millis> {
        match seat {
            SeatFrom::Free => shard.admit(pool, now, true),
            SeatFrom::FreeOrQueue => shard.admit(pool, now, false),
            SeatFrom::HeldFirst if pool.take_reserved() => {
                shard.adopt(pool, now);
                Ok(now)
            }
            SeatFrom::HeldFirst => shard.admit(pool, now, true),
            SeatFrom::Nowhere => Err(Error::SessionExpired),
            SeatFrom::Granted(grant) => {
                grant.consume();
                Ok(shard.admit_granted(pool, now))
            }
        }
    }
}
