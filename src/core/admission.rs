//! Who may take a seat where: machine registration, session admission and
//! KSE activation, the rules of each in one place.
//!
//! Admission is split in two so the hot path stays cheap without the shell
//! knowing any rule: `resolve` checks everything that only changes when the
//! directory does (membership, the pool, the product's rules, the machine's
//! registration) and hands out a `Ticket`; `admit` takes a seat on a ticket,
//! re-checking only what can change under it (grants, machine removals).
//! The shell may cache a ticket while `Broker::version` is unchanged.

use super::broker::Broker;
use super::directory::Principal;
use super::error::{Error, Result};
use super::id::{ConnId, Email, MachineId, Nonce, OrgName, SessionId};
use super::pending::{Pending, Undo};
use super::pool::{labels, Kind, LabelCaps, Pool, PoolId, Product, Registration, Tenure};
use super::queue::{Deliver, Grant, Joined, Place};
use super::record::{AuditAction, Change, Record};
use super::session::{EndReason, Lease, SeatFrom, SessionRequest};
use super::time::Millis;
use crate::sync::Arc;
use crate::value::Labels;

/// Where a caller wants a seat: an org's pool, from a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The org.
    pub org: OrgName,
    /// The pool within it.
    pub pool: PoolId,
    /// The machine the session or activation runs on.
    pub machine: MachineId,
}

/// A resolved admission: the caller may ask for seats of this pool from
/// this machine, as of the directory version it was resolved at.
pub struct Ticket {
    pub(super) pool: Arc<Pool>,
    pub(super) user: Email,
    machine: MachineId,
    /// The user's cap in the pool, as of resolution, and the pool's cap
    /// epoch before it was looked up (see `admit_from`).
    cap: Option<Arc<crate::core::seats::Seats>>,
    cap_epoch: u64,
    /// The pool's label caps, as of resolution (`None`: it has none, and
    /// an admission pays nothing for them).
    label_caps: Option<LabelCaps>,
    /// The pool's reservations' words, as of resolution (`None`: it has
    /// none). A stale list is harmless: a reservation's seats are held in
    /// the pool's word, and a removed one's word admits nobody.
    reserved: Option<LabelCaps>,
    /// The pool's machine-removal epoch before the machine was seen
    /// registered: if it moved by the time a session is inserted, `admit`
    /// checks the machine again (see `admit`).
    machine_epoch: u64,
    /// The machine's tenure, in a pool with a machine policy: each session
    /// holds it (see `pool::tenure`). `None` elsewhere, at no cost.
    tenure: Option<Arc<Tenure>>,
}

/// What an activation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// A node-locked license is bound to the machine.
    Bound {
        /// It was bound to this machine before; nothing new was taken.
        already: bool,
    },
    /// A floating license opened (or re-attached to) a leased session.
    Leased(Lease),
}

/// Who asks for a seat: the runner instance (its nonce makes a retry find
/// its session instead of a second seat), its connection, its job labels.
#[derive(Clone, Debug)]
pub struct Claimant {
    /// The runner instance's nonce.
    pub nonce: Nonce,
    /// The connection asking (the session's holder connection).
    pub conn: ConnId,
    /// Which pipeline or job it runs (shown with the session).
    pub labels: Labels,
}

/// What asking to wait for a seat gave.
#[derive(Debug)]
pub enum Waited {
    /// A seat was free and nobody waited (or the nonce's session was live).
    Leased(Lease),
    /// Queued: the seat comes through the `Deliver` closure, to `claim`.
    Queued(Place),
}

impl Ticket {
    /// The org of the ticket's pool.
    pub fn org(&self) -> &OrgName {
        &self.pool.org
    }

    /// The ticket's pool.
    pub fn pool(&self) -> PoolId {
        self.pool.id
    }

    /// The machine the ticket admits sessions from.
    pub fn machine(&self) -> &MachineId {
        &self.machine
    }

    /// Whether this ticket was resolved for `target`.
    pub fn is_for(&self, org: &OrgName, pool: PoolId, machine: &MachineId) -> bool {
        self.pool.id == pool && &self.machine == machine && &self.pool.org == org
    }
}

impl Broker {
    /// The pool `org`/`pool`, if the caller is a member of `org`.
    pub(crate) fn member_pool(&self, p: &Principal, org: &OrgName, pool: PoolId) -> Result<Arc<Pool>> {
        p.require_member(org)?;
        self.with_dir(|dir| dir.pool(org, pool).cloned())
    }

