//! Webhooks against `license-broker serve` processes on loopback, with a
//! receiver that verifies each request as docs/EVENTS.md's "Verifying a
//! webhook request" says (written from the document, with `ring`, nothing
//! of the broker's): signed deliveries in order; a receiver killed and
//! restarted mid-stream, and a broker killed with -9 with deliveries
//! pending, lose nothing; forgeries and forbidden targets are refused.

use std::time::{Duration, Instant};

mod process;
mod support;

use license_broker::core::Record;
use license_broker::store::{RedbStore, Store};
use process::{serve_with, spawn_serve_with, Serve};
use support::receiver::{doc_verify, now_secs, Got, Receiver};

const DOC: &str = include_str!("../docs/EVENTS.md");
const ALLOW: &[&str] = &["--webhook-allow-private"];

fn add_user(s: &Serve, email: &str) {
    let out = s.run(&s.owner, &["user", "add", "--org", "default", email, "--role", "user"]);
    assert!(out.status.success(), "{out:?}");
}

/// `webhook add` to `url` as `key`: (id, secret).
fn add_webhook(s: &Serve, key: &str, url: &str) -> (String, String) {
    let out = s.run(key, &["webhook", "add", "--org", "default", "--url", url, "--events", "audit.*"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let id = text.split_whitespace().nth(1).unwrap().to_string();
    let secret = text.lines().find_map(|l| l.strip_prefix("secret: ")).unwrap().to_string();
    (id, secret)
}

/// The requests received until one for `email`'s addition (duplicates kept).
fn until(r: &Receiver, email: &str, limit: Duration) -> Vec<Got> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let g = r.next(left).unwrap_or_else(|| panic!("nothing for {email}; got {got:?}"));
        let done = g.json()["data"]["detail"].as_str().is_some_and(|d| d.contains(email));
        got.push(g);
        if done {
            return got;
        }
    }
}

/// Each event's cursor in the order first received; asserts that every
/// repeat carries its first delivery's idempotency key and id.
fn first_seen(got: &[Got]) -> Vec<u64> {
    let mut seen: Vec<(u64, String)> = Vec::new();
    for g in got {
        let (cursor, key) = (g.json()["cursor"].as_u64().unwrap(), g.header("idempotency-key"));
        assert_eq!(key, g.json()["idempotency_key"], "the header is the document's key");
        match seen.iter().find(|(c, _)| *c == cursor) {
            Some((_, first)) => assert_eq!(&key, first, "a duplicate carries the same key"),
            None => seen.push((cursor, key)),
        }
    }
    seen.into_iter().map(|(c, _)| c).collect()
}

