//! Runners and clients when the broker goes away: they ride out a restart
//! without spinning, give up on a lease they can no longer renew, and fail
//! fast with a message that says where and why.

mod process;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use process::{cpu_ticks, free_port, serve, signal, spawn_serve, Events, BIN};

#[test]
fn runner_rides_out_a_broker_restart_without_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "10s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    let mut runner = s.runner("60s");
    let events = Events::of(&mut runner);
    events.wait_for("admitted", Duration::from_secs(10));

    // SIGTERM: the broker drains and exits; the runner is told, then loses the connection.
    signal(&s.child, "-TERM");
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
    events.wait_for("reconnecting", Duration::from_secs(10));
    // While the broker is down the runner waits between attempts instead of spinning.
    let before = cpu_ticks(runner.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(runner.id()) - before;
    assert!(used < 50, "runner used {used} ticks of CPU in 2 s while the broker was down");

    // The broker comes back on the same address and data: the runner re-attaches.
    s.child = spawn_serve(dir.path(), &s.addr, "10s");
    events.wait_for("reattached", Duration::from_secs(10));
    assert_eq!(s.in_use(), 1, "the runner holds its seat again");
    signal(&runner, "-TERM");
    events.wait_for("released", Duration::from_secs(10));
    assert_eq!(runner.wait().unwrap().code(), Some(0));
    assert_eq!(s.in_use(), 0);
}

#[test]
fn a_labelled_runner_rides_out_a_crash_with_its_labels_counted_in_their_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "10s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "3"]).status.success());
    let cap =
        ["pool", "limit", "--org", "default", "--pool", "kre-floating-annual", "--label", "team=web", "--max", "1"];
    assert!(s.run(&s.owner, &cap).status.success());
    let web = ["runner", "--org", "default", "--label", "team=web", "--json", "--hold", "60s"];
    let mut runner = s.cmd(&s.owner).args(web).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let events = Events::of(&mut runner);
    events.wait_for("admitted", Duration::from_secs(10));

    // kill -9: the restart holds its seat; it re-attaches with its labels.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    s.child = spawn_serve(dir.path(), &s.addr, "10s");
    let back = events.wait_for("reattached", Duration::from_secs(15));
    let sessions = s.run(&s.owner, &["session", "list", "--org", "default", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&sessions.stdout).unwrap();
    assert_eq!(listed["sessions"][0]["session"], back["session"], "{listed}");
    assert_eq!(listed["sessions"][0]["labels"]["team"], "web", "{listed}");
    let limits = ["pool", "limits", "--org", "default", "--pool", "kre-floating-annual", "--labels", "--json"];
    let caps: serde_json::Value = serde_json::from_slice(&s.run(&s.owner, &limits).stdout).unwrap();
    assert_eq!(caps["label_limits"][0]["sessions"], 1, "{caps}");
    let newcomer = s.run(&s.owner, &["runner", "--org", "default", "--label", "team=web", "--hold", "0s"]);
    assert_eq!(newcomer.status.code(), Some(3), "the cap's place is the runner's: {newcomer:?}");
    signal(&runner, "-TERM");
    events.wait_for("released", Duration::from_secs(10));
    assert_eq!(runner.wait().unwrap().code(), Some(0));
}

#[test]
fn runner_that_cannot_renew_by_its_deadline_reports_the_lease_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "2s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    let mut runner = s.runner("60s");
    let events = Events::of(&mut runner);
    events.wait_for("admitted", Duration::from_secs(10));
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let lost = events.wait_for("lost", Duration::from_secs(15));
    assert!(lost["message"].as_str().unwrap().contains("deadline"), "{lost}");
    assert_eq!(runner.wait().unwrap().code(), Some(6), "exit code 6: lease lost");
}

#[test]
fn unreachable_broker_fails_fast_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    let nobody = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = s.cmd(&s.owner).args(["status", "--server", &nobody, "--connect-timeout", "1s"]).output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&nobody) && err.contains("is the broker running"), "{err}");
}

#[test]
fn untrusted_certificate_hints_at_the_ca_flag() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = serve(a.path(), "30s");
    let other = serve(b.path(), "30s");
    let out = Command::new(BIN)
        .args(["status", "--server", &s.addr, "--ca", &other.ca, "--api-key", &s.owner])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca"), "{err}");
}