    /// Checks the rules that hold until the directory changes and returns a
    /// ticket to `admit` on. A refusal counts in the pool's denials.
    pub fn resolve(&self, p: &Principal, target: &Target) -> Result<Ticket> {
        self.counted(target, self.ticket(p, target))
    }

    /// `resolve`, uncounted (a re-attach's refusals are not denials).
    pub(super) fn ticket(&self, p: &Principal, target: &Target) -> Result<Ticket> {
        let pool = self.member_pool(p, &target.org, target.pool)?;
        // The epoch before the check: a removal after it makes `admit` check again.
        let machine_epoch = pool.machine_epoch();
        // The epoch before the lookups: a cap or tenure created after it makes `admit` check again.
        let cap_epoch = pool.cap_epoch();
        let tenure = match (pool.id.product, pool.id.kind) {
            // KRE runners register their machine first.
            (Product::Kre, _) => pool.machine_tenure(&target.machine).ok_or(Error::MachineNotRegistered)?,
            (Product::Kse, Kind::NodeLocked) => {
                return Err(Error::invalid("pool", "a node-locked KSE license is activated on a machine, not leased"))
            }
            // KSE floating sessions may come from any machine of a licensed user.
            _ => None,
        };
        let caps = pool.caps_for(&p.email);
        let (cap, label_caps, reserved) = (caps.user, caps.labels, caps.reserved);
        let (user, machine) = (p.email.clone(), target.machine.clone());
        Ok(Ticket { pool, user, machine, machine_epoch, cap, cap_epoch, label_caps, reserved, tenure })
    }

    /// Admits a session on a ticket (or re-attaches the nonce's live one).
    /// This is the hot path: no directory lock, and no machine lookup
    /// unless a machine was removed since the ticket was resolved.
    pub fn admit(&self, ticket: &Ticket, nonce: Nonce, conn: ConnId, now: Millis) -> Result<Lease> {
        let admitted =
            self.admit_from(ticket, &Claimant { nonce, conn, labels: Labels::default() }, now, SeatFrom::Free);
        if let Some(why) = admitted.as_ref().err().and_then(Error::denial) {
            ticket.pool.deny(why);
        }
        admitted
    }

    /// Counts `result`'s refusal, if it is a denial, in `target`'s pool:
    /// every admission's refusal is counted here, where it is decided.
    fn counted<T>(&self, target: &Target, result: Result<T>) -> Result<T> {
        if let Some(why) = result.as_ref().err().and_then(Error::denial) {
            self.note_denial(&target.org, target.pool, why);
        }
        result
    }

    /// Admits a session now if a seat is free and nobody waits for one;
    /// otherwise joins the pool's wait queue (first come, first admitted).
    /// A queued runner's seat is handed to `deliver` the moment one frees,
    /// and becomes its session with `claim`. Refusals are an acquire's, or
    /// `QueueFull`; `CeilingReached` asks the shell to raise the ceiling
    /// and call again, as for an acquire.
    pub fn wait(
        &self,
        p: &Principal,
        target: &Target,
        who: &Claimant,
        now: Millis,
        deliver: Deliver,
    ) -> Result<Waited> {
        self.counted(target, self.join(p, target, who, now, deliver))
    }

    fn join(&self, p: &Principal, target: &Target, who: &Claimant, now: Millis, deliver: Deliver) -> Result<Waited> {
        let ticket = self.ticket(p, target)?;
        match self.admit_from(&ticket, who, now, SeatFrom::FreeOrQueue) {
            Err(Error::QuotaExceeded { .. }) => {}
            other => return other.map(Waited::Leased),
        }
        if ticket.pool.quota() == 0 {
            // Nothing will ever free: waiting would only time out.
            return Err(Error::QuotaExceeded { quota: 0 });
        }
        // A queued runner holds its machine (a tracked one) while it waits.
        let hold = ticket.tenure.as_ref().map(|t| Tenure::hold(t, now)).transpose()?;
        let lanes = ticket.reserved.as_deref().and_then(|lanes| labels::matching(lanes, &who.labels));
        match Pool::join_queue(&ticket.pool, (deliver, &who.labels), self.config.max_waiters, lanes.as_deref())? {
            Joined::Seat(grant) => self.admit_from(&ticket, who, now, SeatFrom::Granted(grant)).map(Waited::Leased),
            Joined::Waiting(place) => Ok(Waited::Queued(place.holding(hold))),
        }
    }

