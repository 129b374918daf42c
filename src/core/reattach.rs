//! Re-attaching: a runner keeps its lease across a broker restart, a
//! takeover or a lost connection, on the strength of its session token
//! (checked by the shell). Apart from `admission` because a runner of an
//! earlier run is admitted by its own rules: into a seat held for that
//! run, counted in its caps past their limits (it held its seat when that
//! run ended, and a cap never cuts a session), and taking the places its
//! caps held for it (`pool::cap_hold`).

use super::admission::{Claimant, Target};
use super::broker::Broker;
use super::directory::Principal;
use super::error::Result;
use super::id::{ConnId, Nonce};
use super::session::{Lease, SeatFrom};
use super::time::Millis;
use crate::value::Labels;

impl Broker {
    /// A runner re-attaches to its lease: to its live session if this run
    /// has one for the nonce; else, if its token came from an earlier run
    /// (`earlier_run`), to one of the seats held for that run's sessions,
    /// or a free seat like any acquire; else (this run's session ended) it
    /// is refused. The shell has checked the runner's signed session token
    /// first (issued by this broker, to this user, for this pool, machine
    /// and nonce, its lease not yet expired); the core re-checks
    /// everything else as for an acquire, but for the caps: a runner of an
    /// earlier run held its seat when that run ended, so it is counted in
    /// its user's cap (and its labels' caps), never refused by one. Says
    /// nothing of labels (a version 2 to 6 `Reattach`): a new session has
    /// none, a live one keeps its own.
    pub fn reattach(
        &self,
        p: &Principal,
        target: &Target,
        nonce: Nonce,
        conn: ConnId,
        now: Millis,
        earlier_run: bool,
    ) -> Result<Lease> {
        let who = Claimant { nonce, conn, labels: Labels::default() };
        self.believer(p, target, &who, now, earlier_run)
    }

    /// `reattach` with the job's labels (`who.labels`, a version 7
    /// `ReattachLabelled`): a new session carries them from its first
    /// instant, counted in the label caps they match (past their limits,
    /// as its user's cap); this run's live session is relabelled as
    /// `label` would (into the caps of its new labels, out of the others).
    pub fn reattach_as(
        &self,
        p: &Principal,
        target: &Target,
        who: &Claimant,
        now: Millis,
        earlier_run: bool,
    ) -> Result<Lease> {
        let lease = self.believer(p, target, who, now, earlier_run)?;
        if lease.reattached {
            // Ended meanwhile (a kill, an expiry): refused as a renewal would be.
            self.label(p, lease.session, who.labels.clone())?;
        }
        Ok(lease)
    }

    /// A re-attach's admission. A runner of an earlier run in a new
    /// session takes one of the places its labels' caps hold for that
    /// run's runners, if any are left (`Pool::reattached`).
    fn believer(&self, p: &Principal, target: &Target, who: &Claimant, now: Millis, earlier: bool) -> Result<Lease> {
        let ticket = self.ticket(p, target)?;
        // Came back already this hold: the token is replayed (see `may_return`).
        let earlier = earlier && ticket.pool.may_return(who.nonce.0);
        let lease = self.admit_from(&ticket, who, now, believer_seat(earlier));
        match &lease {
            Ok(l) if earlier && !l.reattached => ticket.pool.reattached(&ticket.user, &who.labels),
            // Its own session of this run, live: not a return.
            Ok(_) if earlier => ticket.pool.unreturn(who.nonce.0),
            Err(_) if earlier => ticket.pool.unreturn(who.nonce.0),
            _ => {}
        }
        lease
    }
}

/// Where a re-attaching runner's new session may sit: one of the seats
/// held for an earlier run's runners (or a free one), or, for a runner of
/// this run whose session ended, nowhere.
fn believer_seat(earlier_run: bool) -> SeatFrom {
    match earlier_run {
        true => SeatFrom::HeldFirst,
        false => SeatFrom::Nowhere,
    }
}
