//! Seats reserved by job label over real QUIC on 127.0.0.1: reserved,
//! taken only by checkouts carrying the label, listed, audited, kept
//! across a restart (free at once after a clean stop), refused past the quota and to members.

mod support;

use std::sync::Arc;
use std::time::Duration;

use license_broker::client::{Checkout, Client};
use license_broker::proto::{AuditAction, ErrorCode, ReservationInfo};
use license_broker::value::{Labels, MachineId, Role};

use support::{machine, org, start, start_in, POOL};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

fn checkout<'a>(m: &'a MachineId, o: &'a license_broker::value::OrgName, nonce: u128, l: &Labels) -> Checkout<'a> {
    Checkout { org: o, pool: POOL, machine: m, nonce, wait: Duration::ZERO, labels: l.clone() }
}

/// (seats, sessions on them, held) of the pool's one reservation.
async fn reserved(c: &Client) -> Vec<(u32, u32, u32)> {
    let all: Vec<ReservationInfo> = c.reservations(&org()).await.unwrap();
    all.iter().map(|r| (r.seats, r.in_use, r.held)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_seats_go_to_the_label_alone_and_survive_a_restart() {
    let mut b = start(Duration::from_secs(30)).await;
    b.quota(3).await;
    let c = b.owner().await;
    let (m, o) = (machine("m"), org());
    c.register_machine(&o, POOL, &m).await.unwrap();
    c.set_reservation((&o, POOL), ("pipeline", "release"), 2).await.unwrap();
    let (release, pr) = (labels(&[("pipeline", "release")]), labels(&[("pipeline", "pr")]));
    c.checkout(&checkout(&m, &o, 1, &pr)).await.unwrap();
    let e = c.checkout(&checkout(&m, &o, 2, &pr)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}");
    let e = c.acquire(&o, POOL, &m, 3).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "a plain acquire takes no reserved seat: {e}");
    let first = c.checkout(&checkout(&m, &o, 4, &release)).await.unwrap();
    assert_eq!(c.checkout(&checkout(&m, &o, 4, &release)).await.unwrap().session, first.session);
    assert_eq!(reserved(&c).await, [(2, 1, 2)]);
    let status = c.pools(Some(&o)).await.unwrap();
    assert_eq!(status[0].status.in_use, 2, "a free reserved seat is not in use");
    let audit = c.audit(&o).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == AuditAction::SeatsReserved).count(), 1);
    drop(c);
    b.stop().await;
    let dir = std::mem::replace(&mut b.dir, tempfile::tempdir().unwrap());
    let mut again = start_in(dir, Duration::from_secs(30)).await;
    again.owner = b.owner.clone();
    let c = again.owner().await;
    // Kept. The restart holds seats for the runners that may still believe
    // in theirs: none here, since the shutdown ended the sessions (their
    // connection closed), wrote the ceiling down to them and counted none
    // on the reserved seats (a crash would hold both reserved seats, who
    // sat on them unknown: `core::tests_restart`). So both are free for
    // the label at once.
    assert_eq!(reserved(&c).await, [(2, 0, 2)], "kept across the restart, nothing held after a clean stop");
    c.checkout(&checkout(&m, &o, 5, &release)).await.unwrap();
    c.checkout(&checkout(&m, &o, 6, &release)).await.unwrap();
    assert_eq!(reserved(&c).await, [(2, 2, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_past_the_quota_and_from_members_are_refused() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(3).await;
    let c = b.owner().await;
    c.set_reservation((&org(), POOL), ("pipeline", "release"), 2).await.unwrap();
    let e = c.set_reservation((&org(), POOL), ("team", "web"), 2).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    c.add_user(&org(), "u@default", Role::User).await.unwrap();
    let member = b.client(&c.create_key(&org(), "u@default").await.unwrap().0).await;
    let e = member.set_reservation((&org(), POOL), ("team", "web"), 1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    assert_eq!(reserved(&member).await, [(2, 0, 2)], "members see the reservations");
    c.set_reservation((&org(), POOL), ("pipeline", "release"), 0).await.unwrap();
    assert!(reserved(&c).await.is_empty());
}

async fn queued(c: &Client) {
    match tokio::time::timeout(Duration::from_secs(10), c.next_notice()).await {
        Ok(Some(license_broker::proto::Notice::Queued { .. })) => {}
        other => panic!("expected a Queued notice, got {other:?}"),
    }
}

/// A waiting checkout on a connection of its own, once it is queued.
async fn waiter(b: &support::TestBroker, nonce: u128, l: &Labels) -> tokio::task::JoinHandle<Result<u64, String>> {
    let c = Arc::new(b.owner().await);
    let (task_c, l) = (c.clone(), l.clone());
    let task = tokio::spawn(async move {
        let (o, m) = (org(), machine("m"));
        let co = Checkout { org: &o, pool: POOL, machine: &m, nonce, wait: Duration::from_secs(60), labels: l };
        task_c.checkout(&co).await.map(|lease| lease.session.0).map_err(|e| e.to_string())
    });
    queued(&c).await;
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_reserved_seat_goes_to_its_lanes_head_and_a_shared_one_to_the_queues() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(2).await;
    let c = b.owner().await;
    let (m, o) = (machine("m"), org());
    c.register_machine(&o, POOL, &m).await.unwrap();
    c.set_reservation((&o, POOL), ("pipeline", "release"), 1).await.unwrap();
    let release = labels(&[("pipeline", "release")]);
    let on_reserved = c.checkout(&checkout(&m, &o, 1, &release)).await.unwrap();
    let on_shared = c.acquire(&o, POOL, &m, 2).await.unwrap();
    // An unlabelled runner waits first, then two of the release pipeline.
    let plain = waiter(&b, 10, &Labels::default()).await;
    let first = waiter(&b, 11, &release).await;
    let second = waiter(&b, 12, &release).await;
    // The preflight's place: a release job's in its lane (two ahead of
    // it there), the others' in the whole queue (three ahead).
    assert_eq!(c.check((&o, POOL), &m, &release).await.unwrap().place, 3);
    assert_eq!(c.check((&o, POOL), &m, &Labels::default()).await.unwrap().place, 4);
    c.release(on_reserved.session).await.unwrap();
    let admitted = tokio::time::timeout(Duration::from_secs(10), first).await.unwrap().unwrap().unwrap();
    assert_eq!(reserved(&c).await, [(1, 1, 1)], "the lane's head sits on the reserved seat");
    assert!(!plain.is_finished() && !second.is_finished(), "the others wait on");
    // A shared seat goes to the head of the whole queue.
    c.release(on_shared.session).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), plain).await.unwrap().unwrap().unwrap();
    assert!(!second.is_finished());
    c.kill_session(&o, license_broker::value::SessionId(admitted)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), second).await.unwrap().unwrap().unwrap();
    assert_eq!(c.pools(Some(&o)).await.unwrap()[0].waiting, 0);
}