    /// Turns a seat the queue granted into the waiter's session, re-checking
    /// everything an acquire checks (the machine, the grant, the
    /// subscription may have changed while it waited). On a refusal the
    /// grant is dropped and its seat goes to the next waiter.
    pub fn claim(&self, p: &Principal, target: &Target, who: &Claimant, now: Millis, grant: Grant) -> Result<Lease> {
        self.counted(target, self.claim_granted(p, target, who, now, grant))
    }

    fn claim_granted(
        &self,
        p: &Principal,
        target: &Target,
        who: &Claimant,
        now: Millis,
        grant: Grant,
    ) -> Result<Lease> {
        let ticket = self.ticket(p, target)?;
        if !Arc::ptr_eq(grant.pool(), &ticket.pool) {
            return Err(Error::invalid("pool", "the seat was granted in another pool"));
        }
        ticket.pool.open_at(now)?;
        self.admit_from(&ticket, who, now, SeatFrom::Granted(grant))
    }

    /// Acquires with `who`'s labels, without waiting (a `Checkout` that
    /// does not queue).
    pub fn acquire_as(&self, p: &Principal, target: &Target, who: &Claimant, now: Millis) -> Result<Lease> {
        let admitted = self.ticket(p, target).and_then(|t| self.admit_from(&t, who, now, SeatFrom::Free));
        self.counted(target, admitted)
    }

    pub(super) fn admit_from(&self, ticket: &Ticket, who: &Claimant, now: Millis, seat: SeatFrom) -> Result<Lease> {
        let pool = &ticket.pool;
        let kse = pool.id.product == Product::Kse;
        if kse && !pool.has_grant(&ticket.user) {
            return Err(Error::NotLicensed);
        }
        // A capped user's new session is counted in their cap (by the
        // session table, after it found no live session of the nonce).
        let (nonce, conn, labels, cap) = (who.nonce, who.conn, who.labels.clone(), ticket.cap.clone());
        let (machine, user, tenure) = (ticket.machine.clone(), ticket.user.clone(), ticket.tenure.clone());
        let label_caps = ticket.label_caps.as_deref().and_then(|caps| labels::matching(caps, &labels));
        let reserved = ticket.reserved.as_deref().and_then(|lanes| labels::matching(lanes, &labels));
        let req = SessionRequest { machine, user, nonce, conn, labels, cap, label_caps, reserved, tenure };
        // A believer (a runner of an earlier run) is counted in its caps, never refused by them.
        let enforce = !matches!(seat, SeatFrom::HeldFirst);
        let lease = self.sessions.acquire(pool, req, now, self.lease_ttl(), seat)?;
        if lease.reattached {
            return Ok(lease);
        }
        if pool.cap_epoch() != ticket.cap_epoch {
            self.adopt_since(pool, lease.session, enforce, now)?;
        }
        // A revoke may have landed between the check above and the insert,
        // its sweep missing this session. Checking again after the insert
        // closes that window: either this check sees the grant gone, or the
        // revoke's sweep (which follows its removal of the grant) sees the
        // session. (Modelled in loom-tests: revoke racing activation.)
        if kse && !pool.has_grant(&ticket.user) {
            let _ = self.end_session(lease.session, EndReason::Revoked, now);
            return Err(Error::NotLicensed);
        }
        // The same for a machine removed meanwhile: either this sees the
        // epoch moved (and checks the machine), or the removal's sweep,
        // which follows the bump, sees the session.
        if !kse && pool.machine_epoch() != ticket.machine_epoch {
            let still = self.sessions.machine_of(lease.session).is_some_and(|m| pool.has_machine(&m));
            if !still {
                let _ = self.end_session(lease.session, EndReason::Revoked, now);
                return Err(Error::MachineNotRegistered);
            }
        }
        Ok(lease)
    }

    /// A cap (or machine tenures) created since a just-admitted session's
    /// ticket was resolved: either its sweep saw this session, or this
    /// sees the epoch moved and counts it here, refusing it if the cap is
    /// full and `enforce` (or the machine's release is planned): the
    /// session is ended then. (Modelled in loom-tests.)
    fn adopt_since(&self, pool: &Pool, session: SessionId, enforce: bool, now: Millis) -> Result<()> {
        let adopted = self
            .sessions
            .adopt_cap(session, enforce, |u| pool.cap_of(u))
            .and_then(|()| self.adopt_label_caps(pool, session, enforce))
            .and_then(|()| self.sessions.adopt_tenure(session, |m| pool.tenure_of(m)));
        if adopted.is_err() {
            let _ = self.end_session(session, EndReason::Revoked, now);
        }
        adopted
    }

