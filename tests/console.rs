//! The license console over real HTTPS, as a browser sends its forms:
//! an offline license downloads byte for byte as the CLI's request made
//! it; a form without the sign-in's token changes nothing; the console's
//! acts are the operations' (an Admin makes no Owner there either, and the
//! audit trail says the same as for the CLI); a User is refused.

mod support;

use std::time::Duration;

use license_broker::core::{format_end_date, Millis, PoolId, Role};
use license_broker::proto::AuditAction;

use support::{machine, org, start_with, TestBroker, POOL};

/// A broker with its web door on and a KSE node-locked pool of 3.
async fn broker() -> TestBroker {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let op = b.operator().await;
    op.set_pool(&org(), kse(), 3).await.unwrap();
    op.close().await;
    b
}

fn kse() -> PoolId {
    "kse-node-locked-annual".parse().unwrap()
}

/// The value of header `name` in an answer's head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// A signed-in browser: its cookie and the CSRF token its pages carry.
struct Browser {
    web: support::http::Web,
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn sign_in(b: &TestBroker, key: &str) -> Browser {
        let web = b.web();
        let form = format!("key={key}");
        let (code, head, _) =
            web.send("POST /signin HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded", &form).await;
        assert_eq!(code, 303, "{head}");
        let cookie = header(&head, "set-cookie").unwrap().split(';').next().unwrap().to_string();
        let mut me = Browser { web, cookie, csrf: String::new() };
        let (_, page) = me.get("/org/default/licenses").await;
        let at = page.find("name=\"csrf\" value=\"").expect("a form with a token") + 19;
        me.csrf = page[at..at + 32].to_string();
        me
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let (code, _, body) = self.web.send(&format!("GET {path} HTTP/1.0\r\nCookie: {}", self.cookie), "").await;
        (code, body)
    }

    /// Posts `form` (url-encoded, without the token) with `csrf` as the token: (status, head).
    async fn post_as(&self, path: &str, form: &str, csrf: &str) -> (u16, String) {
        let head = format!(
            "POST {path} HTTP/1.0\r\nCookie: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nOrigin: https://localhost",
            self.cookie
        );
        let (code, head, _) = self.web.send(&head, &format!("{form}&csrf={csrf}")).await;
        (code, head)
    }

    async fn post(&self, path: &str, form: &str) -> (u16, String) {
        self.post_as(path, form, &self.csrf.clone()).await
    }

