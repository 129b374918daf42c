//! Seats reserved by job label on a driven clock: who may take them, what
//! a reservation made on a full pool is owed, what lowering one gives
//! back, what survives a restart.

use std::time::Duration;

use super::testkit::{t, Fixture};
use super::*;
use crate::value::Labels;

const TTL: Duration = Duration::from_secs(30);
const RELEASE: &[(&str, &str)] = &[("pipeline", "release")];

fn who(nonce: u128, pairs: &[(&str, &str)]) -> Claimant {
    let labels = Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
    Claimant { nonce: Nonce(nonce), conn: ConnId(1), labels }
}

fn acquire(w: &Fixture, nonce: u128, pairs: &[(&str, &str)]) -> Result<Lease> {
    w.broker.acquire_as(&w.owner, &w.target("m"), &who(nonce, pairs), t(0))
}

fn plan(w: &Fixture, seats: u32) -> Result<Vec<Change>> {
    let label = ("pipeline".to_string(), "release".to_string());
    w.broker.plan_set_reservation(&w.owner, (&w.org, PoolId::KRE_DEFAULT), label, seats, t(0))
}

fn reserve(w: &Fixture, seats: u32) -> Vec<Change> {
    let changes = plan(w, seats).unwrap();
    w.apply(Ok(changes.clone()));
    changes
}

/// (seats reserved, sessions on them, seats held) of the one reservation.
fn reservation(w: &Fixture) -> Option<(u32, u32, u32)> {
    let list = w.broker.reservations(&w.owner, &w.org).unwrap();
    list.first().map(|(_, r)| (r.seats, r.in_use, r.held))
}

fn fixture(quota: u32) -> Fixture {
    let w = Fixture::new(quota, 2, TTL);
    w.register("m").unwrap();
    w
}

#[test]
fn reserved_seats_go_only_to_sessions_carrying_the_label() {
    let w = fixture(3);
    reserve(&w, 2);
    assert_eq!(reservation(&w), Some((2, 0, 2)));
    acquire(&w, 1, &[]).unwrap();
    assert_eq!(acquire(&w, 2, &[("pipeline", "pr")]), Err(Error::QuotaExceeded { quota: 3 }));
    assert_eq!(w.in_use(), 1, "reserved seats with nobody on them are not in use");
    let first = acquire(&w, 3, &[("job", "x"), ("pipeline", "release")]).unwrap();
    assert_eq!(acquire(&w, 3, RELEASE).unwrap().session, first.session, "a retry takes nothing twice");
    acquire(&w, 4, RELEASE).unwrap();
    assert_eq!(reservation(&w), Some((2, 2, 2)));
    assert_eq!(acquire(&w, 5, RELEASE), Err(Error::QuotaExceeded { quota: 3 }), "the shared seat is taken");
    assert_eq!(w.in_use(), 3);
    w.broker.release(&w.owner, first.session, t(0)).unwrap();
    assert_eq!(acquire(&w, 6, &[]), Err(Error::QuotaExceeded { quota: 3 }), "its seat went back to the label");
    assert_eq!(reservation(&w), Some((2, 1, 2)));
}

#[test]
fn a_labelled_session_takes_a_shared_seat_once_its_reservation_is_full() {
    let w = fixture(3);
    reserve(&w, 1);
    let on_reserved = acquire(&w, 1, RELEASE).unwrap();
    let on_shared = acquire(&w, 2, RELEASE).unwrap();
    assert_eq!(reservation(&w), Some((1, 1, 1)));
    w.broker.release(&w.owner, on_shared.session, t(0)).unwrap();
    acquire(&w, 3, &[]).unwrap();
    acquire(&w, 4, &[]).unwrap();
    assert_eq!(acquire(&w, 5, &[]), Err(Error::QuotaExceeded { quota: 3 }));
    w.broker.release(&w.owner, on_reserved.session, t(0)).unwrap();
    assert_eq!((w.in_use(), reservation(&w)), (2, Some((1, 0, 1))));
}

