//! The wait queue's rules on a driven clock: first come first admitted,
//! nobody overtakes a waiter, a seat granted is never lost.

use std::time::Duration;

use super::testkit::{t, Fixture};
use super::*;

fn full_pool(quota: u32) -> (Fixture, Vec<Lease>) {
    let w = Fixture::new(quota, 2, Duration::from_secs(30));
    w.register("m").unwrap();
    let held = (0..quota).map(|n| w.acquire("m", u128::from(n), 1, t(0)).unwrap()).collect();
    (w, held)
}

fn queued(w: &Waited) -> u32 {
    match w {
        Waited::Queued(place) => place.position,
        Waited::Leased(l) => panic!("admitted at once: {l:?}"),
    }
}

#[test]
fn a_free_seat_is_taken_at_once_and_a_full_pool_queues_in_order() {
    let (w, held) = full_pool(1);
    let (first, a) = w.wait("m", 100, 2, t(0));
    let (second, b) = w.wait("m", 101, 3, t(0));
    assert_eq!((queued(&first.unwrap()), queued(&second.unwrap())), (1, 2));
    assert_eq!((w.pool_status().waiting, w.pool_status().rejected), (2, 0), "queued, not rejected");
    w.broker.release(&w.owner, held[0].session, t(0)).unwrap();
    let grant = a.take().expect("the head waiter got the freed seat");
    assert!(b.take().is_none(), "the second waits on");
    assert_eq!(w.in_use(), 1, "the granted seat is counted");
    let lease = w.claim("m", 100, 2, t(5), grant).unwrap();
    assert!(!lease.reattached);
    assert_eq!((w.in_use(), w.pool_status().waiting), (1, 1));
    w.broker.release(&w.owner, lease.session, t(0)).unwrap();
    let lease = w.claim("m", 101, 3, t(6), b.take().expect("then the second")).unwrap();
    w.broker.release(&w.owner, lease.session, t(0)).unwrap();
    assert_eq!((w.in_use(), w.pool_status().waiting), (0, 0));
    let (now, _) = w.wait("m", 102, 4, t(7));
    assert!(matches!(now.unwrap(), Waited::Leased(_)), "an empty queue and a free seat: admitted at once");
}

#[test]
fn nobody_overtakes_a_waiter() {
    let (w, held) = full_pool(2);
    let (_, a) = w.wait("m", 100, 2, t(0));
    w.broker.release(&w.owner, held[0].session, t(0)).unwrap();
    // The seat went to the waiter, not back to the pool.
    assert_eq!(w.acquire("m", 200, 9, t(1)), Err(Error::QuotaExceeded { quota: 2 }));
    let lease = w.claim("m", 100, 2, t(1), a.take().unwrap()).unwrap();
    // Queue empty again: a freed seat is anyone's.
    w.broker.release(&w.owner, lease.session, t(0)).unwrap();
    assert!(w.acquire("m", 200, 9, t(2)).is_ok());
}

#[test]
fn a_waiter_that_leaves_is_skipped_and_one_gone_hands_its_seat_on() {
    let (w, held) = full_pool(1);
    let (first, a) = w.wait("m", 100, 2, t(0));
    let (_, b) = w.wait("m", 101, 3, t(0));
    let (_, c) = w.wait("m", 102, 4, t(0));
    let Waited::Queued(place) = first.unwrap() else { panic!() };
    assert!(place.leave(), "left before any seat came");
    assert!(!place.leave(), "once");
    assert!(b.close().is_none());
    w.broker.release(&w.owner, held[0].session, t(0)).unwrap();
    assert!(a.take().is_none());
    let grant = c.take().expect("the seat passed over the one gone to the next");
    assert_eq!(w.in_use(), 1);
    drop(grant);
    assert_eq!((w.in_use(), w.pool_status().waiting), (0, 0), "a dropped grant gives the seat back");
}

#[test]
fn the_queue_is_bounded_and_a_pool_without_licenses_refuses_waiting() {
    let w = Fixture::with_config(1, Config { max_waiters: 2, ..Config::default() });
    w.register("m").unwrap();
    w.acquire("m", 0, 1, t(0)).unwrap();
    let _a = w.wait("m", 1, 1, t(0));
    let _b = w.wait("m", 2, 1, t(0));
    assert_eq!(w.wait("m", 3, 1, t(0)).0.unwrap_err(), Error::QueueFull { max: 2 });
    let w = Fixture::new(1, 2, Duration::from_secs(30));
    w.register("m").unwrap();
    w.set_quota(PoolId::KRE_DEFAULT, 0);
    assert_eq!(w.wait("m", 1, 1, t(0)).0.unwrap_err(), Error::QuotaExceeded { quota: 0 }, "nothing to wait for");
}

#[test]
fn a_raised_quota_and_an_expired_lease_admit_waiters() {
    let (w, held) = full_pool(1);
    let (_, a) = w.wait("m", 100, 2, t(0));
    let (_, b) = w.wait("m", 101, 3, t(0));
    w.set_quota(PoolId::KRE_DEFAULT, 2);
    let first = w.claim("m", 100, 2, t(1), a.take().expect("the raise admitted the head")).unwrap();
    assert!(b.take().is_none());
    // The first admitted waiter stops renewing (the other holder does not):
    // its expiry hands the seat on.
    w.broker.renew(&w.owner, held[0].session, t(20_000)).unwrap();
    let expired = w.broker.expire(t(31_000));
    assert_eq!(expired.iter().map(|e| e.info.session).collect::<Vec<_>>(), [first.session]);
    let grant = b.take().expect("the expired seat went to the waiter");
    assert!(w.claim("m", 101, 3, t(31_000), grant).is_ok());
}

#[test]
fn a_claim_the_rules_now_refuse_gives_the_seat_to_the_next() {
    let (w, held) = full_pool(1);
    let (_, a) = w.wait("m", 100, 2, t(0));
    let (_, b) = w.wait("m", 101, 3, t(0));
    w.broker.release(&w.owner, held[0].session, t(0)).unwrap();
    let grant = a.take().unwrap();
    w.apply(w.broker.plan_set_subscription(&w.operator, &w.org, t(10), t(0)));
    assert_eq!(w.claim("m", 100, 2, t(20), grant), Err(Error::SubscriptionExpired));
    assert!(b.take().is_some(), "the refused claim's seat went on");
}
