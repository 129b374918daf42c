//! The ops endpoint (`serve --http`): `/metrics` in the OpenMetrics text
//! format with the numbers `status` shows, a bearer token when configured,
//! `/healthz`.

mod support;

use std::io::Read;
use std::time::Duration;

use license_broker::proto::ErrorCode;

use support::{machine, org, start_with, POOL};

/// The value of the sample `name{labels}` in an exposition.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_what_status_shows_and_honour_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        o.metrics_token = Some("s3cret".into());
    })
    .await;
    let http = b.web();
    b.quota(2).await;
    let c = b.owner().await;
    c.register_machine(&org(), POOL, &machine("m")).await.unwrap();
    let held = c.acquire(&org(), POOL, &machine("m"), 1).await.unwrap();
    c.acquire(&org(), POOL, &machine("m"), 2).await.unwrap();
    let e = c.acquire(&org(), POOL, &machine("m"), 3).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded));
    c.release(held.session).await.unwrap();
    // Refusals for other reasons count under their own codes.
    let e = c.acquire(&org(), POOL, &machine("unregistered"), 4).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::MachineNotRegistered));
    // A job label capped at none: its checkout is refused under its own code.
    c.set_label_limit((&org(), POOL), ("team", "web"), Some(0)).await.unwrap();
    let labels = license_broker::value::Labels::new([("team".into(), "web".into())]).unwrap();
    let (o, m) = (org(), machine("m"));
    let checkout =
        license_broker::client::Checkout { org: &o, pool: POOL, machine: &m, nonce: 6, wait: Duration::ZERO, labels };
    assert_eq!(c.checkout(&checkout).await.unwrap_err().code(), Some(ErrorCode::LabelLimit));
    c.set_user_limit(&org(), POOL, "owner@default", Some(1)).await.unwrap();
    let e = c.acquire(&org(), POOL, &machine("m"), 5).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UserLimit));
    // A seat reserved for a label: held for it, in use by nobody yet.
    c.set_reservation((&org(), POOL), ("pipeline", "release"), 1).await.unwrap();
    let wrong = license_broker::client::Client::connect(&b.options("lbk_wrong")).await;
    assert!(wrong.is_err(), "an unknown key is refused");

    let (code, _) = http.fetch("/metrics", None).await;
    assert_eq!(code, 401, "no token, no metrics");
    // The refused client's connection closes asynchronously: scrape until
    // the broker has seen it go (at most 5 s).
    let started = std::time::Instant::now();
    let body = loop {
        let (code, body) = http.fetch("/metrics", Some("s3cret")).await;
        assert_eq!(code, 200);
        if sample(&body, "lbroker_connections_open") == Some(1.0) || started.elapsed() > Duration::from_secs(5) {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pool = r#"{org="default",pool="kre-floating-annual"}"#;
    assert_eq!(sample(&body, &format!("lbroker_seats_in_use{pool}")), Some(1.0), "{body}");
    assert_eq!(sample(&body, &format!("lbroker_seats_quota{pool}")), Some(2.0));
    assert_eq!(sample(&body, &format!("lbroker_seats_reserved{pool}")), Some(1.0));
    assert_eq!(sample(&body, &format!("lbroker_seats_reserved_free{pool}")), Some(1.0));
    assert_eq!(sample(&body, &format!("lbroker_machines_registered{pool}")), Some(1.0));
    assert_eq!(sample(&body, &format!("lbroker_admissions_total{pool}")), Some(2.0));
    let denied = |reason: &str| {
        sample(
            &body,
            &format!(r#"lbroker_denials_total{{org="default",pool="kre-floating-annual",reason="{reason}"}}"#),
        )
    };
    assert_eq!(denied("QUOTA_EXCEEDED"), Some(1.0), "{body}");
    assert_eq!(denied("MACHINE_NOT_REGISTERED"), Some(1.0));
    assert_eq!(denied("USER_LIMIT"), Some(1.0));
    assert_eq!(denied("LABEL_LIMIT"), Some(1.0));
    assert_eq!(denied("QUEUE_TIMEOUT"), Some(0.0), "every reason is exported, counted or not");
    assert_eq!(sample(&body, "lbroker_connections_open"), Some(1.0));
    let ends = |reason: &str| {
        sample(
            &body,
            &format!(r#"lbroker_session_ends_total{{org="default",pool="kre-floating-annual",reason="{reason}"}}"#),
        )
    };
    assert_eq!((ends("released"), ends("expired")), (Some(1.0), Some(0.0)));
    assert_eq!(sample(&body, "lbroker_auth_failures_total"), Some(1.0));
    assert!(body.contains("# TYPE lbroker_admissions counter") && body.trim_end().ends_with("# EOF"), "{body}");
    // Every request answered is in the latency histogram, by kind: five
    // acquires (two refused), one release, one register (and nothing for
    // kinds not used).
    let count = |op: &str| sample(&body, &format!(r#"lbroker_request_duration_seconds_count{{op="{op}"}}"#));
    assert_eq!((count("acquire"), count("release"), count("register")), (Some(5.0), Some(1.0), Some(1.0)), "{body}");
    assert_eq!(count("activate"), Some(0.0));
    let all = sample(&body, r#"lbroker_request_duration_seconds_bucket{le="+Inf",op="acquire"}"#);
    assert_eq!(all, Some(5.0), "the +Inf bucket holds every acquire: {body}");
    let fast = sample(&body, r#"lbroker_request_duration_seconds_bucket{le="1.0",op="acquire"}"#);
    assert!(fast.is_some_and(|n| n <= 5.0), "buckets are cumulative, never above the count: {body}");
    // Seat time: one session is held throughout, so between two scrapes
    // at least 200 ms apart the counter grows by that interval, no more
    // than the time around them.
    let seat = |body: &str| sample(body, &format!("lbroker_seat_seconds_total{pool}")).expect("exported");
    let around = std::time::Instant::now();
    let first = seat(&http.fetch("/metrics", Some("s3cret")).await.1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = seat(&http.fetch("/metrics", Some("s3cret")).await.1);
    let grew = second - first;
    assert!(grew >= 0.2 - 0.001 && grew <= around.elapsed().as_secs_f64() + 0.001, "{first} then {second}");
    let (code, body) = http.fetch("/healthz", None).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ops_connections_give_their_slot_up_and_are_bounded_in_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| {
        o.http = Some("127.0.0.1:0".parse().unwrap());
        // Two slots, none kept for scrapes; connections live 3 s.
        o.http_limits.connections = 2;
        o.http_limits.reserved = 0;
        o.http_limits.lifetime = Duration::from_secs(3);
    })
    .await;
    let http = b.web();
    let (code, oldest_closed, newer_open, newer_closed_later) = tokio::task::spawn_blocking(move || {
        // Two connections that never send a request take both slots...
        let idle: Vec<std::net::TcpStream> = (0..2).map(|_| std::net::TcpStream::connect(http.addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        // ...and a scrape takes the slot of the one idle longest.
        let (code, _) = http.get("/healthz", None);
        let closed = |mut s: &std::net::TcpStream, wait: Duration| {
            s.set_read_timeout(Some(wait)).unwrap();
            matches!(s.read(&mut [0u8; 16]), Ok(0) | Err(_))
        };
        let oldest_closed = closed(&idle[0], Duration::from_secs(5));
        let mut probe = &idle[1];
        probe.set_nonblocking(true).unwrap();
        let newer_open = matches!(probe.read(&mut [0u8; 16]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        probe.set_nonblocking(false).unwrap();
        // The other is closed at the end of its lifetime.
        (code, oldest_closed, newer_open, closed(&idle[1], Duration::from_secs(10)))
    })
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert!(oldest_closed, "the longest idle connection kept its slot");
    assert!(newer_open, "more than one idle connection was closed for one newcomer");
    assert!(newer_closed_later, "an idle connection outlived its lifetime");
}
