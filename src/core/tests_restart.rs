//! What a restart holds for the previous run's runners, on a driven clock:
//! after a crash, upper bounds (the durable ceiling and every reserved
//! seat); after a clean stop, the sessions it counted (`pool::stop`).

use std::time::Duration;

use super::testkit::{t, Fixture};
use super::*;
use crate::value::Labels;

const TTL: Duration = Duration::from_secs(30);
const RELEASE: &[(&str, &str)] = &[("pipeline", "release")];

fn acquire(w: &Fixture, nonce: u128, pairs: &[(&str, &str)]) -> Result<Lease> {
    admit(w, nonce, pairs, &mut Vec::new())
}

/// Acquires as the shell does: writing (into `written`) the ceiling raise
/// an admission waits for.
fn admit(w: &Fixture, nonce: u128, pairs: &[(&str, &str)], written: &mut Vec<Change>) -> Result<Lease> {
    let labels = Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
    let who = Claimant { nonce: Nonce(nonce), conn: ConnId(1), labels };
    loop {
        match w.broker.acquire_as(&w.owner, &w.target("m"), &who, t(0)) {
            Err(Error::CeilingReached) => {
                let seats = w.raise().expect("a raise is due");
                written.push(Change::Put(Record::Ceiling { org: w.org.clone(), pool: PoolId::KRE_DEFAULT, seats }));
            }
            other => return other,
        }
    }
}

fn reattach(w: &Fixture, nonce: u128) -> Result<Lease> {
    w.broker.reattach(&w.owner, &w.target("m"), Nonce(nonce), ConnId(1), t(0), true)
}

/// Quota 5, 2 seats reserved for `pipeline=release`: 3 shared sessions
/// and 1 on a reserved seat. Returns the broker and what it wrote.
fn running() -> (Fixture, Vec<Change>) {
    let w = Fixture::with_ceilings(5, 2, TTL);
    w.register("m").unwrap();
    let label = ("pipeline".to_string(), "release".to_string());
    let mut written = w.broker.plan_set_reservation(&w.owner, (&w.org, PoolId::KRE_DEFAULT), label, 2, t(0)).unwrap();
    w.apply(Ok(written.clone()));
    for n in 1..4 {
        admit(&w, n, &[], &mut written).unwrap();
    }
    admit(&w, 4, RELEASE, &mut written).unwrap();
    (w, written)
}

/// A broker started on `written`, its hold taken (and the records it
/// writes applied, as the store would give them back).
fn started(written: &[Change]) -> (Fixture, Hold) {
    started_with(5, written)
}

fn started_with(quota: u32, written: &[Change]) -> (Fixture, Hold) {
    let again = Fixture::with_ceilings(quota, 2, TTL);
    again.register("m").unwrap();
    again.broker.apply(written, t(0));
    let hold = again.broker.hold_reserves(t(0)).unwrap();
    again.broker.apply(&hold.ceilings.iter().cloned().map(Change::Put).collect::<Vec<_>>(), t(0));
    (again, hold)
}

/// The instant of the clean stops below, and the clock mark they write.
const STOP: Millis = Millis(1_795_000_000_000);

/// What `w`'s clean stop writes: its ceilings lowered to the sessions,
/// the clock's mark and the counts stamped with it.
fn clean_stop(w: &Fixture) -> Vec<Change> {
    let mut out: Vec<Change> = w.broker.lower_ceilings(true).into_iter().map(Change::Put).collect();
    out.push(Change::Put(Record::Clock { high_water: STOP }));
    out.extend(w.broker.stop_records(std::slice::from_ref(&w.org), STOP).into_iter().map(Change::Put));
    out
}

/// The counts among `changes`.
fn counts(changes: &[Change]) -> Vec<Record> {
    let stopped = |c: &Change| match c {
        Change::Put(r @ Record::Stopped { .. }) => Some(r.clone()),
        _ => None,
    };
    changes.iter().filter_map(stopped).collect()
}

#[test]
fn after_a_clean_stop_a_reserved_seat_nobody_sat_on_is_free_for_its_label_at_once() {
    let (w, mut written) = running();
    written.extend(clean_stop(&w));
    let stopped = counts(&written);
    assert!(
        matches!(&stopped[..], [Record::Stopped { reserved: 1, .. }]),
        "one session sat on a reserved seat: {stopped:?}"
    );
    let (again, hold) = started(&written);
    assert_eq!(hold.seats, 4, "the 3 shared sessions and the 1 on a reserved seat");
    assert_eq!(acquire(&again, 20, RELEASE).map(|_| ()), Ok(()), "the seat nobody sat on");
    assert_eq!(acquire(&again, 21, RELEASE), Err(Error::QuotaExceeded { quota: 5 }));
    assert_eq!((1..5).filter(|n| reattach(&again, *n).is_ok()).count(), 4, "every runner of the stop comes back");
    assert_eq!(again.in_use(), 5);
}