#[test]
fn reservations_add_up_to_the_quota_at_most_and_only_admins_reserve() {
    let w = fixture(4);
    let changes = reserve(&w, 3);
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::Put(Record::Audit(e)) if e.action == AuditAction::SeatsReserved)));
    let other = ("team".to_string(), "web".to_string());
    let past = w.broker.plan_set_reservation(&w.owner, (&w.org, PoolId::KRE_DEFAULT), other, 2, t(0));
    assert_eq!(past, Err(Error::ReservedPastQuota { quota: 4, reserved: 5 }));
    assert_eq!(plan(&w, 5), Err(Error::ReservedPastQuota { quota: 4, reserved: 5 }));
    assert!(plan(&w, 4).is_ok(), "a change replaces the label's own reservation");
    let member = w.add_member("u@default", Role::User, 9);
    let label = ("pipeline".to_string(), "release".to_string());
    let refused = w.broker.plan_set_reservation(&member, (&w.org, PoolId::KRE_DEFAULT), label, 1, t(0));
    assert!(matches!(refused, Err(Error::Forbidden(_))));
}

#[test]
fn a_reservation_on_a_full_pool_is_owed_the_next_seats_before_any_waiter() {
    let w = fixture(2);
    let held: Vec<Lease> = (0..2).map(|n| acquire(&w, n, &[]).unwrap()).collect();
    reserve(&w, 1);
    assert_eq!(reservation(&w), Some((1, 0, 0)), "nothing free: owed");
    let (waited, inbox) = w.wait("m", 9, 2, t(0));
    assert!(matches!(waited, Ok(Waited::Queued(_))));
    w.broker.release(&w.owner, held[0].session, t(0)).unwrap();
    assert_eq!(reservation(&w), Some((1, 0, 1)), "the freed seat went to the reservation");
    assert!(!inbox.has_grant(), "not to the unlabelled waiter");
    w.broker.release(&w.owner, held[1].session, t(0)).unwrap();
    assert!(inbox.has_grant(), "the next one goes to the waiter");
    acquire(&w, 5, RELEASE).unwrap();
    assert_eq!(w.in_use(), 2);
}

#[test]
fn lowering_a_reservation_gives_back_its_free_seats_and_later_those_in_use() {
    let w = fixture(3);
    reserve(&w, 3);
    let on: Vec<Lease> = (0..2).map(|n| acquire(&w, n, RELEASE).unwrap()).collect();
    assert_eq!(acquire(&w, 5, &[]), Err(Error::QuotaExceeded { quota: 3 }));
    reserve(&w, 1);
    assert_eq!(reservation(&w), Some((1, 1, 1)), "the free seat went back; one sits past the new size");
    acquire(&w, 5, &[]).unwrap();
    w.broker.release(&w.owner, on[0].session, t(0)).unwrap();
    acquire(&w, 6, &[]).unwrap();
    assert_eq!(acquire(&w, 7, &[]), Err(Error::QuotaExceeded { quota: 3 }));
    reserve(&w, 0);
    assert_eq!(reservation(&w), None);
    w.broker.release(&w.owner, on[1].session, t(0)).unwrap();
    acquire(&w, 7, &[]).unwrap();
    assert_eq!(w.in_use(), 3, "a removed reservation's last session gave its seat to the pool");
}

#[test]
fn raising_a_lowered_reservation_takes_back_its_sessions_seats_and_counts_none_twice() {
    let w = fixture(3);
    reserve(&w, 2);
    acquire(&w, 1, &[]).unwrap();
    let (a, _b) = (acquire(&w, 2, RELEASE).unwrap(), acquire(&w, 3, RELEASE).unwrap());
    reserve(&w, 1);
    assert_eq!(reservation(&w), Some((1, 1, 1)), "one of its two sessions is past it");
    reserve(&w, 2);
    assert_eq!(reservation(&w), Some((2, 2, 2)), "the session past it sits on a reserved seat again");
    assert_eq!(w.in_use(), 3, "three sessions, three seats: none taken twice");
    w.broker.release(&w.owner, a.session, t(0)).unwrap();
    assert_eq!((w.in_use(), reservation(&w)), (2, Some((2, 1, 2))), "its seat stays reserved");
    acquire(&w, 4, RELEASE).unwrap();
    assert_eq!(acquire(&w, 5, RELEASE), Err(Error::QuotaExceeded { quota: 3 }));
}

