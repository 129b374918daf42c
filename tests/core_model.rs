//! Model-based test of the core: random sequences of operations against
//! `Broker`, each result compared with a small sequential reference model
//! written plainly here. Time is driven explicitly. Machines come and go
//! too: a pool's machine policy (idle limit, ephemeral), ephemeral
//! registrations, and the expiry that releases unused machines. And seats
//! reserved for a job label: sessions carrying it take them first, others
//! never; a reservation made on a full pool is owed the next seats freed;
//! lowering one gives back its free seats, and the others as their
//! sessions end.

use std::collections::BTreeMap;
use std::time::Duration;

use license_broker::core::testkit::Fixture;
use license_broker::core::Policy;
use license_broker::core::{
    Claimant, ConnId, EndReason, Error, Labels, Lease, MachineId, Millis, Nonce, PoolId, Registration, SessionId,
};
use proptest::prelude::*;

const TTL_MS: u64 = 10_000;
const MACHINES: [&str; 4] = ["m0", "m1", "m2", "m3"];

#[derive(Clone, Debug)]
enum Op {
    Acquire { nonce: u8, machine: usize, conn: u64, labelled: bool },
    Release { pick: usize },
    Renew { pick: usize },
    Kill { pick: usize },
    Close { conn: u64 },
    Register { machine: usize },
    RemoveMachine { machine: usize },
    SetQuota { quota: u32 },
    Advance { ms: u64 },
    Expire,
    RegisterEphemeral { machine: usize },
    SetPolicy { idle_ms: Option<u64>, ephemeral: bool },
    ExpireMachines,
    Reserve { seats: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, 0..MACHINES.len(), 0u64..3, any::<bool>())
            .prop_map(|(nonce, machine, conn, labelled)| Op::Acquire { nonce, machine, conn, labelled }),
        2 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        3 => any::<usize>().prop_map(|pick| Op::Renew { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Kill { pick }),
        1 => (0u64..3).prop_map(|conn| Op::Close { conn }),
        3 => (0..MACHINES.len()).prop_map(|machine| Op::Register { machine }),
        1 => (0..MACHINES.len()).prop_map(|machine| Op::RemoveMachine { machine }),
        1 => (0u32..5).prop_map(|quota| Op::SetQuota { quota }),
        3 => (0u64..2 * TTL_MS).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Expire),
        2 => (0..MACHINES.len()).prop_map(|machine| Op::RegisterEphemeral { machine }),
        1 => (prop::option::of(1_000u64..3 * TTL_MS), any::<bool>())
            .prop_map(|(idle_ms, ephemeral)| Op::SetPolicy { idle_ms, ephemeral }),
        3 => Just(Op::ExpireMachines),
        2 => (0u32..4).prop_map(|seats| Op::Reserve { seats }),
    ]
}

/// The reference: everything in plain maps, one step at a time.
#[derive(Default)]
struct Reference {
    quota: u32,
    machines: BTreeMap<usize, RefMachine>,
    /// nonce → live session.
    live: BTreeMap<u8, RefSession>,
    policy: Policy,
    /// The `pipeline=release` reservation: seats reserved (0: none).
    want: u32,
    /// Seats it holds (fewer than `want` while owed).
    held: u32,
    /// Which reservation is the current one: sessions on an earlier
    /// (removed) one each hold a seat of the pool until they end.
    lane: u32,
    /// Sessions a request found run out and ended, whose ends the next
    /// expiry pass announces.
    found: Vec<SessionId>,
}

/// A registered machine as the reference sees it.
#[derive(Clone, Copy, Debug)]
struct RefMachine {
    registered: u64,
    ephemeral: bool,
    /// When it was last used, once its pool tracks it: registered (or the
    /// tracking policy's setting), then each of its sessions' ends.
    last_use: Option<u64>,
    /// Whether it was ever used: a session ended on it while tracked, or a
    /// tracking policy found it (then counted as used). An ephemeral one
    /// never used waits one TTL for its first session; a used one goes
    /// with its last session, even within its registration's millisecond.
    used: bool,
}

