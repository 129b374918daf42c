//! The web door's transport and its guards against hostile clients: HTTPS
//! by default with the broker's certificate, plain HTTP only when asked
//! for, and the cookie and HSTS that go with each.

mod support;

use std::time::Duration;

use license_broker::server::HttpTls;

use support::start_with;

/// The value of header `name` (lower case) in an answer's head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_speaks_tls_with_the_brokers_certificate_and_says_so() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let running = b.running.as_ref().unwrap();
    let addr = running.http_addr().unwrap();
    assert_eq!(running.http_url(), Some(format!("https://{addr}/")));
    let web = b.web();
    assert_eq!(web.fetch("/healthz", None).await, (200, "ok\n".to_string()));
    // HSTS for a name a certificate can be for; not for loopback, where it
    // would turn every other local plain-HTTP service to HTTPS.
    let (_, head, _) = web.send("GET /healthz HTTP/1.0\r\nHost: broker.example:8443", "").await;
    assert_eq!(header(&head, "strict-transport-security").as_deref(), Some("max-age=31536000"), "{head}");
    let (_, head, _) = web.send("GET /healthz HTTP/1.0", "").await;
    assert_eq!(header(&head, "strict-transport-security"), None, "{head}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| support::http::Web::plain(addr).get("/healthz", None)).is_err()
    });
    assert!(plain.await.unwrap(), "a plain request is not served on the TLS port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_when_asked_for_with_a_plain_cookie() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.http_tls = HttpTls::Plain;
    })
    .await;
    let running = b.running.as_ref().unwrap();
    assert_eq!(running.http_url(), Some(format!("http://{}/", running.http_addr().unwrap())));
    let web = b.web();
    let form = format!("key={}", b.owner);
    let (code, head, _) =
        web.send("POST /signin HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded", &form).await;
    assert_eq!(code, 303, "{head}");
    let cookie = header(&head, "set-cookie").expect("a cookie");
    assert!(cookie.starts_with("lb_session=") && !cookie.contains("Secure"), "{cookie}");
    let (_, head, _) = web.send("GET /healthz HTTP/1.0\r\nHost: broker.example", "").await;
    assert_eq!(header(&head, "strict-transport-security"), None, "no HSTS over plain HTTP: {head}");
}

/// Idle connections from 127.0.0.2, each reopened as soon as the broker
/// closes it, until `until`: how many the broker turned away at once.
async fn idle_sockets(to: std::net::SocketAddr, n: usize, until: std::time::Instant) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let mut refused = 0;
                while std::time::Instant::now() < until {
                    let s = tokio::net::TcpSocket::new_v4().unwrap();
                    s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                    let Ok(mut c) = s.connect(to).await else { continue };
                    let opened = std::time::Instant::now();
                    let left = until.saturating_duration_since(opened);
                    // Holds on, sending nothing, until the broker closes it.
                    let _ = tokio::time::timeout(left, tokio::io::AsyncReadExt::read(&mut c, &mut [0u8; 1])).await;
                    if opened.elapsed() < Duration::from_millis(100) {
                        refused += 1;
                    }
                    // Reconnect at once (a short pause keeps the test's CPU bounded).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_is_answered_while_100_reconnecting_idle_sockets_hold_on() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        // Fewer slots than attackers (the defaults have 112); the
        // per-address limits are the defaults. Without them, one scrape
        // got through in 8 s.
        o.http_limits.connections = 32;
        o.http_limits.reserved = 8;
    })
    .await;
    let web = b.web();
    let until = std::time::Instant::now() + Duration::from_secs(8);
    let attack = tokio::spawn(idle_sockets(web.addr, 100, until));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Scrapes from 127.0.0.1 throughout, each with the 10 s a Prometheus
    // scrape gets (the client's read timeout: a miss fails the test).
    let mut scrapes = 0;
    while std::time::Instant::now() + Duration::from_secs(1) < until {
        let (code, body) = web.fetch("/metrics", None).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("lbroker_connections_open"));
        scrapes += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let refused = attack.await.unwrap();
    assert!(scrapes >= 10, "{scrapes} scrapes");
    assert!(refused > 0, "the attacking address was held to its share (none refused)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_keys_over_http_are_counted_and_limited_per_address() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.metrics_token = Some("s3cret".into());
        o.http_limits.failures_per_address = 5;
    })
    .await;
    let web = b.web();
    let usage = "/api/v1/usage?org=default";
    let failures = |body: &str| -> f64 {
        body.lines().find_map(|l| l.strip_prefix("lbroker_auth_failures_total ")?.parse().ok()).unwrap()
    };
    // A wrong metrics token counts as a failed authentication too.
    assert_eq!(web.fetch("/metrics", Some("wrong")).await.0, 401);
    let (_, body) = web.fetch("/metrics", Some("s3cret")).await;
    assert_eq!(failures(&body), 1.0, "{body}");
    // The second wait keeps all five failures within one second of the broker's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = std::time::Instant::now();
    for _ in 0..4 {
        assert_eq!(web.fetch(usage, Some("lbk_wrong")).await.0, 401);
    }
    assert_eq!(web.fetch("/signin", None).await.0, 405, "a GET of the form's target is no attempt");
    let (code, _, _) =
        web.send("POST /signin HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded", "key=lbk_wrong").await;
    assert_eq!(code, 401, "the fifth failure");
    if started.elapsed() < Duration::from_millis(900) {
        // Past the limit the address gets no new connection for the rest
        // of the second, even with the right key (as over QUIC).
        let (w, key) = (web.clone(), b.owner.clone());
        let refused = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.get("/api/v1/usage?org=default", Some(&key))))
                .is_err()
        });
        assert!(refused.await.unwrap(), "a connection from the failing address was served");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(web.fetch(usage, Some(&b.owner)).await.0, 200, "the next second, the key works");
    let (_, body) = web.fetch("/metrics", Some("s3cret")).await;
    assert_eq!(failures(&body), 6.0, "four keys, a sign-in and the token: {body}");
}