#[test]
fn a_reservation_survives_a_restart_and_needs_no_ceiling_raise() {
    let w = fixture(4);
    let changes = reserve(&w, 2);
    let again = Fixture::with_ceilings(4, 2, TTL);
    again.register("m").unwrap();
    again.broker.apply(&changes, t(0));
    assert_eq!(reservation(&again), Some((2, 0, 2)));
    assert!(acquire(&again, 1, RELEASE).is_ok(), "a reserved seat is not behind the ceiling");
    assert_eq!(acquire(&again, 2, &[]), Err(Error::CeilingReached), "a shared one is");
    // Shared seats raise the ceiling as usual, up to the quota less the reserved.
    for n in 2..5 {
        while acquire(&again, n, &[]) == Err(Error::CeilingReached) {
            assert!(again.raise().is_some());
        }
    }
    assert_eq!(acquire(&again, 5, &[]), Err(Error::QuotaExceeded { quota: 4 }));
    assert_eq!(again.in_use(), 3, "one reserved seat is still free for the label");
}

fn wait(w: &Fixture, nonce: u128, pairs: &[(&str, &str)]) -> super::testkit::Inbox {
    let inbox = super::testkit::Inbox::default();
    let waited = w.broker.wait(&w.owner, &w.target("m"), &who(nonce, pairs), t(0), inbox.deliver());
    assert!(matches!(waited, Ok(Waited::Queued(_))), "{waited:?}");
    inbox
}

fn claim(w: &Fixture, nonce: u128, pairs: &[(&str, &str)], inbox: &super::testkit::Inbox) -> Lease {
    let grant = inbox.take().expect("a seat was granted");
    w.broker.claim(&w.owner, &w.target("m"), &who(nonce, pairs), t(0), grant).unwrap()
}

/// A full pool of 3: one seat reserved for the release pipeline, taken by
/// `held[0]`; the two shared ones by `held[1]` and `held[2]`.
fn full_with_lane() -> (Fixture, Vec<Lease>) {
    let w = fixture(3);
    reserve(&w, 1);
    let held = vec![acquire(&w, 1, RELEASE).unwrap(), acquire(&w, 2, &[]).unwrap(), acquire(&w, 3, &[]).unwrap()];
    (w, held)
}

#[test]
fn a_freed_reserved_seat_goes_to_its_lanes_head_past_earlier_waiters() {
    let (w, held) = full_with_lane();
    let plain = wait(&w, 10, &[]);
    let first = wait(&w, 11, RELEASE);
    let second = wait(&w, 12, RELEASE);
    w.broker.release(&w.owner, held[0].session, t(0)).unwrap();
    assert!(!plain.has_grant(), "the unlabelled head may not take a reserved seat");
    assert!(first.has_grant() && !second.has_grant(), "the lane's head, first come first admitted");
    let lease = claim(&w, 11, RELEASE, &first);
    assert_eq!(reservation(&w), Some((1, 1, 1)), "the claimed session sits on the reserved seat");
    // A shared seat goes to the head of the whole queue.
    w.broker.release(&w.owner, held[1].session, t(0)).unwrap();
    assert!(plain.has_grant() && !second.has_grant());
    claim(&w, 10, &[], &plain);
    w.broker.release(&w.owner, lease.session, t(0)).unwrap();
    assert!(second.has_grant(), "then the lane's next");
}

#[test]
fn a_freed_reserved_seat_nobody_in_its_lane_waits_for_stays_reserved() {
    let (w, held) = full_with_lane();
    let plain = wait(&w, 10, &[]);
    w.broker.release(&w.owner, held[0].session, t(0)).unwrap();
    assert!(!plain.has_grant());
    assert_eq!((reservation(&w), w.pool_status().waiting), (Some((1, 0, 1)), 1));
    // A newcomer carrying the label takes it at once: nobody in its lane waits.
    acquire(&w, 20, RELEASE).unwrap();
    assert_eq!(acquire(&w, 21, &[("pipeline", "pr")]), Err(Error::QuotaExceeded { quota: 3 }));
}