#[derive(Clone, Copy, Debug)]
struct RefSession {
    id: SessionId,
    machine: usize,
    conn: u64,
    deadline: u64,
    /// The reservation whose seat it sits on (`None`: a shared seat).
    lane: Option<u32>,
}

impl Reference {
    /// Sessions on the current reservation's seats.
    fn on_lane(&self) -> u32 {
        self.live.values().filter(|s| s.lane == Some(self.lane)).count() as u32
    }

    /// Seats the pool's word counts: every session elsewhere, and the
    /// reservation's held seats or the sessions on them, the more.
    fn counted(&self) -> u32 {
        let elsewhere = self.live.values().filter(|s| s.lane != Some(self.lane)).count() as u32;
        elsewhere + self.held.max(self.on_lane())
    }

    /// Seats freed go to the reservation first while it is owed some.
    fn fill(&mut self) {
        while self.held < self.want && self.counted() < self.quota {
            self.held += 1;
        }
    }

    /// Where a new session's seat comes from: `Some(lane)` a reserved one,
    /// `Some(None)` a shared one, `None` nowhere (the quota).
    fn seat_for(&self, labelled: bool) -> Option<Option<u32>> {
        if labelled && self.want > 0 && self.on_lane() < self.held {
            return Some(Some(self.lane));
        }
        // Seats owed to the reservation hold everyone else back.
        (self.counted() < self.quota && self.held >= self.want).then_some(None)
    }

    /// `pool reserve --seats seats`: lowered, it gives back its free seats;
    /// raised (or new), it takes back its sessions' seats, then what is
    /// free, and is owed the rest.
    fn reserve(&mut self, seats: u32) {
        if self.want == 0 && seats > 0 {
            self.lane += 1;
            self.held = 0;
        }
        // Lowered, it keeps what its sessions sit on up to `seats`; raised,
        // it takes back first the seats of sessions past its limit (the
        // pool's word already counts them), then what is free.
        self.held = self.held.min(seats).max(self.on_lane().min(seats));
        self.want = seats;
        if seats == 0 {
            self.lane += 1;
        }
        self.fill();
    }

    fn by_id(&self, id: SessionId) -> Option<u8> {
        self.live.iter().find(|(_, s)| s.id == id).map(|(n, _)| *n)
    }

    fn min_deadline(&self) -> Option<u64> {
        self.live.values().map(|s| s.deadline).min()
    }

    /// A session on `machine` ended at `now`: a tracked machine was used then.
    fn ended_on(&mut self, machine: usize, now: u64) {
        let Some(m) = self.machines.get_mut(&machine) else { return };
        if let Some(last) = m.last_use.as_mut() {
            *last = (*last).max(now);
            m.used = true;
        }
    }

    /// Removes the sessions `gone` selects, marking their machines used at `now`.
    fn end_where(&mut self, now: u64, gone: impl Fn(&RefSession) -> bool) -> Vec<SessionId> {
        let ended: Vec<RefSession> = self.live.values().filter(|s| gone(s)).copied().collect();
        self.live.retain(|_, s| !gone(s));
        ended.iter().for_each(|s| self.ended_on(s.machine, now));
        ended.into_iter().map(|s| s.id).collect()
    }

    /// The machines due for release at `now`: unheld, and unused for the
    /// policy's idle limit (ephemeral: since their last session; never
    /// used: one lease TTL after registering).
    fn due(&self, now: u64) -> Vec<usize> {
        let held = |m: usize| self.live.values().any(|s| s.machine == m);
        let due = |m: &RefMachine| -> Option<u64> {
            let since = m.last_use?;
            match m.ephemeral || self.policy.ephemeral {
                true if !m.used => Some(m.registered + TTL_MS),
                true => Some(since),
                false => self.policy.idle.map(|d| since + d.as_millis() as u64),
            }
        };
        self.machines.iter().filter(|(i, m)| !held(**i) && due(m).is_some_and(|d| d <= now)).map(|(i, _)| *i).collect()
    }
}