#[test]
fn after_a_crash_every_reserved_seat_is_held_for_its_runners() {
    let (_, written) = running();
    let (again, hold) = started(&written);
    assert_eq!(hold.seats, 5, "the 3 shared sessions and both reserved seats: who sat on them is not known");
    assert!(hold.cleared.is_empty());
    assert_eq!(acquire(&again, 20, RELEASE), Err(Error::QuotaExceeded { quota: 5 }));
    assert_eq!((1..5).filter(|n| reattach(&again, *n).is_ok()).count(), 4);
}

#[test]
fn the_start_that_reads_a_stops_counts_removes_them_with_its_hold() {
    let (w, mut written) = running();
    written.extend(clean_stop(&w));
    let (_, hold) = started(&written);
    let keys = |changes: &[Change]| changes.iter().map(Change::key).collect::<Vec<_>>();
    let put: Vec<Change> = counts(&written).into_iter().map(Change::Put).collect();
    assert_eq!(keys(&hold.cleared), keys(&put), "a later crash must not read them");
}

#[test]
fn counts_a_broker_ran_after_are_not_trusted_and_still_removed() {
    // A broker older than the counts started on the store since (it wrote
    // its clock mark and did not remove them): they may be stale.
    let (w, mut written) = running();
    written.extend(clean_stop(&w));
    written.push(Change::Put(Record::Clock { high_water: STOP.after(Duration::from_secs(3_600)) }));
    let (again, hold) = started(&written);
    assert_eq!(hold.seats, 5, "every reserved seat, as after a crash");
    assert_eq!(hold.cleared.len(), 1, "removed all the same");
    assert_eq!(acquire(&again, 20, RELEASE), Err(Error::QuotaExceeded { quota: 5 }));
}

#[test]
fn a_stops_count_closes_the_reservations_so_nothing_is_admitted_past_it() {
    let (w, _) = running();
    clean_stop(&w);
    assert_eq!(acquire(&w, 20, RELEASE), Err(Error::QuotaExceeded { quota: 5 }), "counted, then closed");
}

/// A node adopting the org `w` wrote `written` for, as after a handover
/// or a failover; the seats its hold took, and what it must write before
/// it serves the org.
fn adopted(w: &Fixture, written: Vec<Change>) -> (u64, Vec<Change>) {
    let (_, held, to_write) = adopt_into(w, 5, written);
    (held, to_write)
}

/// The node adopting the org, the seats its hold took, and what it must
/// write before it serves the org.
fn adopt_into(w: &Fixture, quota: u32, written: Vec<Change>) -> (Fixture, u64, Vec<Change>) {
    let next = Fixture::with_ceilings(quota, 2, TTL);
    next.register("m").unwrap();
    next.broker.forget_orgs(std::slice::from_ref(&next.org), t(0));
    let mut records = next.org_records(quota, 0);
    records.extend(written.into_iter().filter_map(|c| match c {
        Change::Put(r) => Some(r),
        _ => None,
    }));
    assert_eq!(w.org, next.org);
    let (held, to_write) = next.broker.adopt_org(&next.org, records, t(0));
    (next, held, to_write)
}

#[test]
fn a_node_adopting_an_org_trusts_no_counts_and_writes_their_removal_first() {
    // Counts in the cluster's store could only be stale (no cluster node
    // writes them; one of an older build would not remove them): the
    // adopter holds the upper bounds, and removes them under its claim
    // with the ceiling its hold raised, before it serves the org.
    let (w, mut written) = running();
    written.extend(clean_stop(&w));
    let (held, to_write) = adopted(&w, written);
    assert_eq!(held, 5, "every reserved seat");
    let pool = PoolId::KRE_DEFAULT;
    let ceiling = Change::Put(Record::Ceiling { org: w.org.clone(), pool, seats: 5 });
    let removal = Change::RemoveStopped { org: w.org.clone(), pool };
    assert_eq!(to_write, [ceiling, removal]);
}

#[test]
fn a_node_adopting_an_org_after_a_failover_holds_every_reserved_seat() {
    let (w, written) = running();
    assert_eq!(adopted(&w, written).0, 5);
}

const WEB: &[(&str, &str)] = &[("team", "web")];

