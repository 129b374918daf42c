//! A pool's alerts (docs/EVENTS.md, `queue.wait_exceeded`, `pool.busy`)
//! against a real broker on loopback: a runner waiting in the queue past
//! the pool's queue alert is told of once, while it waits; a pool held at
//! its quota for the busy alert's minutes is told busy, and back once its
//! use falls; both as the document's schemas say. Who may set them.

mod support;

use std::time::{Duration, Instant};

use license_broker::client::{Checkout, ClientError};
use license_broker::value::{Labels, MachineId, Role};
use serde_json::Value;

use support::{org, start_with, TestBroker, POOL};

const DOC: &str = include_str!("../docs/EVENTS.md");

/// The schema docs/EVENTS.md gives under "```json schema NAME".
fn schema(name: &str) -> Value {
    let start = DOC.find(&format!("```json schema {name}\n")).unwrap_or_else(|| panic!("no schema {name}"));
    let body = &DOC[start..].split_once('\n').unwrap().1;
    serde_json::from_str(&body[..body.find("\n```").unwrap()]).unwrap()
}

/// `v` has every field `s` requires and none it does not list, each of its
/// documented type (the part of JSON Schema the document uses for data).
fn conforms(v: &Value, s: &Value) {
    let fields = v.as_object().unwrap_or_else(|| panic!("{v} is not an object"));
    for r in s["required"].as_array().unwrap() {
        assert!(fields.contains_key(r.as_str().unwrap()), "{v} lacks {r}");
    }
    for (name, value) in fields {
        let kind = s["properties"][name]["type"].as_str().unwrap_or_else(|| panic!("{name} is not documented"));
        let ok = match kind {
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "object" => value.is_object(),
            other => panic!("no type {other}"),
        };
        assert!(ok, "{name}: {value} is not {kind}");
    }
}

/// The events of `types` after `after`, reading until `n` of them came (or `limit`).
async fn wait_for(b: &TestBroker, after: u64, types: &[&str], n: usize, limit: Duration) -> Vec<Value> {
    let (started, mut cursor, mut got) = (Instant::now(), after, Vec::new());
    while got.len() < n && started.elapsed() < limit {
        let path = format!("/api/v1/events?org=default&after={cursor}&wait=5");
        let (_, body) = b.web().fetch(&path, Some(&b.owner)).await;
        let page: Value = serde_json::from_str(&body).unwrap();
        cursor = page["next"].as_u64().unwrap();
        let wanted = page["events"].as_array().unwrap().iter().filter(|e| types.contains(&e["type"].as_str().unwrap()));
        got.extend(wanted.cloned());
    }
    got
}