fn real(quota: u32) -> Fixture {
    Fixture::new(quota, 2, Duration::from_millis(TTL_MS))
}

const BASE: u64 = 1_795_000_000_000;

/// The job label the reservation is for, carried by labelled acquires.
fn label() -> (String, String) {
    ("pipeline".to_string(), "release".to_string())
}

/// Who acquires: `labelled` ones carry the reservation's label.
fn claimant(nonce: u8, conn: u64, labelled: bool) -> Claimant {
    let labels = Labels::new(labelled.then(label)).unwrap();
    Claimant { nonce: Nonce(nonce.into()), conn: ConnId(conn), labels }
}

fn run(initial_quota: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut run = Run::new(initial_quota);
    for op in ops {
        run.step(op)?;
        // After every step: seats freed went to the reservation first, and
        // the numbers users see agree with the model.
        run.m.fill();
        run.agrees()?;
    }
    Ok(())
}

/// The real core and the reference side by side, at the same time.
struct Run {
    r: Fixture,
    m: Reference,
    now: u64,
    /// Every session id ever issued, so ops can target ended ones too.
    issued: Vec<SessionId>,
}

/// Each side's list of sessions or machines, in one order to compare.
fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

impl Run {
    fn new(quota: u32) -> Run {
        let m = Reference { quota, ..Reference::default() };
        Run { r: real(quota), m, now: BASE, issued: Vec::new() }
    }

    fn t(&self) -> Millis {
        Millis(self.now)
    }

    /// An issued session (live or ended) picked by `pick`.
    fn pick(&self, pick: usize) -> SessionId {
        self.issued[pick % self.issued.len()]
    }

