//! KSE grants and activations, offline licenses and the audit trail, over
//! real QUIC on 127.0.0.1.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use license_broker::client::Client;
use license_broker::proto::Notice;
use license_broker::proto::{AuditAction, EndReason, ErrorCode};
use license_broker::value::{format_end_date, Millis, OrgName, PoolId, Role};

use support::{machine, org, start, TestBroker};

const DAY: u64 = 86_400_000;

fn pool(s: &str) -> PoolId {
    s.parse().unwrap()
}

/// `YYYY-MM-DD` of today + `days` (UTC).
fn day(days: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    format_end_date(Millis((now / DAY + 1 + days) * DAY))
}

async fn set_pool(b: &TestBroker, id: &str, quota: u32) {
    let op = b.operator().await;
    op.set_pool(&org(), pool(id), quota).await.unwrap();
    op.close().await;
}

/// Adds members with keys; returns their clients.
async fn members(b: &TestBroker, owner: &Client, emails: &[&str]) -> Vec<Client> {
    let mut out = Vec::new();
    for e in emails {
        owner.add_user(&org(), e, Role::User).await.unwrap();
        let (key, _) = owner.create_key(&org(), e).await.unwrap();
        out.push(b.client(&key).await);
    }
    out
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, license_broker::client::ClientError>, want: ErrorCode) {
    assert_eq!(code(r), Some(want));
}

