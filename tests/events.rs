//! The event stream (docs/EVENTS.md) against a real broker on loopback:
//! every audited act is an event in its org's outbox, numbered in commit
//! order, read after any cursor by the org's Owners and Admins over
//! `GET /api/v1/events` (a long poll with `wait`), and kept across a restart.

mod support;

use std::time::Duration;

use license_broker::value::Role;
use serde_json::Value;

use support::{org, start_with, TestBroker, POOL};

async fn broker(dir: tempfile::TempDir) -> TestBroker {
    start_with(dir, Duration::from_secs(30), |o| o.http = Some("127.0.0.1:0".parse().unwrap())).await
}

/// `GET /api/v1/events` with `query`, as `key`: (status, JSON body).
async fn events(b: &TestBroker, query: &str, key: &str) -> (u16, Value) {
    let (code, body) = b.web().fetch(&format!("/api/v1/events?org=default&{query}"), Some(key)).await;
    (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

fn types(v: &Value) -> Vec<String> {
    v["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

fn cursors(v: &Value) -> Vec<u64> {
    v["events"].as_array().unwrap().iter().map(|e| e["cursor"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audited_acts_are_events_in_commit_order_resumable_after_a_cursor() {
    let b = broker(tempfile::tempdir().unwrap()).await;
    let (op, owner) = (b.operator().await, b.owner().await);
    let (_, before) = events(&b, "", &b.owner).await;
    let first = before["next"].as_u64().unwrap();
    op.set_pool(&org(), POOL, 3).await.unwrap();
    owner.add_user(&org(), "dev@example.com", Role::User).await.unwrap();
    let (dev_key, _) = owner.create_key(&org(), "dev@example.com").await.unwrap();

    let (code, all) = events(&b, &format!("after={first}"), &b.owner).await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(types(&all), ["audit.quota_changed", "audit.user_added", "audit.key_created"]);
    assert_eq!(cursors(&all), [first + 1, first + 2, first + 3], "numbered in commit order, no gaps");
    let e = &all["events"][1];
    assert_eq!(e["org"], "default");
    assert_eq!(e["version"], 1);
    assert_eq!(e["id"], format!("default/{}", first + 2));
    assert_eq!(e["data"]["actor"], "owner@default");
    assert!(e["data"]["detail"].as_str().unwrap().contains("user=dev@example.com"), "{e}");
    assert_eq!(all["next"], first + 3);

    let (_, rest) = events(&b, &format!("after={}", first + 2), &b.owner).await;
    assert_eq!(types(&rest), ["audit.key_created"], "after a cursor: only what follows it");
    assert_eq!(rest["events"][0]["idempotency_key"], all["events"][2]["idempotency_key"], "a fact read twice, one key");

    // The audit trail's readers only: a User and the operator are refused.
    let (code, v) = events(&b, "", &dev_key).await;
    assert_eq!((code, v["error"].as_str()), (403, Some("FORBIDDEN")), "{v}");
    let (code, _) = events(&b, "", &b.operator).await;
    assert_eq!(code, 403);
    // A cursor ahead of the newest event would wait for nothing: refused.
    let (code, v) = events(&b, "after=1000000", &b.owner).await;
    assert_eq!((code, v["error"].as_str()), (400, Some("INVALID_ARGUMENT")), "{v}");
}

/// A long poll answers with the first event committed while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_with_the_event_committed_while_it_waits() {
    let b = broker(tempfile::tempdir().unwrap()).await;
    let (_, now) = events(&b, "", &b.owner).await;
    let next = now["next"].as_u64().unwrap();
    let (web, owner_key) = (b.web(), b.owner.clone());
    let poll = tokio::spawn(async move {
        web.fetch(&format!("/api/v1/events?org=default&after={next}&wait=8"), Some(&owner_key)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "nothing new yet: the poll waits");
    b.owner().await.add_user(&org(), "late@example.com", Role::Admin).await.unwrap();
    let (code, body) = poll.await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(types(&v), ["audit.user_added"]);
    assert_eq!(cursors(&v), [next + 1]);
}

/// The outbox is in the store: a restarted broker serves the same events
/// under the same cursors and keys, and numbers the next after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_restart_and_numbering_goes_on() {
    let mut b = broker(tempfile::tempdir().unwrap()).await;
    b.owner().await.add_user(&org(), "a@example.com", Role::User).await.unwrap();
    b.owner().await.add_user(&org(), "b@example.com", Role::User).await.unwrap();
    let (_, before) = events(&b, "", &b.owner).await;
    b.stop().await;
    let dir = std::mem::replace(&mut b.dir, tempfile::tempdir().unwrap());
    // A restart makes no new keys: the first run's still sign in.
    let b = TestBroker { operator: b.operator.clone(), owner: b.owner.clone(), ..broker(dir).await };
    let (_, after) = events(&b, "", &b.owner).await;
    assert_eq!(after["events"], before["events"], "the same events, cursors and keys");
    let last = before["next"].as_u64().unwrap();
    b.owner().await.add_user(&org(), "c@example.com", Role::User).await.unwrap();
    let (_, new) = events(&b, &format!("after={last}"), &b.owner).await;
    assert_eq!(cursors(&new), [last + 1], "numbered after the last, none reused");
}

const DOC: &str = include_str!("../docs/EVENTS.md");

/// The schema docs/EVENTS.md gives under "```json schema NAME".
fn schema(name: &str) -> Value {
    let start = DOC.find(&format!("```json schema {name}\n")).unwrap_or_else(|| panic!("no schema {name}"));
    let body = &DOC[start..].split_once('\n').unwrap().1;
    let end = body.find("\n```").unwrap();
    serde_json::from_str(&body[..end]).unwrap_or_else(|e| panic!("schema {name} is not JSON: {e}"))
}

/// Checks `v` against the part of JSON Schema the document uses: `type`,
/// `required`, `properties`, `additionalProperties: false`, `enum`, `const`.
fn conforms(v: &Value, s: &Value, at: &str) -> Result<(), String> {
    let kind_ok = match s["type"].as_str() {
        Some("object") => v.is_object(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_u64() || v.is_i64(),
        Some(other) => return Err(format!("{at}: the checker knows no type {other}")),
        None => true,
    };
    if !kind_ok {
        return Err(format!("{at}: {v} is not of type {}", s["type"]));
    }
    if let Some(allowed) = s["enum"].as_array() {
        if !allowed.contains(v) {
            return Err(format!("{at}: {v} is not one of {allowed:?}"));
        }
    }
    if !s["const"].is_null() && &s["const"] != v {
        return Err(format!("{at}: {v} is not {}", s["const"]));
    }
    let Some(fields) = v.as_object() else { return Ok(()) };
    for required in s["required"].as_array().into_iter().flatten() {
        if !fields.contains_key(required.as_str().unwrap()) {
            return Err(format!("{at}: lacks {required}"));
        }
    }
    for (name, value) in fields {
        match s["properties"].get(name) {
            Some(p) => conforms(value, p, &format!("{at}.{name}"))?,
            None if s["additionalProperties"] == false => return Err(format!("{at}: has {name}, not documented")),
            None => {}
        }
    }
    Ok(())
}

/// The events a broker sends are those docs/EVENTS.md describes: each
/// conforms to the envelope's schema and its type's, and the document
/// lists every audit action as a type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_conform_to_the_documented_schemas() {
    use license_broker::core::AuditAction;
    let (envelope, audit) = (schema("envelope"), schema("audit"));
    let names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.name()).collect();
    let listed: Vec<&str> =
        audit["properties"]["action"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(listed, names, "the audit schema lists every action");
    for name in &names {
        assert!(DOC.contains(&format!("| `audit.{name}` |")), "EVENTS.md's table lacks audit.{name}");
    }
    let b = broker(tempfile::tempdir().unwrap()).await;
    let (op, owner) = (b.operator().await, b.owner().await);
    op.set_pool(&org(), POOL, 2).await.unwrap();
    op.set_subscription(&org(), "2099-12-31").await.unwrap();
    owner.add_user(&org(), "dev@example.com", Role::Admin).await.unwrap();
    let (_, id) = owner.create_key(&org(), "dev@example.com").await.unwrap();
    owner.revoke_key(&org(), &id).await.unwrap();
    owner.remove_user(&org(), "dev@example.com").await.unwrap();
    let (_, all) = events(&b, "", &b.owner).await;
    let list = all["events"].as_array().unwrap();
    assert!(list.len() >= 6, "{all}");
    for e in list {
        conforms(e, &envelope, "event").unwrap();
        assert_eq!(e["type"].as_str().unwrap(), format!("audit.{}", e["data"]["action"].as_str().unwrap()));
        conforms(&e["data"], &audit, "data").unwrap();
    }
}

/// A lease its runner lost is an event: expired (not renewed), revoked
/// (killed); a released one is none. Each conforms to the documented schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_lost_are_events_and_released_ones_are_not() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(1), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    b.quota(3).await;
    let (envelope, lease) = (schema("envelope"), schema("lease"));
    let owner = b.owner().await;
    let m = |s: &str| license_broker::value::MachineId::new(s).unwrap();
    for name in ["gone", "killed", "kept"] {
        owner.register_machine(&org(), POOL, &m(name)).await.unwrap();
    }
    let (_, now) = events(&b, "", &b.owner).await;
    let mut after = now["next"].as_u64().unwrap();
    let released = owner.acquire(&org(), POOL, &m("kept"), 1).await.unwrap();
    owner.release(released.session).await.unwrap();
    let gone = owner.acquire(&org(), POOL, &m("gone"), 2).await.unwrap();
    let killed = owner.acquire(&org(), POOL, &m("killed"), 3).await.unwrap();
    owner.kill_session(&org(), killed.session).await.unwrap();

    let mut seen: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.iter().filter(|e| e["type"].as_str().unwrap().starts_with("lease.")).count() < 2 {
        assert!(std::time::Instant::now() < deadline, "lease events missing: {seen:?}");
        let (_, page) = events(&b, &format!("after={after}&wait=5"), &b.owner).await;
        after = page["next"].as_u64().unwrap();
        seen.extend(page["events"].as_array().unwrap().iter().cloned());
    }
    let leases: Vec<&Value> = seen.iter().filter(|e| e["type"].as_str().unwrap().starts_with("lease.")).collect();
    let by_session =
        |s: license_broker::value::SessionId| leases.iter().find(|e| e["data"]["session"] == format!("{s}")).copied();
    assert_eq!(by_session(gone.session).map(|e| &e["type"]), Some(&Value::from("lease.expired")), "{leases:?}");
    assert_eq!(by_session(killed.session).map(|e| &e["type"]), Some(&Value::from("lease.revoked")), "{leases:?}");
    assert!(by_session(released.session).is_none(), "a released lease is no event");
    for e in leases {
        conforms(e, &envelope, "event").unwrap();
        conforms(&e["data"], &lease, "data").unwrap();
        assert_eq!(e["data"]["pool"], "kre-floating-annual");
        assert_eq!(e["idempotency_key"], format!("lease:default:{}", e["data"]["session"].as_str().unwrap()));
    }
}

/// A subscription ending in three days gets its 7-day notice, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ending_soon_gets_its_notice_once() {
    let b = broker(tempfile::tempdir().unwrap()).await;
    let (_, now) = events(&b, "", &b.owner).await;
    let after = now["next"].as_u64().unwrap();
    let in_3_days = std::time::SystemTime::now() + Duration::from_secs(3 * 86_400);
    let day = humantime::format_rfc3339(in_3_days).to_string()[..10].to_string();
    b.operator().await.set_subscription(&org(), &day).await.unwrap();
    let notices = |v: &Value| -> Vec<Value> {
        v["events"].as_array().unwrap().iter().filter(|e| e["type"] == "subscription.ending").cloned().collect()
    };
    let (started, mut cursor) = (std::time::Instant::now(), after);
    let notice = loop {
        let (code, page) = events(&b, &format!("after={cursor}&wait=5"), &b.owner).await;
        assert_eq!(code, 200, "{page}");
        if let Some(n) = notices(&page).pop() {
            break n;
        }
        cursor = page["next"].as_u64().unwrap();
        assert!(started.elapsed() < Duration::from_secs(30), "no notice");
    };
    conforms(&notice, &schema("envelope"), "event").unwrap();
    conforms(&notice["data"], &schema("subscription"), "data").unwrap();
    assert_eq!((notice["data"]["days"].as_u64(), notice["data"]["last_day"].as_str()), (Some(7), Some(day.as_str())));
    // Another pass of the check (every 10 s) gives it no second time.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (_, all) = events(&b, &format!("after={after}"), &b.owner).await;
    assert_eq!(notices(&all).len(), 1, "{all}");
}

/// A flood of refusals in a pool is one event for its minute, with the
/// counts by code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_one_event_per_pool_and_minute() {
    // 4 s before the next minute boundary, so the minute closes and is harvested within seconds.
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ahead = (60_000 - wall % 60_000 + 60_000 - 4_000) % 60_000;
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.clock_ahead = Duration::from_millis(ahead);
    })
    .await;
    b.quota(1).await;
    let owner = b.owner().await;
    let m = license_broker::value::MachineId::new("m").unwrap();
    owner.register_machine(&org(), POOL, &m).await.unwrap();
    owner.acquire(&org(), POOL, &m, 1).await.unwrap();
    for nonce in 2..7 {
        assert!(owner.acquire(&org(), POOL, &m, nonce).await.is_err());
    }
    let (started, mut cursor, mut refused) = (std::time::Instant::now(), 0, Vec::new());
    while refused.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "no pool.refused event");
        let (_, page) = events(&b, &format!("after={cursor}&wait=5"), &b.owner).await;
        cursor = page["next"].as_u64().unwrap();
        refused.extend(page["events"].as_array().unwrap().iter().filter(|e| e["type"] == "pool.refused").cloned());
    }
    let e = &refused[0];
    conforms(e, &schema("envelope"), "event").unwrap();
    conforms(&e["data"], &schema("refused"), "data").unwrap();
    assert_eq!(e["data"]["pool"], "kre-floating-annual");
    assert_eq!(
        (e["data"]["total"].as_u64(), e["data"]["by_code"]["QUOTA_EXCEEDED"].as_u64()),
        (Some(5), Some(5)),
        "{e}"
    );
    let minute = e["data"]["minute_ms"].as_u64().unwrap() / 60_000;
    assert_eq!(e["idempotency_key"], format!("refused:default:kre-floating-annual:{minute}"));
}

