//! A planned handover with a webhook receiving all along: the node
//! serving `default` stops cleanly (SIGTERM: another node takes the org
//! over), and comes back, so the node serving it meanwhile hands it on
//! (rendezvous hashing prefers the one that came back), while members are
//! added one after another and every event is delivered. Neither move
//! sends the receiver again an event it took: each node writes the
//! webhook's cursor as delivered as it lets the org go.

use std::time::{Duration, Instant};

use super::super::support::receiver::Receiver;
use super::super::{claims, cli, exclusive, logs, owner, signal, start_nodes, Started};
use super::{ok_served, types, until};

/// Waits until `default` is served by a node `ok` takes; returns it.
fn served_by(etcd: &[String], ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(node) = owner(etcd, "default").filter(|n| ok(n)) {
            return node;
        }
        assert!(Instant::now() < deadline, "default never moved: {:?}", claims(etcd));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_planned_handover_sends_again_nothing_the_receiver_took() {
    let _one = exclusive();
    let Started { etcd, mut nodes, lines, owner_key, servers, ca, .. } = start_nodes(2);
    let r = Receiver::start(0, 200);
    let url = format!("http://127.0.0.1:{}/hook", r.port);
    let add = |args: &[&str]| ok_served(|| cli(&servers, &ca, &owner_key).args(args).output().unwrap());
    add(&["webhook", "add", "--org", "default", "--url", &url]);
    // Placement settles: `default` on the node rendezvous hashing prefers.
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let preferred = license_broker::cluster::placement::preferred("default", &names).unwrap().to_string();
    served_by(&etcd.clients, |node| node == preferred);
    let p = nodes.iter().position(|n| n.name == preferred).unwrap();
    let mut n = 0;
    let member = |n: &mut usize| {
        *n += 1;
        add(&["user", "add", "--org", "default", &format!("h{n}@default")]);
    };
    member(&mut n);
    signal(&nodes[p].child, "-TERM");
    nodes[p].child.wait().unwrap();
    served_by(&etcd.clients, |node| node != preferred);
    member(&mut n);
    nodes[p].respawn(&etcd.clients, &lines);
    // Members keep coming while the org moves back, and a few after.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = 0;
    while after < 3 {
        member(&mut n);
        after += usize::from(owner(&etcd.clients, "default").as_deref() == Some(preferred.as_str()));
        assert!(Instant::now() < deadline, "default never came back to {preferred}");
    }
    let last = format!("h{n}@default");
    let got = until(
        &r,
        Duration::from_secs(60),
        |g| g.json()["data"]["detail"].as_str().is_some_and(|d| d.contains(&last)),
        || logs(&nodes),
    );
    let cursors: Vec<u64> = got.iter().map(|g| g.json()["cursor"].as_u64().unwrap()).collect();
    let again: Vec<u64> =
        cursors.iter().enumerate().filter(|(i, c)| cursors[..*i].contains(c)).map(|(_, c)| *c).collect();
    assert!(again.is_empty(), "sent again across the moves: {again:?} of {:?}", types(&got));
}