    /// Applies `op` to both sides and checks its answer.
    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Acquire { nonce, machine, conn, labelled } => self.acquire(nonce, machine, conn, labelled),
            Op::Release { .. } | Op::Renew { .. } | Op::Kill { .. } if self.issued.is_empty() => Ok(()),
            Op::Release { pick } => self.release(self.pick(pick)),
            Op::Renew { pick } => self.renew(self.pick(pick)),
            Op::Kill { pick } => self.kill(self.pick(pick)),
            Op::Close { conn } => self.close(conn),
            Op::Register { machine } => self.register(machine, false),
            Op::RegisterEphemeral { machine } => self.register(machine, true),
            Op::SetPolicy { idle_ms, ephemeral } => {
                self.set_policy(Policy { idle: idle_ms.map(Duration::from_millis), ephemeral });
                Ok(())
            }
            Op::ExpireMachines => self.expire_machines(),
            Op::RemoveMachine { machine } => self.remove_machine(machine),
            Op::SetQuota { quota } => self.set_quota(quota),
            Op::Advance { ms } => {
                self.now += ms;
                Ok(())
            }
            Op::Expire => self.expire(),
            Op::Reserve { seats } => self.reserve(seats),
        }
    }

    /// The operator sets the quota: refused below the reservations.
    fn set_quota(&mut self, quota: u32) -> Result<(), TestCaseError> {
        let (r, t) = (&self.r, self.t());
        let planned = r.broker.plan_set_pool(&r.operator, &r.org, PoolId::KRE_DEFAULT, quota, t);
        if quota < self.m.want {
            prop_assert_eq!(planned, Err(Error::ReservedPastQuota { quota, reserved: self.m.want }));
            return Ok(());
        }
        r.broker.apply(&planned.unwrap(), t);
        self.m.quota = quota;
        Ok(())
    }

    /// An acquire: refused on an unregistered machine, a re-attach while
    /// the nonce's lease runs, else admitted on a reserved or shared seat.
    fn acquire(&mut self, nonce: u8, machine: usize, conn: u64, labelled: bool) -> Result<(), TestCaseError> {
        let now = self.now;
        let (r, who) = (&self.r, claimant(nonce, conn, labelled));
        let got = r.broker.acquire_as(&r.owner, &r.target(MACHINES[machine]), &who, self.t());
        if !self.m.machines.contains_key(&machine) {
            prop_assert_eq!(got, Err(Error::MachineNotRegistered));
            return Ok(());
        }
        if let Some(s) = self.m.live.get_mut(&nonce) {
            if s.deadline > now {
                s.deadline = now + TTL_MS;
                s.conn = conn;
                let lease = got.map_err(|e| TestCaseError::fail(format!("reattach refused: {e}")))?;
                prop_assert_eq!((lease.session, lease.reattached, lease.deadline.0), (s.id, true, s.deadline));
                return Ok(());
            }
            // Its lease ran out: the acquire ends it now (announced by the expiry).
            let id = s.id;
            let ended = self.m.end_where(now, |x| x.id == id);
            self.m.found.extend(ended);
        }
        self.admit(got, nonce, machine, conn, labelled)
    }

    /// A new session: on a reserved seat for a labelled acquire while the
    /// reservation holds a free one, else on a shared seat unless the quota
    /// (or seats owed to the reservation) leave none.
    fn admit(
        &mut self,
        got: Result<Lease, Error>,
        nonce: u8,
        machine: usize,
        conn: u64,
        labelled: bool,
    ) -> Result<(), TestCaseError> {
        self.m.fill();
        let Some(lane) = self.m.seat_for(labelled) else {
            prop_assert_eq!(got, Err(Error::QuotaExceeded { quota: self.m.quota }));
            return Ok(());
        };
        let lease = got.map_err(|e| TestCaseError::fail(format!("admission refused: {e}")))?;
        prop_assert!(!lease.reattached);
        prop_assert!(!self.issued.contains(&lease.session), "session id reused");
        self.issued.push(lease.session);
        let s = RefSession { id: lease.session, machine, conn, deadline: self.now + TTL_MS, lane };
        self.m.live.insert(nonce, s);
        Ok(())
    }

    fn release(&mut self, id: SessionId) -> Result<(), TestCaseError> {
        let got = self.r.broker.release(&self.r.owner, id, self.t());
        match self.m.by_id(id) {
            Some(_) => {
                self.m.end_where(self.now, |s| s.id == id);
                prop_assert_eq!(got.map(|e| e.reason), Ok(EndReason::Released));
            }
            None => prop_assert_eq!(got.map(|e| e.reason), Err(Error::SessionExpired)),
        }
        Ok(())
    }

    /// A heartbeat: extends a running lease; one that ran out is ended.
    fn renew(&mut self, id: SessionId) -> Result<(), TestCaseError> {
        let now = self.now;
        let got = self.r.broker.renew(&self.r.owner, id, self.t());
        match self.m.by_id(id) {
            Some(n) if self.m.live[&n].deadline > now => {
                self.m.live.get_mut(&n).unwrap().deadline = now + TTL_MS;
                prop_assert_eq!(got, Ok(Millis(now + TTL_MS)));
            }
            Some(_) => {
                let ended = self.m.end_where(now, |s| s.id == id);
                self.m.found.extend(ended);
                prop_assert_eq!(got, Err(Error::SessionExpired));
            }
            None => prop_assert_eq!(got, Err(Error::SessionExpired)),
        }
        Ok(())
    }

    fn kill(&mut self, id: SessionId) -> Result<(), TestCaseError> {
        let got = self.r.broker.kill(&self.r.owner, &self.r.org, id, self.t());
        match self.m.by_id(id) {
            Some(_) => {
                self.m.end_where(self.now, |s| s.id == id);
                prop_assert_eq!(got.map(|e| e.reason), Ok(EndReason::Revoked));
            }
            None => prop_assert!(matches!(got, Err(Error::NotFound { .. })), "expected NOT_FOUND"),
        }
        Ok(())
    }

    /// A connection closed: its sessions end.
    fn close(&mut self, conn: u64) -> Result<(), TestCaseError> {
        let ended = self.r.broker.close_connection(ConnId(conn), self.issued.clone(), self.t());
        let got = sorted(ended.into_iter().map(|e| e.info.session).collect());
        let want = sorted(self.m.end_where(self.now, |s| s.conn == conn));
        prop_assert_eq!(got, want);
        Ok(())
    }

    /// A registration: known, refused by the quota or the machine limit, or new.
    fn register(&mut self, machine: usize, ephemeral: bool) -> Result<(), TestCaseError> {
        let (now, t) = (self.now, self.t());
        let (r, m) = (&self.r, &mut self.m);
        let got = r.broker.register(&r.owner, &r.target(MACHINES[machine]), t, ephemeral).map(|p| r.commit(p));
        if m.machines.contains_key(&machine) {
            prop_assert_eq!(got, Ok(Registration::Known));
        } else if m.quota == 0 {
            // A pool with no licenses says so, rather than "machine limit".
            prop_assert_eq!(got, Err(Error::QuotaExceeded { quota: 0 }));
        } else if m.machines.len() as u32 >= m.quota {
            prop_assert_eq!(got, Err(Error::MachineLimit { quota: m.quota }));
        } else {
            prop_assert_eq!(got, Ok(Registration::New));
            let last_use = (ephemeral || m.policy.tracks()).then_some(now);
            m.machines.insert(machine, RefMachine { registered: now, ephemeral, last_use, used: false });
        }
        Ok(())
    }

    /// A machine policy: a tracking one starts every machine's last use now.
    fn set_policy(&mut self, policy: Policy) {
        let (r, t) = (&self.r, self.t());
        r.broker.apply(&r.broker.plan_set_policy(&r.operator, &r.org, PoolId::KRE_DEFAULT, policy, t).unwrap(), t);
        if policy.tracks() {
            let found = self.m.machines.values_mut().filter(|x| x.last_use.is_none());
            found.for_each(|x| (x.last_use, x.used) = (Some(self.now), true));
        }
        self.m.policy = policy;
    }

    /// The machine expiry releases exactly the machines due.
    fn expire_machines(&mut self) -> Result<(), TestCaseError> {
        let got = sorted(self.r.expire_machines(self.t()).into_iter().map(|e| e.machine.to_string()).collect());
        let want: Vec<String> = sorted(self.m.due(self.now).into_iter().map(|i| MACHINES[i].to_string()).collect());
        self.m.machines.retain(|i, _| !want.contains(&MACHINES[*i].to_string()));
        prop_assert_eq!(got, want);
        Ok(())
    }

    /// Removing a machine ends its sessions.
    fn remove_machine(&mut self, machine: usize) -> Result<(), TestCaseError> {
        let (r, t) = (&self.r, self.t());
        let got = r.broker.plan_remove_machine(&r.owner, &r.org, None, &MachineId::new(MACHINES[machine]).unwrap(), t);
        if !self.m.machines.contains_key(&machine) {
            prop_assert!(matches!(got, Err(Error::NotFound { .. })), "expected NOT_FOUND");
            return Ok(());
        }
        let ended = sorted(r.broker.apply(&got.unwrap(), t).into_iter().map(|e| e.info.session).collect());
        let want = sorted(self.m.live.values().filter(|s| s.machine == machine).map(|s| s.id).collect());
        self.m.live.retain(|_, s| s.machine != machine);
        self.m.machines.remove(&machine);
        prop_assert_eq!(ended, want);
        Ok(())
    }

    /// The lease expiry ends exactly the sessions due, announces those a
    /// request found run out, and leaves nothing due.
    fn expire(&mut self) -> Result<(), TestCaseError> {
        let (now, t) = (self.now, self.t());
        let got = sorted(self.r.broker.expire(t).into_iter().map(|e| e.info.session).collect());
        let mut want = self.m.end_where(now, |s| s.deadline <= now);
        want.append(&mut self.m.found);
        let want = sorted(want);
        prop_assert_eq!(got, want);
        // What is left is due later: the expiry task sleeps.
        prop_assert!(self.r.broker.next_deadline().is_none_or(|d| d > t), "{:?}", self.r.broker.next_deadline());
        Ok(())
    }

    /// `pool reserve --seats seats` for the label: refused past the quota.
    fn reserve(&mut self, seats: u32) -> Result<(), TestCaseError> {
        let (r, t) = (&self.r, self.t());
        let got = r.broker.plan_set_reservation(&r.owner, (&r.org, PoolId::KRE_DEFAULT), label(), seats, t);
        if seats > self.m.quota {
            prop_assert_eq!(got, Err(Error::ReservedPastQuota { quota: self.m.quota, reserved: seats }));
            return Ok(());
        }
        r.broker.apply(&got.unwrap(), t);
        self.m.reserve(seats);
        Ok(())
    }

    /// The numbers users see agree with the model: the reservations list,
    /// the pool's status, the next deadline, the live sessions and the
    /// machines' last uses.
    fn agrees(&self) -> Result<(), TestCaseError> {
        let (r, m) = (&self.r, &self.m);
        self.reservations_agree()?;
        let status = &r.broker.status(&r.operator, Some(&r.org)).unwrap()[0];
        prop_assert_eq!(status.in_use as usize, m.live.len());
        prop_assert_eq!(status.machines as usize, m.machines.len());
        prop_assert_eq!(status.quota, m.quota);
        // A heartbeat leaves the session's place in the expiry index
        // (moved when the expiry meets it): the next deadline is a bound
        // no lease ends before, there whenever a lease is.
        // Ends a request found wait for the expiry task: due at once.
        let next = r.broker.next_deadline().map(|d| d.0);
        let first = if m.found.is_empty() { m.min_deadline() } else { Some(0) };
        prop_assert_eq!(next.is_some(), first.is_some());
        prop_assert!(next <= first, "{next:?} after {first:?}");
        prop_assert_eq!(r.broker.sessions(&r.owner, &r.org).unwrap().len(), m.live.len());
        self.machine_uses_agree()
    }

    /// The reservations list: the seats reserved, in use on them, and held.
    fn reservations_agree(&self) -> Result<(), TestCaseError> {
        let (r, m) = (&self.r, &self.m);
        let listed: Vec<(u32, u32, u32)> =
            r.broker.reservations(&r.owner, &r.org).unwrap().iter().map(|(_, x)| (x.seats, x.in_use, x.held)).collect();
        let want = if m.want > 0 { vec![(m.want, m.on_lane().min(m.held), m.held)] } else { Vec::new() };
        prop_assert_eq!(listed, want);
        Ok(())
    }

    /// Each registered machine's last use, as the machines page lists it.
    fn machine_uses_agree(&self) -> Result<(), TestCaseError> {
        let (r, m) = (&self.r, &self.m);
        let uses: Vec<(String, Option<u64>)> = r
            .broker
            .machine_uses(&r.owner, &r.org)
            .unwrap()
            .into_iter()
            .map(|(_, u)| (u.machine.to_string(), u.last_use.map(|l| l.0)))
            .collect();
        let want: Vec<(String, Option<u64>)> =
            m.machines.iter().map(|(i, x)| (MACHINES[*i].to_string(), x.last_use)).collect();
        prop_assert_eq!(uses, want);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn core_agrees_with_the_reference_model(quota in 0u32..5, ops in prop::collection::vec(op(), 1..80)) {
        run(quota, ops)?;
    }
}
