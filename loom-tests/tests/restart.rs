//! loom models of a restart's hold on label caps (`core::pool::cap_hold`),
//! run on the shipped code as `models.rs`'s are: a runner of the run
//! before re-attaching into its capped label never lets a newcomer past
//! the cap, and the places a cap held go back exactly once.

#![cfg(broker_loom)]

use loom::sync::Arc;
use loom::thread;

use license_broker::core::Error;
use loom_tests::{model, t, Fixture};

/// `team=web` capped at 1, one seat held after a restart (so one place of
/// the cap): a web runner of the run before re-attaches while a web
/// newcomer acquires, on distinct shards. The believer always comes back
/// (a cap never refuses it); the newcomer never gets in beside it.
#[test]
fn a_believer_racing_a_newcomer_for_its_capped_label_keeps_the_cap() {
    model(|| {
        let (f, _) = Fixture::restarted_with_web_cap(3, 1, 1);
        let f = Arc::new(f);
        let (a, b) = f.nonces_in_distinct_shards();
        let fb = f.clone();
        let believer = thread::spawn(move || fb.reattach_labelled(a, true, t(20_000)));
        let fn_ = f.clone();
        let newcomer = thread::spawn(move || fn_.acquire_labelled_at(b, true, t(20_000)));
        let back = believer.join().unwrap().expect("a cap never refuses a believer");
        assert_eq!(newcomer.join().unwrap(), Err(Error::LabelLimit { max: 1 }));
        assert_eq!(f.web_counted(), 1);
        // Its place was taken once: with the believer gone the cap is free.
        f.broker.release(&f.owner, back.session, t(20_000)).unwrap();
        assert!(f.acquire_labelled_at(b, true, t(20_000)).is_ok());
    });
}

/// The same believer racing the end of the hold: the cap's place goes back
/// once (to the end, or as the believer takes it), so the cap counts the
/// believer and nothing else, and a newcomer then meets it full.
#[test]
fn a_believer_racing_the_end_of_the_hold_leaves_its_cap_counting_sessions() {
    model(|| {
        let (f, hold) = Fixture::restarted_with_web_cap(3, 1, 1);
        let f = Arc::new(f);
        let fb = f.clone();
        let believer = thread::spawn(move || fb.reattach_labelled(1, true, t(20_000)));
        let fe = f.clone();
        let ender = thread::spawn(move || fe.broker.expire(hold.until).len());
        let back = believer.join().unwrap().expect("a cap never refuses a believer");
        assert_eq!(ender.join().unwrap(), 0);
        assert_eq!(f.web_counted(), 1, "the believer alone");
        assert_eq!(f.acquire_labelled_at(2, true, t(20_000)), Err(Error::LabelLimit { max: 1 }));
        f.broker.release(&f.owner, back.session, t(20_000)).unwrap();
        assert!(f.acquire_labelled_at(2, true, t(20_000)).is_ok(), "no place went back twice, none stayed");
    });
}
