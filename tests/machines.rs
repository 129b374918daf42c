//! Machines that come and go, over real QUIC on 127.0.0.1: ephemeral
//! runners reuse a pool's machine slots one after another, an idle machine
//! is released (audited, counted in `/metrics`), and ephemeral
//! registrations ride out a restart, then go with their last session.

mod process;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use process::{serve, signal, spawn_serve, Events, Serve};
use support::{machine, org, start_with, POOL};

/// `machine list --json`'s machines, as (machine, ephemeral).
fn machines(s: &Serve) -> Vec<(String, bool)> {
    let out = s.run(&s.owner, &["machine", "list", "--org", "default", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let each = |m: &serde_json::Value| (m["machine"].as_str().unwrap().to_string(), m["ephemeral"] == true);
    v["machines"].as_array().unwrap().iter().map(each).collect()
}

/// Waits at most `limit` for `machine list` to satisfy `done`.
fn wait_machines(s: &Serve, limit: Duration, done: impl Fn(&[(String, bool)]) -> bool) -> Vec<(String, bool)> {
    let started = Instant::now();
    loop {
        let now = machines(s);
        if done(&now) {
            return now;
        }
        assert!(started.elapsed() < limit, "machines still {now:?} after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// docs/CI.md's `pool set … --ephemeral` snippet, its org `default`.
fn ci_doc_pool_set() -> Vec<String> {
    let doc = include_str!("../docs/CI.md");
    let line = doc.lines().find(|l| l.contains("license-broker pool set") && l.contains("--ephemeral")).unwrap();
    let words = line.split_whitespace().skip_while(|w| *w != "license-broker").skip(1);
    words.map(|w| if w == "acme" { "default".to_string() } else { w.to_string() }).collect()
}

/// A `runner --ephemeral` on machine `id`, holding its seat for `hold`.
fn ephemeral_runner(s: &Serve, id: &str, hold: &str) -> std::process::Child {
    let args = ["runner", "--org", "default", "--json", "--ephemeral", "--machine-id", id, "--hold", hold];
    s.cmd(&s.owner).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

#[test]
fn a_pool_of_two_machines_lets_five_ephemeral_runners_run_one_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "10s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "2"]).status.success());
    for n in 0..5 {
        let id = format!("ci-job-{n}");
        let out = ephemeral_runner(&s, &id, "200ms").wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "runner {n}: {}", String::from_utf8_lossy(&out.stdout));
        // Its slot is released with its last session (within a bound, not at once: a store commit).
        wait_machines(&s, Duration::from_secs(5), |m| m.iter().all(|(name, _)| *name != id));
    }
    let out = s.run(&s.owner, &["audit", "--org", "default", "--json"]);
    let expired = String::from_utf8_lossy(&out.stdout).matches("machine_expired").count();
    assert_eq!(expired, 5, "every release audited: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_queued_runner_keeps_its_ephemeral_machine_until_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "2s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "2"]).status.success());
    // The pool marks every registration ephemeral: no runner asks for it
    // (docs/CI.md's command, for org `default`).
    let args = ci_doc_pool_set();
    let out = s.run(&s.operator, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{out:?}");
    let runner = |id: &str, extra: &[&str]| {
        let mut args = vec!["runner", "--org", "default", "--json", "--machine-id", id];
        args.extend(extra);
        s.cmd(&s.owner).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    // Two sessions on one machine fill the pool's seats; a runner on a
    // second machine registers it and waits in the queue.
    // (Each runner's events are read to its end: a closed pipe would kill it.)
    let mut a1 = runner("ci-a", &["--hold", "60s"]);
    let a1_events = Events::of(&mut a1);
    a1_events.wait_for("admitted", Duration::from_secs(10));
    let mut a2 = runner("ci-a", &["--hold", "60s"]);
    let a2_events = Events::of(&mut a2);
    a2_events.wait_for("admitted", Duration::from_secs(10));
    let mut b = runner("ci-b", &["--wait", "30s", "--hold", "100ms"]);
    let b_events = Events::of(&mut b);
    b_events.wait_for("queued", Duration::from_secs(10));
    // Past the grace a registration gets for its first session (one TTL):
    // the queued runner holds its machine.
    std::thread::sleep(Duration::from_secs(3));
    let both = machines(&s);
    assert_eq!(both, [("ci-a".to_string(), true), ("ci-b".to_string(), true)]);
    signal(&a1, "-TERM");
    assert_eq!(a1.wait().unwrap().code(), Some(0));
    b_events.wait_for("admitted", Duration::from_secs(10));
    assert_eq!(b.wait().unwrap().code(), Some(0));
    // Gone with its last session; ci-a still runs one.
    wait_machines(&s, Duration::from_secs(5), |m| m.len() == 1 && m[0].0 == "ci-a");
    signal(&a2, "-TERM");
    assert_eq!(a2.wait().unwrap().code(), Some(0));
    wait_machines(&s, Duration::from_secs(5), |m| m.is_empty());
    drop((a1_events, a2_events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_machine_is_released_audited_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.metrics_token = Some("s3cret".into());
    })
    .await;
    b.quota(1).await;
    let op = b.operator().await;
    op.set_machine_policy(&org(), POOL, Some(Duration::from_secs(1)), false).await.unwrap();
    let c = b.owner().await;
    c.register_machine(&org(), POOL, &machine("build-1")).await.unwrap();
    let lease = c.acquire(&org(), POOL, &machine("build-1"), 1).await.unwrap();
    let e = c.register_machine(&org(), POOL, &machine("build-2")).await.unwrap_err();
    assert_eq!(e.code(), Some(license_broker::proto::ErrorCode::MachineLimit));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let uses = c.machine_uses(&org()).await.unwrap();
    assert_eq!((uses.len(), uses[0].holds), (1, 1), "a live session keeps it past its idle limit: {uses:?}");
    c.release(lease.session).await.unwrap();
    let released_at = Instant::now();
    let started = Instant::now();
    while !c.machine_uses(&org()).await.unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "the idle machine was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(released_at.elapsed() >= Duration::from_millis(900), "released before its idle limit");
    assert!(c.register_machine(&org(), POOL, &machine("build-2")).await.unwrap(), "its slot is free again");
    let audit = c.audit(&org()).await.unwrap();
    let line = audit.iter().find(|e| e.action == license_broker::proto::AuditAction::MachineExpired).unwrap();
    assert!(line.detail.contains("machine=build-1"), "{line:?}");
    let (code, body) = b.web().fetch("/metrics", Some("s3cret")).await;
    assert_eq!(code, 200);
    let series = r#"lbroker_machines_expired_total{org="default",pool="kre-floating-annual"} 1"#;
    assert!(body.lines().any(|l| l == series), "{body}");
}

#[test]
fn ephemeral_registrations_ride_out_a_restart_then_go_with_their_last_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "2s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "2"]).status.success());
    let mut stays = ephemeral_runner(&s, "ci-stays", "60s");
    let stays_events = Events::of(&mut stays);
    stays_events.wait_for("admitted", Duration::from_secs(10));
    let mut gone = ephemeral_runner(&s, "ci-gone", "60s");
    Events::of(&mut gone).wait_for("admitted", Duration::from_secs(10));
    // One runner dies with the broker; the other rides out the restart.
    gone.kill().unwrap();
    gone.wait().unwrap();
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    s.child = spawn_serve(dir.path(), &s.addr, "2s");
    s.wait_ready(Duration::from_secs(10));
    let held = machines(&s);
    assert_eq!(held.len(), 2, "both kept while seats are held for re-attaching runners: {held:?}");
    stays_events.wait_for("reattached", Duration::from_secs(10));
    // The hold ends (one TTL and the restart grace): the dead runner's machine goes.
    let left = wait_machines(&s, Duration::from_secs(30), |m| m.len() == 1);
    assert_eq!(left, [("ci-stays".to_string(), true)]);
    signal(&stays, "-TERM");
    assert_eq!(stays.wait().unwrap().code(), Some(0));
    wait_machines(&s, Duration::from_secs(5), |m| m.is_empty());
}
