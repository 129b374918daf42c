//! Caps by job label on a driven clock: who is admitted, what is counted,
//! what survives a restart.

use std::time::Duration;

use super::testkit::{t, Fixture};
use super::*;
use crate::value::Labels;

const TTL: Duration = Duration::from_secs(30);

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

fn who(nonce: u128, pairs: &[(&str, &str)]) -> Claimant {
    Claimant { nonce: Nonce(nonce), conn: ConnId(1), labels: labels(pairs) }
}

fn acquire(w: &Fixture, nonce: u128, pairs: &[(&str, &str)]) -> Result<Lease> {
    w.broker.acquire_as(&w.owner, &w.target("m"), &who(nonce, pairs), t(0))
}

fn cap(w: &Fixture, max: Option<u32>) -> Vec<Change> {
    let label = ("team".to_string(), "web".to_string());
    let plan = w.broker.plan_set_label_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, label, max, t(0));
    let changes = plan.unwrap();
    w.apply(Ok(changes.clone()));
    changes
}

fn counted(w: &Fixture) -> Vec<(String, String, u32, u32)> {
    w.broker.label_limits(&w.owner, &w.org, PoolId::KRE_DEFAULT).unwrap()
}

const WEB: &[(&str, &str)] = &[("team", "web")];

#[test]
fn a_label_cap_limits_the_sessions_carrying_it_alone() {
    let w = Fixture::new(10, 2, TTL);
    w.register("m").unwrap();
    cap(&w, Some(2));
    let first = acquire(&w, 1, &[("job", "a"), ("team", "web")]).unwrap();
    acquire(&w, 2, WEB).unwrap();
    assert_eq!(acquire(&w, 3, WEB), Err(Error::LabelLimit { max: 2 }));
    assert_eq!(acquire(&w, 1, WEB).unwrap().session, first.session, "a retry takes nothing twice");
    assert_eq!(counted(&w), vec![("team".into(), "web".into(), 2, 2)]);
    // Other labels and unlabelled sessions are not capped.
    acquire(&w, 4, &[("team", "api")]).unwrap();
    acquire(&w, 5, &[]).unwrap();
    assert_eq!(w.in_use(), 4, "the refused session took no seat of the pool");
    let label_limit = Denial::ALL.iter().position(|d| *d == Denial::LabelLimit).unwrap();
    assert_eq!(w.pool_status().denied[label_limit], 1, "the refusal is counted under its reason");
    w.broker.release(&w.owner, first.session, t(0)).unwrap();
    acquire(&w, 3, WEB).unwrap();
    // Expiry gives the count back; removing the cap admits freely.
    assert_eq!(w.broker.expire(t(40_000)).len(), 4);
    assert_eq!(counted(&w)[0].3, 0);
    cap(&w, None);
    assert!(counted(&w).is_empty());
    for n in 10..13 {
        w.broker.acquire_as(&w.owner, &w.target("m"), &who(n, WEB), t(40_000)).unwrap();
    }
}

#[test]
fn a_new_cap_counts_the_sessions_older_than_it_and_cuts_none() {
    let w = Fixture::new(10, 2, TTL);
    w.register("m").unwrap();
    // A ticket resolved before the cap existed: its admission counts itself in.
    let ticket = w.broker.resolve(&w.owner, &w.target("m")).unwrap();
    let older: Vec<Lease> = (0..2).map(|n| acquire(&w, n, WEB).unwrap()).collect();
    cap(&w, Some(2));
    assert_eq!(counted(&w)[0].3, 2, "the sweep counted the live sessions");
    assert_eq!(w.in_use(), 2, "none was cut");
    let late = w.broker.acquire_as(&w.owner, &w.target("m"), &who(7, WEB), t(0));
    assert_eq!(late, Err(Error::LabelLimit { max: 2 }));
    let unlabelled = w.broker.admit(&ticket, Nonce(8), ConnId(1), t(0));
    assert!(unlabelled.is_ok(), "an unlabelled admission on an old ticket is not counted");
    assert_eq!(counted(&w)[0].3, 2);
    w.broker.release(&w.owner, older[0].session, t(0)).unwrap();
    assert_eq!(counted(&w)[0].3, 1);
}

#[test]
fn a_refusal_by_label_gives_back_the_users_cap_and_the_seat() {
    let w = Fixture::new(10, 2, TTL);
    w.register("m").unwrap();
    let email = w.owner.email.clone();
    w.apply(w.broker.plan_set_user_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, &email, Some(5), t(0)));
    cap(&w, Some(1));
    acquire(&w, 1, WEB).unwrap();
    assert_eq!(acquire(&w, 2, WEB), Err(Error::LabelLimit { max: 1 }));
    assert_eq!(w.broker.user_limits(&w.owner, &w.org, PoolId::KRE_DEFAULT).unwrap()[0].2, 1);
    assert_eq!(w.in_use(), 1);
}