#[test]
fn a_broker_that_cannot_bind_creates_no_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(BIN).args(["serve", "--data-dir"]).arg(&data).args(["--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr), "{out:?}");
    assert!(!data.exists(), "nothing initialised, so no keys were made unseen");
    drop(busy);
    // The next start on a free address initialises it and shows the keys.
    let s = serve(&data, "30s");
    assert!(s.operator.starts_with("lbk_"));
}

#[test]
fn a_lost_operator_key_is_replaced_offline_from_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "30s");
    let mint = || Command::new(BIN).args(["admin", "new-operator-key", "--data-dir"]).arg(dir.path()).output().unwrap();
    let out = mint();
    assert_eq!(out.status.code(), Some(1), "refused while the broker holds the store: {out:?}");
    signal(&s.child, "-TERM");
    s.child.wait().unwrap();
    let out = mint();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = stdout.trim().strip_prefix("operator api key: ").unwrap().to_string();
    s.child = spawn_serve(dir.path(), &s.addr, "30s");
    s.wait_ready(Duration::from_secs(10));
    let out = s.run(&key, &["pool", "set", "--org", "default", "--quota", "2"]);
    assert!(out.status.success(), "the new key acts as the operator: {out:?}");
}

#[test]
fn admission_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    assert!(s.cmd(&s.owner).args(["runner", "--org", "default", "--hold", "0s"]).status().unwrap().success());
    let mut holder = s.runner("60s");
    let events = Events::of(&mut holder);
    events.wait_for("admitted", Duration::from_secs(10));
    let refused = s.cmd(&s.owner).args(["runner", "--org", "default", "--json"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(3));
    let counts = |s: &process::Serve| {
        let out = s.run(&s.owner, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["pools"][0]["admitted"].as_u64().unwrap(), v["pools"][0]["rejected"].as_u64().unwrap())
    };
    assert_eq!(counts(&s), (2, 1));
    // (The holder would re-attach after the restart and count again; it goes first.)
    holder.kill().unwrap();
    holder.wait().unwrap();
    signal(&s.child, "-TERM");
    s.child.wait().unwrap();
    s.child = spawn_serve(dir.path(), &s.addr, "30s");
    s.wait_ready(Duration::from_secs(10));
    assert_eq!(counts(&s), (2, 1), "ADMITTED and REJECTED carry on across a restart");
}

