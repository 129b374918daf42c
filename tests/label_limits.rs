//! Caps by job label over real QUIC on 127.0.0.1: set, enforced on
//! checkouts carrying the label (and on nothing else), listed, audited,
//! removed; a runner re-attaching after a crash counted in them at once.

mod support;

use std::time::Duration;

use license_broker::client::{Checkout, Client};
use license_broker::proto::{AuditAction, ErrorCode, Req, Resp};
use license_broker::value::{Labels, Nonce, Role, SessionId};

use support::{machine, org, start, start_in, TestBroker, POOL};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_cap_admits_that_many_sessions_carrying_the_label_and_no_more() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(5).await;
    let c = b.owner().await;
    let (m, o) = (machine("m"), org());
    c.register_machine(&org(), POOL, &m).await.unwrap();
    c.set_label_limit((&org(), POOL), ("team", "web"), Some(2)).await.unwrap();
    let web = labels(&[("job", "lint"), ("team", "web")]);
    let checkout = |nonce, labels: &Labels| Checkout {
        org: &o,
        pool: POOL,
        machine: &m,
        nonce,
        wait: Duration::ZERO,
        labels: labels.clone(),
    };
    let first = c.checkout(&checkout(1, &web)).await.unwrap();
    c.checkout(&checkout(2, &web)).await.unwrap();
    let e = c.checkout(&checkout(3, &web)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LabelLimit), "{e}");
    // A retry of an admitted runner takes no second count; others are not capped.
    assert_eq!(c.checkout(&checkout(1, &web)).await.unwrap().session, first.session);
    c.checkout(&checkout(4, &labels(&[("team", "api")]))).await.unwrap();
    c.acquire(&org(), POOL, &m, 5).await.unwrap();
    let listed = c.label_limits(&org(), POOL).await.unwrap();
    assert_eq!(
        (listed[0].key.as_str(), listed[0].value.as_str(), listed[0].max, listed[0].sessions),
        ("team", "web", 2, 2)
    );
    // A freed labelled seat admits the next one carrying the label.
    c.release(first.session).await.unwrap();
    c.checkout(&checkout(3, &web)).await.unwrap();
    // Removed: the label admits up to the quota.
    c.set_label_limit((&org(), POOL), ("team", "web"), None).await.unwrap();
    assert!(c.label_limits(&org(), POOL).await.unwrap().is_empty());
    let audit = c.audit(&org()).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == AuditAction::LabelLimitSet).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_may_not_cap_a_label_and_a_bad_label_is_refused() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(5).await;
    let c = b.owner().await;
    let e = c.set_label_limit((&org(), POOL), ("no spaces", "web"), Some(1)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument));
    c.add_user(&org(), "u@default", Role::User).await.unwrap();
    let member = b.client(&c.create_key(&org(), "u@default").await.unwrap().0).await;
    let e = member.set_label_limit((&org(), POOL), ("team", "web"), Some(1)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_reattached_after_a_crash_carries_its_labels_and_counts_in_its_cap_at_once() {
    let mut b = start(Duration::from_secs(30)).await;
    b.quota(4).await;
    let c = b.owner().await;
    let (m, o) = (machine("m"), org());
    c.register_machine(&o, POOL, &m).await.unwrap();
    c.set_label_limit((&o, POOL), ("team", "web"), Some(2)).await.unwrap();
    let web = labels(&[("team", "web")]);
    let checkout =
        |nonce| Checkout { org: &o, pool: POOL, machine: &m, nonce, wait: Duration::ZERO, labels: web.clone() };
    let (first, second) = (c.checkout(&checkout(7)).await.unwrap(), c.checkout(&checkout(9)).await.unwrap());
    // A crash: no release, no last checkpoint; the restart holds their seats.
    c.abandon();
    drop(b.running.take().unwrap().abandon().await);
    let dir = std::mem::replace(&mut b.dir, tempfile::tempdir().unwrap());
    let mut again = start_in(dir, Duration::from_secs(30)).await;
    again.owner = b.owner.clone();
    let runner = again.owner().await;
    // Version 7: the labels travel with the re-attach, and no `Label` follows.
    let token = first.token.unwrap();
    let req = Req::ReattachLabelled {
        org: o.clone(),
        pool: POOL,
        machine: m.clone(),
        nonce: Nonce(7),
        token,
        labels: web.clone(),
    };
    let Resp::Leased { session, reattached: false, .. } = runner.call(req).await.unwrap() else {
        panic!("not leased anew")
    };
    assert_eq!(labelled(&runner, session).await, web, "listed with its labels at once");
    assert_eq!(runner.label_limits(&o, POOL).await.unwrap()[0].sessions, 1, "counted in its cap at once");
    // A version 6 client re-attaches, then labels: the same in the end.
    let old = speaking(&again, 6).await;
    assert_eq!(old.welcome().version, 6);
    let back = old.reattach_labelled((&o, POOL, &m), 9, second.token.unwrap(), &web).await.unwrap();
    assert_eq!(labelled(&runner, back.session).await, web);
    assert_eq!(runner.label_limits(&o, POOL).await.unwrap()[0].sessions, 2);
    let e = runner.checkout(&checkout(11)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LabelLimit), "the believers hold the cap's places: {e}");
}

/// The labels `session` is listed with.
async fn labelled(c: &Client, session: SessionId) -> Labels {
    let all = c.list_sessions(&org()).await.unwrap();
    all.into_iter().find(|s| s.info.session == session).expect("listed").labels
}

/// The Owner's client, speaking protocol version `version` at most.
async fn speaking(b: &TestBroker, version: u16) -> Client {
    let (addr, name) = license_broker::client::resolve(&b.server, None).await.unwrap();
    let ep = license_broker::client::endpoint(Some(&b.ca), false).unwrap();
    Client::connect_speaking(ep, (addr, &name), &b.owner, version).await.unwrap()
}
