//! Machines that come and go, on a driven clock: an idle limit releases an
//! unused machine (audited), ephemeral machines go with their last
//! session, and nothing that holds a machine (a live session, a queued
//! runner, an activation or offline license, a restart's hold) lets it go.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::testkit::{mid, t, Fixture};
use super::*;

const TTL: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(60);

fn fixture(quota: u32) -> Fixture {
    Fixture::new(quota, 2, TTL)
}

fn names(expired: &[Expired]) -> Vec<String> {
    expired.iter().map(|e| e.machine.to_string()).collect()
}

#[test]
fn an_unused_machine_is_released_after_the_idle_limit_and_audited() {
    let w = fixture(1);
    w.set_policy(Some(IDLE), false, t(0));
    w.register("a").unwrap();
    assert_eq!(w.register("b"), Err(Error::MachineLimit { quota: 1 }));
    assert!(w.expire_machines(t(59_999)).is_empty(), "not before its idle limit");
    let pending = w.broker.plan_machine_expiry(t(60_000)).expect("due");
    let audit = pending.changes().iter().find_map(|c| match c {
        Change::Put(Record::Audit(e)) if e.action == AuditAction::MachineExpired => Some(e.detail.clone()),
        _ => None,
    });
    assert!(audit.expect("audited").contains("machine=a"));
    assert_eq!(names(&w.commit(pending)), ["a"]);
    assert_eq!(w.machines(), 0);
    assert_eq!(w.register("b"), Ok(Registration::New), "its slot is free again");
}

#[test]
fn a_session_holds_its_machine_and_idle_time_counts_from_its_end() {
    let w = fixture(2);
    w.set_policy(Some(IDLE), false, t(0));
    w.register("a").unwrap();
    let lease = w.acquire("a", 1, 1, t(1_000)).unwrap();
    w.broker.renew(&w.owner, lease.session, t(20_000)).unwrap();
    w.broker.renew(&w.owner, lease.session, t(45_000)).unwrap();
    assert!(w.expire_machines(t(70_000)).is_empty(), "in use");
    w.broker.release(&w.owner, lease.session, t(70_000)).unwrap();
    assert!(w.expire_machines(t(129_999)).is_empty(), "idle only since the session ended");
    let uses = w.broker.machine_uses(&w.owner, &w.org).unwrap();
    assert_eq!(uses[0].1.last_use, Some(t(70_000)));
    assert_eq!(names(&w.expire_machines(t(130_000))), ["a"]);
}

#[test]
fn a_pool_without_a_policy_keeps_its_machines_forever() {
    let w = fixture(1);
    w.register("a").unwrap();
    assert!(w.expire_machines(t(u64::MAX / 2)).is_empty());
    let uses = w.broker.machine_uses(&w.owner, &w.org).unwrap();
    assert_eq!(uses[0].1.last_use, None, "nothing tracked");
}

#[test]
fn two_ephemeral_slots_serve_five_runners_one_after_another() {
    let w = fixture(2);
    for n in 0..5u64 {
        let at = t(n * 10_000);
        let machine = format!("ci-{n}");
        assert_eq!(w.register_ephemeral(&machine, at), Ok(Registration::New), "runner {n}");
        let lease = w.acquire(&machine, u128::from(n), 1, at).unwrap();
        assert!(w.expire_machines(at).is_empty(), "held while its session lives");
        w.broker.release(&w.owner, lease.session, at.after(Duration::from_secs(1))).unwrap();
        assert_eq!(names(&w.expire_machines(at.after(Duration::from_secs(1)))), [machine]);
    }
    assert_eq!(w.machines(), 0);
}

#[test]
fn an_ephemeral_registration_waits_one_lease_ttl_for_its_first_session() {
    let w = fixture(2);
    w.register_ephemeral("a", t(0)).unwrap();
    assert!(w.expire_machines(t(29_999)).is_empty());
    assert_eq!(names(&w.expire_machines(t(30_000))), ["a"]);
}