const FORM: &str = "Content-Type: application/x-www-form-urlencoded";

/// Signs in with `key`: the cookie (`name=value`).
async fn sign_in(web: &support::http::Web, key: &str) -> String {
    let (code, head, _) = web.send(&format!("POST /signin HTTP/1.0\r\n{FORM}"), &format!("key={key}")).await;
    assert_eq!(code, 303, "{head}");
    header(&head, "set-cookie").expect("a cookie").split(';').next().unwrap().to_string()
}

/// A live session of the default org (held by the client returned), and
/// the org page's kill form's CSRF token for `cookie`.
async fn session_and_token(b: &support::TestBroker, cookie: &str) -> (String, String, license_broker::client::Client) {
    b.quota(1).await;
    let c = b.owner().await;
    c.register_machine(&support::org(), support::POOL, &support::machine("m")).await.unwrap();
    let lease = c.acquire(&support::org(), support::POOL, &support::machine("m"), 1).await.unwrap();
    let (code, _, page) = b.web().send(&format!("GET /org/default HTTP/1.0\r\nCookie: {cookie}"), "").await;
    assert_eq!(code, 200);
    let token = page.split(r#"name="csrf" value=""#).nth(1).and_then(|t| t.split('"').next()).expect("a kill form");
    (lease.session.to_string(), token.to_string(), c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_sign_in_on_the_server() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let web = b.web();
    let cookie = sign_in(&web, &b.owner).await;
    let (session, token, _holder) = session_and_token(&b, &cookie).await;
    let page = format!("GET /org/default HTTP/1.0\r\nCookie: {cookie}");
    assert_eq!(web.send(&page, "").await.0, 200);
    let (code, head, _) = web.send(&format!("POST /signout HTTP/1.0\r\nCookie: {cookie}"), "").await;
    assert_eq!(code, 303);
    assert!(header(&head, "set-cookie").unwrap().contains("Max-Age=0"), "{head}");
    // The old cookie (kept, or copied before) signs no one in any more.
    let (code, head, _) = web.send(&page, "").await;
    assert_eq!((code, header(&head, "location").as_deref()), (303, Some("/")), "{head}");
    let api = format!("GET /api/v1/usage?org=default HTTP/1.0\r\nCookie: {cookie}");
    assert_eq!(web.send(&api, "").await.0, 401);
    let kill = format!("POST /org/default/kill HTTP/1.0\r\nCookie: {cookie}\r\n{FORM}");
    assert_eq!(web.send(&kill, &format!("session={session}&csrf={token}")).await.0, 401);
    assert_eq!(b.running.as_ref().unwrap().live_sessions(), 1, "nothing was killed");
    // Another sign-in is a new one.
    let again = sign_in(&web, &b.owner).await;
    assert_ne!(again, cookie);
    assert_eq!(web.send(&format!("GET /org/default HTTP/1.0\r\nCookie: {again}"), "").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_from_another_origin_is_refused() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let web = b.web();
    let cookie = sign_in(&web, &b.owner).await;
    let (session, token, _holder) = session_and_token(&b, &cookie).await;
    let evil = ["Origin: https://evil.example", "Sec-Fetch-Site: cross-site", "Origin: null"];
    for from in evil {
        // Login CSRF: another site cannot sign the browser in...
        let (code, head, _) =
            web.send(&format!("POST /signin HTTP/1.0\r\n{FORM}\r\n{from}"), &format!("key={}", b.owner)).await;
        assert_eq!(code, 403, "{from}: {head}");
        assert_eq!(header(&head, "set-cookie"), None);
        // ...nor out...
        assert_eq!(web.send(&format!("POST /signout HTTP/1.0\r\nCookie: {cookie}\r\n{from}"), "").await.0, 403);
        // ...nor post a form with its cookie, even one with the right token.
        let kill = format!("POST /org/default/kill HTTP/1.0\r\nCookie: {cookie}\r\n{FORM}\r\n{from}");
        assert_eq!(web.send(&kill, &format!("session={session}&csrf={token}")).await.0, 403, "{from}");
    }
    assert_eq!(b.running.as_ref().unwrap().live_sessions(), 1, "nothing was killed");
    // From the door's own page the same kill goes through, with its token only.
    let own = format!("Origin: https://{}\r\nSec-Fetch-Site: same-origin", "localhost");
    let kill = format!("POST /org/default/kill HTTP/1.0\r\nCookie: {cookie}\r\n{FORM}\r\n{own}");
    for forged in [format!("session={session}"), format!("session={session}&csrf=00{token}")] {
        assert_eq!(web.send(&kill, &forged).await.0, 403, "{forged}");
    }
    assert_eq!(web.send(&kill.replace("/org/default/kill", "/any/form"), "a=1").await.0, 403, "every form");
    let (code, head, _) = web.send(&kill, &format!("session={session}&csrf={token}")).await;
    assert_eq!(code, 303);
    assert_eq!(b.running.as_ref().unwrap().live_sessions(), 0);
    // The page says so when this door's kill sent this browser there, and
    // only then: a made-up or borrowed flash shows nothing.
    let to = header(&head, "location").unwrap();
    let page = |path: String, cookie: String| {
        let web = web.clone();
        async move { web.send(&format!("GET {path} HTTP/1.0\r\nCookie: {cookie}"), "").await.2 }
    };
    assert!(page(to.clone(), cookie.clone()).await.contains(&format!("Session {session} was ended.")), "{to}");
    let other = sign_in(&b.web(), &b.owner).await;
    for (path, who) in [
        (to.clone(), other),
        (format!("/org/default?killed={session}"), cookie.clone()),
        ("/org/default?killed=ANY%20TEXT".to_string(), cookie.clone()),
    ] {
        assert!(!page(path.clone(), who).await.contains("was ended"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_another_host_is_refused() {
    let b = start_with(tempfile::tempdir().unwrap(), Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.http_hosts = vec!["broker.ops.example".into()];
    })
    .await;
    let web = b.web();
    let addr = web.addr;
    // DNS rebinding: a page of evil.example whose name now resolves here.
    for host in ["evil.example", "evil.example:443", "localhost.evil.example"] {
        let (code, _, body) = web.send(&format!("GET /metrics HTTP/1.0\r\nHost: {host}"), "").await;
        assert_eq!(code, 421, "{host}: {body}");
    }
    assert_eq!(web.exchange("GET /healthz HTTP/1.0\r\n\r\n").0, 421, "no Host at all");
    for host in ["localhost".to_string(), addr.to_string(), "broker.ops.example:8443".into()] {
        assert_eq!(web.send(&format!("GET /healthz HTTP/1.0\r\nHost: {host}"), "").await.0, 200, "{host}");
    }
}
