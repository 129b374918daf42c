//! Bad input on the wire: malformed, oversized and out-of-order frames and a
//! wrong protocol version each get a typed error; the server survives.

mod support;

use std::time::Duration;

use license_broker::proto::ErrorCode;
use license_broker::proto::{
    encode, ClientFrame, FrameBuf, Hello, Outcome, Req, Request, ServerFrame, MAX_FRAME, VERSION,
};

use support::{start, start_with, TestBroker};

struct Raw {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: FrameBuf,
    _conn: quinn::Connection,
}

async fn raw(b: &TestBroker) -> Raw {
    let (addr, name) = license_broker::client::resolve(&b.server, None).await.unwrap();
    let ep = license_broker::client::endpoint(Some(&b.ca), false).unwrap();
    let conn = ep.connect(addr, &name).unwrap().await.unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    Raw { send, recv, frames: FrameBuf::new(), _conn: conn }
}

impl Raw {
    async fn send_frame(&mut self, f: &ClientFrame) {
        let mut buf = Vec::new();
        encode(f, &mut buf);
        self.send.write_all(&buf).await.unwrap();
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.unwrap();
    }

    async fn hello(&mut self, key: &str, version: u16) {
        self.send_frame(&ClientFrame::Hello(Hello { version, api_key: key.into(), client: "test".into() })).await;
    }

