//! Old clients keep working: every answer kind, on a stream of each
//! protocol version, decodes with that version's own schema as its
//! document listed it (tests/fixtures/old_schemas.rs, written from the
//! document's history), exactly, nothing left over; values appended to an
//! enum since reach an old stream as the nearest value it knew.

mod support;

#[path = "fixtures/old_schemas.rs"]
mod old;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use license_broker::client::Client;
use license_broker::proto::{encode, ClientFrame, FrameBuf, Hello, ListOf, Req, Request, SessionToken};
use license_broker::value::{format_end_date, Labels, MachineId, Millis, Nonce, OrgName, PoolId, Role, SessionId};
use serde::de::DeserializeOwned;

use support::{org, start, TestBroker};

const DAY: u64 = 86_400_000;

/// What one answer was, in any version's schema.
#[derive(Debug, Default)]
struct Answer {
    /// The `Resp` variant's name, when it succeeded.
    ok: Option<String>,
    /// The error code's wire number, when refused.
    code: Option<u8>,
    session: Option<u64>,
    token: Option<Vec<u8>>,
    /// Audit entries: action name and detail.
    audit: Vec<(String, String)>,
}

/// Decodes a whole body as `T`: nothing may be left over.
fn exact<T: DeserializeOwned>(body: &[u8]) -> T {
    let (v, rest) = postcard::take_from_bytes::<T>(body).unwrap_or_else(|e| panic!("undecodable answer: {e}"));
    assert!(rest.is_empty(), "{} bytes left over", rest.len());
    v
}

fn name<T: std::fmt::Debug>(v: &T) -> String {
    format!("{v:?}").chars().take_while(|c| c.is_alphanumeric()).collect()
}

macro_rules! reader {
    ($f:ident, $v:ident, $a:ident, $($extra:tt)*) => {
        fn $f(body: &[u8]) -> Answer {
            use old::$v::*;
            let mut $a = Answer::default();
            match exact::<ServerFrame>(body) {
                ServerFrame::Response { outcome: Outcome::Ok(resp), .. } => {
                    $a.ok = Some(name(&resp));
                    match resp {
                        Resp::Admitted { session, .. } => $a.session = Some(session),
                        Resp::AuditLog(v) => $a.audit = v.into_iter().map(|e| (name(&e.action), e.detail)).collect(),
                        $($extra)*
                        _ => {}
                    }
                }
                ServerFrame::Response { outcome: Outcome::Err(e), .. } | ServerFrame::Error(e) => {
                    $a.code = Some(e.code as u8)
                }
                ServerFrame::Welcome(_) => $a.ok = Some("Welcome".into()),
                #[allow(unreachable_patterns)]
                other => $a.ok = Some(name(&other)),
            }
            $a
        }
    };
}

reader!(read_v1, v1, a,);
reader!(read_v2, v2, a, Resp::Leased { session, token, .. } => { a.session = Some(session); a.token = Some(token) });
reader!(read_v3, v3, a, Resp::Leased { session, token, .. } => { a.session = Some(session); a.token = Some(token) });
reader!(read_v4, v4, a, Resp::Leased { session, token, .. } => { a.session = Some(session); a.token = Some(token) });

reader!(read_v5, v5, a, Resp::Leased { session, token, .. } => { a.session = Some(session); a.token = Some(token) });
reader!(read_v6, v6, a, Resp::Leased { session, token, .. } => { a.session = Some(session); a.token = Some(token) });

/// The current version's answers, read with today's types.
fn read_v7(body: &[u8]) -> Answer {
    use license_broker::proto::{Outcome, Resp, ServerFrame};
    let mut a = Answer::default();
    match exact::<ServerFrame>(body) {
        ServerFrame::Response { 0: r } => match r.outcome {
            Outcome::Ok(resp) => {
                a.ok = Some(name(&resp));
                match resp {
                    Resp::Leased { session, token, .. } => {
                        (a.session, a.token) = (Some(session.0), Some(token.0.to_vec()))
                    }
                    Resp::AuditLog(v) => a.audit = v.into_iter().map(|e| (e.action.name().into(), e.detail)).collect(),
                    _ => {}
                }
            }
            Outcome::Err(e) => a.code = Some(e.code as u8),
        },
        ServerFrame::Error(e) => a.code = Some(e.code as u8),
        other => a.ok = Some(name(&other)),
    }
    a
}

