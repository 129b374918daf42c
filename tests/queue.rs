//! The wait queue over real QUIC on 127.0.0.1: first come first admitted,
//! positions, no overtaking, timeouts, and waiters that go away.

mod support;

use std::sync::Arc;
use std::time::Duration;

use license_broker::proto::{ErrorCode, Notice};

use support::{machine, org, start, POOL};

const LONG: Duration = Duration::from_secs(60);

async fn queued_position(c: &license_broker::client::Client) -> u32 {
    match tokio::time::timeout(Duration::from_secs(10), c.next_notice()).await {
        Ok(Some(Notice::Queued { position, .. })) => position,
        other => panic!("expected a Queued notice, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_admitted_in_arrival_order_and_nobody_overtakes_them() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(1).await;
    let holder = b.owner().await;
    holder.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let held = holder.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();

    // Two waiters, on connections of their own, in this order.
    let (a, c) = (Arc::new(b.owner().await), Arc::new(b.owner().await));
    let wa = tokio::spawn({
        let a = a.clone();
        async move { a.wait(&org(), POOL, &machine("m"), 10, LONG).await }
    });
    assert_eq!(queued_position(&a).await, 1);
    let wc = tokio::spawn({
        let c = c.clone();
        async move { c.wait(&org(), POOL, &machine("m"), 11, LONG).await }
    });
    assert_eq!(queued_position(&c).await, 2);
    assert_eq!(holder.pools(None).await.unwrap()[0].waiting, 2, "status shows the queue depth");

    // The freed seat goes to the head waiter, never to a newcomer.
    holder.release(held.session).await.unwrap();
    let first = wa.await.unwrap().expect("the head waiter is admitted");
    assert!(first.token.is_some());
    let e = holder.acquire(&org(), POOL, &machine("m"), 2).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "a newcomer is behind the queue");
    // The admitted waiter holds a real lease: it renews, then releases to the next.
    a.renew(first.session).await.unwrap();
    a.release(first.session).await.unwrap();
    let second = wc.await.unwrap().expect("then the second");
    let pools = holder.pools(None).await.unwrap();
    assert_eq!((pools[0].status.in_use, pools[0].waiting), (1, 0));
    c.release(second.session).await.unwrap();
    // Nobody waits: a newcomer gets the free seat.
    holder.acquire(&org(), POOL, &machine("m"), 3).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_times_out_and_a_waiter_that_disconnects_leaves_the_queue() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(1).await;
    let holder = b.owner().await;
    holder.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let held = holder.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();

    let e = holder.wait(&org(), POOL, &machine("m"), 5, Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QueueTimeout), "{e}");
    // A waiting request does not hold up the other requests of its stream.
    assert_eq!(holder.pools(None).await.unwrap()[0].waiting, 0);

    let gone = b.owner().await;
    let pending = tokio::spawn(async move {
        let (o, m) = (org(), machine("m"));
        let r = gone.wait(&o, POOL, &m, 6, LONG);
        let _ = tokio::time::timeout(Duration::from_millis(500), r).await;
        gone.close().await;
    });
    pending.await.unwrap();
    let mut waiting = 1;
    for _ in 0..100 {
        waiting = holder.pools(None).await.unwrap()[0].waiting;
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiting, 0, "the closed connection's waiter left the queue");
    holder.release(held.session).await.unwrap();
    let pools = holder.pools(None).await.unwrap();
    assert_eq!(pools[0].status.in_use, 0, "the seat was not handed to the waiter that left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_on_the_stream_are_answered_while_one_waits() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(1).await;
    let c = Arc::new(b.owner().await);
    c.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let held = c.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();
    let waiter = tokio::spawn({
        let c = c.clone();
        async move { c.wait(&org(), POOL, &machine("m"), 2, LONG).await }
    });
    assert_eq!(queued_position(&c).await, 1);
    // Same connection, same stream: heartbeats go on while the wait is pending.
    for _ in 0..3 {
        c.renew(held.session).await.unwrap();
    }
    c.release(held.session).await.unwrap();
    let lease = waiter.await.unwrap().unwrap();
    assert!(!lease.reattached);
}