#[test]
fn a_labelled_waiter_joining_as_its_reserved_seat_frees_is_served() {
    let (w, held) = full_with_lane();
    let first = wait(&w, 11, RELEASE);
    // A newcomer carrying the label does not overtake the lane's waiter.
    assert_eq!(acquire(&w, 30, RELEASE), Err(Error::QuotaExceeded { quota: 3 }));
    w.broker.release(&w.owner, held[0].session, t(0)).unwrap();
    claim(&w, 11, RELEASE, &first);
    // A grant dropped (its waiter gone) goes on to the lane's next.
    let second = wait(&w, 12, RELEASE);
    let third = wait(&w, 13, RELEASE);
    assert!(second.close().is_none(), "gone before its turn");
    let sessions = w.broker.sessions(&w.owner, &w.org).unwrap();
    let on_lane = sessions.iter().find(|s| s.labels.get("pipeline") == Some("release")).unwrap();
    w.broker.release(&w.owner, on_lane.session, t(0)).unwrap();
    assert!(third.has_grant(), "the seat went on down the lane");
    assert_eq!(reservation(&w), Some((1, 1, 1)), "counted once");
}

fn ask(w: &Fixture, pairs: &[(&str, &str)]) -> super::availability::Availability {
    let labels = who(0, pairs).labels;
    let m = super::testkit::mid("m");
    w.broker.availability(&w.owner, (&w.org, PoolId::KRE_DEFAULT), (Some(&m), &labels), t(0)).unwrap()
}

#[test]
fn the_preflight_counts_the_runners_reservations_and_caps() {
    let w = fixture(3);
    reserve(&w, 1);
    acquire(&w, 1, &[]).unwrap();
    acquire(&w, 2, &[]).unwrap();
    let plain = ask(&w, &[]);
    assert_eq!((plain.refusal.clone(), plain.free(), plain.in_use), (acquire(&w, 3, &[]).err(), 0, 2));
    assert!(plain.worth_waiting, "a shared seat will free");
    let labelled = ask(&w, RELEASE);
    assert_eq!((labelled.refusal.clone(), labelled.free()), (None, 1), "its reserved seat is free");
    // Somebody in the lane: the newcomer would wait behind them, as its checkout would.
    let (held, inbox) = (acquire(&w, 4, RELEASE).unwrap(), wait(&w, 5, RELEASE));
    assert_eq!(ask(&w, RELEASE).refusal, acquire(&w, 6, RELEASE).err());
    assert_eq!(ask(&w, RELEASE).free(), 0);
    w.broker.release(&w.owner, held.session, t(0)).unwrap();
    claim(&w, 5, RELEASE, &inbox);
    // A label cap at its limit: refused, and waiting would not help.
    let label = ("pipeline".to_string(), "release".to_string());
    w.apply(w.broker.plan_set_label_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, label, Some(1), t(0)));
    let capped = ask(&w, RELEASE);
    assert_eq!(capped.refusal, Some(Error::LabelLimit { max: 1 }));
    assert_eq!(capped.refusal, acquire(&w, 7, RELEASE).err());
    assert!(!capped.worth_waiting);
    assert_eq!(w.pool_status().rejected, 2, "the two acquires refused for the quota count; no preflight does");
}

#[test]
fn a_node_adopting_the_org_keeps_its_reservations_beside_the_hold() {
    let w = fixture(4);
    let changes = reserve(&w, 2);
    let mut records = w.org_records(4, 1);
    records.extend(changes.into_iter().filter_map(|c| match c {
        Change::Put(r @ Record::Reservation { .. }) => Some(r),
        _ => None,
    }));
    let next = Fixture::with_ceilings(4, 2, TTL);
    next.broker.forget_orgs(std::slice::from_ref(&next.org), t(0));
    // Held: the one shared session the ceiling allows, and both reserved
    // seats (sessions may sit on them: the records do not say).
    assert_eq!(next.broker.adopt_org(&next.org, records, t(0)).0, 3, "what the previous owner's sessions may hold");
    assert_eq!(reservation(&next), Some((2, 0, 1)), "reserved as on the node before, one seat owed meanwhile");
    acquire(&next, 1, RELEASE).unwrap();
    assert_eq!(acquire(&next, 2, &[]), Err(Error::QuotaExceeded { quota: 4 }), "3 held, 1 reserved: none shared");
    let back = |n: &u128| next.broker.reattach(&next.owner, &next.target("m"), Nonce(*n), ConnId(1), t(0), true);
    assert_eq!((10..14).filter(|n| back(n).is_ok()).count(), 3, "the held seats are the previous owner's runners'");
}