    /// Counts a just-admitted session into label caps created since its
    /// ticket was resolved (see `adopt_since`).
    fn adopt_label_caps(&self, pool: &Pool, session: SessionId, enforce: bool) -> Result<()> {
        match pool.label_caps() {
            Some(caps) => self.sessions.adopt_label_caps(session, enforce, &caps),
            None => Ok(()),
        }
    }

    /// `resolve` and `admit` in one call, for callers without a ticket cache.
    pub fn acquire(&self, p: &Principal, target: &Target, nonce: Nonce, conn: ConnId, now: Millis) -> Result<Lease> {
        self.acquire_as(p, target, &Claimant { nonce, conn, labels: Labels::default() }, now)
    }

    /// Whether a machine is already registered in a pool of the caller's org
    /// (the fast path of registration, which needs no durable write).
    pub fn is_registered(&self, p: &Principal, target: &Target) -> Result<bool> {
        Ok(self.member_pool(p, &target.org, target.pool)?.has_machine(&target.machine))
    }

    /// Registers a machine in a pool. A new machine takes its slot of the
    /// machine cap now; the pending change gives it back if the commit fails.
    /// `ephemeral`: its slot is released with its last session.
    pub fn register(
        &self,
        p: &Principal,
        target: &Target,
        now: Millis,
        ephemeral: bool,
    ) -> Result<Pending<Registration>> {
        let pool = self.member_pool(p, &target.org, target.pool)?;
        let Target { org, pool: id, machine } = target.clone();
        let record = match ephemeral {
            true => Record::EphemeralMachine { org, pool: id, machine: machine.clone(), registered: now },
            false => Record::Machine { org, pool: id, machine: machine.clone(), registered: now },
        };
        Ok(match pool.register_machine(&machine, now, ephemeral)? {
            Registration::Known => Pending::done(Registration::Known),
            Registration::New => {
                Pending::reserved(vec![Change::Put(record)], Registration::New, Undo::ForgetMachine(pool, machine))
            }
        })
    }

    /// A licensed user activates KSE on a machine: binds a node-locked
    /// license to it, or opens a leased session on a floating pool. The seat
    /// is taken now; the audit line (and binding) are the pending change.
    pub fn activate(
        &self,
        p: &Principal,
        target: &Target,
        nonce: Nonce,
        conn: ConnId,
        now: Millis,
    ) -> Result<Pending<Activation>> {
        if target.pool.product != Product::Kse {
            return Err(Error::invalid("pool", "KRE licenses are not activated: run `license-broker runner`"));
        }
        if target.pool.kind == Kind::NodeLocked {
            return self.counted(target, self.bind(p, target, now));
        }
        // (Counted by `acquire`.)
        let lease = self.acquire(p, target, nonce, conn, now)?;
        if lease.reattached {
            return Ok(Pending::done(Activation::Leased(lease)));
        }
        let detail = format!("pool={} machine={} floating", target.pool, target.machine);
        let audit = self.audit(&target.org, p, AuditAction::Activated, detail, now);
        Ok(Pending::reserved(vec![audit], Activation::Leased(lease), Undo::EndSession(lease.session)))
    }

    /// Node-locked activation: one machine per licensed user, one seat each.
    fn bind(&self, p: &Principal, target: &Target, now: Millis) -> Result<Pending<Activation>> {
        let Target { org, pool: id, machine } = target;
        let pool = self.member_pool(p, org, *id)?;
        if !pool.has_grant(&p.email) {
            return Err(Error::NotLicensed);
        }
        match pool.binding(&p.email) {
            Some(bound) if &bound == machine => return Ok(Pending::done(Activation::Bound { already: true })),
            Some(bound) => return Err(Error::AlreadyActivated { machine: bound }),
            None => {}
        }
        pool.bind(&p.email, machine, now)?;
        let binding = Record::Binding {
            org: org.clone(),
            pool: *id,
            email: p.email.clone(),
            machine: machine.clone(),
            bound: now,
        };
        let audit = self.audit(org, p, AuditAction::Activated, format!("pool={id} machine={machine}"), now);
        Ok(Pending::reserved(
            vec![Change::Put(binding), audit],
            Activation::Bound { already: false },
            Undo::Unbind(pool, p.email.clone()),
        ))
    }
}
