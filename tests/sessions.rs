//! Session rules over real QUIC on 127.0.0.1: quota, machine cap, expiry,
//! idempotent acquire, end reasons.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use license_broker::proto::Notice;
use license_broker::proto::{EndReason, ErrorCode};

use support::{machine, org, start, POOL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_quota_admitted_under_concurrent_acquires() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(7).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(Arc::new(b.owner().await));
    }
    clients[0].register_machine(&org(), POOL, &machine("ci-1")).await.unwrap();
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        for j in 0..8u128 {
            let c = c.clone();
            tasks.push(tokio::spawn(
                async move { c.acquire(&org(), POOL, &machine("ci-1"), (i as u128) << 32 | j).await },
            ));
        }
    }
    let mut admitted = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((admitted, refused), (7, 57));
    let status = clients[0].status(None).await.unwrap();
    assert_eq!((status[0].in_use, status[0].admitted, status[0].rejected), (7, 7, 57));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_ids_capped_at_quota() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(2).await;
    let c = b.owner().await;
    assert!(c.register_machine(&org(), POOL, &machine("a")).await.unwrap());
    assert!(c.register_machine(&org(), POOL, &machine("b")).await.unwrap());
    assert!(!c.register_machine(&org(), POOL, &machine("a")).await.unwrap(), "re-registering is idempotent");
    let e = c.register_machine(&org(), POOL, &machine("c")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::MachineLimit));
    let e = c.acquire(&org(), POOL, &machine("c"), 1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::MachineNotRegistered));
    c.remove_machine(&org(), None, &machine("a")).await.unwrap();
    assert!(c.register_machine(&org(), POOL, &machine("c")).await.unwrap());
    let listed: Vec<String> =
        c.list_machines(&org()).await.unwrap().into_iter().map(|m| m.machine.to_string()).collect();
    assert_eq!(listed, ["b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_runner_loses_its_seat_when_the_lease_expires() {
    let ttl = Duration::from_millis(600);
    let b = start(ttl).await;
    b.quota(1).await;
    let runner = b.owner().await;
    runner.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let lease = runner.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();
    runner.abandon(); // crash: no release, no clean close

    let waiter = b.owner().await;
    let e = waiter.acquire(&org(), POOL, &machine("m"), 2).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "the seat is held until the deadline");
    let started = Instant::now();
    let admitted = loop {
        match waiter.acquire(&org(), POOL, &machine("m"), 2).await {
            Ok(a) => break a,
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded)),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "seat never reclaimed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(now_ms >= lease.deadline_ms, "admitted only after the dead runner's deadline");
    assert_ne!(admitted.session, lease.session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_lease_alive_past_its_ttl() {
    let ttl = Duration::from_millis(600);
    let b = start(ttl).await;
    b.quota(1).await;
    let c = b.owner().await;
    c.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let lease = c.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(ttl / 3).await;
        c.renew(lease.session).await.unwrap();
    }
    assert_eq!(c.list_sessions(&org()).await.unwrap().len(), 1);
    // Then stop heartbeating: the broker pushes an "expired" notice.
    let notice = tokio::time::timeout(Duration::from_secs(10), c.next_notice()).await.unwrap();
    assert_eq!(notice, Some(Notice::SessionEnded { session: lease.session, reason: EndReason::Expired }));
    assert_eq!(c.renew(lease.session).await.unwrap_err().code(), Some(ErrorCode::SessionExpired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_is_idempotent_per_nonce_across_retries_and_reconnects() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(2).await;
    let c = b.owner().await;
    c.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let first = c.acquire(&org(), POOL, &machine("m"), 77).await.unwrap();
    let retry = c.acquire(&org(), POOL, &machine("m"), 77).await.unwrap();
    assert_eq!((retry.session, retry.reattached), (first.session, true));
    c.abandon();
    let again = b.owner().await;
    let reconnect = again.acquire(&org(), POOL, &machine("m"), 77).await.unwrap();
    assert_eq!(reconnect.session, first.session);
    assert_eq!(again.status(None).await.unwrap()[0].in_use, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_way_of_ending_frees_the_seat_with_its_reason() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(3).await;
    let admin = b.owner().await;
    admin.register_machine(&org(), POOL, &machine("m")).await.unwrap();

    // Released: the runner asks.
    let r = b.owner().await;
    let s = r.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();
    r.release(s.session).await.unwrap();
    assert_eq!(r.release(s.session).await.unwrap_err().code(), Some(ErrorCode::SessionExpired));

    // Revoked: an admin kills it, and the holder is told.
    let s = r.acquire(&org(), POOL, &machine("m"), 2).await.unwrap();
    admin.kill_session(&org(), s.session).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), r.next_notice()).await.unwrap();
    assert_eq!(n, Some(Notice::SessionEnded { session: s.session, reason: EndReason::Revoked }));

    // Connection closed: a clean close frees the seat at once.
    let s = r.acquire(&org(), POOL, &machine("m"), 3).await.unwrap();
    assert_eq!(admin.status(None).await.unwrap()[0].in_use, 1);
    r.close().await;
    let started = Instant::now();
    while admin.status(None).await.unwrap()[0].in_use != 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "clean close did not free {}", s.session);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(admin.list_sessions(&org()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_large_for_a_frame_is_refused_not_sent() {
    use license_broker::proto::{Req, Resp};
    use license_broker::value::Nonce;
    let b = start(Duration::from_secs(30)).await;
    b.quota(5000).await;
    let c = b.owner().await;
    c.register_machine(&org(), POOL, &machine("ci")).await.unwrap();
    let acquires: Vec<Req> = (0..3000u128)
        .map(|n| Req::Acquire { org: org(), pool: POOL, machine: machine("ci"), nonce: Nonce(n) })
        .collect();
    assert!(c.call_batch(acquires).await.iter().all(|r| matches!(r, Ok(Resp::Leased { .. }))));
    // The unpaged request of versions 1 to 3 (the library pages, see tests/paging.rs).
    let e = c.call(Req::ListSessions { org: org() }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ResponseTooLarge), "{e}");
    assert!(e.to_string().contains("frame"), "{e}");
    // The stream goes on: smaller answers still come.
    assert_eq!(c.status(None).await.unwrap()[0].in_use, 3000);
}