    /// The next frame, or None if the server finished the stream.
    async fn next(&mut self) -> Option<ServerFrame> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = self.frames.next_message().unwrap() {
                return Some(frame);
            }
            match tokio::time::timeout(Duration::from_secs(5), self.recv.read(&mut chunk)).await.unwrap() {
                Ok(Some(n)) => self.frames.extend(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

fn error_code(f: Option<ServerFrame>) -> ErrorCode {
    match f {
        Some(ServerFrame::Error(e)) => e.code,
        Some(ServerFrame::Response(r)) => match r.outcome {
            Outcome::Err(e) => e.code,
            other => panic!("expected an error, got {other:?}"),
        },
        other => panic!("expected an error, got {other:?}"),
    }
}

fn status_req(id: u64) -> ClientFrame {
    ClientFrame::Request(Request { id, body: Req::Status { org: None } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_bad_frame_and_the_stream_goes_on() {
    let b = start(Duration::from_secs(30)).await;
    let mut r = raw(&b).await;
    r.hello(&b.owner, VERSION).await;
    assert!(matches!(r.next().await, Some(ServerFrame::Welcome(_))));
    // Unknown variant, random bytes, and a Request with a valid id but a broken body.
    for body in [vec![9u8, 1, 2], vec![0xff; 40], vec![1, 42, 200]] {
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend(&body);
        r.send_bytes(&framed).await;
        let f = r.next().await;
        if let Some(ServerFrame::Response(resp)) = &f {
            assert_eq!(resp.id, 42, "the request id is salvaged");
        }
        assert_eq!(error_code(f), ErrorCode::BadFrame);
    }
    // The stream still works.
    r.send_frame(&status_req(7)).await;
    match r.next().await {
        Some(ServerFrame::Response(resp)) => {
            assert!(matches!(resp.outcome, Outcome::Ok(_)) && resp.id == 7)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_refused_and_the_server_survives() {
    let b = start(Duration::from_secs(30)).await;
    let mut r = raw(&b).await;
    r.hello(&b.owner, VERSION).await;
    r.next().await;
    r.send_bytes(&((MAX_FRAME as u32) + 1).to_be_bytes()).await;
    assert_eq!(error_code(r.next().await), ErrorCode::FrameTooLarge);
    assert!(r.next().await.is_none(), "stream finished");
    // Zero-length frames are refused the same way.
    let mut r = raw(&b).await;
    r.send_bytes(&[0, 0, 0, 0]).await;
    assert_eq!(error_code(r.next().await), ErrorCode::BadFrame);
    // Other clients are unaffected.
    let c = b.owner().await;
    c.status(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version_and_out_of_order_frames_are_refused() {
    let b = start(Duration::from_secs(30)).await;
    let mut r = raw(&b).await;
    r.hello(&b.owner, VERSION + 1).await;
    assert_eq!(error_code(r.next().await), ErrorCode::UnsupportedVersion);
    assert!(r.next().await.is_none());

    let mut r = raw(&b).await;
    r.send_frame(&status_req(1)).await;
    assert_eq!(error_code(r.next().await), ErrorCode::OutOfOrder);
    r.hello(&b.owner, VERSION).await;
    assert!(matches!(r.next().await, Some(ServerFrame::Welcome(_))));
    r.hello(&b.owner, VERSION).await;
    assert_eq!(error_code(r.next().await), ErrorCode::OutOfOrder);

    let mut r = raw(&b).await;
    r.hello("lbk_wrong", VERSION).await;
    assert_eq!(error_code(r.next().await), ErrorCode::Unauthorized);
    r.send_frame(&status_req(2)).await;
    assert_eq!(error_code(r.next().await), ErrorCode::OutOfOrder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_split_across_writes_and_pipelined_requests_all_answered() {
    let b = start(Duration::from_secs(30)).await;
    let mut r = raw(&b).await;
    let mut buf = Vec::new();
    encode(&ClientFrame::Hello(Hello { version: VERSION, api_key: b.owner.clone(), client: "t".into() }), &mut buf);
    for id in 0..200 {
        encode(&status_req(id), &mut buf);
    }
    for piece in buf.chunks(7) {
        r.send_bytes(piece).await;
    }
    assert!(matches!(r.next().await, Some(ServerFrame::Welcome(_))));
    let mut ids = Vec::new();
    for _ in 0..200 {
        match r.next().await {
            Some(ServerFrame::Response(resp)) => ids.push(resp.id),
            other => panic!("{other:?}"),
        }
    }
    ids.sort();
    assert_eq!(ids, (0..200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_hello_is_closed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| o.hello_timeout = Duration::from_millis(300)).await;
    // A stranger that opens a stream and says nothing (its keep-alives answer PINGs).
    let silent = raw(&b).await;
    let closed =
        tokio::time::timeout(Duration::from_secs(10), silent._conn.closed()).await.expect("closed by the broker");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == 2),
        "{closed:?}"
    );
    // An authenticated connection outlives the deadline.
    let mut ok = raw(&b).await;
    ok.hello(&b.owner, VERSION).await;
    assert!(matches!(ok.next().await, Some(ServerFrame::Welcome(_))));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(ok._conn.close_reason().is_none(), "a welcomed connection stays open");
    let client = b.client(&b.owner).await;
    assert!(client.status(None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_hellos_cost_the_connection() {
    let b = start(Duration::from_secs(30)).await;
    let mut guesser = raw(&b).await;
    for _ in 0..2 {
        guesser.hello("lbk_guess", VERSION).await;
        assert_eq!(error_code(guesser.next().await), ErrorCode::Unauthorized);
    }
    guesser.hello("lbk_guess", VERSION).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), guesser._conn.closed()).await.expect("closed");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == 3),
        "the third failed Hello closes the connection: {closed:?}"
    );
    // Legitimate clients are not affected.
    assert!(b.client(&b.owner).await.status(None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_left_half_sent_is_dropped_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| o.frame_timeout = Duration::from_millis(300)).await;
    let mut slow = raw(&b).await;
    slow.hello(&b.owner, VERSION).await;
    assert!(matches!(slow.next().await, Some(ServerFrame::Welcome(_))));
    // A length prefix of 60 KiB, then ten bytes, then silence.
    let mut partial = (60 * 1024u32).to_be_bytes().to_vec();
    partial.extend_from_slice(&[0; 10]);
    slow.send_bytes(&partial).await;
    assert_eq!(error_code(slow.next().await), ErrorCode::BadFrame);
    assert!(slow.next().await.is_none(), "the stream ends");
    assert!(b.client(&b.owner).await.status(None).await.is_ok());
}

/// docs/PROTOCOL.md's table of which frame carries each refusal, checked
/// case by case over QUIC (and the rows checked to be in the document).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_comes_in_the_frame_the_docs_name() {
    const DOC: &str = include_str!("../docs/PROTOCOL.md");
    let row = |case: &str, frame: &str, code: &str| {
        let line =
            DOC.lines().find(|l| l.starts_with(&format!("| {case}"))).unwrap_or_else(|| panic!("no row {case:?}"));
        assert!(line.contains(&format!("| {frame} | `{code}` |")), "row {case:?} does not say {frame} {code}: {line}");
    };
    let framed = |body: &[u8]| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend(body);
        f
    };
    let b = start(Duration::from_secs(30)).await;

    row(&format!("`Hello` with a version other than 1 to {VERSION}"), "`Error`", "UNSUPPORTED_VERSION");
    let mut r = raw(&b).await;
    r.hello(&b.owner, VERSION + 1).await;
    assert!(matches!(r.next().await, Some(ServerFrame::Error(e)) if e.code == ErrorCode::UnsupportedVersion));
    assert!(r.next().await.is_none(), "finished");

    row("`Hello` with an unknown or revoked key", "`Error`", "UNAUTHORIZED");
    row("a `Request` before a welcomed `Hello`", "`Response { id, Err }`", "OUT_OF_ORDER");
    row("a second `Hello` on a stream", "`Error`", "OUT_OF_ORDER");
    let mut r = raw(&b).await;
    r.hello("lbk_wrong", VERSION).await;
    assert!(matches!(r.next().await, Some(ServerFrame::Error(e)) if e.code == ErrorCode::Unauthorized));
    r.send_frame(&status_req(5)).await;
    assert!(
        matches!(r.next().await, Some(ServerFrame::Response(x)) if x.id == 5 && error_code(Some(ServerFrame::Response(x.clone()))) == ErrorCode::OutOfOrder)
    );
    r.hello(&b.owner, VERSION).await;
    assert!(matches!(r.next().await, Some(ServerFrame::Welcome(_))));
    r.hello(&b.owner, VERSION).await;
    assert!(matches!(r.next().await, Some(ServerFrame::Error(e)) if e.code == ErrorCode::OutOfOrder));

    row("a body that starts as a `Request`", "`Response { id, Err }`", "BAD_FRAME");
    let mut whole = Vec::new();
    encode(&status_req(45), &mut whole);
    let mut trailing = whole[4..].to_vec();
    trailing.push(0);
    let mut bad_org = vec![1u8, 43, 4, 1, 8];
    bad_org.extend(b"BAD NAME");
    for (id, bytes) in [
        (42, framed(&[1, 42, 0x7f])),             // unknown request variant
        (43, framed(&bad_org)),                   // Status { org: "BAD NAME" }
        (44, framed(&[1, 44, 1, 7, b'd', b'e'])), // truncated Acquire
        (45, framed(&trailing)),                  // a whole Status request, then one byte more
    ] {
        r.send_bytes(&bytes).await;
        match r.next().await {
            Some(ServerFrame::Response(x)) => {
                assert_eq!(x.id, id);
                assert_eq!(error_code(Some(ServerFrame::Response(x))), ErrorCode::BadFrame);
            }
            other => panic!("case {id}: {other:?}"),
        }
    }

    row("a body whose request id cannot be read", "`Error`", "BAD_FRAME");
    r.send_bytes(&framed(&[9, 1, 2])).await;
    assert!(matches!(r.next().await, Some(ServerFrame::Error(e)) if e.code == ErrorCode::BadFrame));
    // The stream goes on after all of them.
    r.send_frame(&status_req(7)).await;
    assert!(
        matches!(r.next().await, Some(ServerFrame::Response(x)) if x.id == 7 && matches!(x.outcome, Outcome::Ok(_)))
    );

    row("a declared length over 65 536", "`Error`", "FRAME_TOO_LARGE");
    row("a declared length of 0", "`Error`", "BAD_FRAME");
    row("a frame begun but not completed", "`Error`", "BAD_FRAME");
    row("an answer that would not fit in one frame", "`Response { id, Err }`", "RESPONSE_TOO_LARGE");
}

/// One source address that opens connections and never authenticates
/// holds only its own share: past it, each new connection of its own takes
/// the place of its oldest (closed with code 2), while a client from
/// another address gets in and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_strangers_from_one_address_hold_only_their_share() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| {
        o.hello_timeout = Duration::from_secs(30);
        o.strangers.strangers = 8;
        o.strangers.strangers_per_address = 4;
    })
    .await;
    // The stranger connects from 127.0.0.2 (still loopback).
    let held = silent(&b, "127.0.0.2:0", 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open: Vec<bool> = held.iter().map(|c| c.close_reason().is_none()).collect();
    assert_eq!(open, [[false; 6].as_slice(), &[true; 4]].concat(), "the newest four strangers stay");
    let codes: Vec<_> = held[..6].iter().map(|c| c.close_reason()).collect();
    assert!(
        codes
            .iter()
            .all(|r| matches!(r, Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == 2u32.into())),
        "{codes:?}"
    );
    // Everyone else still gets in and is served.
    let mut ok = raw(&b).await;
    ok.hello(&b.owner, VERSION).await;
    assert!(matches!(ok.next().await, Some(ServerFrame::Welcome(_))));
    let client = b.client(&b.owner).await;
    assert!(client.status(None).await.is_ok());
}

/// Strangers holding the whole budget from the runner's own address (a CI
/// fleet behind one NAT address with an attacker among it) do not shut the
/// runner out: each of its connections takes the oldest stranger's place
/// and authenticates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_runners_own_address_do_not_shut_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| {
        o.hello_timeout = Duration::from_secs(30);
        o.strangers.strangers = 8;
    })
    .await;
    let held = silent(&b, "127.0.0.1:0", 8).await;
    let mut again = Vec::new();
    for _ in 0..20 {
        let client = b.client(&b.owner).await;
        assert!(client.status(None).await.is_ok());
        client.close().await;
        // The stranger's place taken by the runner is held again.
        again.extend(silent(&b, "127.0.0.1:0", 1).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(held.iter().all(|c| c.close_reason().is_some()), "the oldest strangers made room");
    assert_eq!(again.iter().filter(|c| c.close_reason().is_none()).count(), 8, "the newest eight hold the budget");
}

/// `n` connections from `local` that complete the handshake and never say
/// `Hello` (kept open by the caller).
async fn silent(b: &TestBroker, local: &str, n: usize) -> Vec<quinn::Connection> {
    let (addr, name) = license_broker::client::resolve(&b.server, None).await.unwrap();
    let mut ep = quinn::Endpoint::client(local.parse().unwrap()).unwrap();
    ep.set_default_client_config(license_broker::tls::client_config(Some(&b.ca)).unwrap());
    let mut held = Vec::new();
    for _ in 0..n {
        let conn = tokio::time::timeout(Duration::from_secs(5), ep.connect(addr, &name).unwrap()).await;
        held.push(conn.expect("a handshake completes").expect("admitted"));
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_failing_hellos_across_connections_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| o.strangers.failed_hellos_per_address = 1).await;
    // Two failures from one address within a second: the second closes its
    // connection, before the per-connection limit of three. (Retried in
    // case a second boundary falls between the two.)
    let mut cut = false;
    for _ in 0..3 {
        let (mut first, mut second) = (raw(&b).await, raw(&b).await);
        first.hello("lbk_guess", VERSION).await;
        let _ = first.next().await;
        second.hello("lbk_guess", VERSION).await;
        let closed = tokio::time::timeout(Duration::from_secs(2), second._conn.closed()).await;
        if let Ok(quinn::ConnectionError::ApplicationClosed(c)) = closed {
            assert_eq!(c.error_code.into_inner(), 3);
            assert_eq!(&c.reason[..], b"too many failed Hellos from this address");
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(cut, "the address was never cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_pipelining_junk_is_closed_after_a_few_refusals() {
    use license_broker::server::{MAX_STRANGER_REFUSALS, STRANGER_REFUSALS_CODE};
    let b = start(Duration::from_secs(30)).await;
    let mut junk = Vec::new();
    for _ in 0..1000 {
        junk.extend_from_slice(&8u32.to_be_bytes());
        junk.extend_from_slice(&[0xff; 8]);
    }
    let mut r = raw(&b).await;
    r.send_bytes(&junk).await;
    let mut refusals = 0;
    while let Some(frame) = r.next().await {
        assert_eq!(error_code(Some(frame)), ErrorCode::BadFrame);
        refusals += 1;
    }
    // (The close may overtake answers still in flight: at most the limit arrive.)
    assert!(refusals <= MAX_STRANGER_REFUSALS, "{refusals} answers to a stranger's junk");
    let closed = tokio::time::timeout(Duration::from_secs(5), r._conn.closed()).await.expect("closed");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == u64::from(STRANGER_REFUSALS_CODE)),
        "{closed:?}"
    );
    // A member's bad frames are answered one by one and the stream goes on.
    let mut member = raw(&b).await;
    member.hello(&b.owner, VERSION).await;
    assert!(matches!(member.next().await, Some(ServerFrame::Welcome(_))));
    member.send_bytes(&junk[..12 * 100]).await;
    for _ in 0..100 {
        assert_eq!(error_code(member.next().await), ErrorCode::BadFrame);
    }
    member.send_frame(&status_req(1)).await;
    assert!(matches!(member.next().await, Some(ServerFrame::Response(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_one_stream_until_it_authenticates() {
    let b = start(Duration::from_secs(30)).await;
    let mut r = raw(&b).await;
    // The first stream is open (raw opened it); a second waits for credit.
    let second = tokio::time::timeout(Duration::from_millis(300), r._conn.open_bi()).await;
    assert!(second.is_err(), "a stranger opened a second stream");
    r.hello(&b.owner, VERSION).await;
    assert!(matches!(r.next().await, Some(ServerFrame::Welcome(_))));
    let mut more = Vec::new();
    for _ in 0..15 {
        let s = tokio::time::timeout(Duration::from_secs(5), r._conn.open_bi()).await;
        more.push(s.expect("a member gets its streams").unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_closed_at_the_write_deadline() {
    use license_broker::server::NOT_READING_CODE;
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir, Duration::from_secs(30), |o| o.write_timeout = Duration::from_millis(300)).await;
    let owner = b.owner().await;
    for i in 0..100 {
        owner
            .add_user(&support::org(), &format!("member-{i:03}@default"), license_broker::value::Role::User)
            .await
            .unwrap();
    }
    // Each answer is a few KiB: 2,000 of them are far more than the
    // connection's window, so the broker's writes block, and stay blocked.
    let mut r = raw(&b).await;
    r.hello(&b.owner, VERSION).await;
    let mut buf = Vec::new();
    for id in 0..2000 {
        encode(&ClientFrame::Request(Request { id, body: Req::ListUsers { org: support::org() } }), &mut buf);
    }
    r.send_bytes(&buf).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), r._conn.closed()).await.expect("closed");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == u64::from(NOT_READING_CODE)),
        "{closed:?}"
    );
    // Everyone else is served.
    assert!(owner.status(None).await.is_ok());
}