#[test]
fn a_clock_behind_the_last_run_is_refused_unless_the_operator_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let serve_with = |extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(["serve", "--data-dir"]).arg(dir.path()).args(["--listen", &addr]).args(extra);
        c
    };
    // A run whose clock was a day ahead leaves its time behind.
    let mut ahead = serve_with(&["--clock-ahead", "1day"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    signal(&ahead, "-TERM");
    assert_eq!(ahead.wait().unwrap().code(), Some(0));
    // With the right clock the broker refuses to start, naming both times.
    let out = serve_with(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("earlier than") && err.contains("--allow-clock-rollback"), "{err}");
    // The operator checked the clock: the override starts it.
    let mut ok = serve_with(&["--allow-clock-rollback"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(ok.try_wait().unwrap().is_none(), "the broker runs with the override");
    signal(&ok, "-TERM");
    assert_eq!(ok.wait().unwrap().code(), Some(0));
}

#[test]
fn runner_runs_a_job_under_its_lease_and_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    let out = s
        .cmd(&s.owner)
        .args(["runner", "--org", "default", "--json", "--", "sh", "-c", "echo \"job sees $LB_SESSION\"; exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "the job's exit code: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("job sees ") && stdout.trim().len() > "job sees ".len(), "{stdout}");
    assert!(!stdout.contains("event"), "the job's stdout is its own: {stdout}");
    assert!(events.contains(r#""event":"admitted""#) && events.contains(r#""reason":"job_exited""#), "{events}");
    assert_eq!(s.in_use(), 0, "released when the job exited");
    // --events-file: the runner's events go there, stderr stays the job's.
    let events_path = dir.path().join("events.jsonl");
    let out = s
        .cmd(&s.owner)
        .args(["runner", "--org", "default", "--events-file"])
        .arg(&events_path)
        .args(["--", "sh", "-c", "echo job-err >&2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "job-err\n", "only the job's own stderr");
    let written = std::fs::read_to_string(&events_path).unwrap();
    let names: Vec<String> = written
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["admitted", "released"], "{written}");
    // A job that cannot start: the seat is given back, exit 127.
    let out = s.cmd(&s.owner).args(["runner", "--org", "default", "--", "/nonexistent/job"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert_eq!(s.in_use(), 0);
}

#[test]
fn a_job_whose_lease_is_revoked_is_stopped_and_the_runner_exits_6() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    let marker = dir.path().join("got-term");
    let script = format!("trap 'echo term > {}; exit 0' TERM; sleep 60 & wait", marker.display());
    let mut runner = s
        .cmd(&s.owner)
        .args(["runner", "--org", "default", "--json", "--kill-grace", "5s", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events = Events::of_stderr(&mut runner);
    let admitted = events.wait_for("admitted", Duration::from_secs(10));
    let session = admitted["session"].as_str().unwrap().to_string();
    let out = s.run(&s.owner, &["session", "kill", "--org", "default", &session]);
    assert!(out.status.success(), "{out:?}");
    events.wait_for("job_stopped", Duration::from_secs(15));
    assert_eq!(runner.wait().unwrap().code(), Some(6), "lease lost");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "term", "the job was asked to stop");
}

#[test]
fn sigterm_to_the_runner_is_forwarded_to_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    let mut runner = s
        .cmd(&s.owner)
        .args(["runner", "--org", "default", "--json", "--", "sh", "-c", "trap 'exit 3' TERM; sleep 60 & wait"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events = Events::of_stderr(&mut runner);
    events.wait_for("admitted", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200)); // let the shell install its trap
    signal(&runner, "-TERM");
    let released = events.wait_for("released", Duration::from_secs(10));
    assert_eq!(released["exit"], 3, "{released}");
    assert_eq!(runner.wait().unwrap().code(), Some(3), "the runner exits with the job's code");
    assert_eq!(s.in_use(), 0);
}

#[test]
fn a_floating_kse_activation_rides_out_a_crash_on_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "10s");
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let pool = ["--org", "default", "--product", "kse", "--kind", "floating", "--quota", "1"];
    ok(s.run(&s.operator, &[&["pool", "set"][..], &pool[..]].concat()));
    ok(s.run(&s.owner, &["user", "add", "--org", "default", "u@default", "--role", "user"]));
    let key = ok(s.run(&s.owner, &["key", "create", "--org", "default", "u@default"]));
    let user_key = key.trim().strip_prefix("api key: ").unwrap().to_string();
    ok(s.run(&s.owner, &["grant", "--org", "default", "--pool", "kse-floating-annual", "u@default"]));
    let mut holder = s
        .cmd(&user_key)
        .args(["activate", "--org", "default", "--pool", "kse-floating-annual", "--json", "--hold", "60s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let events = Events::of(&mut holder);
    events.wait_for("admitted", Duration::from_secs(10));

    // kill -9: the seat is held for the activation, which takes it back with its token.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    s.child = spawn_serve(dir.path(), &s.addr, "10s");
    events.wait_for("reattached", Duration::from_secs(15));
    let other = s.cmd(&s.owner).args(["runner", "--org", "default", "--pool", "kse-floating-annual"]).output().unwrap();
    assert_ne!(other.status.code(), Some(0), "nobody else gets the seat: {other:?}");
    signal(&holder, "-TERM");
    events.wait_for("released", Duration::from_secs(10));
    assert_eq!(holder.wait().unwrap().code(), Some(0));
}

#[test]
fn a_runner_with_wait_queues_for_a_full_pool_then_runs_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    let mut holder = s.runner("60s");
    let held = Events::of(&mut holder);
    held.wait_for("admitted", Duration::from_secs(10));

    // Without --wait a full pool refuses at once; with a short wait, after it.
    let out = s.cmd(&s.owner).args(["runner", "--org", "default", "--wait", "300ms", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("QUEUE_TIMEOUT"), "{out:?}");

    let mut waiter = s
        .cmd(&s.owner)
        .args(["runner", "--org", "default", "--wait", "60s", "--json", "--", "sh", "-c", "echo ran; exit 4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events = Events::of_stderr(&mut waiter);
    let queued = events.wait_for("queued", Duration::from_secs(10));
    assert_eq!(queued["position"], 1);
    signal(&holder, "-TERM");
    assert_eq!(holder.wait().unwrap().code(), Some(0));
    events.wait_for("admitted", Duration::from_secs(10));
    let status = waiter.wait().unwrap();
    assert_eq!(status.code(), Some(4), "the job ran under the lease and its code came back");
    assert_eq!(s.in_use(), 0);
}