/// A machine refused at the pool's limit is an event, once a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_refused_at_the_limit_is_an_event_once_a_minute() {
    let b = broker(tempfile::tempdir().unwrap()).await;
    b.quota(1).await;
    let (_, now) = events(&b, "", &b.owner).await;
    let after = now["next"].as_u64().unwrap();
    let owner = b.owner().await;
    let m = |s: &str| license_broker::value::MachineId::new(s).unwrap();
    owner.register_machine(&org(), POOL, &m("first")).await.unwrap();
    for extra in ["second", "third", "fourth", "fifth", "sixth"] {
        let e = owner.register_machine(&org(), POOL, &m(extra)).await.unwrap_err();
        assert_eq!(e.code(), Some(license_broker::proto::ErrorCode::MachineLimit));
    }
    let (_, page) = events(&b, &format!("after={after}&wait=5"), &b.owner).await;
    let mut found: Vec<Value> = page["events"].as_array().unwrap().clone();
    // The writer may commit after the first answer: read on briefly.
    let (_, more) = events(&b, &format!("after={}&wait=1", page["next"]), &b.owner).await;
    found.extend(more["events"].as_array().unwrap().iter().cloned());
    let limits: Vec<&Value> = found.iter().filter(|e| e["type"] == "machine.limit_reached").collect();
    // Five refusals within a second or so: one event (two if they straddle a minute boundary).
    assert!(!limits.is_empty() && limits.len() <= 2, "{found:?}");
    conforms(limits[0], &schema("envelope"), "event").unwrap();
    conforms(&limits[0]["data"], &schema("machine_limit"), "data").unwrap();
    assert_eq!((limits[0]["data"]["machine"].as_str(), limits[0]["data"]["quota"].as_u64()), (Some("second"), Some(1)));
}
