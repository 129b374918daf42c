//! The utilization history over the real broker: lease events over QUIC
//! become minute rows, read back through `/api/v1/usage`, `/sessions` and
//! `/what-if` with an API key; the reports refuse strangers and outsiders.
//!
//! The broker's clock is set a few seconds before a minute boundary
//! (`clock_ahead`), so a minute closes and is harvested within seconds.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use license_broker::proto::{ErrorCode, ListOf, PageItems};

use support::{machine, org, start_with, POOL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_events_become_minutes_sessions_and_replays() {
    // 4 s before the next minute boundary (at least 3 s from now).
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let ahead = (60_000 - wall % 60_000 + 60_000 - 4_000) % 60_000;
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.clock_ahead = Duration::from_millis(ahead);
    })
    .await;
    let http = b.web();
    b.quota(2).await;
    let c = b.owner().await;
    c.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let first = c.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();
    c.acquire(&org(), POOL, &machine("m"), 2).await.unwrap();
    let e = c.acquire(&org(), POOL, &machine("m"), 3).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded));
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.release(first.session).await.unwrap();
    // Past the boundary and the next harvest tick.
    let waited = std::time::Instant::now();
    let owner = b.owner.clone();
    let usage = "/api/v1/usage?org=default&pool=kre-floating-annual&from=10m&step=1m";
    let body = loop {
        let (code, body) = http.fetch(usage, Some(&owner)).await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["pools"][0]["points"].as_array().is_some_and(|p| !p.is_empty()) {
            break v;
        }
        assert!(waited.elapsed() < Duration::from_secs(20), "no minute was harvested: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let point = &body["pools"][0]["points"][0];
    assert_eq!(point["peak"], 2, "{body}");
    assert_eq!(point["quota"], 2);
    assert_eq!(point["admitted"], 2);
    assert_eq!(point["denied"]["QUOTA_EXCEEDED"], 1);
    assert_eq!(point["ends"]["released"], 1);
    let seat = point["seat_seconds"].as_f64().unwrap();
    assert!(seat > 0.3 && seat < 8.0, "two sessions for a few seconds: {seat}");
    // The ended session, in CSV.
    let (code, csv) = http.fetch("/api/v1/sessions?org=default&from=10m&format=csv", Some(&owner)).await;
    assert_eq!(code, 200, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("session,pool,user,machine,start,end,duration_seconds,reason"));
    assert!(lines[1].contains(&first.session.to_string()) && lines[1].contains(",released,"), "{csv}");
    // What if: with one seat the second session (live) or the refusal is refused.
    let (code, w) =
        http.fetch("/api/v1/what-if?org=default&pool=kre-floating-annual&seats=1..3&from=10m", Some(&owner)).await;
    assert_eq!(code, 200, "{w}");
    let w: serde_json::Value = serde_json::from_str(&w).unwrap();
    assert_eq!(w["outcomes"].as_array().unwrap().len(), 3, "{w}");
    assert_eq!(w["refusals"], 1);
    assert!(w["outcomes"][0]["denied"].as_u64().unwrap() >= 1, "{w}");
    // Strangers and outsiders.
    assert_eq!(http.fetch(usage, None).await.0, 401);
    assert_eq!(http.fetch(usage, Some("lbk_wrong")).await.0, 401);
    assert_eq!(http.fetch(&usage.replace("default", "nobody"), Some(&b.operator)).await.0, 404);
    let (code, body) = http.fetch("/api/v1/usage?org=default&from=1d&step=1s", Some(&owner)).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("INVALID_ARGUMENT"));
    assert_eq!(http.fetch(usage, Some(&b.operator)).await.0, 200, "the operator reads every org");
    // A single broker serves no other node's read of its history, however asked.
    let peer = "/peer/v1/sessions?org=default&from=0&to=9999999999999&limit=9";
    for auth in [None, Some(owner.as_str()), Some(b.operator.as_str())] {
        let (code, body) = http.fetch(peer, auth).await;
        assert_eq!(code, 404, "{body}");
    }
    let (code, _, body) = http.send(&format!("GET {peer} HTTP/1.0\r\nAuthorization: LBPeer 1.00"), "").await;
    assert_eq!(code, 404, "{body}");
    assert!(!body.contains("default"), "no row is read: {body}");
    // Who held the sessions is for Owners and Admins, on every door: a
    // User and the operator read the numbers, not the ended sessions.
    c.add_user(&org(), "user@default", license_broker::core::Role::User).await.unwrap();
    let (user, _) = c.create_key(&org(), "user@default").await.unwrap();
    let ended = "/api/v1/sessions?org=default&from=10m";
    assert_eq!(http.fetch(usage, Some(&user)).await.0, 200, "a User reads the numbers");
    for who in [&user, &b.operator] {
        let (code, body) = http.fetch(ended, Some(who)).await;
        assert_eq!(code, 403, "{body}");
    }
    let uc = b.client(&user).await;
    let of = ListOf::Ended { org: org(), from_ms: 0, to_ms: u64::MAX / 2 };
    let e = uc.page(of, None, 10).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");

    // Over QUIC: the ended sessions page one at a time, each exactly once.
    for nonce in [10, 11] {
        let l = c.acquire(&org(), POOL, &machine("m"), nonce).await;
        if let Ok(l) = l {
            c.release(l.session).await.unwrap();
        }
    }
    let of = ListOf::Ended { org: org(), from_ms: 0, to_ms: u64::MAX / 2 };
    let started = std::time::Instant::now();
    loop {
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let (items, next) = c.page(of.clone(), after, 1).await.unwrap();
            let PageItems::Ended(v) = items else { panic!("{items:?}") };
            assert!(v.len() <= 1);
            seen.extend(v.into_iter().map(|e| e.session));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len(), "a session paged twice: {seen:?}");
        if seen.len() == 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "ended sessions not written: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c
        .what_if(
            &org(),
            POOL,
            (license_broker::value::Millis(0), license_broker::value::Millis(u64::MAX / 2)),
            (0, 300),
        )
        .await;
    let e = r.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_with_a_key_into_a_strict_http_only_cookie() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http = b.web();
    let owner = b.owner.clone();
    let (code, _, page) = http.send("GET / HTTP/1.0", "").await;
    assert_eq!(code, 200);
    assert!(page.contains(r#"action="/signin""#), "the sign-in form: {page}");
    let form = format!("key={owner}");
    let (code, head, _) =
        http.send("POST /signin HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded", &form).await;
    assert_eq!(code, 303, "{head}");
    let cookie_line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a cookie");
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"), "{cookie_line}");
    assert!(cookie_line.contains("__Host-lb_session=") && cookie_line.contains("; Secure"), "{cookie_line}");
    assert!(!cookie_line.contains(&b.owner), "the cookie never holds the key");
    let cookie = cookie_line.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_string();
    let get_org = format!("GET /org/default HTTP/1.0\r\nCookie: {cookie}");
    let (code, _, page) = http.send(&get_org, "").await;
    assert_eq!(code, 200);
    assert!(page.contains("svg") && page.contains("Live sessions"), "{page}");
    // A wrong key is refused and counted; a tampered cookie signs no one in.
    let (code, _, _) =
        http.send("POST /signin HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded", "key=lbk_wrong").await;
    assert_eq!(code, 401);
    let forged = format!("GET /org/default HTTP/1.0\r\nCookie: {}x", cookie);
    let (code, head, _) = http.send(&forged, "").await;
    assert_eq!(code, 303, "back to sign-in: {head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_web_door_forbids_scripts_framing_sniffing_and_caching() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http = b.web();
    let bearer = format!("Authorization: Bearer {}", b.owner);
    let asks = [
        ("GET / HTTP/1.0".to_string(), 200),
        ("GET /metrics HTTP/1.0".to_string(), 200),
        ("GET /no-such-page HTTP/1.0".to_string(), 404),
        (format!("GET /api/v1/sessions?org=default&format=csv HTTP/1.0\r\n{bearer}"), 200),
        (format!("GET /api/v1/usage?org=default HTTP/1.0\r\n{bearer}"), 200),
        ("GET /api/v1/usage?org=default HTTP/1.0".to_string(), 401),
        ("POST /signin HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded".to_string(), 422),
    ];
    for (ask, want) in asks {
        let body = if ask.starts_with("POST") { "nokey=1" } else { "" };
        let (code, head, _) = http.send(&ask, body).await;
        assert_eq!(code, want, "{ask}: {head}");
        let head = head.to_ascii_lowercase();
        let value = |name: &str| {
            head.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string)).unwrap_or_default()
        };
        let csp = value("content-security-policy");
        let scripts = csp.split(';').find_map(|d| d.trim().strip_prefix("script-src ")).unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && scripts == "'self'", "{ask}: no script but our own file: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{ask}: {csp}");
        assert_eq!(value("x-content-type-options"), "nosniff", "{ask}");
        assert_eq!(value("referrer-policy"), "no-referrer", "{ask}");
        assert_eq!(value("cache-control"), "no-store", "{ask}: member data is never cached");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_history_file_costs_the_charts_not_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(license_broker::history::FILE), b"not a redb file at all").unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| o.http = Some("127.0.0.1:0".parse().unwrap())).await;
    let http = b.web();
    b.quota(1).await;
    let c = b.owner().await;
    c.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    c.acquire(&org(), POOL, &machine("m"), 1).await.expect("runners are admitted");
    let (code, body) = http.fetch("/api/v1/usage?org=default", Some(&b.owner)).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("NO_HISTORY"), "{body}");
}