#[test]
fn an_ephemeral_machine_used_in_the_millisecond_it_registered_goes_with_its_session() {
    // Registered, used and given back within one millisecond (a fast
    // store, a coarse clock): it ran a session, so it is no registration
    // still waiting for its first one, and goes with that session.
    let w = fixture(2);
    w.register_ephemeral("a", t(5)).unwrap();
    let lease = w.acquire("a", 1, 1, t(5)).unwrap();
    w.broker.release(&w.owner, lease.session, t(5)).unwrap();
    assert_eq!(names(&w.expire_machines(t(5))), ["a"], "released with its last session, not a TTL later");
}

#[test]
fn a_pool_wide_ephemeral_policy_marks_every_registration() {
    let w = fixture(2);
    w.set_policy(None, true, t(0));
    w.register("a").unwrap();
    let lease = w.acquire("a", 1, 1, t(1)).unwrap();
    w.broker.release(&w.owner, lease.session, t(2)).unwrap();
    assert_eq!(names(&w.expire_machines(t(2))), ["a"]);
}

#[test]
fn a_queued_runner_holds_its_machine_while_it_waits() {
    let w = fixture(1);
    w.register_ephemeral("a", t(0)).unwrap();
    w.register_ephemeral("b", t(0)).unwrap_err(); // one machine slot
    w.set_quota(PoolId::KRE_DEFAULT, 2);
    w.register_ephemeral("b", t(0)).unwrap();
    w.set_quota(PoolId::KRE_DEFAULT, 1);
    let held = w.acquire("a", 1, 1, t(0)).unwrap();
    let (waited, inbox) = w.wait("b", 2, 2, t(0));
    let place = match waited.unwrap() {
        Waited::Queued(place) => place,
        Waited::Leased(l) => panic!("admitted: {l:?}"),
    };
    assert!(w.expire_machines(t(3_600_000)).is_empty(), "a holds a session, b a place");
    w.broker.release(&w.owner, held.session, t(3_600_000)).unwrap();
    let lease = w.claim("b", 2, 2, t(3_600_000), inbox.take().expect("granted")).unwrap();
    drop(place);
    assert_eq!(names(&w.expire_machines(t(3_600_000))), ["a"], "b runs its session");
    w.broker.release(&w.owner, lease.session, t(3_600_001)).unwrap();
    assert_eq!(names(&w.expire_machines(t(3_600_001))), ["b"]);
}

#[test]
fn a_policy_set_under_live_sessions_counts_them() {
    let w = fixture(2);
    w.register("a").unwrap();
    let lease = w.acquire("a", 1, 1, t(0)).unwrap();
    w.set_policy(None, true, t(10));
    assert!(w.expire_machines(t(1_000_000)).is_empty(), "its session holds it");
    w.broker.release(&w.owner, lease.session, t(1_000_000)).unwrap();
    assert_eq!(names(&w.expire_machines(t(1_000_000))), ["a"]);
}

#[test]
fn a_closed_machine_admits_nothing_and_reopens_if_its_release_fails() {
    let w = fixture(2);
    w.set_policy(Some(IDLE), false, t(0));
    w.register("a").unwrap();
    let pending = w.broker.plan_machine_expiry(t(60_000)).expect("due");
    assert_eq!(w.acquire("a", 1, 1, t(60_000)), Err(Error::MachineNotRegistered), "on its way out");
    assert_eq!(w.register("a"), Err(Error::MachineNotRegistered), "register again once it is gone");
    let failed: std::result::Result<_, &str> = pending.settle(&w.broker, Err("disk full"), t(60_000));
    assert!(failed.is_err());
    assert!(w.acquire("a", 1, 1, t(60_001)).is_ok(), "reopened");
}