/// A stream speaking one version, reading answers with its schema.
struct Raw {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: FrameBuf,
    read: fn(&[u8]) -> Answer,
    next_id: u64,
    _conn: quinn::Connection,
}

impl Raw {
    async fn open(b: &TestBroker, key: &str, version: u16) -> Raw {
        let (addr, name) = license_broker::client::resolve(&b.server, None).await.unwrap();
        let ep = license_broker::client::endpoint(Some(&b.ca), false).unwrap();
        let conn = ep.connect(addr, &name).unwrap().await.unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        let read = [read_v1, read_v2, read_v3, read_v4, read_v5, read_v6, read_v7][version as usize - 1];
        let mut raw = Raw { send, recv, frames: FrameBuf::new(), read, next_id: 0, _conn: conn };
        raw.write(&ClientFrame::Hello(Hello { version, api_key: key.into(), client: "old".into() })).await;
        assert_eq!(raw.answer().await.ok.as_deref(), Some("Welcome"));
        raw
    }

    async fn write(&mut self, f: &ClientFrame) {
        let mut buf = Vec::new();
        encode(f, &mut buf);
        self.send.write_all(&buf).await.unwrap();
    }

    async fn answer(&mut self) -> Answer {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(body) = self.frames.next_frame().unwrap() {
                return (self.read)(body);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.recv.read(&mut chunk)).await.unwrap();
            self.frames.extend(&chunk[..n.unwrap().expect("stream open")]);
        }
    }

    async fn ask(&mut self, body: Req) -> Answer {
        self.next_id += 1;
        self.write(&ClientFrame::Request(Request { id: self.next_id, body })).await;
        self.answer().await
    }

    async fn ok(&mut self, body: Req, want: &str) -> Answer {
        let what = format!("{body:?}");
        let a = self.ask(body).await;
        assert_eq!(a.ok.as_deref(), Some(want), "{what}: {a:?}");
        a
    }

    async fn refused(&mut self, body: Req, want: u8) {
        let what = format!("{body:?}");
        let a = self.ask(body).await;
        assert_eq!(a.code, Some(want), "{what}: {a:?}");
    }
}

fn pool(s: &str) -> PoolId {
    s.parse().unwrap()
}

fn m(s: &str) -> MachineId {
    MachineId::new(s).unwrap()
}

/// `YYYY-MM-DD` of today + `days` (UTC).
fn day(days: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    format_end_date(Millis((now / DAY + 1 + days) * DAY))
}

/// Wire numbers of the codes the scenario meets.
mod code {
    pub const BAD_FRAME: u8 = 0;
    pub const INVALID_ARGUMENT: u8 = 4;
    pub const FORBIDDEN: u8 = 6;
    pub const QUOTA_EXCEEDED: u8 = 9;
    pub const NOT_LICENSED: u8 = 18;
    pub const OFFLINE_NOT_ALLOWED: u8 = 20;
    pub const EXPIRY_TOO_LATE: u8 = 21;
    pub const OFFLINE_IRREVOCABLE: u8 = 22;
    pub const USER_LIMIT: u8 = 26;
    pub const LABEL_LIMIT: u8 = 28;
}