    /// Posts `form` with the token: (status, head, the page answered).
    async fn form(&self, path: &str, form: &str) -> (u16, String, String) {
        let head = format!(
            "POST {path} HTTP/1.0\r\nCookie: {}\r\nContent-Type: application/x-www-form-urlencoded",
            self.cookie
        );
        self.web.send(&head, &format!("{form}&csrf={}", self.csrf)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_license_downloads_byte_for_byte_as_the_cli_made_it() {
    let b = broker().await;
    let owner = b.owner().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let last_day = format_end_date(Millis(now + 10 * 86_400_000));
    let (name, content) = owner.create_offline(&org(), kse(), &machine("lab-1"), &last_day).await.unwrap();
    let id = owner.list_offline(&org()).await.unwrap()[0].id.clone();
    let browser = Browser::sign_in(&b, &b.owner).await;
    let (code, head, body) = browser
        .web
        .send(&format!("GET /org/default/offline/{id}/file HTTP/1.0\r\nCookie: {}", browser.cookie), "")
        .await;
    assert_eq!(code, 200, "{head}");
    assert_eq!(body, content, "the download is the file the CLI was handed");
    assert_eq!(header(&head, "content-disposition"), Some(format!("attachment; filename=\"{name}\"")));
    let (_, list) = browser.get("/org/default/licenses?pool=kse-node-locked-annual").await;
    assert!(list.contains(&format!("/offline/{id}/file")), "the list links the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_the_sign_ins_token_changes_nothing() {
    let b = broker().await;
    let owner = b.owner().await;
    owner.add_user(&org(), "a@x.io", Role::User).await.unwrap();
    let browser = Browser::sign_in(&b, &b.owner).await;
    for forged in ["", "0123456789abcdef0123456789abcdef"] {
        let (code, _) =
            browser.post_as("/org/default/licenses/grant", "pool=kse-node-locked-annual&emails=a%40x.io", forged).await;
        assert_eq!(code, 403, "token {forged:?}");
    }
    assert!(owner.list_grants(&org(), Some(kse())).await.unwrap().is_empty());
    // With the token, the same form grants, audited as the CLI's grant is.
    let (code, head) = browser.post("/org/default/licenses/grant", "pool=kse-node-locked-annual&emails=a%40x.io").await;
    assert_eq!(code, 303, "{head}");
    assert_eq!(owner.list_grants(&org(), Some(kse())).await.unwrap().len(), 1);
    let audit = owner.audit(&org()).await.unwrap();
    let grant = audit.iter().find(|e| e.action == AuditAction::Granted).expect("the grant is audited");
    assert_eq!(grant.actor.as_str(), "owner@default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_what_the_operations_refuse() {
    let b = broker().await;
    let owner = b.owner().await;
    owner.add_user(&org(), "admin@x.io", Role::Admin).await.unwrap();
    owner.add_user(&org(), "user@x.io", Role::User).await.unwrap();
    let (admin_key, _) = owner.create_key(&org(), "admin@x.io").await.unwrap();
    let (user_key, _) = owner.create_key(&org(), "user@x.io").await.unwrap();

    // An Admin makes no Owner, in the console as over QUIC.
    let admin = Browser::sign_in(&b, &admin_key).await;
    let (code, _) = admin.post("/org/default/members/add", "email=boss%40x.io&role=owner").await;
    assert_eq!(code, 403);
    assert!(!owner.list_users(&org()).await.unwrap().iter().any(|u| u.email.as_str() == "boss@x.io"));

    // A User gets no management page and no act, token or not.
    let user = Browser::sign_in(&b, &user_key).await;
    assert_eq!(user.get("/org/default/members").await.0, 403);
    let (_, page) = user.get("/org/default/licenses?pool=kse-node-locked-annual").await;
    assert!(!page.contains("/licenses/grant") && page.contains("Only the org's Owners and Admins"));
    assert!(!page.contains("/org/default/members"), "a User is not offered the Members tab");
    let (_, page) = admin.get("/org/default/licenses").await;
    assert!(page.contains("/org/default/members\""), "an Admin is");
    let (code, _) = user.post("/org/default/licenses/grant", "pool=kse-node-locked-annual&emails=user%40x.io").await;
    assert_eq!(code, 403);
    b.quota(2).await;
    owner.register_machine(&org(), PoolId::KRE_DEFAULT, &machine("ci-1")).await.unwrap();
    let (code, _) = user.post("/org/default/machines/deactivate", "pool=kre-floating-annual&machine=ci-1").await;
    assert_eq!(code, 403);
    assert!(owner.list_grants(&org(), Some(kse())).await.unwrap().is_empty());
    assert_eq!(owner.list_machines(&org()).await.unwrap().len(), 1, "the machine is still registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_license_made_in_the_console_is_confirmed_then_handed_out_to_its_maker_alone() {
    let b = broker().await;
    let browser = Browser::sign_in(&b, &b.owner).await;
    let order = "pool=kse-node-locked-annual&machine=lab-7&expires=";
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let last_day = format_end_date(Millis(now + 20 * 86_400_000));
    let too_late = format_end_date(Millis(now + 90 * 86_400_000));
    // The rules are the broker's, checked before the confirmation.
    let (code, _, page) = browser.form("/org/default/offline/review", &format!("{order}{too_late}")).await;
    assert!(code == 422 && page.contains("EXPIRY_TOO_LATE"), "{code}: {page}");
    let (code, _, page) = browser.form("/org/default/offline/review", &format!("{order}{last_day}")).await;
    assert!(code == 200 && page.contains("cannot be undone") && page.contains("KSE_lab-7.lic"), "{code}");
    assert!(b.owner().await.list_offline(&org()).await.unwrap().is_empty(), "reviewing creates nothing");
    let (code, head) = browser.post("/org/default/offline/create", &format!("{order}{last_day}")).await;
    assert_eq!(code, 303, "{head}");
    let to = header(&head, "location").unwrap();
    let id = b.owner().await.list_offline(&org()).await.unwrap()[0].id.clone();
    assert!(to.contains(&format!("created={id}")), "{to}");
    let (_, page) = browser.get(&to).await;
    assert!(page.contains(&format!("url=/org/{}/offline/{id}/file", "default")), "the page starts the download");
    // The same link with another tag, or another sign-in's, says nothing.
    let forged = to.replace("created_tag=", "created_tag=0");
    assert!(!browser.get(&forged).await.1.contains("http-equiv=\"refresh\""));
    let other = Browser::sign_in(&b, &b.owner).await;
    assert!(!other.get(&to).await.1.contains("http-equiv=\"refresh\""), "a link made for one sign-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_holding_only_an_activation_is_deactivated_after_saying_so() {
    let b = broker().await;
    let owner = b.owner().await;
    owner.grant(&org(), kse(), "owner@default").await.unwrap();
    owner.activate(&org(), kse(), &machine("desk-1"), 1).await.unwrap();
    let browser = Browser::sign_in(&b, &b.owner).await;
    let (code, page) = browser.get("/org/default/machines/deactivate?pool=kse-node-locked-annual&machine=desk-1").await;
    assert!(code == 200 && page.contains("node-locked activation of owner@default"), "{code}: {page}");
    let (code, head) =
        browser.post("/org/default/machines/deactivate", "pool=kse-node-locked-annual&machine=desk-1").await;
    assert_eq!(code, 303, "{head}");
    let grants = owner.list_grants(&org(), Some(kse())).await.unwrap();
    assert_eq!((grants.len(), grants[0].machine.as_ref()), (1, None), "the license stays granted, the machine freed");
    // Nothing bound, nothing registered: nothing to deactivate.
    let (code, _) = browser.get("/org/default/machines/deactivate?pool=kse-node-locked-annual&machine=desk-1").await;
    assert_eq!(code, 404);
}

/// Utilization charts KSE's licenses assigned against those activated,
/// from the minutes the history keeps (the API's JSON says the same).
/// The broker's clock is set 4 s before a minute boundary, so a minute
/// closes and is harvested within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utilization_charts_kse_licenses_assigned_against_activated() {
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ahead = (60_000 - wall % 60_000 + 60_000 - 4_000) % 60_000;
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.clock_ahead = Duration::from_millis(ahead);
    })
    .await;
    let op = b.operator().await;
    op.set_pool(&org(), kse(), 3).await.unwrap();
    let owner = b.owner().await;
    owner.add_user(&org(), "a@x.io", Role::User).await.unwrap();
    owner.grant(&org(), kse(), "a@x.io").await.unwrap();
    owner.grant(&org(), kse(), "owner@default").await.unwrap();
    owner.activate(&org(), kse(), &machine("desk-1"), 1).await.unwrap();
    let usage = "/api/v1/usage?org=default&pool=kse-node-locked-annual&from=10m&step=1m";
    let waited = std::time::Instant::now();
    let point = loop {
        let (code, body) = b.web().fetch(usage, Some(&b.owner)).await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(p) = v["pools"][0]["points"].as_array().and_then(|p| p.last().cloned()) {
            break p;
        }
        assert!(waited.elapsed() < Duration::from_secs(20), "no minute was harvested: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!((point["assigned"].as_u64(), point["activated"].as_u64()), (Some(2), Some(1)), "{point}");
    let browser = Browser::sign_in(&b, &b.owner).await;
    let (code, page) = browser.get("/org/default/usage?preset=today").await;
    assert_eq!(code, 200);
    let chart = &page[page.find("<svg class=\"licenses\"").expect("the assigned/activated chart")..];
    assert!(chart.contains("kse-node-locked-annual assigned") && chart.contains("kse-node-locked-annual activated"));
    // Today's dots on a scale of 0 to 4 licenses over 240 px from y = 250: 2 assigned, 1 activated.
    let chart = &chart[..chart.find("</svg>").unwrap()];
    assert!(chart.contains(">4</text>") && chart.contains("cy=\"130.0\"") && chart.contains("cy=\"190.0\""), "{chart}");
}

/// A full pool's box says when a runner asking now would get a seat (the
/// preflight's answer); a pool with a free seat says nothing of the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_says_where_a_runner_asking_now_would_wait() {
    let b = broker().await;
    b.quota(1).await;
    let owner = b.owner().await;
    owner.register_machine(&org(), PoolId::KRE_DEFAULT, &machine("ci-1")).await.unwrap();
    let browser = Browser::sign_in(&b, &b.owner).await;
    let kre = "/org/default/licenses?pool=kre-floating-annual";
    assert!(!browser.get(kre).await.1.contains("id=\"next-seat\""), "a seat is free");
    owner.acquire(&org(), PoolId::KRE_DEFAULT, &machine("ci-1"), 1).await.unwrap();
    let (_, page) = browser.get(kre).await;
    let at = page.find("id=\"next-seat\"").expect("the full pool says when");
    assert!(
        page[at..].contains("place 1 in the queue: no estimate (no session in the last day"),
        "{}",
        &page[at..at + 200]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_machines_show_their_last_use_where_the_pool_keeps_it() {
    let b = broker().await;
    let op = b.operator().await;
    op.set_pool(&org(), POOL, 2).await.unwrap();
    op.set_machine_policy(&org(), POOL, Some(Duration::from_secs(7 * 86_400)), false).await.unwrap();
    let owner = b.owner().await;
    owner.register_machine(&org(), POOL, &machine("ci-7")).await.unwrap();
    let lease = owner.acquire(&org(), POOL, &machine("ci-7"), 7).await.unwrap();
    owner.release(lease.session).await.unwrap();
    let browser = Browser::sign_in(&b, &b.owner).await;
    let (_, page) = browser.get("/org/default/licenses?pool=kre-floating-annual").await;
    let row = page.lines().find(|l| l.contains("<td>ci-7</td>")).expect("the machine is listed");
    assert_eq!(row.matches("<time").count(), 2, "registered and last used: {row}");
    // A pool without a machine policy keeps no last use.
    owner.register_machine(&org(), kse(), &machine("desk-9")).await.unwrap();
    let (_, page) = browser.get("/org/default/licenses?pool=kse-node-locked-annual").await;
    let row = page.lines().find(|l| l.contains("<td>desk-9</td>")).expect("the machine is listed");
    assert!(row.contains("</time></td><td>-</td>"), "{row}");
}
