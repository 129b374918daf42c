//! loom model of a runner of the run before re-attaching after a restart
//! (`SeatFrom::HeldFirst`) into full caps, run on the shipped code as
//! `models.rs`'s are: it held its seat, so a cap counts it and never
//! refuses it, while a newcomer racing it is held to the caps.

#![cfg(broker_loom)]

use loom::sync::Arc;
use loom::thread;

use license_broker::core::Error;
use loom_tests::{model, t, Fixture};

/// After a restart holding one seat, a believer re-attaching with
/// `team=web` races a newcomer carrying it, under a label cap of 1 and
/// the Owner's cap of 1, on distinct shards: the believer is always
/// admitted into the held seat (counted past both caps when the newcomer
/// counted first), the newcomer only when it counted first; each cap
/// counts every live session once.
#[test]
fn a_believer_racing_a_newcomer_into_full_caps_is_admitted_and_counted_once() {
    model(|| {
        let (f, hold) = Fixture::restarted(3, 1);
        assert_eq!(hold.seats, 1);
        f.cap_web(1);
        f.cap_owner(1);
        let f = Arc::new(f);
        let (a, b) = f.nonces_in_distinct_shards();
        let fb = f.clone();
        let believer = thread::spawn(move || fb.reattach_labelled(a, true, t(0)));
        let fn_ = f.clone();
        let newcomer = thread::spawn(move || fn_.acquire_labelled(b, true));
        let back = believer.join().unwrap();
        let came = newcomer.join().unwrap();
        assert!(back.as_ref().is_ok_and(|l| !l.reattached), "a believer is never refused by a cap: {back:?}");
        match came {
            Ok(_) => assert_eq!(f.web_cap_count(), (2, 2), "both counted, the believer past the cap"),
            Err(e) => {
                // Whichever cap it met full (it may count in the user's
                // before the believer and find the label's taken).
                let capped = matches!(e, Error::UserLimit { max: 1 } | Error::LabelLimit { max: 1 });
                assert!(capped, "the newcomer is held to the caps: {e:?}");
                assert_eq!(f.web_cap_count(), (1, 1));
            }
        }
        let (counted, live) = f.owner_cap_count();
        assert_eq!(counted as usize, live, "the Owner's cap counts every live session once");
    });
}