#[test]
fn deliveries_are_signed_as_documented_and_in_order() {
    for step in
        ["1. Read the `webhook-timestamp` header", "then one `.` (a full stop)", "any `v1=` signature equals yours"]
    {
        assert!(DOC.contains(step), "EVENTS.md lacks {step:?}");
    }
    // The document's own example, checked by the steps.
    let example = "whsec_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let sig = DOC.split("`webhook-signature: ").nth(1).unwrap().split('`').next().unwrap();
    assert!(doc_verify(example, "1796451190", sig, br#"{"id":"acme/42"}"#, 1796451190));

    let dir = tempfile::tempdir().unwrap();
    let s = serve_with(dir.path(), "30s", ALLOW);
    let r = Receiver::start(0, 200);
    let (id, secret) = add_webhook(&s, &s.owner, &format!("http://127.0.0.1:{}/hook?team=a", r.port));
    for i in 0..3 {
        add_user(&s, &format!("u{i}@default"));
    }
    let got = until(&r, "u2@default", Duration::from_secs(20));
    assert_eq!(got.len(), 3, "{got:?}");
    let cursors = first_seen(&got);
    assert_eq!(cursors, [cursors[0], cursors[0] + 1, cursors[0] + 2], "in cursor order");
    for g in &got {
        assert!(g.verified(&secret), "a genuine request verifies: {g:?}");
        assert_eq!(g.header("webhook-event"), "audit.user_added");
        assert_eq!(g.header("webhook-id"), g.json()["id"]);
    }
    // Forgeries fail the same steps: another secret, a changed body, an old timestamp.
    let g = &got[0];
    let (ts, sig) = (g.header("webhook-timestamp"), g.header("webhook-signature"));
    assert!(!doc_verify("whsec_guess", &ts, &sig, &g.body, now_secs()));
    let mut body = g.body.clone();
    body[10] ^= 1;
    assert!(!doc_verify(&secret, &ts, &sig, &body, now_secs()));
    assert!(!doc_verify(&secret, &ts, &sig, &g.body, now_secs() + 301), "a replay after 5 minutes");

    // list: delivered up to the last, ok; deliveries: three 200s.
    let out = s.run(&s.owner, &["webhook", "list", "--org", "default", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["id"].as_str(), v["failing"].as_bool()), (Some(id.as_str()), Some(false)), "{v}");
    let out = s.run(&s.owner, &["webhook", "deliveries", "--org", "default", &id, "--json"]);
    let statuses: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 200]);

    // A rotated secret signs from then on; the old one verifies nothing new.
    let out = s.run(&s.owner, &["webhook", "rotate-secret", "--org", "default", &id]);
    let new = String::from_utf8_lossy(&out.stdout)
        .split("new secret: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(1500));
    add_user(&s, "u3@default");
    let got = until(&r, "u3@default", Duration::from_secs(20));
    let last = got.last().unwrap();
    assert!(last.verified(&new) && !last.verified(&secret));
}

#[test]
fn a_receiver_down_mid_stream_and_a_broker_killed_with_9_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve_with(dir.path(), "30s", ALLOW);
    let r = Receiver::start(0, 200);
    let port = r.port;
    add_webhook(&s, &s.owner, &format!("http://127.0.0.1:{port}/"));
    std::thread::sleep(Duration::from_millis(1500));
    add_user(&s, "a0@default");
    let mut got = until(&r, "a0@default", Duration::from_secs(20));

    // The receiver goes away (first refusing with 503, then gone); events pile up.
    drop(r);
    let busy = Receiver::start(port, 503);
    add_user(&s, "a1@default");
    got_none_accepted(&busy);
    drop(busy);
    add_user(&s, "a2@default");
    // The broker dies with the deliveries pending, and comes back.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    s.child = spawn_serve_with(dir.path(), &s.addr, "30s", ALLOW);
    s.wait_ready(Duration::from_secs(20));
    add_user(&s, "a3@default");
    let r = Receiver::start(port, 200);
    got.extend(until(&r, "a3@default", Duration::from_secs(40)));
    let cursors = first_seen(&got);
    let first = cursors[0];
    assert_eq!(
        cursors,
        (first..first + 4).collect::<Vec<_>>(),
        "all four, in order, after the receiver's and the broker's deaths"
    );
    let users: Vec<String> = got
        .iter()
        .map(|g| g.json()["data"]["detail"].as_str().unwrap().split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(users.last().unwrap(), "user=a3@default");
}

/// The 503 receiver gets the event (maybe more than once), and it is not
/// taken: the broker tries again.
fn got_none_accepted(busy: &Receiver) {
    let first = busy.next(Duration::from_secs(20)).expect("a try while the receiver answers 503");
    assert!(first.json()["data"]["detail"].as_str().unwrap().contains("a1@default"));
    let again = busy.next(Duration::from_secs(10)).expect("tried again after a 503");
    assert_eq!(again.header("idempotency-key"), first.header("idempotency-key"));
}

#[test]
fn forbidden_targets_and_callers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = process::serve(dir.path(), "30s");
    let refused = |s: &Serve, key: &str, url: &str, why: &str| {
        let out = s.run(key, &["webhook", "add", "--org", "default", "--url", url]);
        assert!(!out.status.success(), "{url} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{url}: {err}");
    };
    // Without --webhook-allow-private: the broker's own networks.
    for url in [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        refused(&s, &s.owner, url, "an address webhooks may not reach");
    }
    for url in ["ftp://example.com/", "https://user:pw@example.com/", "example.com/hook"] {
        refused(&s, &s.owner, url, "INVALID_ARGUMENT");
    }
    // A User may not; the operator may (any org).
    let out = s.run(&s.owner, &["user", "add", "--org", "default", "dev@default", "--role", "user"]);
    assert!(out.status.success());
    let out = s.run(&s.owner, &["key", "create", "--org", "default", "dev@default"]);
    let dev =
        String::from_utf8_lossy(&out.stdout).split_whitespace().find(|w| w.starts_with("lbk_")).unwrap().to_string();
    refused(&s, &dev, "http://93.184.216.34/", "FORBIDDEN");
    let dir2 = tempfile::tempdir().unwrap();
    let allowed = process::serve_with(dir2.path(), "30s", ALLOW);
    refused(&allowed, &allowed.owner, "http://169.254.169.254/", "an address webhooks may not reach");
    add_webhook(&allowed, &allowed.operator, "http://127.0.0.1:9/");
}

