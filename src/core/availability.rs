//! Preflight: would a runner be admitted now and, if not, where would it
//! wait and for about how long. A CI job asks before it spends minutes
//! building only to fail at the license step.
//!
//! A read: no seat is taken, no refusal is counted, nothing is written.
//! The answer is an instant's: a seat free now may be taken by the time
//! the runner asks for it, and the other way round.
//!
//! The estimate (`wait_estimate`) assumes each live session lasts the
//! pool's mean session length, measured over the last day by the caller
//! (seat time over admissions: Little's law), so one that has run for
//! `age` ends in `mean - age`, and one already past the mean within a
//! quarter of a mean (`OVERDUE`); seats come free in that order, then
//! every `mean` again, and each line is served first come, first served.
//! Seats held by activations, offline licenses or a restart's hold are
//! not expected to come free.
//!
//! A runner waits on more than one line when its labels match a
//! reservation (`pool::lanes`, `queue`): a reserved seat freed goes to the
//! head of that reservation's lane, a shared seat to the head of the whole
//! queue, which the runner is in too. So the estimate is made per line
//! (`Line`) and the earliest taken (`Availability::wait`), with the place
//! on that line: the shared line (place: everyone waiting + 1; free: the
//! shared seats; the sessions on shared seats), and each lane of its
//! labels (place: that lane's waiters + 1; free: the reservation's free
//! seats; the sessions on its seats). Sessions on seats reserved for other
//! labels free nothing for it, and a runner with no matching reservation
//! has the shared line alone.
//!
//! The runner's job labels count as its admission's would: a label cap at
//! its limit refuses (waiting would not help); a free seat reserved for
//! one of its labels, with nobody waiting in that reservation's lane,
//! admits it however full the shared seats are; and seats reserved for
//! other labels are never free for it. Sessions past a lowered
//! reservation's size are counted on its lane, though their seats go back
//! to the shared ones when they end: a little pessimistic for the others.
//! How good that is on a CI day: `license-load preflight` (README,
//! Performance).

use super::broker::Broker;
use super::directory::Principal;
use super::error::{Error, Result};
use super::pool::{Kind, Pool, PoolId, Product};
use super::time::Millis;
use crate::value::{Labels, MachineId, OrgName};

/// A pool as a runner asking now would find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// The pool.
    pub pool: PoolId,
    /// Licenses bought.
    pub quota: u32,
    /// Seats held now (sessions, activations, offline licenses, holds;
    /// not a reserved seat nobody sits on).
    pub in_use: u32,
    /// Seats free now for this runner: shared ones, and those reserved
    /// for its labels with nobody waiting for them.
    pub free: u32,
    /// Runners waiting in the pool's queue.
    pub waiting: u32,
    /// Why an acquire now would be refused; `None`: it would be admitted.
    pub refusal: Option<Error>,
    /// Whether waiting in the queue could get the runner a seat: the pool
    /// is full, nothing else stands in the way, the pool's queue takes it
    /// (a pool of no seats or a full queue does not), and the pool leases
    /// seats (a node-locked activation does not wait).
    pub worth_waiting: bool,
    /// The whole queue and the pool's shared seats.
    pub shared: Line,
    /// The lanes of the reservations the runner's labels match.
    pub lanes: Vec<Line>,
}

/// One line a waiting runner could get a seat from: the whole queue for
/// the shared seats, or a reservation's lane for its seats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The runner's place on it if it joined now (1: next).
    pub place: u32,
    /// Its seats free now.
    pub free: u32,
    /// When each live session sitting on its seats started.
    pub starts: Vec<Millis>,
}

/// Where a runner would wait and about how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Its place on the line it would likely get its seat from (1: next).
    pub place: u32,
    /// About how long until a seat, ms (`None`: no estimate).
    pub ms: Option<u64>,
}

impl Availability {
    /// Seats free now for the queue and this runner.
    pub fn free(&self) -> u32 {
        self.free
    }

    /// Of its lines, the one the runner would likely get a seat from
    /// first, with sessions lasting `mean` ms (see the module's doc); with
    /// no mean, the one with the fewest seats yet to come free (no
    /// estimate). On a tie, the shared line.
    pub fn wait(&self, now: Millis, mean: Option<u64>) -> Wait {
        let ms = |l: &Line| mean.and_then(|m| wait_estimate(now, l.place, l.free, &l.starts, m));
        let lines = std::iter::once(&self.shared).chain(&self.lanes).map(|l| (ms(l), l));
        let best = lines.min_by_key(|(ms, l)| (ms.unwrap_or(u64::MAX), l.place.saturating_sub(l.free)));
        best.map_or(Wait { place: self.shared.place, ms: None }, |(ms, l)| Wait { place: l.place, ms })
    }
}