async fn newest(b: &TestBroker) -> u64 {
    let (_, body) = b.web().fetch("/api/v1/events?org=default&after=0", Some(&b.owner)).await;
    let mut page: Value = serde_json::from_str(&body).unwrap();
    let mut next = page["next"].as_u64().unwrap();
    while !page["events"].as_array().unwrap().is_empty() {
        let (_, body) = b.web().fetch(&format!("/api/v1/events?org=default&after={next}"), Some(&b.owner)).await;
        page = serde_json::from_str(&body).unwrap();
        next = page["next"].as_u64().unwrap();
    }
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_queued_past_the_alert_is_told_of_once_while_it_waits() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    b.quota(1).await;
    let owner = b.owner().await;
    let m = MachineId::new("m").unwrap();
    owner.register_machine(&org(), POOL, &m).await.unwrap();
    owner.set_pool_alerts(&org(), POOL, Some(Duration::from_secs(1)), None).await.unwrap();
    let after = newest(&b).await;
    let held = owner.acquire(&org(), POOL, &m, 1).await.unwrap();
    let waiter = b.owner().await;
    let (o, mm) = (org(), m.clone());
    let queued = tokio::spawn(async move {
        let c = Checkout {
            org: &o,
            pool: POOL,
            machine: &mm,
            nonce: 2,
            wait: Duration::from_secs(20),
            labels: Labels::default(),
        };
        waiter.checkout(&c).await
    });
    let told = wait_for(&b, after, &["queue.wait_exceeded"], 1, Duration::from_secs(15)).await;
    assert_eq!(told.len(), 1, "told once the second passed");
    assert!(!queued.is_finished(), "told while it still waits");
    let e = &told[0];
    conforms(&e["data"], &schema("queue_wait"));
    assert_eq!((e["data"]["pool"].as_str(), e["data"]["machine"].as_str()), (Some("kre-floating-annual"), Some("m")));
    assert_eq!((e["data"]["user"].as_str(), e["data"]["threshold_ms"].as_u64()), (Some("owner@default"), Some(1000)));
    owner.release(held.session).await.unwrap();
    queued.await.unwrap().expect("admitted once the seat came back");
    let again = wait_for(&b, after, &["queue.wait_exceeded"], 2, Duration::from_secs(3)).await;
    assert_eq!(again.len(), 1, "one wait, one event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_set_by_owners_and_admins_within_their_bounds() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |_| {}).await;
    b.quota(1).await;
    let owner = b.owner().await;
    owner.add_user(&org(), "dev@default", Role::User).await.unwrap();
    let (dev_key, _) = owner.create_key(&org(), "dev@default").await.unwrap();
    let dev = b.client(&dev_key).await;
    let code = |r: Result<(), ClientError>| match r {
        Err(ClientError::Rejected(e)) => e.code.name(),
        other => panic!("{other:?}"),
    };
    assert_eq!(code(dev.set_pool_alerts(&org(), POOL, None, Some(5)).await), "FORBIDDEN");
    assert_eq!(code(owner.set_pool_alerts(&org(), POOL, None, Some(0)).await), "INVALID_ARGUMENT");
    let tiny = Some(Duration::from_millis(10));
    assert_eq!(code(owner.set_pool_alerts(&org(), POOL, tiny, None).await), "INVALID_ARGUMENT");
    b.operator().await.set_pool_alerts(&org(), POOL, None, Some(5)).await.unwrap();
    let audit = owner.audit(&org()).await.unwrap();
    let set = audit.iter().rev().find(|e| e.action.name() == "alerts_set").expect("audited");
    assert_eq!(set.detail, "pool=kre-floating-annual queue_alert=off busy_alert=5m");
}

/// A pool held whole for its one-minute busy alert is told busy after
/// that minute closes, and back after the next one, mostly idle, closes.
/// (About two minutes: the history judges closed minutes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_held_whole_for_its_minutes_is_told_busy_and_back() {
    // 3 s before a minute boundary, so the next minute is held whole.
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ahead = (60_000 - wall % 60_000 + 60_000 - 3_000) % 60_000;
    // A lease longer than the test: the session is held, not expired, until released.
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(600), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.clock_ahead = Duration::from_millis(ahead);
    })
    .await;
    b.quota(1).await;
    let owner = b.owner().await;
    let m = MachineId::new("m").unwrap();
    owner.register_machine(&org(), POOL, &m).await.unwrap();
    owner.set_pool_alerts(&org(), POOL, None, Some(1)).await.unwrap();
    let after = newest(&b).await;
    let held = owner.acquire(&org(), POOL, &m, 1).await.unwrap();
    let busy = wait_for(&b, after, &["pool.busy"], 1, Duration::from_secs(100)).await;
    assert_eq!(busy.len(), 1, "told busy");
    owner.release(held.session).await.unwrap();
    let both = wait_for(&b, after, &["pool.busy", "pool.busy_ended"], 2, Duration::from_secs(100)).await;
    let types: Vec<&str> = both.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["pool.busy", "pool.busy_ended"]);
    for e in &both {
        conforms(&e["data"], &schema("busy"));
        assert_eq!(e["data"]["pool"], "kre-floating-annual");
    }
    assert_eq!(both[0]["data"]["percent"], 100, "the held minute: 100 %");
    assert_eq!(both[0]["data"]["since_ms"], both[1]["data"]["since_ms"], "the same run");
    assert!(both[1]["data"]["percent"].as_u64().unwrap() < 80);
    let key = |e: &Value| e["idempotency_key"].as_str().unwrap().to_string();
    assert_eq!(
        key(&both[0]),
        format!("busy:default:kre-floating-annual:{}", both[0]["data"]["since_ms"].as_u64().unwrap() / 60_000)
    );
}
