//! `license-broker events` as users run it, against `license-broker serve`
//! processes on loopback: it prints an org's events after a cursor and,
//! with `--follow`, rides out a broker killed with -9 and restarted on its
//! data dir, resuming after the last cursor printed: nothing lost, nothing
//! twice, in order.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod process;
mod support;

use process::{serve, spawn_serve, Events, Serve};

fn add_user(s: &Serve, email: &str) {
    let out = s.run(&s.owner, &["user", "add", "--org", "default", email, "--role", "user"]);
    assert!(out.status.success(), "{out:?}");
}

fn follow(s: &Serve, after: u64) -> Child {
    s.cmd(&s.owner)
        .args(["events", "--org", "default", "--follow", "--json", "--after", &after.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The events read until one whose detail names `email`.
fn until(events: &Events, email: &str, got: &mut Vec<serde_json::Value>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = events.next_within(left).unwrap_or_else(|| panic!("no event for {email}; read {got:?}"));
        let done = e["data"]["detail"].as_str().is_some_and(|d| d.contains(email));
        got.push(e);
        if done {
            return;
        }
    }
}

#[test]
fn follow_resumes_after_a_kill_9_with_nothing_lost_or_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "30s");
    let out = s.run(&s.owner, &["events", "--org", "default", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let start: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map_or(0, |l| serde_json::from_str::<serde_json::Value>(l).unwrap()["cursor"].as_u64().unwrap());

    let mut follower = follow(&s, start);
    let events = Events::of(&mut follower);
    let mut got = Vec::new();
    for i in 0..3 {
        add_user(&s, &format!("u{i}@default"));
    }
    until(&events, "u2@default", &mut got);

    // The broker dies without a word; a new one takes its data dir and address.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    s.child = spawn_serve(dir.path(), &s.addr, "30s");
    s.wait_ready(Duration::from_secs(20));
    for i in 3..6 {
        add_user(&s, &format!("u{i}@default"));
    }
    until(&events, "u5@default", &mut got);
    let _ = follower.kill();
    let _ = follower.wait();

    let cursors: Vec<u64> = got.iter().map(|e| e["cursor"].as_u64().unwrap()).collect();
    assert_eq!(cursors, (start + 1..=start + 6).collect::<Vec<_>>(), "every event once, in order, none skipped");
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e["type"], "audit.user_added");
        assert!(e["data"]["detail"].as_str().unwrap().contains(&format!("user=u{i}@default")), "{e}");
    }
}

#[test]
fn events_prints_after_a_cursor_and_refuses_one_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    add_user(&s, "a@default");
    add_user(&s, "b@default");
    let out = s.run(&s.owner, &["events", "--org", "default"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    let last = lines[lines.len() - 1];
    assert!(last.contains("audit.user_added") && last.contains("user=b@default"), "{text}");
    let cursor: u64 = last.split_whitespace().next().unwrap().parse().unwrap();

    let out = s.run(&s.owner, &["events", "--org", "default", "--json", "--after", &(cursor - 1).to_string()]);
    let docs: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(docs.len(), 1, "only what follows the cursor");
    assert_eq!(docs[0]["cursor"], cursor);

    let out = s.run(&s.owner, &["events", "--org", "default", "--after", &(cursor + 10).to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ahead of org default's newest event"), "{out:?}");
}
