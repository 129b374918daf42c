//! Caps by job label over real QUIC on 127.0.0.1: set, enforced on
//! checkouts carrying the label (and on nothing else), listed, audited,
//! removed.

mod support;

use std::time::Duration;

use license_broker::client::Checkout;
use license_broker::proto::{AuditAction, ErrorCode};
use license_broker::value::Labels;
use license_broker::value::Role;

use support::{machine, org, start, POOL};

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