#[test]
fn a_label_cap_survives_a_restart_and_a_member_may_not_set_one() {
    let w = Fixture::new(10, 2, TTL);
    let changes = cap(&w, Some(3));
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::Put(Record::Audit(e)) if e.action == AuditAction::LabelLimitSet)));
    let again = Fixture::new(10, 2, TTL);
    again.broker.apply(&changes, t(0));
    assert_eq!(counted(&again), vec![("team".into(), "web".into(), 3, 0)]);
    let member = w.add_member("u@default", Role::User, 9);
    let label = ("team".to_string(), "web".to_string());
    let refused = w.broker.plan_set_label_limit(&member, &w.org, PoolId::KRE_DEFAULT, label, Some(1), t(0));
    assert!(matches!(refused, Err(Error::Forbidden(_))));
    let bad = ("no spaces".to_string(), "web".to_string());
    assert!(w.broker.plan_set_label_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, bad, Some(1), t(0)).is_err());
}

#[test]
fn a_relabelled_session_moves_into_and_out_of_the_caps() {
    let w = Fixture::new(10, 2, TTL);
    w.register("m").unwrap();
    let plain = acquire(&w, 1, &[]).unwrap();
    cap(&w, Some(1));
    w.broker.label(&w.owner, plain.session, labels(WEB)).unwrap();
    assert_eq!(counted(&w)[0].3, 1, "counted once it carries the label");
    assert_eq!(acquire(&w, 2, WEB), Err(Error::LabelLimit { max: 1 }));
    w.broker.label(&w.owner, plain.session, labels(&[("team", "api")])).unwrap();
    assert_eq!(counted(&w)[0].3, 0, "given back once it no longer does");
    acquire(&w, 2, WEB).unwrap();
    w.broker.label(&w.owner, plain.session, labels(WEB)).unwrap();
    assert_eq!(counted(&w)[0].3, 2, "a relabel is counted, never refused");
    w.broker.release(&w.owner, plain.session, t(0)).unwrap();
    assert_eq!(counted(&w)[0].3, 1);
}

/// A broker restarted from `w`'s records (`changes`, its caps) with a
/// durable ceiling of `ceiling`, its seats held for the run before.
fn restarted(changes: Vec<Change>, ceiling: u32) -> Fixture {
    let again = Fixture::with_ceilings(4, 2, TTL);
    again.register("m").unwrap();
    again.apply(Ok(changes));
    let ceiling = Record::Ceiling { org: again.org.clone(), pool: PoolId::KRE_DEFAULT, seats: ceiling };
    again.broker.apply(&[Change::Put(ceiling)], t(0));
    again.broker.hold_reserves(t(0)).expect("seats held for the runners of the run before");
    again
}

/// An acquire carrying `pairs`, raising the ceiling as the shell would.
fn newcomer(w: &Fixture, nonce: u128, pairs: &[(&str, &str)]) -> Result<Lease> {
    loop {
        match acquire(w, nonce, pairs) {
            Err(Error::CeilingReached) => assert!(w.raise().is_some()),
            other => return other,
        }
    }
}

/// A runner of the run before re-attaching with `pairs`.
fn believer(w: &Fixture, nonce: u128, pairs: &[(&str, &str)]) -> Result<Lease> {
    w.broker.reattach_as(&w.owner, &w.target("m"), &who(nonce, pairs), t(0), true)
}

fn listed(w: &Fixture, session: SessionId) -> Labels {
    let all = w.broker.sessions(&w.owner, &w.org).unwrap();
    all.into_iter().find(|s| s.session == session).expect("listed").labels.clone()
}

#[test]
fn a_runner_reattached_with_its_labels_carries_them_and_is_counted_from_its_first_instant() {
    // Version 7's `ReattachLabelled`: no window in which the session is
    // unlabelled and a newcomer takes its cap's place.
    let w = Fixture::with_ceilings(4, 2, TTL);
    let again = restarted(cap(&w, Some(1)), 1);
    let back = believer(&again, 1, WEB).unwrap();
    assert!(!back.reattached, "a new session in the held seat");
    assert_eq!(listed(&again, back.session), labels(WEB), "listed with its labels at once");
    assert_eq!(counted(&again)[0].3, 1, "counted in its cap at once");
    assert_eq!(newcomer(&again, 2, WEB), Err(Error::LabelLimit { max: 1 }), "no newcomer takes its place");
    again.broker.release(&again.owner, back.session, t(0)).unwrap();
    assert_eq!(counted(&again)[0].3, 0);
    newcomer(&again, 2, WEB).unwrap();
}