#[test]
fn a_restart_hold_beside_a_reservation_owes_it_what_would_pass_the_quota() {
    // 8 shared sessions (durable ceiling 8 or more), then 5 seats reserved
    // on a quota of 10: 2 held, 3 owed. After a restart the hold comes
    // first; the reservation may not take its 5 seats whole beside it.
    let w = Fixture::with_ceilings(10, 2, TTL);
    w.register("m").unwrap();
    let mut ceiling = 0;
    for n in 1..9 {
        while acquire(&w, n, &[]) == Err(Error::CeilingReached) {
            ceiling = w.raise().unwrap();
        }
    }
    let changes = reserve(&w, 5);
    let again = Fixture::with_ceilings(10, 2, TTL);
    again.register("m").unwrap();
    again.broker.apply(&changes, t(0));
    let rec = Record::Ceiling { org: again.org.clone(), pool: PoolId::KRE_DEFAULT, seats: ceiling };
    again.broker.apply(&[Change::Put(rec)], t(0));
    again.broker.hold_reserves(t(0)).unwrap();
    let reattached = (1..9)
        .filter(|n| again.broker.reattach(&again.owner, &again.target("m"), Nonce(*n), ConnId(1), t(0), true).is_ok())
        .count();
    let labelled = (20..26).filter(|n| acquire(&again, *n, RELEASE).is_ok()).count();
    assert_eq!(reattached, 8, "every believer of the shared seats re-attaches");
    assert!(reattached + labelled <= 10, "{reattached} + {labelled} live sessions on a quota of 10");
}

#[test]
fn a_quota_below_the_pools_reservations_is_refused() {
    let w = fixture(4);
    reserve(&w, 3);
    let lowered = w.broker.plan_set_pool(&w.operator, &w.org, PoolId::KRE_DEFAULT, 2, t(0));
    assert_eq!(lowered, Err(Error::ReservedPastQuota { quota: 2, reserved: 3 }));
    reserve(&w, 2);
    assert!(w.broker.plan_set_pool(&w.operator, &w.org, PoolId::KRE_DEFAULT, 2, t(0)).is_ok());
}

#[test]
fn a_labelled_waiter_queued_before_its_reservation_gets_its_seat() {
    let w = fixture(3);
    let held: Vec<Lease> = (1..4).map(|n| acquire(&w, n, &[]).unwrap()).collect();
    let plain = wait(&w, 10, &[]);
    let labelled = wait(&w, 11, RELEASE);
    reserve(&w, 1);
    w.broker.release(&w.owner, held[0].session, t(0)).unwrap();
    assert!(labelled.has_grant(), "the reserved seat goes to the waiter carrying its label");
    assert!(!plain.has_grant(), "not to the earlier unlabelled waiter");
}

#[test]
fn a_pool_has_at_most_32_reservations() {
    let w = fixture(100);
    for n in 0..super::reservations::MAX_RESERVATIONS {
        let label = ("job".to_string(), format!("j{n}"));
        w.apply(w.broker.plan_set_reservation(&w.owner, (&w.org, PoolId::KRE_DEFAULT), label, 1, t(0)));
    }
    let one_more = ("job".to_string(), "late".to_string());
    let refused = w.broker.plan_set_reservation(&w.owner, (&w.org, PoolId::KRE_DEFAULT), one_more, 1, t(0));
    assert!(matches!(refused, Err(Error::Invalid { what: "reservation", .. })), "{refused:?}");
    assert!(plan(&w, 0).is_ok(), "removing one is never refused");
}

