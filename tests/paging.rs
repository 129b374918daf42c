//! Every answer fits a frame: lists page (`List`, protocol 4) with a cursor,
//! the unpaged requests of older versions answer everything that fits and
//! refuse the rest with `RESPONSE_TOO_LARGE`, and paging gives each item
//! exactly once, over real QUIC.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use license_broker::client::Client;
use license_broker::proto::{Cursor, ErrorCode, ListOf, PageItems, Req, Resp};
use license_broker::value::{Nonce, PoolId, Role, SessionId};

use support::{machine, org, start, POOL};

/// Every page of `of` at `limit` items a page: their items, and how many pages.
async fn pages(c: &Client, of: ListOf, limit: u32) -> (Vec<PageItems>, usize) {
    let (mut out, mut after) = (Vec::new(), None::<Cursor>);
    loop {
        let (items, next) = c.page(of.clone(), after.clone(), limit).await.unwrap();
        assert!(limit == 0 || items.len() <= limit as usize, "a page of {} over the limit {limit}", items.len());
        out.push(items);
        match next {
            None => return (out.clone(), out.len()),
            Some(n) => after = Some(n),
        }
        assert!(out.len() < 100_000, "paging did not end");
    }
}

fn sessions_of(pages: &[PageItems]) -> Vec<SessionId> {
    pages
        .iter()
        .flat_map(|p| match p {
            PageItems::Sessions(v) => v.iter().map(|s| s.info.session).collect::<Vec<_>>(),
            other => panic!("not sessions: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_a_frame_page_through_once_each_and_the_unpaged_list_is_refused() {
    let b = start(Duration::from_secs(60)).await;
    b.quota(5000).await;
    let c = b.owner().await;
    c.register_machine(&org(), POOL, &machine("ci")).await.unwrap();
    let acquires: Vec<Req> = (0..3000u128)
        .map(|n| Req::Acquire { org: org(), pool: POOL, machine: machine("ci"), nonce: Nonce(n) })
        .collect();
    let mut held = BTreeSet::new();
    for r in c.call_batch(acquires).await {
        match r.unwrap() {
            Resp::Leased { session, .. } => assert!(held.insert(session)),
            other => panic!("{other:?}"),
        }
    }

    // The unpaged request of versions 1 to 3 cannot fit: refused, not sent.
    let e = match c.call(Req::ListSessions { org: org() }).await {
        Err(e) => e,
        Ok(r) => panic!("answered with {} bytes' worth", format!("{r:?}").len()),
    };
    assert_eq!(e.code(), Some(ErrorCode::ResponseTooLarge), "{e}");
    assert!(e.to_string().contains("List"), "the refusal names the paged request: {e}");

    // Paged as the frame allows (several pages), and at a small limit: each
    // session exactly once, and exactly the live ones.
    for limit in [0, 7, 1000] {
        let (p, n) = pages(&c, ListOf::Sessions { org: org() }, limit).await;
        let got = sessions_of(&p);
        assert_eq!(got.len(), held.len(), "limit {limit}: a session twice or missing");
        assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), held, "limit {limit}");
        assert!(n >= 2, "3,000 sessions cannot fit one frame, yet came in {n} page(s)");
    }
    // The library's own list pages too.
    assert_eq!(c.list_sessions(&org()).await.unwrap().len(), 3000);

    // Sessions that end between pages are not listed; the rest still are, once.
    let (first, next) = c.page(ListOf::Sessions { org: org() }, None, 100).await.unwrap();
    let first = sessions_of(&[first]);
    let gone: Vec<SessionId> = held.iter().copied().filter(|s| !first.contains(s)).take(50).collect();
    for s in &gone {
        c.release(*s).await.unwrap();
    }
    let mut rest = Vec::new();
    let mut after = next;
    while let Some(cursor) = after {
        let (items, next) = c.page(ListOf::Sessions { org: org() }, Some(cursor), 0).await.unwrap();
        rest.extend(sessions_of(&[items]));
        after = next;
    }
    let all: BTreeSet<SessionId> = first.iter().chain(&rest).copied().collect();
    assert_eq!(all.len(), first.len() + rest.len(), "a session listed twice");
    let live: BTreeSet<SessionId> = held.iter().copied().filter(|s| !gone.contains(s)).collect();
    assert_eq!(all, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_trail_and_a_member_list_over_a_frame_page_and_the_unpaged_answers_are_refused() {
    let b = start(Duration::from_secs(30)).await;
    let owner = b.owner().await;
    // 1,200 members: 1,200 audit entries and a member list, each over 64 KiB.
    let email = |i: usize| format!("member-number-{i:04}-with-a-longer-address@default.example");
    let adds: Vec<Req> = (0..1200).map(|i| Req::AddUser { org: org(), email: email(i), role: Role::User }).collect();
    for r in owner.call_batch(adds).await {
        assert!(matches!(r.unwrap(), Resp::Done));
    }
    assert_eq!(refused(owner.call(Req::Audit { org: org() }).await), ErrorCode::ResponseTooLarge);
    assert_eq!(refused(owner.call(Req::ListUsers { org: org() }).await), ErrorCode::ResponseTooLarge);

    let audit = owner.audit(&org()).await.unwrap();
    let added = audit.iter().filter(|e| e.detail.starts_with("user=member-number-")).count();
    assert_eq!(added, 1200);
    let order: Vec<(u64, u64)> = audit.iter().map(|e| (e.at.0, e.seq)).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "audit pages out of order or repeated");
    let (_, n) = pages(&owner, ListOf::Audit { org: org() }, 0).await;
    assert!(n >= 2, "1,200 entries came in {n} page(s)");

    let users = owner.list_users(&org()).await.unwrap();
    assert_eq!(users.len(), 1201, "the members and the Owner");
    assert!(users.windows(2).all(|w| w[0].email < w[1].email));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_pages_to_the_same_items_as_its_unpaged_request() {
    let b = start(Duration::from_secs(30)).await;
    let op = b.operator().await;
    let kse: PoolId = "kse-node-locked-annual".parse().unwrap();
    op.set_pool(&org(), POOL, 10).await.unwrap();
    op.set_pool(&org(), kse, 10).await.unwrap();
    for name in ["second", "third"] {
        op.create_org(&name.parse().unwrap(), "2099-12-31", &format!("owner@{name}")).await.unwrap();
        op.set_pool(&name.parse().unwrap(), POOL, 1).await.unwrap();
    }
    let owner = b.owner().await;
    for (i, email) in ["a@default", "b@default", "c@default"].iter().enumerate() {
        owner.add_user(&org(), email, Role::User).await.unwrap();
        owner.create_key(&org(), email).await.unwrap();
        owner.grant(&org(), kse, email).await.unwrap();
        owner.set_user_limit(&org(), POOL, email, Some(i as u32 + 1)).await.unwrap();
        owner.register_machine(&org(), POOL, &machine(&format!("m{i}"))).await.unwrap();
        owner.acquire(&org(), POOL, &machine(&format!("m{i}")), i as u128).await.unwrap();
    }
    let day = |d: u64| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        license_broker::value::format_end_date(license_broker::value::Millis((now + d * 86_400) * 1000))
    };
    for i in 0..3 {
        owner.create_offline(&org(), kse, &machine(&format!("air{i}")), &day(5)).await.unwrap();
    }

    // For each list: its unpaged answer (as items), and the paged one.
    let cases: Vec<(ListOf, Req, &Client)> = vec![
        (ListOf::Status { org: None }, Req::Status { org: None }, &op),
        (ListOf::Sessions { org: org() }, Req::ListSessions { org: org() }, &owner),
        (ListOf::Machines { org: org() }, Req::ListMachines { org: org() }, &owner),
        (ListOf::Users { org: org() }, Req::ListUsers { org: org() }, &owner),
        (ListOf::Keys { org: org() }, Req::ListKeys { org: org() }, &owner),
        (ListOf::Grants { org: org(), pool: None }, Req::ListGrants { org: org(), pool: None }, &owner),
        (ListOf::Offline { org: org() }, Req::ListOffline { org: org() }, &owner),
        (ListOf::Audit { org: org() }, Req::Audit { org: org() }, &owner),
        (ListOf::Orgs, Req::ListOrgs, &op),
        (ListOf::UserLimits { org: org(), pool: POOL }, Req::ListUserLimits { org: org(), pool: POOL }, &owner),
    ];
    for (of, req, c) in cases {
        let whole = unpaged(c.call(req).await.unwrap());
        assert!(whole.len() >= 3, "{of:?}: too few items ({}) to page", whole.len());
        let (p, n) = pages(c, of.clone(), 1).await;
        assert_eq!(n, whole.len(), "{of:?}: one item a page");
        let mut paged: Vec<String> = p.iter().flat_map(items).collect();
        let mut whole = whole;
        // Each list has its own order (sessions: the table's); compare as sets
        // of distinct items, after checking none repeats.
        paged.sort();
        whole.sort();
        assert_eq!(paged, whole, "{of:?}");
        paged.dedup();
        assert_eq!(paged.len(), whole.len(), "{of:?}: an item twice");
    }

    // A cursor is the broker's own: one it did not issue is refused.
    let bad = Cursor(vec![0xff; 12]);
    let e = owner.page(ListOf::Users { org: org() }, Some(bad.clone()), 0).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    let e = owner.page(ListOf::Audit { org: org() }, Some(bad), 0).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    // And paging asks the same permission as the list: a User may not list keys.
    let user_key = owner.create_key(&org(), "a@default").await.unwrap().0;
    let user = b.client(&user_key).await;
    let e = user.page(ListOf::Keys { org: org() }, None, 0).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
}

/// The code of a refusal (without printing a whole list if it was answered).
fn refused(r: Result<Resp, license_broker::client::ClientError>) -> ErrorCode {
    match r {
        Err(e) => e.code().unwrap_or_else(|| panic!("{e}")),
        Ok(r) => panic!("answered ({} bytes of debug text)", format!("{r:?}").len()),
    }
}

/// The items of an unpaged answer, each as its debug text.
fn unpaged(r: Resp) -> Vec<String> {
    match r {
        Resp::Pools(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Resp::SessionViews(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Resp::Machines(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Resp::Users(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Resp::Keys(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Resp::Grants(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Resp::Offline(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Resp::AuditLog(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Resp::Orgs(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Resp::UserLimits(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        other => panic!("not a list: {other:?}"),
    }
}

/// A page's items, each as its debug text.
fn items(p: &PageItems) -> Vec<String> {
    match p {
        PageItems::Pools(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Sessions(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Machines(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Users(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Keys(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Grants(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Offline(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Audit(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Orgs(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::UserLimits(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Usage(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Ended(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::MachineUses(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::LabelLimits(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        PageItems::Reservations(v) => v.iter().map(|x| format!("{x:?}")).collect(),
    }
}
