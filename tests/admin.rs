//! Roles, org isolation, API keys and durability over real QUIC.

mod support;

use std::time::Duration;

use license_broker::client::{Client, ClientError};
use license_broker::proto::ErrorCode;
use license_broker::proto::{Req, Resp};
use license_broker::value::{OrgName, Role, SessionId};

use support::{machine, org, start, start_in, POOL};

fn code(r: Result<Resp, ClientError>) -> Option<ErrorCode> {
    r.err().and_then(|e| e.code())
}

/// Every admin request of the protocol, aimed at `org`.
fn admin_requests(org: &OrgName) -> Vec<Req> {
    vec![
        Req::AddUser { org: org.clone(), email: "new@x".into(), role: Role::User },
        Req::CreateKey { org: org.clone(), email: "owner@default".into() },
        Req::RevokeKey { org: org.clone(), key: "000000000000".into() },
        Req::ListKeys { org: org.clone() },
        Req::ListUsers { org: org.clone() },
        Req::ListMachines { org: org.clone() },
        Req::RemoveMachine { org: org.clone(), pool: None, machine: machine("m") },
        Req::ListSessions { org: org.clone() },
        Req::KillSession { org: org.clone(), session: SessionId(1) },
        Req::RemoveUser { org: org.clone(), email: "someone@x".into() },
    ]
}