#[test]
fn nothing_is_released_while_a_restart_holds_seats() {
    let w = Fixture::with_ceilings(2, 2, TTL);
    w.set_policy(Some(IDLE), false, t(0));
    w.register("a").unwrap();
    w.broker.apply(&[Change::Put(Record::Ceiling { org: w.org.clone(), pool: PoolId::KRE_DEFAULT, seats: 1 })], t(0));
    let hold = w.broker.hold_reserves(t(100_000)).expect("ceilings on");
    assert!(w.expire_machines(t(100_000)).is_empty(), "the hold keeps every machine");
    w.broker.expire(hold.until);
    assert_eq!(names(&w.expire_machines(hold.until)), ["a"]);
}

#[test]
fn an_offline_bound_machine_never_expires_before_its_license() {
    let w = fixture(1);
    let kse: PoolId = "kse-node-locked-annual".parse().unwrap();
    w.set_quota(kse, 2);
    let (org, machine) = (w.org.clone(), mid("m"));
    let license = OfflineLicense {
        id: OfflineId(7),
        machine: machine.clone(),
        issued: t(0),
        expires: t(500_000),
        created_by: w.owner.email.clone(),
        file: String::new(),
    };
    let records = [
        Record::PoolPolicy { org: org.clone(), pool: kse, idle_ms: Some(1_000), ephemeral: false },
        Record::Machine { org: org.clone(), pool: kse, machine, registered: t(0) },
        Record::Offline { org, pool: kse, license },
    ];
    w.broker.apply(&records.map(Change::Put), t(0));
    assert!(w.expire_machines(t(499_999)).is_empty(), "its offline license still runs");
    // The expiry task sleeps until then, not in a loop on a machine it cannot release.
    assert_eq!(w.broker.next_machine_due(), Some(t(500_000)));
    assert_eq!(names(&w.expire_machines(t(500_000))), ["m"]);
}

#[test]
fn the_checkpoint_writes_last_uses_when_they_enter_a_new_minute() {
    let w = fixture(2);
    w.set_policy(Some(IDLE), false, t(0));
    w.register("a").unwrap();
    let uses = |records: &[Record]| records.iter().filter(|r| matches!(r, Record::LastUses { .. })).count();
    let (first, mark) = w.broker.checkpoint_since(t(1_000), &Default::default());
    assert_eq!(uses(&first), 1);
    let use_at = |at: u64| {
        let lease = w.acquire("a", u128::from(at), 1, t(at)).unwrap();
        w.broker.release(&w.owner, lease.session, t(at)).unwrap();
    };
    use_at(2_000);
    let (same_minute, mark) = w.broker.checkpoint_since(t(6_000), &mark);
    assert_eq!(uses(&same_minute), 0, "used again within the minute written: not rewritten");
    use_at(61_000);
    let (next_minute, mark) = w.broker.checkpoint_since(t(66_000), &mark);
    assert_eq!(uses(&next_minute), 1, "a use in a later minute is written");
    assert_eq!(uses(&w.broker.checkpoint_since(t(71_000), &mark).0), 0);
}

#[test]
fn last_uses_survive_a_restart_through_the_checkpoint() {
    let w = fixture(2);
    w.set_policy(Some(IDLE), false, t(0));
    w.register("a").unwrap();
    let lease = w.acquire("a", 1, 1, t(0)).unwrap();
    w.broker.release(&w.owner, lease.session, t(5_000)).unwrap();
    let kept: Vec<Record> =
        w.broker.checkpoint(t(6_000)).into_iter().filter(|r| matches!(r, Record::LastUses { .. })).collect();
    assert_eq!(kept.len(), 1);
    let again = fixture(2);
    let pool = PoolId::KRE_DEFAULT;
    let policy = Record::PoolPolicy { org: again.org.clone(), pool, idle_ms: Some(60_000), ephemeral: false };
    let machine = Record::Machine { org: again.org.clone(), pool, machine: mid("a"), registered: t(0) };
    let records: Vec<Change> = [policy, machine].into_iter().chain(kept).map(Change::Put).collect();
    again.broker.apply(&records, t(6_000));
    assert!(again.expire_machines(t(64_999)).is_empty());
    assert_eq!(names(&again.expire_machines(t(65_000))), ["a"]);
}

