//! The preflight's estimate in a pool with seats reserved by job label,
//! on a driven clock: a runner is estimated on the line it would be
//! served from first (its reservation's lane or the whole queue), and
//! sessions on seats it may never take free nothing for it.

use std::time::Duration;

use super::availability::{wait_estimate, Availability, Wait};
use super::testkit::{mid, t, Fixture, Inbox};
use super::*;
use crate::value::Labels;

const TTL: Duration = Duration::from_secs(60);
const RELEASE: &[(&str, &str)] = &[("pipeline", "release")];
/// The pool's mean session, as the history would give it.
const MEAN: u64 = 20_000;

fn who(nonce: u128, pairs: &[(&str, &str)]) -> Claimant {
    let labels = Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
    Claimant { nonce: Nonce(nonce), conn: ConnId(1), labels }
}

fn acquire_at(w: &Fixture, nonce: u128, pairs: &[(&str, &str)], at: u64) {
    w.broker.acquire_as(&w.owner, &w.target("m"), &who(nonce, pairs), t(at)).unwrap();
}

fn wait_at(w: &Fixture, nonce: u128, pairs: &[(&str, &str)], at: u64) -> Inbox {
    let inbox = Inbox::default();
    let waited = w.broker.wait(&w.owner, &w.target("m"), &who(nonce, pairs), t(at), inbox.deliver());
    assert!(matches!(waited, Ok(Waited::Queued(_))), "{waited:?}");
    inbox
}

fn ask(w: &Fixture, pairs: &[(&str, &str)], at: u64) -> Availability {
    let labels = who(0, pairs).labels;
    w.broker.availability(&w.owner, (&w.org, PoolId::KRE_DEFAULT), (Some(&mid("m")), &labels), t(at)).unwrap()
}

/// A pool of `quota` with one seat reserved for the release pipeline,
/// taken at 0 s by a release job; the shared seats taken at 15 s.
fn full_with_lane(quota: u32) -> Fixture {
    let w = Fixture::new(quota, 2, TTL);
    w.register("m").unwrap();
    let label = ("pipeline".to_string(), "release".to_string());
    w.apply(w.broker.plan_set_reservation(&w.owner, (&w.org, PoolId::KRE_DEFAULT), label, 1, t(0)));
    acquire_at(&w, 1, RELEASE, 0);
    for n in 2..=quota {
        acquire_at(&w, u128::from(n), &[], 15_000);
    }
    w
}

/// What the estimate was before lanes: the whole queue, every session.
fn whole_queue(w: &Fixture, a: &Availability, now: u64) -> Option<u64> {
    let starts = w.broker.live_starts(&w.owner, &w.org, PoolId::KRE_DEFAULT).unwrap();
    wait_estimate(t(now), a.waiting + 1, a.free(), &starts, MEAN)
}

#[test]
fn a_release_job_is_estimated_on_its_lane_when_that_frees_first() {
    let w = full_with_lane(4);
    let _queued = [wait_at(&w, 10, &[], 16_000), wait_at(&w, 11, &[], 16_000)];
    // At 18 s the release job's session (2 s short of the mean) ends
    // first; the shared sessions at 35 s, and two waiters are ahead there.
    let a = ask(&w, RELEASE, 18_000);
    assert_eq!(a.refusal, Some(Error::QuotaExceeded { quota: 4 }));
    assert_eq!(a.wait(t(18_000), Some(MEAN)), Wait { place: 1, ms: Some(5_000) }, "a quarter mean: overdue soon");
    assert_eq!(whole_queue(&w, &a, 18_000), Some(17_000), "the whole queue said third, at 17 s");
    // Another release job in the lane: it comes next there, a mean later.
    let _lane = wait_at(&w, 12, RELEASE, 18_000);
    assert_eq!(ask(&w, RELEASE, 18_000).wait(t(18_000), Some(MEAN)), Wait { place: 2, ms: Some(25_000) });
    // No history, no estimate; the place is still the lane's.
    assert_eq!(ask(&w, RELEASE, 18_000).wait(t(18_000), None), Wait { place: 2, ms: None });
}

#[test]
fn a_job_without_the_label_is_not_estimated_on_reserved_sessions() {
    let w = full_with_lane(2);
    let a = ask(&w, &[], 18_000);
    // The release job's session ends first, but its seat stays reserved:
    // the shared one comes free at 35 s.
    assert_eq!(a.wait(t(18_000), Some(MEAN)), Wait { place: 1, ms: Some(17_000) });
    assert_eq!((a.lanes.len(), &a.shared.starts), (0, &vec![t(15_000)]), "the release job's seat never comes to it");
    assert_eq!(whole_queue(&w, &a, 18_000), Some(5_000), "the whole pool said 5 s");
    // A job of another pipeline likewise.
    let other = ask(&w, &[("pipeline", "nightly")], 18_000);
    assert_eq!(other.wait(t(18_000), Some(MEAN)), Wait { place: 1, ms: Some(17_000) });
}