fn operator_requests(org: &OrgName) -> Vec<Req> {
    vec![
        Req::SetPool { org: org.clone(), pool: POOL, quota: 1000 },
        Req::CreateOrg {
            name: OrgName::new("sneaky").unwrap(),
            subscription_end: "2099-01-01".into(),
            owner: "a@b".into(),
        },
        Req::SetSubscription { org: org.clone(), subscription_end: "2099-01-01".into() },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_org_isolation_hold_for_every_admin_request() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(2).await;
    let owner = b.owner().await;
    owner.add_user(&org(), "user@default", Role::User).await.unwrap();
    let (user_key, _) = owner.create_key(&org(), "user@default").await.unwrap();
    let user = b.client(&user_key).await;
    let op = b.operator().await;
    let acme = OrgName::new("acme").unwrap();
    let acme_owner_key = op.create_org(&acme, "2099-12-31", "boss@acme").await.unwrap();
    let stranger = b.client(&acme_owner_key).await;

    for req in admin_requests(&org()) {
        for (who, c) in [("user", &user), ("other org's owner", &stranger), ("operator", &op)] {
            assert_eq!(code(c.call(req.clone()).await), Some(ErrorCode::Forbidden), "{who}: {req:?}");
        }
    }
    for req in operator_requests(&org()) {
        for (who, c) in [("user", &user), ("owner", &owner), ("other org's owner", &stranger)] {
            assert_eq!(code(c.call(req.clone()).await), Some(ErrorCode::Forbidden), "{who}: {req:?}");
        }
    }
    // Runners of another org cannot touch our pool.
    let r = stranger.call(Req::RegisterMachine { org: org(), pool: POOL, machine: machine("m") }).await;
    assert_eq!(code(r), Some(ErrorCode::Forbidden));
    let r = stranger
        .call(Req::Acquire { org: org(), pool: POOL, machine: machine("m"), nonce: license_broker::value::Nonce(1) })
        .await;
    assert_eq!(code(r), Some(ErrorCode::Forbidden));
    assert_eq!(code(stranger.call(Req::Status { org: Some(org()) }).await), Some(ErrorCode::Forbidden));
    // The owner does what owners do; the quota stays what the operator set.
    assert!(owner.list_users(&org()).await.unwrap().iter().any(|u| u.role == Role::User));
    assert_eq!(owner.status(None).await.unwrap()[0].quota, 2);
    // And the operator sees every org's pools.
    op.set_pool(&acme, POOL, 5).await.unwrap();
    assert_eq!(op.status(None).await.unwrap().len(), 2);
    assert_eq!(stranger.status(None).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_is_refused_at_once_even_on_an_open_connection() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(2).await;
    let owner = b.owner().await;
    owner.add_user(&org(), "ci@default", Role::User).await.unwrap();
    let (key, id) = owner.create_key(&org(), "ci@default").await.unwrap();
    let runner = b.client(&key).await;
    runner.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let keys = owner.list_keys(&org()).await.unwrap();
    assert!(keys.iter().any(|k| k.id == id && !k.revoked));
    owner.revoke_key(&org(), &id).await.unwrap();
    let e = runner.acquire(&org(), POOL, &machine("m"), 1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
    let e = Client::connect(&b.options(&key)).await.err().unwrap();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
    let e = Client::connect(&b.options("lbk_not-a-key")).await.err().unwrap();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_get_typed_errors() {
    let b = start(Duration::from_secs(30)).await;
    let op = b.operator().await;
    let owner = b.owner().await;
    let r = op
        .call(Req::CreateOrg {
            name: OrgName::new("x").unwrap(),
            subscription_end: "2099-02-30".into(),
            owner: "a@b".into(),
        })
        .await;
    assert_eq!(code(r), Some(ErrorCode::InvalidArgument));
    let r = op
        .call(Req::CreateOrg {
            name: OrgName::new("x").unwrap(),
            subscription_end: "2001-01-01".into(),
            owner: "a@b".into(),
        })
        .await;
    assert_eq!(code(r), Some(ErrorCode::InvalidArgument));
    let r = op.call(Req::SetPool { org: org(), pool: POOL, quota: u32::MAX }).await;
    assert_eq!(code(r), Some(ErrorCode::InvalidArgument));
    let r = op.call(Req::SetPool { org: OrgName::new("nope").unwrap(), pool: POOL, quota: 1 }).await;
    assert_eq!(code(r), Some(ErrorCode::NotFound));
    let r = owner.call(Req::AddUser { org: org(), email: "not-an-email".into(), role: Role::User }).await;
    assert_eq!(code(r), Some(ErrorCode::InvalidArgument));
    let r = owner.call(Req::AddUser { org: org(), email: "owner@default".into(), role: Role::User }).await;
    assert_eq!(code(r), Some(ErrorCode::AlreadyExists));
    let r = owner.call(Req::CreateKey { org: org(), email: "ghost@default".into() }).await;
    assert_eq!(code(r), Some(ErrorCode::NotFound));
    let r = owner
        .call(Req::Acquire { org: org(), pool: POOL, machine: machine("m"), nonce: license_broker::value::Nonce(1) })
        .await;
    assert_eq!(code(r), Some(ErrorCode::NotFound), "no pool yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_records_survive_a_restart_and_leases_do_not() {
    let mut b = start(Duration::from_secs(30)).await;
    b.quota(3).await;
    let owner = b.owner().await;
    owner.add_user(&org(), "ci@default", Role::User).await.unwrap();
    let (key, _) = owner.create_key(&org(), "ci@default").await.unwrap();
    owner.register_machine(&org(), POOL, &machine("m1")).await.unwrap();
    owner.acquire(&org(), POOL, &machine("m1"), 1).await.unwrap();
    owner.close().await;
    let (operator, owner_key) = (b.operator.clone(), b.owner.clone());
    b.stop().await;

    let dir = std::mem::replace(&mut b.dir, tempfile::tempdir().unwrap());
    let mut b2 = start_in(dir, Duration::from_secs(30)).await;
    assert!(b2.running.as_ref().unwrap().bootstrap.is_none(), "no new keys on a later start");
    b2.operator = operator;
    b2.owner = owner_key;
    let ci = b2.client(&key).await;
    let s = &ci.status(None).await.unwrap()[0];
    assert_eq!((s.quota, s.machines, s.in_use), (3, 1, 0));
    assert!(!ci.register_machine(&org(), POOL, &machine("m1")).await.unwrap(), "registration survived");
    b2.operator().await.set_pool(&org(), POOL, 4).await.unwrap();
    b2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_user_revokes_everything_they_held_and_is_audited() {
    let b = start(Duration::from_secs(30)).await;
    let op = b.operator().await;
    op.set_pool(&org(), POOL, 2).await.unwrap();
    let owner = b.owner().await;
    owner.add_user(&org(), "ci@default", Role::User).await.unwrap();
    let (ci_key, _) = owner.create_key(&org(), "ci@default").await.unwrap();
    let ci = b.client(&ci_key).await;
    ci.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let lease = ci.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();
    let mine = owner.acquire(&org(), POOL, &machine("m"), 2).await.unwrap();

    // Killing someone's session is audited.
    owner.kill_session(&org(), mine.session).await.unwrap();
    // Removing the user ends their session and their key stops working.
    assert_eq!(
        code(owner.call(Req::RemoveUser { org: org(), email: "owner@default".into() }).await),
        Some(ErrorCode::InvalidArgument),
        "nobody removes themselves"
    );
    owner.remove_user(&org(), "ci@default").await.unwrap();
    assert!(owner.list_users(&org()).await.unwrap().iter().all(|u| u.email.as_str() != "ci@default"));
    assert_eq!(owner.status(None).await.unwrap()[0].in_use, 0, "their session ended");
    assert_eq!(ci.renew(lease.session).await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
    assert!(Client::connect(&b.options(&ci_key)).await.is_err(), "their key is revoked");
    let actions: Vec<String> = owner.audit(&org()).await.unwrap().iter().map(|e| e.action.name().to_string()).collect();
    assert!(
        actions.contains(&"session_killed".to_string()) && actions.contains(&"user_removed".to_string()),
        "{actions:?}"
    );
    // The operator renews the subscription and lists every org.
    assert_eq!(
        code(op.call(Req::SetSubscription { org: org(), subscription_end: "2001-01-01".into() }).await),
        Some(ErrorCode::InvalidArgument)
    );
    op.set_subscription(&org(), "2098-06-30").await.unwrap();
    let orgs = op.list_orgs().await.unwrap();
    assert_eq!(license_broker::value::format_end_date(orgs[0].subscription_end), "2098-06-30");
    assert_eq!(orgs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), vec!["default"]);
    assert_eq!(code(owner.call(Req::ListOrgs).await), Some(ErrorCode::Forbidden));
}

/// The error table: a member naming an org that does not exist is refused
/// as for any org not theirs (FORBIDDEN); only the operator, who sees every
/// org, is told it does not exist (NOT_FOUND).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_org_is_forbidden_to_members_and_not_found_for_the_operator() {
    let b = start(Duration::from_secs(30)).await;
    let nowhere = OrgName::new("nowhere").unwrap();
    let owner = b.owner().await;
    let acquire = Req::Acquire {
        org: nowhere.clone(),
        pool: POOL,
        machine: machine("m"),
        nonce: license_broker::value::Nonce(1),
    };
    assert_eq!(code(owner.call(acquire).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(owner.call(Req::Status { org: Some(nowhere.clone()) }).await), Some(ErrorCode::Forbidden));
    let op = b.operator().await;
    assert_eq!(code(op.call(Req::Status { org: Some(nowhere.clone()) }).await), Some(ErrorCode::NotFound));
    assert_eq!(code(op.call(Req::SetPool { org: nowhere, pool: POOL, quota: 1 }).await), Some(ErrorCode::NotFound));
    const DOC: &str = include_str!("../docs/PROTOCOL.md");
    assert!(DOC.contains("| 6 | FORBIDDEN | the caller's role or org does not allow the request; also a member naming an org that does not exist"));
}