/// A receiver that keeps failing: past `--webhook-retry-for` the webhook
/// is marked failing (in the list and `/metrics`), tries go on, and the
/// first 2xx clears it; the event is delivered, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retried_past_its_time_is_marked_failing_until_it_delivers() {
    use license_broker::value::{OrgName, Role};
    let b = support::start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.webhooks.allow_private = true;
        o.webhooks.retry_for = Duration::from_secs(2);
    })
    .await;
    let org = OrgName::new("default").unwrap();
    let owner = b.owner().await;
    let failing = Receiver::start(0, 500);
    let port = failing.port;
    let (id, _) = owner.add_webhook(&org, &format!("http://127.0.0.1:{port}/"), vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    owner.add_user(&org, "x@default", Role::User).await.unwrap();
    let failing_now = || async {
        let hooks = owner.webhooks(&org).await.unwrap();
        let metrics = b.web().fetch("/metrics", None).await.1;
        (hooks[0].failing, metrics.contains("lbroker_webhooks_failing 1"), hooks[0].backlog)
    };
    let started = Instant::now();
    while failing_now().await != (true, true, 1) {
        assert!(started.elapsed() < Duration::from_secs(20), "never marked failing: {:?}", failing_now().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tries = owner.webhook_deliveries(&org, &id).await.unwrap();
    assert!(tries.len() >= 2 && tries.iter().all(|t| t.status == 500), "{tries:?}");
    drop(failing);
    let ok = Receiver::start(port, 200);
    let got = tokio::task::spawn_blocking(move || ok.next(Duration::from_secs(20))).await.unwrap();
    assert!(got.expect("delivered once the receiver answers").json()["data"]["detail"]
        .as_str()
        .unwrap()
        .contains("x@default"));
    let started = Instant::now();
    while failing_now().await != (false, false, 0) {
        assert!(started.elapsed() < Duration::from_secs(10), "still failing: {:?}", failing_now().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `webhook redeliver` sends an event the receiver had once more, signed
/// anew, with its id and idempotency key; the act is audited (and that
/// entry is itself an event); an event not delivered yet, or asked by a
/// User, is refused.
#[test]
fn one_delivery_is_redelivered_on_request_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_with(dir.path(), "30s", ALLOW);
    let r = Receiver::start(0, 200);
    let (id, secret) = add_webhook(&s, &s.owner, &format!("http://127.0.0.1:{}/", r.port));
    std::thread::sleep(Duration::from_millis(1500));
    add_user(&s, "r0@default");
    let first = until(&r, "r0@default", Duration::from_secs(20)).pop().unwrap();
    let event = first.json()["id"].as_str().unwrap().to_string();
    let redeliver = |key: &str, delivery: &str| {
        s.run(key, &["webhook", "redeliver", "--org", "default", "--id", &id, "--delivery", delivery])
    };
    let out = redeliver(&s.owner, &event);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{event} redelivered to webhook {id}: 200")));
    // The redelivery is out of the webhook's order: the audit event it
    // made may be delivered before it or after.
    let mut two = [r.next(Duration::from_secs(10)), r.next(Duration::from_secs(20))].map(|g| g.expect("two requests"));
    two.sort_by_key(|g| g.header("webhook-event") != first.header("webhook-event"));
    let [again, audited] = two;
    assert_eq!(again.body, first.body, "the same document");
    assert_eq!(again.header("idempotency-key"), first.header("idempotency-key"));
    assert!(again.verified(&secret));
    assert_eq!(audited.header("webhook-event"), "audit.webhook_redelivered");
    assert_eq!(audited.json()["data"]["detail"], format!("webhook={id} event={event}"));

    let out = s.run(&s.owner, &["key", "create", "--org", "default", "r0@default"]);
    let user =
        String::from_utf8_lossy(&out.stdout).split_whitespace().find(|w| w.starts_with("lbk_")).unwrap().to_string();
    let key_created = until(&r, "r0@default", Duration::from_secs(20));
    assert_eq!(key_created.last().unwrap().header("webhook-event"), "audit.key_created");
    let cursor: u64 = event.rsplit('/').next().unwrap().parse().unwrap();
    let out = redeliver(&s.owner, &(cursor + 50).to_string());
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"), "{out:?}");
    let out = redeliver(&user, &event);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("FORBIDDEN"), "{out:?}");
    assert!(r.next(Duration::from_secs(2)).is_none(), "refusals send nothing");
}

/// The records of `dir`'s store (its broker stopped) about webhook `id`:
/// the webhook and its delivery cursor.
fn stored_about(dir: &std::path::Path, id: &str) -> Vec<Record> {
    let store = RedbStore::open(&dir.join("broker.redb")).unwrap();
    let about = |r: &Record| match r {
        Record::Webhook(h) => h.id == id,
        Record::WebhookCursor { id: of, .. } => of == id,
        _ => false,
    };
    store.load().unwrap().into_iter().filter(about).collect()
}

/// A webhook removed leaves nothing in the store: neither its record nor
/// its delivery cursor, which its task, stopping after the removal with
/// a delivery not yet written, used to write again.
#[test]
fn a_removed_webhook_leaves_nothing_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve_with(dir.path(), "30s", ALLOW);
    let r = Receiver::start(0, 200);
    let (id, _) = add_webhook(&s, &s.owner, &format!("http://127.0.0.1:{}/", r.port));
    add_user(&s, "g0@default");
    until(&r, "g0@default", Duration::from_secs(20));
    let out = s.run(&s.owner, &["webhook", "remove", "--org", "default", &id]);
    assert!(out.status.success(), "{out:?}");
    // Its task stops at the next look (every second); then a clean stop.
    std::thread::sleep(Duration::from_millis(2500));
    process::signal(&s.child, "-TERM");
    s.child.wait().unwrap();
    let left = stored_about(dir.path(), &id);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A clean stop (SIGTERM) writes every webhook's cursor as delivered, so
/// the restarted broker sends again nothing its receiver took, however
/// soon after those deliveries it stopped.
#[test]
fn a_clean_restart_sends_again_nothing_the_receiver_took() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve_with(dir.path(), "30s", ALLOW);
    let r = Receiver::start(0, 200);
    add_webhook(&s, &s.owner, &format!("http://127.0.0.1:{}/", r.port));
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..3 {
        add_user(&s, &format!("c{i}@default"));
    }
    let taken = first_seen(&until(&r, "c2@default", Duration::from_secs(20)));
    process::signal(&s.child, "-TERM");
    s.child.wait().unwrap();
    s.child = spawn_serve_with(dir.path(), &s.addr, "30s", ALLOW);
    s.wait_ready(Duration::from_secs(20));
    add_user(&s, "c3@default");
    let after = first_seen(&until(&r, "c3@default", Duration::from_secs(20)));
    let again: Vec<u64> = after.into_iter().filter(|c| taken.contains(c)).collect();
    assert!(again.is_empty(), "sent again after a clean restart: {again:?} (taken before: {taken:?})");
}