#[test]
fn a_node_taking_an_org_over_keeps_its_ephemeral_machines_through_the_hold() {
    let w = Fixture::with_ceilings(3, 2, TTL);
    let mut records = w.org_records(3, 1);
    let (org, pool) = (w.org.clone(), PoolId::KRE_DEFAULT);
    records.push(Record::EphemeralMachine { org: org.clone(), pool, machine: mid("e"), registered: t(0) });
    let config = Config { lease_ttl: TTL, ceilings: true, shard_bits: 2, ..Config::default() };
    let next = Fixture { broker: Broker::new(config), ..w };
    assert_eq!(next.broker.adopt_org(&org, records, t(100_000)).0, 1, "the ceiling's seat is held");
    assert!(next.expire_machines(t(100_000)).is_empty(), "held for the previous node's runners");
    let until = t(100_000).after(TTL + Config::default().restart_grace);
    next.broker.expire(until);
    assert_eq!(names(&next.expire_machines(until)), ["e"], "its runner never came back");
    let uses = next.broker.machine_uses(&next.owner, &org).unwrap();
    assert_eq!(uses.iter().map(|(_, u)| u.machine.to_string()).collect::<Vec<_>>(), ["m"], "m was never ephemeral");
}

/// One machine of `every_due_machine_is_released_at_its_time_and_no_other`:
/// ephemeral or not, and its one session's start and end (ms), if any.
struct Use {
    name: String,
    ephemeral: bool,
    session: Option<(u64, u64)>,
}

impl Use {
    /// When the machine comes due, as the pool's policy says (`None`: not
    /// by `now`, its session still holds it).
    fn due(&self, now: u64, ttl: u64) -> Option<u64> {
        match (self.session, self.ephemeral) {
            (None, true) => Some(ttl),
            (None, false) => Some(IDLE.as_millis() as u64),
            (Some((_, end)), _) if end > now => None,
            (Some((_, end)), true) => Some(end),
            (Some((_, end)), false) => Some(end + IDLE.as_millis() as u64),
        }
    }
}

#[test]
fn every_due_machine_is_released_at_its_time_and_no_other() {
    // 40 machines, a third ephemeral, most with one session, the sessions
    // all started before any machine is due; some outlive the idle limit
    // (the pass finds them held when their registration comes due). Every
    // 3 s a pass: exactly the machines due by then go, each at the first
    // pass at or after its due time.
    let ttl = Duration::from_secs(300);
    let w = Fixture::new(40, 2, ttl);
    w.set_policy(Some(IDLE), false, t(0));
    let uses: Vec<Use> = (0..40u64)
        .map(|i| {
            let ephemeral = i % 3 == 0;
            let start = (i * 7 % if ephemeral { 25 } else { 50 }) * 1_000;
            let session = (i % 5 != 4).then(|| (start, start + (i * 37 % 90 + 1) * 1_000));
            Use { name: format!("m{i:02}"), ephemeral, session }
        })
        .collect();
    let mut leases = std::collections::HashMap::new();
    for u in &uses {
        match u.ephemeral {
            true => w.register_ephemeral(&u.name, t(0)).unwrap(),
            false => w.register(&u.name).unwrap(),
        };
    }
    let mut gone = std::collections::BTreeSet::new();
    for now in (0..=400_000u64).step_by(3_000) {
        let mut events: Vec<(u64, bool, usize)> = uses
            .iter()
            .enumerate()
            .filter_map(|(i, u)| Some((i, u.session?)))
            .flat_map(|(i, (start, end))| [(start, true, i), (end, false, i)])
            .filter(|&(at, _, _)| at <= now && at + 3_000 > now)
            .collect();
        events.sort();
        for (at, starts, i) in events {
            if starts {
                leases.insert(i, w.acquire(&uses[i].name, i as u128, 1, t(at)).unwrap());
            } else {
                w.broker.release(&w.owner, leases[&i].session, t(at)).unwrap();
            }
        }
        let released: std::collections::BTreeSet<String> = names(&w.expire_machines(t(now))).into_iter().collect();
        let due: std::collections::BTreeSet<String> = uses
            .iter()
            .filter(|u| !gone.contains(&u.name) && u.due(now, ttl.as_millis() as u64).is_some_and(|d| d <= now))
            .map(|u| u.name.clone())
            .collect();
        assert_eq!(released, due, "at {now} ms: released (left) against due (right)");
        gone.extend(released);
    }
    assert_eq!(gone.len(), 40, "every machine went in the end");
    assert_eq!(w.machines(), 0);
}