#[test]
fn a_runner_reattached_without_labels_is_counted_in_its_cap_only_once_it_relabels() {
    // What remains for version 2 to 6 clients: `Reattach` carries no
    // labels, so a runner re-attached after a restart has a new,
    // unlabelled session until its `Label` (the client sends it at once):
    // meanwhile its label cap does not count it, and the relabel counts
    // it regardless of the cap.
    let w = Fixture::with_ceilings(4, 2, TTL);
    let again = restarted(cap(&w, Some(1)), 1);
    let back = again.broker.reattach(&again.owner, &again.target("m"), Nonce(1), ConnId(1), t(0), true).unwrap();
    assert!(!back.reattached, "a new session in the held seat");
    assert_eq!(listed(&again, back.session), Labels::default(), "no labels yet");
    assert_eq!(counted(&again)[0].3, 0, "not in its cap yet");
    newcomer(&again, 2, WEB).unwrap();
    assert_eq!(counted(&again)[0].3, 1, "a new web job took the cap's one place meanwhile");
    again.broker.label(&again.owner, back.session, labels(WEB)).unwrap();
    assert_eq!(listed(&again, back.session), labels(WEB), "listed with its labels again");
    assert_eq!(counted(&again)[0].3, 2, "counted past the cap: a relabel is never refused");
    assert_eq!(acquire(&again, 3, WEB), Err(Error::LabelLimit { max: 1 }), "the cap holds for newcomers");
}

#[test]
fn a_believer_over_a_full_user_cap_and_a_full_label_cap_is_admitted_and_counted() {
    let w = Fixture::with_ceilings(4, 2, TTL);
    let email = w.owner.email.clone();
    let mut changes =
        w.broker.plan_set_user_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, &email, Some(1), t(0)).unwrap();
    changes.extend(cap(&w, Some(1)));
    let again = restarted(changes, 2);
    let user_count = || again.broker.user_limits(&again.owner, &again.org, PoolId::KRE_DEFAULT).unwrap()[0].2;
    // Both caps hold their one place for the runners on their way back
    // (`cap_hold`): no newcomer takes it.
    assert_eq!(newcomer(&again, 5, WEB), Err(Error::UserLimit { max: 1 }), "held for a believer");
    assert_eq!(newcomer(&again, 5, &[]), Err(Error::UserLimit { max: 1 }));
    assert_eq!((user_count(), counted(&again)[0].3), (0, 0), "places held are not sessions");
    // Believers held their seats when the broker went down (two of the
    // user's, past its cap, as a cap lowered before the crash leaves them):
    // never refused by a cap.
    let web = believer(&again, 1, WEB).unwrap();
    let plain = again.broker.reattach(&again.owner, &again.target("m"), Nonce(2), ConnId(1), t(0), true).unwrap();
    assert_eq!((user_count(), counted(&again)[0].3), (2, 1), "counted past the user's cap");
    assert_eq!(newcomer(&again, 6, WEB), Err(Error::UserLimit { max: 1 }), "newcomers are refused");
    assert_eq!(newcomer(&again, 7, &[]), Err(Error::UserLimit { max: 1 }));
    // Once they end, the caps count honestly again.
    for lease in [web, plain] {
        again.broker.release(&again.owner, lease.session, t(0)).unwrap();
    }
    assert_eq!((user_count(), counted(&again)[0].3), (0, 0));
    newcomer(&again, 8, WEB).unwrap();
    assert_eq!(newcomer(&again, 9, WEB), Err(Error::UserLimit { max: 1 }));
    assert_eq!((user_count(), counted(&again)[0].3), (1, 1));
}

#[test]
fn a_reattach_to_a_live_session_with_other_labels_relabels_it_as_label_would() {
    let w = Fixture::new(10, 2, TTL);
    w.register("m").unwrap();
    cap(&w, Some(1));
    let plain = acquire(&w, 1, &[]).unwrap();
    let again = |pairs| w.broker.reattach_as(&w.owner, &w.target("m"), &who(1, pairs), t(0), false).unwrap();
    let back = again(WEB);
    assert_eq!((back.session, back.reattached), (plain.session, true), "the same session, no second seat");
    assert_eq!((listed(&w, plain.session), counted(&w)[0].3), (labels(WEB), 1));
    again(WEB);
    assert_eq!(counted(&w)[0].3, 1, "the same labels again: counted once");
    again(&[("team", "api")]);
    assert_eq!(counted(&w)[0].3, 0, "out of the cap its labels no longer match");
    // A `Reattach` without labels leaves a live session's as they are.
    w.broker.reattach(&w.owner, &w.target("m"), Nonce(1), ConnId(1), t(0), false).unwrap();
    assert_eq!(listed(&w, plain.session), labels(&[("team", "api")]));
    assert_eq!(w.in_use(), 1);
}