impl Broker {
    /// Member: how `org`'s `pool` stands for `p` now, and what an acquire
    /// (or, on a node-locked KSE pool, an activation) by `p` on `machine`
    /// would meet. A KRE machine not yet registered is asked about as the
    /// runner registers it first; no machine: one already registered.
    /// `labels`: the runner's job labels (caps and reservations by label).
    pub fn availability(
        &self,
        p: &Principal,
        (org, pool): (&OrgName, PoolId),
        (machine, labels): (Option<&MachineId>, &Labels),
        now: Millis,
    ) -> Result<Availability> {
        let pool = self.member_pool(p, org, pool)?;
        let refusal = self.would_refuse(p, &pool, (machine, labels), now).err();
        let reserved_free: u32 = pool.reservations().iter().map(|r| r.held - r.in_use).sum();
        let in_use = pool.in_use().saturating_sub(reserved_free);
        let shared_free = pool.quota().saturating_sub(pool.in_use());
        let (waiting, leased) = (pool.waiting(), pool.id.kind != Kind::NodeLocked);
        let (shared, lanes) = self.lines(&pool, labels);
        let worth_waiting = matches!(refusal, Some(Error::QuotaExceeded { .. }))
            && leased
            && pool.quota() > 0
            && waiting < self.config.max_waiters;
        Ok(Availability {
            pool: pool.id,
            quota: pool.quota(),
            in_use,
            free: shared_free + pool.reserved_free_for(labels),
            waiting,
            refusal,
            worth_waiting,
            shared: Line { place: waiting + 1, free: shared_free, starts: shared },
            lanes,
        })
    }

    /// The lines a runner carrying `labels` would wait on besides the
    /// whole queue: its reservations' lanes, and the starts of the
    /// sessions on shared seats.
    fn lines(&self, pool: &Pool, labels: &Labels) -> (Vec<Millis>, Vec<Line>) {
        let lanes = pool.lanes_for(labels);
        let words: Vec<_> = lanes.iter().map(|l| l.seats.clone()).collect();
        let (shared, by_lane) = self.sessions.starts_by_line(pool.uid, &words);
        let lines =
            lanes.into_iter().zip(by_lane).map(|(l, starts)| Line { place: l.waiting + 1, free: l.free, starts });
        (shared, lines.collect())
    }

    /// What admission would answer, in its order, asking the pool's own
    /// checks without taking or counting anything: the machine's
    /// registration (`register_machine`), the pool's kind and the grant
    /// (`ticket`, `admit_from`; `bind` for node-locked KSE), the user's cap,
    /// then the seat (`take_seat`).
    fn would_refuse(
        &self,
        p: &Principal,
        pool: &Pool,
        asker: (Option<&MachineId>, &Labels),
        now: Millis,
    ) -> Result<()> {
        let (machine, labels) = asker;
        match (pool.id.product, pool.id.kind) {
            (Product::Kre, _) => machine.map_or(Ok(()), |m| pool.would_register(m))?,
            (Product::Kse, Kind::NodeLocked) => return would_bind(p, pool, machine),
            (Product::Kse, _) if !pool.has_grant(&p.email) => return Err(Error::NotLicensed),
            (Product::Kse, _) => {}
        }
        if let Some(cap) = pool.cap_of(&p.email) {
            let c = cap.count();
            if c.in_use >= c.limit {
                return Err(Error::UserLimit { max: c.limit });
            }
        }
        let caps = pool.label_caps();
        for cap in caps.iter().flat_map(|c| c.iter()).filter(|c| c.matches(labels)) {
            let c = cap.seats.count();
            if c.in_use >= c.limit {
                return Err(Error::LabelLimit { max: c.limit });
            }
        }
        match pool.reserved_free_for(labels) > 0 {
            true => pool.open_at(now),
            false => pool.would_take_seat(now),
        }
    }
}