/// The preflight over QUIC and the API: a runner carrying the reserved
/// label would be admitted into a pool whose shared seats are full, an
/// unlabelled one would wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preflight_counts_the_seats_reserved_for_the_runners_labels() {
    let dir = tempfile::tempdir().unwrap();
    let b = support::start_with(dir, Duration::from_secs(30), |o| o.http = Some("127.0.0.1:0".parse().unwrap())).await;
    b.quota(2).await;
    let c = b.owner().await;
    let (m, o) = (machine("m"), org());
    c.register_machine(&o, POOL, &m).await.unwrap();
    c.set_reservation((&o, POOL), ("pipeline", "release"), 1).await.unwrap();
    c.acquire(&o, POOL, &m, 1).await.unwrap();
    let plain = c.check((&o, POOL), &m, &Labels::default()).await.unwrap();
    assert_eq!(plain.refusal.map(|e| e.code), Some(ErrorCode::QuotaExceeded));
    assert_eq!((plain.in_use, plain.worth_waiting), (1, true));
    let release = labels(&[("pipeline", "release")]);
    assert!(c.check((&o, POOL), &m, &release).await.unwrap().refusal.is_none());
    let ask = "/api/v1/availability?org=default&machine=m&label=job=build,pipeline=release";
    let (code, body) = b.web().fetch(ask, Some(&b.owner)).await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["admitted"].as_bool(), Some(true), "{v}");
    let (code, body) = b.web().fetch("/api/v1/availability?org=default&machine=m", Some(&b.owner)).await;
    assert!(code == 200 && body.contains("QUOTA_EXCEEDED"), "{body}");
    let (code, body) = b.web().fetch("/api/v1/availability?org=default&label=nope", Some(&b.owner)).await;
    assert_eq!(code, 400, "{body}");
}