/// Quota 10, `team=web` capped at 2: 2 web sessions and 2 plain ones
/// (nonces 1 to 4, web first). Returns the broker and what it wrote.
fn capped() -> (Fixture, Vec<Change>) {
    let w = Fixture::with_ceilings(10, 2, TTL);
    w.register("m").unwrap();
    let label = ("team".to_string(), "web".to_string());
    let mut written =
        w.broker.plan_set_label_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, label, Some(2), t(0)).unwrap();
    w.apply(Ok(written.clone()));
    for n in 1..5 {
        admit(&w, n, if n < 3 { WEB } else { &[] }, &mut written).unwrap();
    }
    (w, written)
}

fn web_sessions(w: &Fixture) -> u32 {
    w.broker.label_limits(&w.owner, &w.org, PoolId::KRE_DEFAULT).unwrap()[0].3
}

fn believer(w: &Fixture, nonce: u128, pairs: &[(&str, &str)]) -> Result<Lease> {
    let labels = Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
    let who = Claimant { nonce: Nonce(nonce), conn: ConnId(1), labels };
    w.broker.reattach_as(&w.owner, &w.target("m"), &who, t(0), true)
}

#[test]
fn after_a_crash_a_label_cap_holds_its_places_for_the_runners_coming_back() {
    let (_, written) = capped();
    let (again, _) = started_with(10, &written);
    assert_eq!(web_sessions(&again), 0, "places held are not sessions");
    assert_eq!(acquire(&again, 20, WEB), Err(Error::LabelLimit { max: 2 }), "both places held for believers");
    believer(&again, 1, WEB).unwrap();
    assert_eq!(web_sessions(&again), 1);
    assert_eq!(acquire(&again, 20, WEB), Err(Error::LabelLimit { max: 2 }), "one still held");
    let second = believer(&again, 2, WEB).unwrap();
    assert_eq!(web_sessions(&again), 2, "at its cap, and never past it");
    assert_eq!(acquire(&again, 20, WEB), Err(Error::LabelLimit { max: 2 }));
    // Each took the place held for it: none is left once they are back.
    again.broker.release(&again.owner, second.session, t(0)).unwrap();
    acquire(&again, 20, WEB).unwrap();
}

#[test]
fn a_caps_places_go_back_once_no_held_seat_is_left_or_the_hold_ends() {
    let (_, written) = capped();
    let (again, hold) = started_with(10, &written);
    // The plain runners come back; both web runners never do.
    believer(&again, 3, &[]).unwrap();
    believer(&again, 4, &[]).unwrap();
    assert_eq!(acquire(&again, 20, WEB), Err(Error::LabelLimit { max: 2 }), "seats are still held: they may");
    again.broker.expire(hold.until);
    acquire(&again, 20, WEB).unwrap();
    acquire(&again, 21, WEB).unwrap();
    assert_eq!(web_sessions(&again), 2);
    // With every held seat taken, no runner is left to hold a place for.
    let (_, written) = capped();
    let (again, _) = started_with(10, &written);
    let held = again.in_use();
    (1..=u128::from(held)).for_each(|n| _ = believer(&again, 100 + n, &[]).unwrap());
    acquire(&again, 20, WEB).unwrap();
    acquire(&again, 21, WEB).unwrap();
}

#[test]
fn after_a_clean_stop_a_cap_holds_only_the_sessions_it_counted() {
    let (w, mut written) = capped();
    let web: Vec<SessionId> = w
        .broker
        .sessions(&w.owner, &w.org)
        .unwrap()
        .iter()
        .filter(|s| !s.labels.is_empty())
        .map(|s| s.session)
        .collect();
    w.broker.release(&w.owner, web[0], t(0)).unwrap();
    written.extend(w.broker.lower_ceilings(true).into_iter().map(Change::Put));
    written.extend(clean_stop(&w));
    let (again, _) = started_with(10, &written);
    acquire(&again, 20, WEB).unwrap();
    assert_eq!(acquire(&again, 21, WEB), Err(Error::LabelLimit { max: 2 }), "the other place is its runner's");
    assert_eq!(web_sessions(&again), 1);
    let back = believer(&again, 2, WEB).unwrap();
    assert!(!back.reattached);
    assert_eq!(web_sessions(&again), 2, "never past its cap");
    assert_eq!(acquire(&again, 21, WEB), Err(Error::LabelLimit { max: 2 }));
    again.broker.release(&again.owner, back.session, t(0)).unwrap();
    acquire(&again, 21, WEB).expect("no place left held once its runner is back");
}

