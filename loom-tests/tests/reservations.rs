//! loom models of seats reserved by job label (`core::pool::lanes`) and
//! their lanes in the wait queue, run on the shipped code as `models.rs`'s
//! are: a reserved seat is never an unlabelled session's, caps beside a
//! reservation hold, and a freed reserved seat goes to its lane's head.

#![cfg(broker_loom)]

use loom::sync::Arc;
use loom::thread;

use license_broker::core::Error;
use loom_tests::{model, t, Fixture};

/// The waiter's place in the queue (it was queued, not admitted).
fn place(w: license_broker::core::Waited) -> license_broker::core::Place {
    match w {
        license_broker::core::Waited::Queued(p) => p,
        other => panic!("expected to queue: {other:?}"),
    }
}

/// Reserved seats: with one of two seats reserved for `team=web`, two
/// unlabelled sessions and one labelled race on distinct shards: exactly
/// one unlabelled session is admitted (the shared seat), never on the
/// reserved one; the labelled one always is, on it; the quota holds.
#[test]
fn a_reserved_seat_is_never_taken_by_an_unlabelled_session() {
    model(|| {
        let f = Arc::new(Fixture::new(2));
        f.reserve_web(1);
        let (a, b) = f.nonces_in_distinct_shards();
        let handles: Vec<_> = [(a, false), (b, false), (99, true)]
            .into_iter()
            .map(|(n, web)| {
                let f = f.clone();
                thread::spawn(move || f.acquire_labelled(n, web))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results[..2].iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results[..2].contains(&Err(Error::QuotaExceeded { quota: 2 })));
        assert!(results[2].is_ok(), "the label's seat is there for it");
        assert_eq!(f.web_reserved(), (1, 1, 1), "the labelled one sits on it");
        assert_eq!(f.in_use(), 2);
        assert!(f.acquire_labelled(7, false).is_err(), "nothing more for the unlabelled");
    });
}

/// Caps beside reservations: two sessions carrying `team=web` (capped
/// at 1, with 2 seats reserved for it) race on distinct shards beside an
/// unlabelled one: exactly one labelled session is admitted, the refused
/// one took neither a reserved nor a shared seat, and the quota holds.
#[test]
fn a_cap_beside_a_reservation_is_never_exceeded_by_racing_admissions() {
    model(|| {
        let f = Arc::new(Fixture::new(3));
        f.reserve_web(2);
        f.cap_web(1);
        let (a, b) = f.nonces_in_distinct_shards();
        let handles: Vec<_> = [(a, true), (b, true), (99, false)]
            .into_iter()
            .map(|(n, web)| {
                let f = f.clone();
                thread::spawn(move || f.acquire_labelled(n, web))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results[..2].iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results[..2].contains(&Err(Error::LabelLimit { max: 1 })));
        assert!(results[2].is_ok(), "the shared seat");
        assert_eq!(f.web_cap_count(), (1, 1));
        assert_eq!(f.web_reserved(), (2, 1, 2), "the admitted one sits on a reserved seat, once");
        assert_eq!(f.in_use(), 2);
    });
}

/// Lanes: a reserved seat freed while an unlabelled runner waits ahead
/// of a labelled one, racing a labelled newcomer's acquire: the seat goes
/// to the lane's head, never to the unlabelled head nor the newcomer, and
/// is counted once.
#[test]
fn a_freed_reserved_seat_goes_to_its_lanes_head() {
    model(|| {
        let f = Arc::new(Fixture::new(2));
        f.reserve_web(1);
        let on_reserved = f.acquire_labelled(1, true).unwrap();
        f.acquire_labelled(2, false).unwrap();
        let (queued, plain) = f.wait_labelled(10, false);
        let queued = place(queued.unwrap());
        let (_, lane) = f.wait_labelled(11, true);
        let fr = f.clone();
        let releaser = thread::spawn(move || fr.broker.release(&fr.owner, on_reserved.session, t(0)).map(|_| ()));
        let fn_ = f.clone();
        let newcomer = thread::spawn(move || fn_.acquire_labelled(3, true));
        releaser.join().unwrap().unwrap();
        assert!(newcomer.join().unwrap().is_err(), "nobody overtakes the lane's waiter");
        assert!(!plain.has_grant(), "an unlabelled waiter never gets a reserved seat");
        let grant = lane.take();
        assert!(grant.is_some(), "the lane's head got it");
        assert_eq!(f.web_reserved(), (1, 1, 1), "counted once, as the grant's");
        assert_eq!(f.pool_status().waiting, 1);
        drop(grant);
        assert_eq!(f.web_reserved(), (1, 0, 1), "a dropped grant gives it back to the reservation");
        assert!(queued.leave(), "the unlabelled runner still waits (and leaves: the pool and it hold each other)");
    });
}

/// Lanes: a labelled runner joining its lane races the release of the
/// reserved seat: it is never left waiting beside its free seat.
#[test]
fn joining_a_lane_racing_its_seats_release_is_never_stranded() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        f.reserve_web(1);
        let on_reserved = f.acquire_labelled(1, true).unwrap();
        let fr = f.clone();
        let releaser = thread::spawn(move || fr.broker.release(&fr.owner, on_reserved.session, t(0)).map(|_| ()));
        let fw = f.clone();
        let waiter = thread::spawn(move || {
            let (w, inbox) = fw.wait_labelled(11, true);
            (w.unwrap(), inbox)
        });
        releaser.join().unwrap().unwrap();
        let (waited, inbox) = waiter.join().unwrap();
        let admitted = matches!(waited, license_broker::core::Waited::Leased(_));
        assert!(admitted || inbox.has_grant(), "a free reserved seat and its lane's waiter never both remain");
        assert_eq!(f.web_reserved(), (1, 1, 1));
    });
}

/// The reserved-seat path of `a_seat_taken_racing_its_expiry_is_never_dated_before_it`
/// (models.rs): the pool's one seat is reserved for `team=web` and held by
/// a web session; its expiry races a web admission stamped a moment
/// before it (a stream stamps a whole read once), on another shard. The
/// seat comes back to the reservation, not the pool (another word): the
/// new session is still never dated before the expiry, and the reserved
/// seat is counted once.
#[test]
fn a_reserved_seat_taken_racing_its_expiry_is_never_dated_before_it() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        f.reserve_web(1);
        let (a, b) = f.nonces_in_distinct_shards();
        let lease = f.acquire_labelled(a, true).unwrap();
        assert_eq!(f.web_reserved(), (1, 1, 1), "on the reserved seat");
        let expired_at = lease.deadline.after(std::time::Duration::from_millis(5));
        let fe = f.clone();
        let expirer = thread::spawn(move || fe.broker.expire(expired_at).len());
        let fa = f.clone();
        let stale = license_broker::core::Millis(lease.deadline.0 - 10);
        let taker = thread::spawn(move || fa.acquire_labelled_at(b, true, stale));
        assert_eq!(expirer.join().unwrap(), 1);
        let taken = taker.join().unwrap();
        if let Ok(next) = &taken {
            let started = next.deadline.0 - loom_tests::TTL.as_millis() as u64;
            assert!(started >= expired_at.0, "dated {started}, the seat was freed at {}", expired_at.0);
        } else {
            assert_eq!(taken, Err(Error::QuotaExceeded { quota: 1 }), "refused only while the seat was held");
        }
        let on_it = u32::from(taken.is_ok());
        assert_eq!((f.in_use(), f.web_reserved()), (on_it, (1, on_it, 1)), "the reserved seat counted once");
    });
}