/// The code a version-`v` stream gets for `code` (its first document's).
fn as_seen(v: u16, code: u8) -> u8 {
    use code::*;
    match (v, code) {
        (1, NOT_LICENSED | OFFLINE_IRREVOCABLE) => FORBIDDEN,
        (1, OFFLINE_NOT_ALLOWED | EXPIRY_TOO_LATE) => INVALID_ARGUMENT,
        (1..=3, USER_LIMIT) | (1..=4, LABEL_LIMIT) => QUOTA_EXCEEDED,
        _ => code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_decodes_with_the_schema_of_its_streams_version() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(8).await;
    let op = b.operator().await;
    op.set_pool(&org(), pool("kse-floating-annual"), 4).await.unwrap();
    op.set_pool(&org(), pool("kse-node-locked-annual"), 8).await.unwrap();
    let owner = b.owner().await;
    expire_a_machine(&op, &owner).await;
    for v in 1..=7 {
        operator_answers(&b, v).await;
        member_answers(&b, &owner, v).await;
    }
}

/// A pool's machine policy set, and an ephemeral machine released after
/// its session: audit actions of version 5 for every stream to read.
async fn expire_a_machine(op: &Client, owner: &Client) {
    let kse = pool("kse-floating-annual");
    op.set_machine_policy(&org(), kse, Some(Duration::from_secs(86_400)), false).await.unwrap();
    // A version 6 audit action for every stream to read.
    op.set_pool_alerts(&org(), kse, Some(Duration::from_secs(300)), None).await.unwrap();
    let (kre, gone) = (PoolId::KRE_DEFAULT, m("gone"));
    owner.register_ephemeral(&org(), kre, &gone).await.unwrap();
    let lease = owner.acquire(&org(), kre, &gone, 4242).await.unwrap();
    owner.release(lease.session).await.unwrap();
    for _ in 0..100 {
        if owner.machine_uses(&org()).await.unwrap().iter().all(|u| u.machine != gone) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the ephemeral machine was not released within 5 s of its last session");
}

/// The operator's requests, on a version-`v` stream.
async fn operator_answers(b: &TestBroker, v: u16) {
    let mut p = Raw::open(b, &b.operator, v).await;
    let name = OrgName::new(format!("old{v}")).unwrap();
    let created =
        Req::CreateOrg { name: name.clone(), subscription_end: day(300), owner: format!("boss@old{v}.example") };
    p.ok(created, "OrgCreated").await;
    p.ok(Req::SetPool { org: name, pool: PoolId::KRE_DEFAULT, quota: 1 }, "Done").await;
    p.ok(Req::SetSubscription { org: org(), subscription_end: day(400 + v as u64) }, "Done").await;
    p.ok(Req::ListOrgs, "Orgs").await;
    p.ok(Req::Status { org: None }, if v >= 3 { "Pools" } else { "Status" }).await;
    let policy =
        Req::SetMachinePolicy { org: org(), pool: PoolId::KRE_DEFAULT, machine_idle_ms: None, ephemeral: false };
    match v {
        5.. => drop(p.ok(policy, "Done").await),
        _ => p.refused(policy, code::BAD_FRAME).await,
    }
}

/// An Owner's and a member's requests, on version-`v` streams, and the
/// refusals whose codes were appended after version 1.
async fn member_answers(b: &TestBroker, owner: &Client, v: u16) {
    let mut o = Raw::open(b, &b.owner, v).await;
    let (kre, nl, kse) = (PoolId::KRE_DEFAULT, pool("kse-node-locked-annual"), pool("kse-floating-annual"));
    let machine = m(&format!("m{v}"));
    let (user, leased) = (format!("u{v}@default"), if v >= 2 { "Leased" } else { "Admitted" });
    let target = |n: u128| Req::Acquire { org: org(), pool: kre, machine: machine.clone(), nonce: Nonce(n) };
    o.ok(Req::RegisterMachine { org: org(), pool: kre, machine: machine.clone() }, "Registered").await;
    let first = o.ok(target(v as u128 * 10), leased).await.session.map(SessionId).unwrap();
    o.ok(Req::Renew { session: first }, if v >= 2 { "Extended" } else { "Renewed" }).await;
    o.ok(Req::ListSessions { org: org() }, if v >= 3 { "SessionViews" } else { "Sessions" }).await;
    o.ok(Req::KillSession { org: org(), session: first }, "Killed").await;
    let second = o.ok(target(v as u128 * 10 + 1), leased).await;
    if let Some(token) = second.token.clone() {
        let token = SessionToken(token.try_into().unwrap());
        let again =
            Req::Reattach { org: org(), pool: kre, machine: machine.clone(), nonce: Nonce(v as u128 * 10 + 1), token };
        o.ok(again, "Leased").await;
    }
    labelled_reattach(&mut o, v, &machine, second.token).await;
    o.ok(Req::Release { session: SessionId(second.session.unwrap()) }, "Released").await;
    o.ok(Req::Status { org: Some(org()) }, if v >= 3 { "Pools" } else { "Status" }).await;
    o.ok(Req::AddUser { org: org(), email: user.clone(), role: Role::User }, "Done").await;
    o.ok(Req::CreateKey { org: org(), email: user.clone() }, "KeyCreated").await;
    let (key, id) = owner.create_key(&org(), &user).await.unwrap();
    o.ok(Req::ListKeys { org: org() }, "Keys").await;
    o.ok(Req::ListUsers { org: org() }, "Users").await;
    o.ok(Req::ListMachines { org: org() }, "Machines").await;
    o.ok(Req::Grant { org: org(), pool: nl, email: user.clone() }, "Done").await;
    o.ok(Req::ListGrants { org: org(), pool: None }, "Grants").await;
    let mut u = Raw::open(b, &key, v).await;
    let activate = Req::Activate { org: org(), pool: nl, machine: m(&format!("n{v}")), nonce: Nonce(1) };
    u.ok(activate, "Activated").await;
    let floating = Req::Acquire { org: org(), pool: kse, machine: m("f"), nonce: Nonce(2) };
    u.refused(floating, as_seen(v, code::NOT_LICENSED)).await;
    offline_answers(&mut o, owner, v).await;
    o.ok(Req::OfflinePublicKey, "PublicKey").await;
    o.ok(Req::RevokeGrant { org: org(), pool: nl, email: user.clone() }, "Done").await;
    o.ok(Req::RevokeKey { org: org(), key: id }, "Done").await;
    o.ok(Req::RemoveMachine { org: org(), pool: None, machine: machine.clone() }, "Done").await;
    o.ok(Req::RemoveUser { org: org(), email: user }, "Done").await;
    later_requests(&mut o, v).await;
    user_limit(&mut o, owner, v).await;
    label_limit(&mut o, owner, v).await;
    reservation(&mut o, owner, v).await;
    audit(&mut o, v).await;
}

/// A re-attach carrying the job's labels: version 7's alone; an older
/// stream gets `BAD_FRAME` for it (its runner re-attaches, then labels).
async fn labelled_reattach(o: &mut Raw, v: u16, machine: &MachineId, token: Option<Vec<u8>>) {
    let token = SessionToken(token.map_or([0; 32], |t| t.try_into().unwrap()));
    let labels = Labels::new([("job".into(), "x".into())]).unwrap();
    let (pool, nonce) = (PoolId::KRE_DEFAULT, Nonce(v as u128 * 10 + 1));
    let again = Req::ReattachLabelled { org: org(), pool, machine: machine.clone(), nonce, token, labels };
    match v {
        1..=6 => o.refused(again, code::BAD_FRAME).await,
        _ => drop(o.ok(again, "Leased").await),
    }
}

/// Reserved seats: version 6's requests alone; an older stream gets
/// `BAD_FRAME` for them, and their audit lines as `QuotaChanged`.
async fn reservation(o: &mut Raw, owner: &Client, v: u16) {
    let pool = PoolId::KRE_DEFAULT;
    let set = |seats| Req::SetReservation { org: org(), pool, key: "pipeline".into(), value: "release".into(), seats };
    let list = Req::List { of: ListOf::Reservations { org: org() }, after: None, limit: 10 };
    let labels = Labels::new([("pipeline".into(), "release".into())]).unwrap();
    let check = Req::CheckLabelled { org: org(), pool, machine: m("capped"), labels };
    match v {
        1..=5 => {
            o.refused(set(1), code::BAD_FRAME).await;
            o.refused(list, code::BAD_FRAME).await;
            o.refused(check, code::BAD_FRAME).await;
            owner.set_reservation((&org(), pool), ("pipeline", "release"), 1).await.unwrap();
        }
        _ => {
            o.ok(set(1), "Done").await;
            o.ok(list, "Page").await;
            o.ok(check, "Availability").await;
        }
    }
    owner.set_reservation((&org(), pool), ("pipeline", "release"), 0).await.unwrap();
}

/// Offline licenses: made, listed, and refused three ways.
async fn offline_answers(o: &mut Raw, owner: &Client, v: u16) {
    let nl = pool("kse-node-locked-annual");
    let offline = |p: PoolId, days: u64| Req::CreateOffline {
        org: org(),
        pool: p,
        machine: m(&format!("air{v}")),
        expires: day(days),
    };
    o.ok(offline(nl, 10), "OfflineCreated").await;
    o.ok(Req::ListOffline { org: org() }, "Offline").await;
    let id = owner.list_offline(&org()).await.unwrap().pop().unwrap().id;
    o.refused(Req::RevokeOffline { org: org(), license: id.clone() }, as_seen(v, code::OFFLINE_IRREVOCABLE)).await;
    let transfer = Req::TransferOffline { org: org(), license: id, machine: m("elsewhere") };
    o.refused(transfer, as_seen(v, code::OFFLINE_IRREVOCABLE)).await;
    o.refused(offline(PoolId::KRE_DEFAULT, 10), as_seen(v, code::OFFLINE_NOT_ALLOWED)).await;
    o.refused(offline(nl, 90), as_seen(v, code::EXPIRY_TOO_LATE)).await;
}

/// Requests of versions 2 to 5: answered on their versions, unknown
/// (`BAD_FRAME`) before.
async fn later_requests(o: &mut Raw, v: u16) {
    let machine = m(&format!("m{v}"));
    let checkout = Req::Checkout {
        org: org(),
        pool: PoolId::KRE_DEFAULT,
        machine: machine.clone(),
        nonce: Nonce(77 + v as u128),
        wait_ms: 0,
        labels: Labels::default(),
    };
    let list = Req::List { of: ListOf::Users { org: org() }, after: None, limit: 10 };
    if v < 3 {
        return o.refused(checkout, code::BAD_FRAME).await;
    }
    o.ok(Req::RegisterMachine { org: org(), pool: PoolId::KRE_DEFAULT, machine }, "Registered").await;
    let session = SessionId(o.ok(checkout, "Leased").await.session.unwrap());
    o.ok(Req::Label { session, labels: Labels::new([("job".into(), "x".into())]).unwrap() }, "Done").await;
    o.ok(Req::Release { session }, "Released").await;
    o.ok(Req::ListUserLimits { org: org(), pool: PoolId::KRE_DEFAULT }, "UserLimits").await;
    match v {
        3 => o.refused(list, code::BAD_FRAME).await,
        _ => drop(o.ok(list, "Page").await),
    }
    let ephemeral = Req::RegisterEphemeral { org: org(), pool: PoolId::KRE_DEFAULT, machine: m(&format!("m{v}")) };
    let uses = Req::List { of: ListOf::MachineUses { org: org() }, after: None, limit: 10 };
    let events = Req::Events { org: org(), after: 0, wait_ms: 0 };
    let hooks = Req::ListWebhooks { org: org() };
    if v < 5 {
        o.refused(ephemeral, code::BAD_FRAME).await;
        o.refused(uses, code::BAD_FRAME).await;
        o.refused(events, code::BAD_FRAME).await;
        return o.refused(hooks, code::BAD_FRAME).await;
    }
    o.ok(ephemeral, "Registered").await;
    o.ok(uses, "Page").await;
    o.ok(events, "Events").await;
    o.ok(hooks, "Webhooks").await;
}

/// A capped member's acquire: `USER_LIMIT` from version 4 on, the code
/// its document listed before.
async fn user_limit(o: &mut Raw, owner: &Client, v: u16) {
    let me =
        owner.list_users(&org()).await.unwrap().into_iter().find(|u| u.role == Role::Owner).unwrap().email.to_string();
    owner.set_user_limit(&org(), PoolId::KRE_DEFAULT, &me, Some(0)).await.unwrap();
    let acquire = Req::Acquire { org: org(), pool: PoolId::KRE_DEFAULT, machine: m("capped"), nonce: Nonce(5) };
    let register = Req::RegisterMachine { org: org(), pool: PoolId::KRE_DEFAULT, machine: m("capped") };
    o.ok(register, "Registered").await;
    o.refused(acquire, as_seen(v, code::USER_LIMIT)).await;
    owner.set_user_limit(&org(), PoolId::KRE_DEFAULT, &me, None).await.unwrap();
}

/// A checkout carrying a capped label: `LABEL_LIMIT` on version 5, the
/// nearest code its document listed before; the cap's requests are
/// version 5's alone.
async fn label_limit(o: &mut Raw, owner: &Client, v: u16) {
    let set = |max| Req::SetLabelLimit {
        org: org(),
        pool: PoolId::KRE_DEFAULT,
        key: "team".into(),
        value: "web".into(),
        max,
    };
    let list = Req::List { of: ListOf::LabelLimits { org: org(), pool: PoolId::KRE_DEFAULT }, after: None, limit: 10 };
    match v {
        1..=4 => {
            o.refused(set(Some(0)), code::BAD_FRAME).await;
            o.refused(list, code::BAD_FRAME).await;
            owner.set_label_limit((&org(), PoolId::KRE_DEFAULT), ("team", "web"), Some(0)).await.unwrap();
        }
        _ => {
            o.ok(set(Some(0)), "Done").await;
            o.ok(list, "Page").await;
        }
    }
    // Registered by `user_limit`.
    let machine = m("capped");
    let labels = Labels::new([("team".into(), "web".into())]).unwrap();
    let checkout =
        Req::Checkout { org: org(), pool: PoolId::KRE_DEFAULT, machine, nonce: Nonce(6), wait_ms: 0, labels };
    match v {
        1 | 2 => o.refused(checkout, code::BAD_FRAME).await,
        _ => o.refused(checkout, as_seen(v, code::LABEL_LIMIT)).await,
    }
    owner.set_label_limit((&org(), PoolId::KRE_DEFAULT), ("team", "web"), None).await.unwrap();
}

/// The audit trail: every action the version's document listed, the later
/// ones as the nearest it knew, their detail naming what happened.
async fn audit(o: &mut Raw, v: u16) {
    let trail = o.ok(Req::Audit { org: org() }, "AuditLog").await.audit;
    let seen = |real: &str| -> Vec<&str> {
        let prefix = format!("{real}: ");
        let mapped = trail.iter().filter(|(_, d)| d.starts_with(&prefix)).map(|(a, _)| a.as_str());
        let raw = trail.iter().filter(|(a, d)| norm(a) == real && !d.starts_with(&prefix)).map(|(a, _)| a.as_str());
        mapped.chain(raw).collect()
    };
    let kinds = |real: &str| -> Vec<String> {
        let mut v: Vec<String> = seen(real).into_iter().map(norm).collect();
        v.dedup();
        v
    };
    let (killed, removed, subscription, cap) = match v {
        1 => ("machine_removed", "key_revoked", "quota_changed", "quota_changed"),
        2 | 3 => ("session_killed", "user_removed", "subscription_changed", "quota_changed"),
        _ => ("session_killed", "user_removed", "subscription_changed", "user_limit_set"),
    };
    assert_eq!(kinds("session_killed"), [killed], "{trail:?}");
    assert_eq!(kinds("user_removed"), [removed], "{trail:?}");
    assert_eq!(kinds("subscription_changed"), [subscription], "{trail:?}");
    assert_eq!(kinds("user_limit_set"), [cap], "{trail:?}");
    let (expired, policy) = match v {
        1..=4 => ("machine_removed", "quota_changed"),
        _ => ("machine_expired", "policy_changed"),
    };
    assert_eq!(kinds("machine_expired"), [expired], "{trail:?}");
    assert_eq!(kinds("policy_changed"), [policy], "{trail:?}");
    let label = if v < 5 { "quota_changed" } else { "label_limit_set" };
    assert_eq!(kinds("label_limit_set"), [label], "{trail:?}");
    let (reserved, alerts) = match v {
        1..=5 => ("quota_changed", "quota_changed"),
        _ => ("seats_reserved", "alerts_set"),
    };
    assert_eq!(kinds("seats_reserved"), [reserved], "{trail:?}");
    assert_eq!(kinds("alerts_set"), [alerts], "{trail:?}");
}

/// `SessionKilled` (a fixture's Debug name) as `session_killed`.
fn norm(action: &str) -> String {
    if action.contains('_') {
        return action.to_string();
    }
    let mut out = String::new();
    for (i, c) in action.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The requests version 6 added (`RedeliverWebhook`, `SetPoolAlerts`) are
/// unknown variants (`BAD_FRAME`) on streams of versions 1 to 5, as their
/// documents listed no such request; a version 6 stream has them answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_6_requests_are_unknown_on_older_streams() {
    let b = start(Duration::from_secs(30)).await;
    b.quota(2).await;
    let redeliver = || Req::RedeliverWebhook { org: org(), id: "0123456789ab".into(), event: 1 };
    let alerts = || Req::SetPoolAlerts {
        org: org(),
        pool: PoolId::KRE_DEFAULT,
        queue_alert_ms: Some(60_000),
        busy_minutes: None,
    };
    for v in 1..=5 {
        let mut o = Raw::open(&b, &b.owner, v).await;
        o.refused(redeliver(), code::BAD_FRAME).await;
        o.refused(alerts(), code::BAD_FRAME).await;
        // The stream goes on: a request of its version is answered.
        o.ok(Req::Status { org: Some(org()) }, if v >= 3 { "Pools" } else { "Status" }).await;
    }
    // `NOT_FOUND` (wire number 7): no such webhook, but the request is known.
    let mut o = Raw::open(&b, &b.owner, 6).await;
    o.refused(redeliver(), 7).await;
    o.ok(alerts(), "Done").await;
}