#[test]
fn a_crash_before_a_lowered_reservations_sessions_end_holds_their_seats() {
    // 5 labelled sessions on 5 reserved seats and 5 shared ones, quota 10;
    // the reservation is lowered to 1: four of its sessions now sit on
    // seats the durable ceiling must cover, or a restart would hold too
    // few and let newcomers past the quota beside their believers.
    let w = Fixture::with_ceilings(10, 2, TTL);
    w.register("m").unwrap();
    let mut written = reserve(&w, 5);
    (1..6).for_each(|n| assert!(acquire(&w, n, RELEASE).is_ok()));
    for n in 6..11 {
        while acquire(&w, n, &[]) == Err(Error::CeilingReached) {
            let seats = w.raise().unwrap();
            written.push(Change::Put(Record::Ceiling { org: w.org.clone(), pool: PoolId::KRE_DEFAULT, seats }));
        }
    }
    written.extend(reserve(&w, 1));
    assert_eq!(w.in_use(), 10);

    let again = Fixture::with_ceilings(10, 2, TTL);
    again.register("m").unwrap();
    again.broker.apply(&written, t(0));
    let hold = again.broker.hold_reserves(t(0)).unwrap();
    again.broker.apply(&hold.ceilings.into_iter().map(Change::Put).collect::<Vec<_>>(), t(0));
    let newcomers = (20..40).filter(|n| admit(&again, *n, &[]).is_ok() || admit(&again, *n, RELEASE).is_ok());
    let newcomers = newcomers.count();
    let reattached = (1..11)
        .filter(|n| again.broker.reattach(&again.owner, &again.target("m"), Nonce(*n), ConnId(1), t(0), true).is_ok())
        .count();
    assert_eq!(reattached, 10, "every believer re-attaches");
    assert_eq!(newcomers, 0, "no seat is free for a newcomer while ten believers may come back");
}

/// Admits as the shell does: raising the ceiling while it is in the way.
fn admit(w: &Fixture, nonce: u128, pairs: &[(&str, &str)]) -> Result<Lease> {
    loop {
        match acquire(w, nonce, pairs) {
            Err(Error::CeilingReached) if w.raise().is_some() => continue,
            other => return other,
        }
    }
}

/// A broker started on `written`, as after a crash: its hold taken and
/// the ceilings the hold raised written too.
fn restarted(quota: u32, written: &mut Vec<Change>) -> Fixture {
    let again = Fixture::with_ceilings(quota, 2, TTL);
    again.register("m").unwrap();
    again.broker.apply(written, t(0));
    let hold = again.broker.hold_reserves(t(0)).unwrap();
    let raised: Vec<Change> = hold.ceilings.into_iter().map(Change::Put).collect();
    again.broker.apply(&raised, t(0));
    written.extend(raised);
    again
}

#[test]
fn two_crashes_beside_a_reservation_never_let_believers_past_the_quota() {
    // Quota 6, 2 seats reserved: 2 shared and 2 labelled sessions, crash;
    // the 4 come back as shared sessions, 2 labelled newcomers take the
    // reserved seats once the hold ends; crash again: 6 believers.
    let w = Fixture::with_ceilings(6, 2, TTL);
    w.register("m").unwrap();
    let mut written = reserve(&w, 2);
    for n in 1..5 {
        let labels: &[(&str, &str)] = if n < 3 { &[] } else { RELEASE };
        while acquire(&w, n, labels) == Err(Error::CeilingReached) {
            let seats = w.raise().unwrap();
            written.push(Change::Put(Record::Ceiling { org: w.org.clone(), pool: PoolId::KRE_DEFAULT, seats }));
        }
    }
    let first = restarted(6, &mut written);
    let back =
        |f: &Fixture, n: u128, at: u64| f.broker.reattach(&f.owner, &f.target("m"), Nonce(n), ConnId(1), t(at), true);
    let leases: Vec<Lease> = (1..5).map(|n| back(&first, n, 0).unwrap()).collect();
    for l in &leases {
        assert!(first.broker.renew(&first.owner, l.session, t(20_000)).is_ok());
    }
    first.broker.expire(t(40_000)); // the hold ends
    let newcomer =
        |f: &Fixture, n: u128, at: u64| f.broker.acquire_as(&f.owner, &f.target("m"), &who(n, RELEASE), t(at));
    assert!(newcomer(&first, 10, 40_000).is_ok() && newcomer(&first, 11, 40_000).is_ok());
    assert_eq!(first.in_use(), 6);

    let second = restarted(6, &mut written);
    assert!(newcomer(&second, 12, 0).is_err(), "no reserved seat for a newcomer while believers may come back");
    let returned = [1, 2, 3, 4, 10, 11].iter().filter(|n| back(&second, **n, 0).is_ok()).count();
    assert_eq!(returned, 6, "every believer of the run before comes back");
}