#[test]
fn after_a_clean_stop_a_users_cap_holds_only_the_sessions_it_counted() {
    let w = Fixture::with_ceilings(10, 2, TTL);
    w.register("m").unwrap();
    let email = w.owner.email.clone();
    let mut written =
        w.broker.plan_set_user_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, &email, Some(3), t(0)).unwrap();
    w.apply(Ok(written.clone()));
    admit(&w, 1, &[], &mut written).unwrap();
    admit(&w, 2, &[], &mut written).unwrap();
    written.extend(clean_stop(&w));
    let stopped = counts(&written);
    assert!(matches!(&stopped[..], [Record::Stopped { users, .. }] if users == &[(email.clone(), 2)]), "{stopped:?}");
    let (again, _) = started_with(10, &written);
    let counted = || again.broker.user_limits(&again.owner, &again.org, PoolId::KRE_DEFAULT).unwrap()[0].2;
    acquire(&again, 20, &[]).unwrap();
    assert_eq!(acquire(&again, 21, &[]), Err(Error::UserLimit { max: 3 }), "two places are its runners'");
    assert_eq!(counted(), 1, "places held are not sessions");
    believer(&again, 1, &[]).unwrap();
    let back = believer(&again, 2, &[]).unwrap();
    assert_eq!(counted(), 3, "never past its cap");
    assert_eq!(acquire(&again, 21, &[]), Err(Error::UserLimit { max: 3 }));
    again.broker.release(&again.owner, back.session, t(0)).unwrap();
    acquire(&again, 21, &[]).expect("no place left held once its runners are back");
}

#[test]
fn a_handover_leaves_the_caps_uncounted_so_a_newcomer_in_its_window_never_passes_one() {
    // The handing node still serves the org while it writes: a session
    // ending lets a web newcomer in after the count was taken.
    let w = Fixture::with_ceilings(10, 2, TTL);
    w.register("m").unwrap();
    let label = ("team".to_string(), "web".to_string());
    let mut written =
        w.broker.plan_set_label_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, label, Some(2), t(0)).unwrap();
    w.apply(Ok(written.clone()));
    admit(&w, 1, WEB, &mut written).unwrap();
    let plain = admit(&w, 3, &[], &mut written).unwrap();
    admit(&w, 4, &[], &mut written).unwrap();
    let orgs = std::slice::from_ref(&w.org);
    written.extend(w.broker.ceilings_to_sessions(orgs).into_iter().map(Change::Put));
    w.broker.release(&w.owner, plain.session, t(0)).unwrap();
    acquire(&w, 20, WEB).expect("the window: a freed seat under the lowered ceiling");
    let (next, _, _) = adopt_into(&w, 10, written);
    assert_eq!(acquire(&next, 30, WEB), Err(Error::LabelLimit { max: 2 }), "both places held: uncounted");
    let back: Vec<Lease> = [1, 20].iter().map(|n| believer(&next, *n, WEB).unwrap()).collect();
    assert_eq!(acquire(&next, 30, WEB), Err(Error::LabelLimit { max: 2 }), "never past its cap");
    next.broker.release(&next.owner, back[0].session, t(0)).unwrap();
    acquire(&next, 30, WEB).expect("no place left held once its runners are back");
}

#[test]
fn a_token_of_the_run_before_replayed_after_its_new_session_ended_takes_nothing() {
    // Web cap 2, two web runners before the crash: the first comes back,
    // ends its job, and presents its old token again; a web newcomer
    // tries meanwhile; the second runner must still find its place.
    let (_, written) = capped();
    let (again, _) = started_with(10, &written);
    let first = believer(&again, 1, WEB).unwrap();
    again.broker.release(&again.owner, first.session, t(0)).unwrap();
    assert_eq!(believer(&again, 1, WEB), Err(Error::SessionExpired), "not a believer any more");
    assert_eq!(acquire(&again, 20, WEB).map(|_| ()), Ok(()), "the first runner's place is free");
    believer(&again, 2, WEB).unwrap();
    assert_eq!(web_sessions(&again), 2, "never past its cap");
    assert_eq!(acquire(&again, 21, WEB), Err(Error::LabelLimit { max: 2 }));
}

#[test]
fn a_runner_whose_return_was_refused_may_try_again() {
    // Only a return that took a session counts: one refused (its machine
    // not registered here yet) is no replay when it comes again.
    let (_, written) = capped();
    let (again, _) = started_with(10, &written);
    let labels = Labels::new([("team".to_string(), "web".to_string())]).unwrap();
    let who = Claimant { nonce: Nonce(1), conn: ConnId(1), labels };
    let back = || again.broker.reattach_as(&again.owner, &again.target("x"), &who, t(0), true);
    assert_eq!(back().map(|_| ()), Err(Error::MachineNotRegistered));
    again.register("x").unwrap();
    assert!(back().is_ok_and(|l| !l.reattached), "its first return");
}