/// The preflight over the API: a full pool's answer names the place in
/// the queue and a wait estimated from the day's mean session length
/// (seat time over admissions, from the harvested minutes); the operator,
/// who is no member, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_estimates_the_wait_from_the_days_mean_session() {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let ahead = (60_000 - wall % 60_000 + 60_000 - 4_000) % 60_000;
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.clock_ahead = Duration::from_millis(ahead);
    })
    .await;
    b.quota(1).await;
    let c = b.owner().await;
    c.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let first = c.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    c.release(first.session).await.unwrap();
    c.acquire(&org(), POOL, &machine("m"), 2).await.unwrap();
    let ask = "/api/v1/availability?org=default&machine=m";
    let waited = std::time::Instant::now();
    let v = loop {
        let (code, body) = b.web().fetch(ask, Some(&b.owner)).await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["mean_session_seconds"].is_number() {
            break v;
        }
        assert!(waited.elapsed() < Duration::from_secs(20), "no minute was harvested: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!((v["admitted"].as_bool(), v["refusal"]["code"].as_str()), (Some(false), Some("QUOTA_EXCEEDED")), "{v}");
    assert_eq!(
        (v["place"].as_u64(), v["in_use"].as_u64(), v["worth_waiting"].as_bool()),
        (Some(1), Some(1), Some(true))
    );
    let mean = v["mean_session_seconds"].as_f64().unwrap();
    assert!((0.3..10.0).contains(&mean), "two sessions, one of a second and one just begun: {v}");
    let wait = v["wait_seconds"].as_f64().expect("an estimate");
    // The live session ends a mean after it started, or within a quarter
    // of a mean once past it: never sooner, never later than a mean.
    assert!((mean / 4.0 - 0.002..=mean).contains(&wait), "{v}");
    let (code, body) = b.web().fetch(ask, Some(&b.operator)).await;
    assert_eq!(code, 403, "the operator is no member: {body}");
}
