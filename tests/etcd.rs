//! The etcd client against a real 3-member etcd cluster on loopback
//! (Debian's `etcd-server`, which the test command installs): reads and
//! writes, create-if-absent and revision-fenced transactions, leases that
//! delete their keys when they lapse, and failover when the member it
//! talks to is killed.

use std::time::{Duration, Instant};

use license_broker::cluster::etcd::{Compare, Etcd, Op};

mod etcd_members;
use etcd_members::start_cluster;

/// Retries `f` until it succeeds, for at most `limit`.
async fn eventually<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if started.elapsed() > limit => panic!("not within {limit:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_fences_leases_and_fails_over() {
    let mut cluster = start_cluster();
    let etcd = Etcd::new(&cluster.clients, Duration::from_secs(2)).unwrap();
    // A fresh cluster elects a leader within a few seconds.
    eventually(Duration::from_secs(20), || etcd.put(b"lb/ready", b"1", None)).await;

    // Create-if-absent: the first claim wins, the second sees the winner.
    let claim = |who: &'static [u8]| {
        let etcd = &etcd;
        async move {
            etcd.txn(
                &[Compare::CreateRevision(b"lb/owner/acme".to_vec(), 0)],
                &[Op::Put(b"lb/owner/acme".to_vec(), who.to_vec(), None)],
                &[Op::Get(b"lb/owner/acme".to_vec())],
            )
            .await
            .unwrap()
        }
    };
    let first = claim(b"node-a").await;
    assert!(first.succeeded, "{first:?}");
    let second = claim(b"node-b").await;
    assert!(!second.succeeded);
    assert_eq!(second.reads[0][0].value, b"node-a");
    let fence = second.reads[0][0].create_revision;
    assert_eq!(fence, first.revision, "the claim's revision is its fencing token");

    // A write fenced by the owner's revision passes; after the key is
    // re-created (a new owner), the old fence fails.
    let fenced = |rev: i64| {
        let etcd = &etcd;
        async move {
            etcd.txn(
                &[Compare::CreateRevision(b"lb/owner/acme".to_vec(), rev)],
                &[Op::Put(b"lb/records/acme/pool".to_vec(), b"quota=5".to_vec(), None)],
                &[],
            )
            .await
            .unwrap()
            .succeeded
        }
    };
    assert!(fenced(fence).await);
    etcd.txn(&[], &[Op::Delete(b"lb/owner/acme".to_vec())], &[]).await.unwrap();
    assert!(claim(b"node-b").await.succeeded);
    assert!(!fenced(fence).await, "a stale owner's write fails");
    let (records, _) = etcd.range(b"lb/records/", true).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, b"quota=5");

    // A lease: kept alive it holds its key; revoked, the key is gone.
    let (lease, ttl) = etcd.grant(Duration::from_secs(5)).await.unwrap();
    assert!(ttl >= Duration::from_secs(1));
    etcd.put(b"lb/nodes/a", b"alive", Some(lease)).await.unwrap();
    assert!(etcd.keep_alive(lease).await.unwrap().is_some());
    etcd.revoke(lease).await.unwrap();
    assert_eq!(etcd.keep_alive(lease).await.unwrap(), None, "a revoked lease is gone");
    assert!(etcd.range(b"lb/nodes/a", false).await.unwrap().0.is_empty(), "its key went with it");

    // Kill the member the client talks to: the others answer (after a
    // new leader is elected, if it was the leader).
    let _ = cluster.members[0].kill();
    let _ = cluster.members[0].wait();
    eventually(Duration::from_secs(20), || etcd.put(b"lb/after-kill", b"1", None)).await;
    let (after, _) = etcd.range(b"lb/after-kill", false).await.unwrap();
    assert_eq!(after.len(), 1);

    // Nothing answering: a clear error naming every endpoint tried.
    for m in &mut cluster.members {
        let _ = m.kill();
        let _ = m.wait();
    }
    let e = etcd.range(b"x", false).await.unwrap_err().to_string();
    assert!(cluster.clients.iter().all(|c| e.contains(c.trim_start_matches("http://"))), "{e}");
}