/// `Broker::bind`'s answer for `p` on `machine` (none: any), binding nothing.
fn would_bind(p: &Principal, pool: &Pool, machine: Option<&MachineId>) -> Result<()> {
    if !pool.has_grant(&p.email) {
        return Err(Error::NotLicensed);
    }
    match (pool.binding(&p.email), machine) {
        (Some(bound), Some(m)) if &bound != m => Err(Error::AlreadyActivated { machine: bound }),
        (Some(_), _) => Ok(()),
        (None, _) => pool.would_bind_seat(),
    }
}

/// A session past the mean is expected to end within `mean / OVERDUE`:
/// of 0 (at once), 1/4, 1/2 and 1 mean, a quarter erred least on
/// `license-load preflight`'s days (median error 97 s and 186 s on waits
/// of 27 and 21 min, where at once gave 107 s and 262 s, mostly short).
const OVERDUE: u64 = 4;

/// When a runner at `place` in the queue (1: next) would likely get a
/// seat, in ms from now, with `free` seats free, live sessions that
/// started at `starts`, and sessions lasting `mean` ms (see the module's
/// doc). `None` when no live session will free a seat.
pub fn wait_estimate(now: Millis, place: u32, free: u32, starts: &[Millis], mean: u64) -> Option<u64> {
    let Some(need) = place.checked_sub(free).filter(|n| *n > 0) else {
        return Some(0);
    };
    if starts.is_empty() {
        return None;
    }
    let mut left: Vec<u64> =
        starts.iter().map(|s| mean.saturating_sub(now.0.saturating_sub(s.0)).max(mean / OVERDUE)).collect();
    left.sort_unstable();
    let (k, rounds) = ((need - 1) as usize % left.len(), u64::from(need - 1) / left.len() as u64);
    Some(left[k] + rounds * mean)
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn seats_come_free_as_sessions_reach_the_mean_then_every_mean() {
        let now = Millis(100 * MIN);
        // Three sessions 10, 2 and 25 minutes old; sessions last 20 minutes.
        let starts = [Millis(90 * MIN), Millis(98 * MIN), Millis(75 * MIN)];
        let at = |place| wait_estimate(now, place, 0, &starts, 20 * MIN);
        // The 25-minute one is overdue (a quarter of a mean), then 10 and 18 minutes.
        assert_eq!([at(1), at(2), at(3)], [Some(5 * MIN), Some(10 * MIN), Some(18 * MIN)]);
        // The fourth waits for the first seat's second round.
        assert_eq!(at(4), Some(25 * MIN));
        assert_eq!(at(7), Some(45 * MIN));
    }

    /// The pool as an acquire would find it, and nothing taken or counted.
    #[test]
    fn a_preflight_says_what_an_acquire_would_and_takes_nothing() {
        use crate::core::testkit::{t, Fixture};
        let w = Fixture::new(2, 2, std::time::Duration::from_secs(300));
        let pool = crate::core::PoolId::KRE_DEFAULT;
        let ask = |machine: &str| {
            let m = crate::core::MachineId::new(machine).unwrap();
            w.broker.availability(&w.owner, (&w.org, pool), (Some(&m), &Labels::default()), t(5_000)).unwrap()
        };
        w.register("m").unwrap();
        let a = ask("m");
        assert_eq!((a.refusal.clone(), a.free(), a.wait(t(5_000), None).place, a.shared.starts.len()), (None, 2, 1, 0));
        assert_eq!(ask("new").refusal, None, "an unregistered machine registers first while there is room");
        w.acquire("m", 1, 1, t(1_000)).unwrap();
        w.acquire("m", 2, 1, t(2_000)).unwrap();
        let full = ask("m");
        assert_eq!(full.refusal, Some(Error::QuotaExceeded { quota: 2 }));
        assert!(full.worth_waiting);
        assert_eq!((full.in_use, full.free(), full.shared.starts.len()), (2, 0, 2));
        w.register("m2").unwrap();
        assert_eq!(ask("m3").refusal, Some(Error::MachineLimit { quota: 2 }), "no machine slot left");
        let any = w.broker.availability(&w.owner, (&w.org, pool), (None, &Labels::default()), t(5_000)).unwrap();
        assert_eq!(any.refusal, Some(Error::QuotaExceeded { quota: 2 }), "no machine: the seats alone");
        assert!(!ask("m3").worth_waiting);
        assert_eq!(w.in_use(), 2, "nothing taken");
        assert_eq!(w.pool_status().rejected, 0, "nothing counted as refused");
    }

    /// The preflight answers what the act then meets, state by state:
    /// expired, unlicensed (before expired), capped, full, a full queue, a
    /// pool of no seats, a node-locked license bound elsewhere.
    #[test]
    fn the_preflight_answers_what_the_act_then_meets() {
        use crate::core::testkit::{mid, t, Fixture};
        use crate::core::{Config, ConnId, Nonce, Role};
        let now = t(5_000);
        let kre = PoolId::KRE_DEFAULT;
        let fixture = |quota| {
            let w = Fixture::with_config(quota, Config { max_waiters: 1, ..Config::default() });
            let user = w.add_member("u@x.io", Role::User, 7);
            (w, user)
        };
        let ask = |w: &Fixture, p: &Principal, pool: PoolId, m: &str| {
            w.broker.availability(p, (&w.org, pool), (Some(&mid(m)), &Labels::default()), now).unwrap()
        };
        let acquire = |w: &Fixture, p: &Principal, pool: PoolId, m: &str| {
            w.broker.acquire(p, &w.target_in(pool, m), Nonce(99), ConnId(9), now).err()
        };
        // Full, then a full queue: refused alike; only the first may wait.
        let (w, user) = fixture(1);
        w.register("m").unwrap();
        w.acquire("m", 1, 1, t(1_000)).unwrap();
        let full = ask(&w, &user, kre, "m");
        assert_eq!((full.refusal.clone(), full.worth_waiting), (acquire(&w, &user, kre, "m"), true));
        let _ = w.wait("m", 2, 1, now);
        let queue_full = ask(&w, &user, kre, "m");
        assert_eq!((queue_full.refusal.clone(), queue_full.worth_waiting), (acquire(&w, &user, kre, "m"), false));
        // No seats at all: registering a machine says the quota, and nothing is worth waiting for.
        let (w, user) = fixture(0);
        let none = ask(&w, &user, kre, "new");
        assert_eq!(none.refusal, w.broker.register(&user, &w.target("new"), now, false).err());
        assert!(!none.worth_waiting);
        // A capped user at the cap.
        let (w, user) = fixture(3);
        w.register("m").unwrap();
        w.apply(w.broker.plan_set_user_limit(&w.owner, &w.org, kre, &user.email, Some(1), t(0)));
        w.broker.acquire(&user, &w.target("m"), Nonce(1), ConnId(1), t(1_000)).unwrap();
        assert_eq!(ask(&w, &user, kre, "m").refusal, acquire(&w, &user, kre, "m"));
        // Expired; and unlicensed on KSE is said before expired, as the acquire says it.
        let (w, user) = fixture(3);
        w.register("m").unwrap();
        w.apply(w.broker.plan_set_subscription(&w.operator, &w.org, t(2_000), t(0)));
        assert_eq!(ask(&w, &user, kre, "m").refusal, Some(Error::SubscriptionExpired));
        assert_eq!(acquire(&w, &user, kre, "m"), Some(Error::SubscriptionExpired));
        let kse: PoolId = "kse-floating-annual".parse().unwrap();
        w.set_quota(kse, 2);
        assert_eq!(ask(&w, &user, kse, "desk").refusal, Some(Error::NotLicensed));
        assert_eq!(acquire(&w, &user, kse, "desk"), Some(Error::NotLicensed));
        // Node-locked: free to activate where bound or unbound, refused elsewhere.
        let (w, user) = fixture(3);
        let locked = w.with_kse_grant("kse-node-locked-annual", 1, &user);
        assert_eq!(ask(&w, &user, locked, "desk").refusal, None);
        let bound = w.broker.activate(&user, &w.target_in(locked, "desk"), Nonce(1), ConnId(1), now).unwrap();
        w.commit(bound);
        assert_eq!(ask(&w, &user, locked, "desk").refusal, None, "already activated there");
        let elsewhere = ask(&w, &user, locked, "laptop");
        assert_eq!(elsewhere.refusal, Some(Error::AlreadyActivated { machine: mid("desk") }));
        assert!(!elsewhere.worth_waiting);
    }

    #[test]
    fn free_seats_serve_the_queue_first() {
        let starts = [Millis(0)];
        assert_eq!(wait_estimate(Millis(MIN), 2, 2, &starts, 10 * MIN), Some(0), "two free seats, second in line");
        assert_eq!(wait_estimate(Millis(MIN), 3, 2, &starts, 10 * MIN), Some(9 * MIN));
        assert_eq!(wait_estimate(Millis(MIN), 1, 0, &[], 10 * MIN), None, "no session will free a seat");
    }
}