/// One churning job of `racing_churn_and_release_passes_leave_no_machine_behind`:
/// `count` ephemeral machines, each registered (under `writer`, retried
/// while the slots are full), used once and given back.
fn churn(w: &Fixture, writer: &std::sync::Mutex<()>, clock: &AtomicU64, job: u64, count: u64) {
    for i in 0..count {
        let name = format!("e{job}-{i}");
        let registered = (0..1_000_000).find_map(|_| {
            std::thread::yield_now();
            let _writer = writer.lock().unwrap();
            // Refused tries do not move the clock: they are no use of anything.
            let plan = w.broker.register(&w.owner, &w.target(&name), t(clock.load(Ordering::SeqCst)), true);
            plan.ok().map(|p| w.commit(p))
        });
        assert!(registered.is_some(), "{name} never found a free slot");
        let lease = w.acquire(&name, u128::from(job * count + i), 1, t(clock.fetch_add(1, Ordering::SeqCst))).unwrap();
        w.broker.release(&w.owner, lease.session, t(clock.fetch_add(1, Ordering::SeqCst))).unwrap();
    }
}

#[test]
fn racing_churn_and_release_passes_leave_no_machine_behind() {
    // Threads churn ephemeral machines through 64 slots while another
    // runs release passes back to back (each under the writer lock, as the
    // machine task does): every machine's last hold given back races the
    // pass that judges it. None may be left registered once they stop.
    use std::sync::{Arc, Mutex};
    for round in 0..10 {
        let w = Arc::new(Fixture::new(64, 2, TTL));
        let (writer, clock, stop) =
            (Arc::new(Mutex::new(())), Arc::new(AtomicU64::new(1)), Arc::new(AtomicU64::new(0)));
        let passes = {
            let (w, writer, clock, stop) = (w.clone(), writer.clone(), clock.clone(), stop.clone());
            std::thread::spawn(move || {
                while stop.load(Ordering::SeqCst) == 0 {
                    let _writer = writer.lock().unwrap();
                    w.expire_machines(t(clock.load(Ordering::SeqCst)));
                }
            })
        };
        let jobs: Vec<_> = (0..4u64)
            .map(|job| {
                let (w, writer, clock) = (w.clone(), writer.clone(), clock.clone());
                std::thread::spawn(move || churn(&w, &writer, &clock, job, 300))
            })
            .collect();
        jobs.into_iter().for_each(|j| j.join().unwrap());
        stop.store(1, Ordering::SeqCst);
        passes.join().unwrap();
        // As the machine task does: a full release (`MACHINES_PER_RELEASE`)
        // leaves more due, so it looks again at once (the passes above may
        // have been starved of the writer lock while the jobs ran).
        let now = t(clock.load(Ordering::SeqCst));
        for _ in 0..1_000 {
            if w.expire_machines(now).len() < super::MACHINES_PER_RELEASE {
                break;
            }
        }
        let left = w.broker.machine_uses(&w.owner, &w.org).unwrap();
        assert!(left.is_empty(), "round {round}: left behind {left:?}");
    }
}