fn code<T: std::fmt::Debug>(r: Result<T, license_broker::client::ClientError>) -> Option<ErrorCode> {
    r.err().and_then(|e| e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_capped_transferable_and_revoking_ends_sessions() {
    let b = start(Duration::from_secs(30)).await;
    set_pool(&b, "kse-floating-annual", 2).await;
    let owner = b.owner().await;
    let users = members(&b, &owner, &["a@default", "b@default", "c@default"]).await;
    let kse = pool("kse-floating-annual");
    owner.grant(&org(), kse, "a@default").await.unwrap();
    owner.grant(&org(), kse, "b@default").await.unwrap();
    assert_eq!(code(owner.grant(&org(), kse, "c@default").await), Some(ErrorCode::GrantLimit));
    assert_eq!(code(owner.grant(&org(), kse, "a@default").await), Some(ErrorCode::AlreadyExists));
    assert_eq!(code(users[2].activate(&org(), kse, &machine("c-laptop"), 1).await), Some(ErrorCode::NotLicensed));

    let act = users[0].activate(&org(), kse, &machine("a-laptop"), 1).await.unwrap();
    let session = act.session.expect("a floating activation is a leased session");
    owner.revoke_grant(&org(), kse, "a@default").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), users[0].next_notice()).await.unwrap();
    assert_eq!(n, Some(Notice::SessionEnded { session, reason: EndReason::Revoked }));
    assert_eq!(code(users[0].renew(session).await), Some(ErrorCode::SessionExpired));
    assert_eq!(code(users[0].activate(&org(), kse, &machine("a-laptop"), 2).await), Some(ErrorCode::NotLicensed));

    // Transfer: the freed license goes to c.
    owner.grant(&org(), kse, "c@default").await.unwrap();
    users[2].activate(&org(), kse, &machine("c-laptop"), 3).await.unwrap();
    let licensed: Vec<String> =
        owner.list_grants(&org(), Some(kse)).await.unwrap().iter().map(|g| g.email.to_string()).collect();
    assert_eq!(licensed, ["b@default", "c@default"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floating_activations_never_exceed_the_quota() {
    let b = start(Duration::from_secs(30)).await;
    set_pool(&b, "kse-floating-annual", 3).await;
    let owner = b.owner().await;
    let users: Vec<Arc<Client>> =
        members(&b, &owner, &["a@default", "b@default", "c@default"]).await.into_iter().map(Arc::new).collect();
    let kse = pool("kse-floating-annual");
    for u in ["a@default", "b@default", "c@default"] {
        owner.grant(&org(), kse, u).await.unwrap();
    }
    // Three licensed users, each on three machines at once: nine activations race for three seats.
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for m in 0..3u128 {
            let u = u.clone();
            tasks.push(tokio::spawn(async move {
                u.activate(&org(), kse, &machine(&format!("host-{i}-{m}")), (i as u128) << 8 | m).await
            }));
        }
    }
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => {
                assert!(a.session.is_some());
                admitted += 1;
            }
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}"),
        }
    }
    assert_eq!(admitted, 3);
    let status = owner.status(None).await.unwrap();
    assert_eq!(status.iter().find(|s| s.pool == kse).unwrap().in_use, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_locked_license_binds_one_machine_until_an_admin_frees_it() {
    let b = start(Duration::from_secs(30)).await;
    set_pool(&b, "kse-node-locked-annual", 2).await;
    let owner = b.owner().await;
    let users = members(&b, &owner, &["a@default", "b@default"]).await;
    let nl = pool("kse-node-locked-annual");
    owner.grant(&org(), nl, "a@default").await.unwrap();
    assert_eq!(code(users[1].activate(&org(), nl, &machine("b-1"), 1).await), Some(ErrorCode::NotLicensed));
    let first = users[0].activate(&org(), nl, &machine("a-1"), 1).await.unwrap();
    assert!(first.session.is_none() && !first.already);
    assert!(users[0].activate(&org(), nl, &machine("a-1"), 2).await.unwrap().already, "idempotent on the same machine");
    assert_eq!(code(users[0].activate(&org(), nl, &machine("a-2"), 3).await), Some(ErrorCode::AlreadyActivated));
    let online = owner.list_grants(&org(), Some(nl)).await.unwrap();
    assert_eq!(online[0].machine.as_ref().map(|m| m.to_string()).as_deref(), Some("a-1"), "shown as an online license");
    let seats = |s: Vec<license_broker::proto::PoolStatus>| s.iter().find(|p| p.pool == nl).unwrap().in_use;
    assert_eq!(seats(owner.status(None).await.unwrap()), 1);
    let st = owner.status(None).await.unwrap().into_iter().find(|p| p.pool == nl).unwrap();
    assert_eq!((st.grants, st.activations, st.offline), (1, 1, 0), "status shows what holds the seats");
    owner.remove_machine(&org(), Some(nl), &machine("a-1")).await.unwrap();
    assert_eq!(seats(owner.status(None).await.unwrap()), 0);
    users[0].activate(&org(), nl, &machine("a-2"), 4).await.unwrap();
    // KRE runners do not activate.
    assert_eq!(
        code(users[0].activate(&org(), support::POOL, &machine("a-2"), 5).await),
        Some(ErrorCode::InvalidArgument)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_strangers_cannot_administer_licenses() {
    let b = start(Duration::from_secs(30)).await;
    set_pool(&b, "kse-node-locked-annual", 2).await;
    let owner = b.owner().await;
    let user = members(&b, &owner, &["u@default"]).await.remove(0);
    let op = b.operator().await;
    let acme = OrgName::new("acme").unwrap();
    let stranger = b.client(&op.create_org(&acme, "2099-12-31", "boss@acme").await.unwrap()).await;
    let nl = pool("kse-node-locked-annual");
    for (who, c) in [("user", &user), ("other org's owner", &stranger), ("operator", &op)] {
        assert_eq!(code(c.grant(&org(), nl, "u@default").await), Some(ErrorCode::Forbidden), "{who}");
        assert_eq!(code(c.revoke_grant(&org(), nl, "u@default").await), Some(ErrorCode::Forbidden), "{who}");
        assert_eq!(
            code(c.create_offline(&org(), nl, &machine("m"), &day(5)).await),
            Some(ErrorCode::Forbidden),
            "{who}"
        );
        assert_eq!(code(c.audit(&org()).await), Some(ErrorCode::Forbidden), "{who}");
        assert_eq!(code(c.list_grants(&org(), None).await), Some(ErrorCode::Forbidden), "{who}");
        assert_eq!(code(c.list_offline(&org()).await), Some(ErrorCode::Forbidden), "{who}");
    }
    // A stranger's members cannot activate our licenses.
    assert_eq!(code(stranger.activate(&org(), nl, &machine("m"), 1).await), Some(ErrorCode::Forbidden));
    // Anyone authenticated may fetch the public key.
    assert!(user.offline_public_key().await.unwrap().contains("BEGIN PUBLIC KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_licenses_are_refused_by_the_rule_that_applies() {
    let b = start(Duration::from_secs(30)).await;
    for p in ["kse-node-locked-annual", "kse-node-locked-monthly", "kse-floating-annual", "kre-node-locked-annual"] {
        set_pool(&b, p, 2).await;
    }
    let owner = b.owner().await;
    let m = machine("air-gapped-1");
    refused(
        owner.create_offline(&org(), pool("kse-node-locked-monthly"), &m, &day(5)).await,
        ErrorCode::OfflineNotAllowed,
    );
    refused(owner.create_offline(&org(), pool("kse-floating-annual"), &m, &day(5)).await, ErrorCode::OfflineNotAllowed);
    let e = owner.create_offline(&org(), pool("kse-node-locked-annual"), &m, &day(61)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ExpiryTooLate));
    assert!(e.to_string().contains("60 days"), "{e}");
    refused(
        owner.create_offline(&org(), pool("kse-node-locked-annual"), &m, "2020-01-01").await,
        ErrorCode::InvalidArgument,
    );
    refused(
        owner.create_offline(&org(), pool("kse-node-locked-annual"), &m, "tomorrow").await,
        ErrorCode::InvalidArgument,
    );

    // An org whose subscription ends in 10 days: that is the limit named.
    let op = b.operator().await;
    let short = OrgName::new("short").unwrap();
    let short_owner = b.client(&op.create_org(&short, &day(10), "o@short").await.unwrap()).await;
    op.set_pool(&short, pool("kre-node-locked-annual"), 1).await.unwrap();
    let e = short_owner.create_offline(&short, pool("kre-node-locked-annual"), &m, &day(20)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ExpiryTooLate));
    assert!(e.to_string().contains("subscription"), "{e}");

    // A good one: a seat is taken, it is listed, it cannot be revoked or moved.
    let (name, file) = owner.create_offline(&org(), pool("kre-node-locked-annual"), &m, &day(30)).await.unwrap();
    assert_eq!(name, "KRE_air-gapped-1.lic");
    refused(owner.create_offline(&org(), pool("kre-node-locked-annual"), &m, &day(5)).await, ErrorCode::AlreadyExists);
    let listed = owner.list_offline(&org()).await.unwrap();
    assert_eq!((listed.len(), listed[0].active, listed[0].last_day.clone()), (1, true, day(30)));
    let status = owner.status(None).await.unwrap();
    let kre_nl = status.iter().find(|s| s.pool == pool("kre-node-locked-annual")).unwrap();
    assert_eq!((kre_nl.in_use, kre_nl.offline), (1, 1));
    refused(owner.revoke_offline(&org(), &listed[0].id).await, ErrorCode::OfflineIrrevocable);
    refused(owner.transfer_offline(&org(), &listed[0].id, &machine("elsewhere")).await, ErrorCode::OfflineIrrevocable);
    refused(owner.revoke_offline(&org(), "00000000000000000000000000000000").await, ErrorCode::NotFound);

    // The file verifies with the broker's public key, without the broker.
    let pem = owner.offline_public_key().await.unwrap();
    let key = license_broker::offline::parse_public_pem(&pem).unwrap();
    let now = Millis(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64);
    let fields = license_broker::offline::verify(file.as_bytes(), &key, Some(&m), now).unwrap();
    assert_eq!((fields.org, fields.machine), (org(), m.clone()));
    // Flip each byte of the real file in turn: every flip is rejected.
    let bytes = file.into_bytes();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        assert!(license_broker::offline::verify(&bad, &key, None, now).is_err(), "flip at byte {i} accepted");
    }
    // A node-locked KSE pool: one seat for the offline license leaves one for activations.
    let kse = pool("kse-node-locked-annual");
    owner.create_offline(&org(), kse, &machine("kse-offline"), &day(3)).await.unwrap();
    let users = members(&b, &owner, &["a@default", "b@default"]).await;
    owner.grant(&org(), kse, "a@default").await.unwrap();
    owner.grant(&org(), kse, "b@default").await.unwrap();
    users[0].activate(&org(), kse, &machine("a-1"), 1).await.unwrap();
    refused(users[1].activate(&org(), kse, &machine("b-1"), 2).await, ErrorCode::QuotaExceeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_records_who_did_what_and_survives_restart() {
    let mut b = start(Duration::from_secs(30)).await;
    set_pool(&b, "kse-node-locked-annual", 3).await;
    let owner = b.owner().await;
    let users = members(&b, &owner, &["a@default"]).await;
    let nl = pool("kse-node-locked-annual");
    owner.grant(&org(), nl, "a@default").await.unwrap();
    users[0].activate(&org(), nl, &machine("a-1"), 1).await.unwrap();
    owner.remove_machine(&org(), Some(nl), &machine("a-1")).await.unwrap();
    owner.revoke_grant(&org(), nl, "a@default").await.unwrap();
    owner.create_offline(&org(), nl, &machine("air"), &day(7)).await.unwrap();
    let keys = owner.list_keys(&org()).await.unwrap();
    let a_key = keys.iter().find(|k| k.email.as_str() == "a@default").unwrap().id.clone();
    owner.revoke_key(&org(), &a_key).await.unwrap();
    owner.close().await;
    let (operator, owner_key) = (b.operator.clone(), b.owner.clone());
    b.stop().await;
    let dir = std::mem::replace(&mut b.dir, tempfile::tempdir().unwrap());
    let mut b2 = support::start_in(dir, Duration::from_secs(30)).await;
    b2.operator = operator;
    b2.owner = owner_key;
    let owner = b2.owner().await;
    let log = owner.audit(&org()).await.unwrap();
    let actions: Vec<(AuditAction, String)> = log.iter().map(|e| (e.action, e.actor.to_string())).collect();
    for (action, actor) in [
        (AuditAction::QuotaChanged, "operator@localhost"),
        (AuditAction::UserAdded, "owner@default"),
        (AuditAction::KeyCreated, "owner@default"),
        (AuditAction::Granted, "owner@default"),
        (AuditAction::Activated, "a@default"),
        (AuditAction::MachineRemoved, "owner@default"),
        (AuditAction::GrantRevoked, "owner@default"),
        (AuditAction::OfflineCreated, "owner@default"),
        (AuditAction::KeyRevoked, "owner@default"),
    ] {
        assert!(actions.contains(&(action, actor.to_string())), "missing {action} by {actor} in {actions:?}");
    }
    assert!(log.windows(2).all(|w| (w[0].at, w[0].seq) <= (w[1].at, w[1].seq)), "oldest first");
    // The offline license still holds its seat after the restart.
    let status = owner.status(None).await.unwrap();
    assert_eq!(status.iter().find(|s| s.pool == nl).unwrap().in_use, 1);
    b2.stop().await;
}
