//! A cluster failover with webhook deliveries pending: three nodes on a
//! three-member etcd, a webhook of `default` whose receiver refuses (503)
//! while events pile up, and the node serving `default` killed with
//! SIGKILL. The node that takes the org over delivers every event once
//! the receiver takes them: nothing lost, in cursor order, a repeat
//! carrying its first delivery's id and idempotency key; and it tells of
//! the move itself (`cluster.org_taken`, naming the node gone).

use std::time::{Duration, Instant};

mod handover;

use super::support::receiver::{Got, Receiver};
use super::{cli, exclusive, logs, owner, start_nodes, Started};

/// Members added while the receiver refuses (each an `audit.user_added`).
const PENDING: usize = 4;

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs the command `run` makes until it succeeds, for at most 20 s, while
/// the org is between nodes (`NOT_OWNER`: the nodes just started spread
/// their orgs; the CLI says to retry shortly).
fn ok_served(run: impl Fn() -> std::process::Output) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run();
        let moving = String::from_utf8_lossy(&out.stderr).contains("NOT_OWNER");
        if out.status.success() || !moving || Instant::now() > deadline {
            return ok(out);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The requests received until `done` holds for one, within `limit`.
fn until(r: &Receiver, limit: Duration, done: impl Fn(&Got) -> bool, logs: impl Fn() -> String) -> Vec<Got> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let g =
            r.next(left).unwrap_or_else(|| panic!("the receiver waited in vain; got {:?}\n{}", types(&got), logs()));
        let last = done(&g);
        got.push(g);
        if last {
            return got;
        }
    }
}

fn types(got: &[Got]) -> Vec<String> {
    got.iter().map(|g| format!("{} {}", g.json()["id"], g.json()["type"])).collect()
}

#[test]
fn a_failover_with_deliveries_pending_loses_none_and_tells_of_the_move() {
    let _one = exclusive();
    let Started { etcd, mut nodes, operator: _, owner_key, servers, ca, .. } = start_nodes(2);
    let busy = Receiver::start(0, 503);
    let port = busy.port;
    let url = format!("http://127.0.0.1:{port}/hook");
    ok_served(|| {
        cli(&servers, &ca, &owner_key).args(["webhook", "add", "--org", "default", "--url", &url]).output().unwrap()
    });
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..PENDING {
        let email = format!("p{i}@default");
        ok_served(|| {
            cli(&servers, &ca, &owner_key).args(["user", "add", "--org", "default", &email]).output().unwrap()
        });
    }
    // The first pending event is tried (and refused): deliveries are pending.
    let tried = busy.next(Duration::from_secs(20)).expect("a try while the receiver refuses");
    let first_key = tried.header("idempotency-key");
    drop(busy);

    let serving = owner(&etcd.clients, "default").expect("default is served");
    let killed = nodes.iter_mut().find(|n| n.name == serving).unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let r = Receiver::start(port, 200);
    let taken = |g: &Got| g.json()["type"] == "cluster.org_taken";
    let got = until(&r, Duration::from_secs(60), |g| taken(g), || logs(&nodes));

    // Every pending member's event, in cursor order, each first seen once.
    let mut seen: Vec<(u64, String)> = Vec::new();
    for g in &got {
        let (cursor, key) = (g.json()["cursor"].as_u64().unwrap(), g.header("idempotency-key"));
        match seen.iter().find(|(c, _)| *c == cursor) {
            Some((_, first)) => assert_eq!(&key, first, "a repeat carries the same key"),
            None => seen.push((cursor, key)),
        }
    }
    let cursors: Vec<u64> = seen.iter().map(|(c, _)| *c).collect();
    assert_eq!(cursors, (cursors[0]..cursors[0] + cursors.len() as u64).collect::<Vec<_>>(), "{:?}", types(&got));
    assert_eq!(seen[0].1, first_key, "the event refused before the kill is the first delivered after it");
    for i in 0..PENDING {
        let added =
            got.iter().any(|g| g.json()["data"]["detail"].as_str().is_some_and(|d| d.contains(&format!("p{i}@"))));
        assert!(added, "p{i}'s event was lost: {:?}", types(&got));
    }
    let moved = got.iter().find(|g| taken(g)).unwrap().json();
    let now = owner(&etcd.clients, "default").expect("default is served again");
    assert_eq!(moved["data"]["node"], now.as_str(), "told by the node now serving it: {moved}");
    assert_eq!(moved["data"]["previous"], serving.as_str(), "naming the node gone: {moved}");
    assert_eq!(moved["idempotency_key"], format!("org_moved:default:{}", moved["data"]["fence"]));
}
