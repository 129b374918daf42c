//! docs/PROTOCOL.md is normative: its worked examples and error table must
//! match what the code puts on the wire.

use license_broker::proto::ErrorCode;
use license_broker::proto::*;
use license_broker::value::{MachineId, Nonce, OrgName, PoolId, SessionId};

const DOC: &str = include_str!("../docs/PROTOCOL.md");

fn hex<T: serde::Serialize>(msg: &T) -> String {
    let mut b = Vec::new();
    encode(msg, &mut b);
    b.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[test]
fn worked_examples_match_the_encoder() {
    let examples = [
        hex(&ClientFrame::Hello(Hello { version: 1, api_key: "lbk_ab".into(), client: "x".into() })),
        hex(&ClientFrame::Request(Request {
            id: 1,
            body: Req::Acquire {
                org: OrgName::new("default").unwrap(),
                pool: PoolId::KRE_DEFAULT,
                machine: MachineId::new("m1").unwrap(),
                nonce: Nonce(300),
            },
        })),
        hex(&ServerFrame::Response(Response {
            id: 1,
            outcome: Outcome::Ok(Resp::Admitted {
                session: SessionId(0x62),
                deadline_ms: 1795823839671,
                ttl_ms: 30000,
                reattached: false,
            }),
        })),
        hex(&ServerFrame::Response(Response {
            id: 2,
            outcome: Outcome::Err(WireError::new(ErrorCode::QuotaExceeded, "full")),
        })),
        hex(&ClientFrame::Request(Request { id: 3, body: Req::Renew { session: SessionId(0x62) } })),
        hex(&ClientFrame::Hello(Hello { version: 2, api_key: "lbk_ab".into(), client: "x".into() })),
        hex(&ServerFrame::Response(Response {
            id: 1,
            outcome: Outcome::Ok(Resp::Leased {
                session: SessionId(0x62),
                deadline_ms: 1795823839671,
                ttl_ms: 30000,
                reattached: false,
                token: SessionToken([0xaa; 32]),
            }),
        })),
        hex(&ClientFrame::Request(Request {
            id: 4,
            body: Req::Reattach {
                org: OrgName::new("default").unwrap(),
                pool: PoolId::KRE_DEFAULT,
                machine: MachineId::new("m1").unwrap(),
                nonce: Nonce(300),
                token: SessionToken([0xaa; 32]),
            },
        })),
    ];
    for e in examples {
        assert!(DOC.contains(&format!("    {e}\n")), "PROTOCOL.md lacks the example {e}");
    }
}

#[test]
fn a_session_token_is_a_32_byte_string() {
    let bytes = postcard::to_allocvec(&SessionToken([7; 32])).unwrap();
    assert_eq!(bytes[0], 32);
    assert_eq!(bytes[1..], [7; 32]);
    assert!(DOC.contains("| `SessionToken` | Bytes | exactly 32 bytes"));
    // Any other length is refused.
    let mut short = vec![31u8];
    short.extend([7; 31]);
    assert!(postcard::from_bytes::<SessionToken>(&short).is_err());
}

#[test]
fn error_table_lists_every_code_with_its_wire_number() {
    for (n, code) in ErrorCode::ALL.iter().enumerate() {
        let bytes = postcard::to_allocvec(code).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&(n as u32)).unwrap(), "{code} is variant {n}");
        assert!(DOC.contains(&format!("| {n} | {} |", code.name())), "PROTOCOL.md lacks row {n} {code}");
    }
}

/// The variant index postcard writes first for `msg`.
fn variant<T: serde::Serialize>(msg: &T) -> u32 {
    let bytes = postcard::to_allocvec(msg).unwrap();
    postcard::take_from_bytes::<u32>(&bytes).unwrap().0
}

#[test]
fn every_request_and_response_variant_is_documented_with_its_index() {
    use license_broker::value::{MachineId, Role};
    let org = OrgName::new("o").unwrap();
    let m = MachineId::new("m").unwrap();
    let p = PoolId::KRE_DEFAULT;
    let s = SessionId(1);
    let reqs: Vec<(&str, Req)> = vec![
        ("RegisterMachine", Req::RegisterMachine { org: org.clone(), pool: p, machine: m.clone() }),
        ("Acquire", Req::Acquire { org: org.clone(), pool: p, machine: m.clone(), nonce: Nonce(1) }),
        ("Renew", Req::Renew { session: s }),
        ("Release", Req::Release { session: s }),
        ("Status", Req::Status { org: None }),
        ("CreateOrg", Req::CreateOrg { name: org.clone(), subscription_end: "x".into(), owner: "x".into() }),
        ("SetPool", Req::SetPool { org: org.clone(), pool: p, quota: 1 }),
        ("AddUser", Req::AddUser { org: org.clone(), email: "x".into(), role: Role::User }),
        ("CreateKey", Req::CreateKey { org: org.clone(), email: "x".into() }),
        ("RevokeKey", Req::RevokeKey { org: org.clone(), key: "x".into() }),
        ("ListKeys", Req::ListKeys { org: org.clone() }),
        ("ListUsers", Req::ListUsers { org: org.clone() }),
        ("ListMachines", Req::ListMachines { org: org.clone() }),
        ("RemoveMachine", Req::RemoveMachine { org: org.clone(), pool: None, machine: m.clone() }),
        ("ListSessions", Req::ListSessions { org: org.clone() }),
        ("KillSession", Req::KillSession { org: org.clone(), session: s }),
        ("Grant", Req::Grant { org: org.clone(), pool: p, email: "x".into() }),
        ("RevokeGrant", Req::RevokeGrant { org: org.clone(), pool: p, email: "x".into() }),
        ("ListGrants", Req::ListGrants { org: org.clone(), pool: None }),
        ("Activate", Req::Activate { org: org.clone(), pool: p, machine: m.clone(), nonce: Nonce(1) }),
        ("CreateOffline", Req::CreateOffline { org: org.clone(), pool: p, machine: m.clone(), expires: "x".into() }),
        ("ListOffline", Req::ListOffline { org: org.clone() }),
        ("RevokeOffline", Req::RevokeOffline { org: org.clone(), license: "x".into() }),
        ("TransferOffline", Req::TransferOffline { org: org.clone(), license: "x".into(), machine: m.clone() }),
        ("OfflinePublicKey", Req::OfflinePublicKey),
        ("Audit", Req::Audit { org: org.clone() }),
        ("ListOrgs", Req::ListOrgs),
        ("RemoveUser", Req::RemoveUser { org: org.clone(), email: "x".into() }),
        ("SetSubscription", Req::SetSubscription { org: org.clone(), subscription_end: "x".into() }),
        (
            "Reattach",
            Req::Reattach {
                org: org.clone(),
                pool: p,
                machine: m.clone(),
                nonce: Nonce(1),
                token: SessionToken([0; 32]),
            },
        ),
        (
            "Checkout",
            Req::Checkout {
                org: org.clone(),
                pool: p,
                machine: m.clone(),
                nonce: Nonce(1),
                wait_ms: 1,
                labels: license_broker::value::Labels::default(),
            },
        ),
        ("Label", Req::Label { session: s, labels: license_broker::value::Labels::default() }),
        ("SetUserLimit", Req::SetUserLimit { org: org.clone(), pool: p, email: "x".into(), max: None }),
        ("ListUserLimits", Req::ListUserLimits { org: org.clone(), pool: p }),
        ("List", Req::List { of: ListOf::Orgs, after: None, limit: 0 }),
        ("WhatIf", Req::WhatIf { org: org.clone(), pool: p, from_ms: 0, to_ms: 1, seats_min: 1, seats_max: 2 }),
        ("Nodes", Req::Nodes),
        ("Route", Req::Route { org: org.clone() }),
        ("Check", Req::Check { org: org.clone(), pool: p, machine: m.clone() }),
        ("Events", Req::Events { org: org.clone(), after: 0, wait_ms: 0 }),
        ("AddWebhook", Req::AddWebhook { org: org.clone(), url: "x".into(), events: vec![] }),
        ("ListWebhooks", Req::ListWebhooks { org: org.clone() }),
        ("RemoveWebhook", Req::RemoveWebhook { org: org.clone(), id: "x".into() }),
        ("RotateWebhookSecret", Req::RotateWebhookSecret { org: org.clone(), id: "x".into() }),
        ("WebhookDeliveries", Req::WebhookDeliveries { org: org.clone(), id: "x".into() }),
        ("RedeliverWebhook", Req::RedeliverWebhook { org: org.clone(), id: "x".into(), event: 1 }),
        ("SetPoolAlerts", Req::SetPoolAlerts { org: org.clone(), pool: p, queue_alert_ms: None, busy_minutes: None }),
        (
            "ReattachLabelled",
            Req::ReattachLabelled {
                org: org.clone(),
                pool: p,
                machine: m.clone(),
                nonce: Nonce(1),
                token: SessionToken([0; 32]),
                labels: license_broker::value::Labels::default(),
            },
        ),
    ];
    for (name, req) in &reqs {
        let n = variant(req);
        let line = format!("{n:>4}: {name}");
        let alt = format!("{n}: {name}");
        assert!(DOC.contains(&line) || DOC.contains(&alt), "PROTOCOL.md lacks `{alt}`");
    }
    let resps: Vec<(&str, Resp)> = vec![
        ("Registered", Resp::Registered { new: true }),
        ("Admitted", Resp::Admitted { session: s, deadline_ms: 0, ttl_ms: 0, reattached: false }),
        ("Renewed", Resp::Renewed { deadline_ms: 0 }),
        ("Released", Resp::Released),
        ("Status", Resp::Status(vec![])),
        ("OrgCreated", Resp::OrgCreated { owner_key: "x".into() }),
        ("Done", Resp::Done),
        ("KeyCreated", Resp::KeyCreated { key: "x".into(), id: "x".into() }),
        ("Keys", Resp::Keys(vec![])),
        ("Users", Resp::Users(vec![])),
        ("Machines", Resp::Machines(vec![])),
        ("Sessions", Resp::Sessions(vec![])),
        ("Killed", Resp::Killed),
        ("Grants", Resp::Grants(vec![])),
        ("Activated", Resp::Activated { machine: m.clone(), session: None, deadline_ms: 0, ttl_ms: 0, already: false }),
        ("OfflineCreated", Resp::OfflineCreated { file_name: "x".into(), content: "x".into() }),
        ("Offline", Resp::Offline(vec![])),
        ("PublicKey", Resp::PublicKey { pem: "x".into() }),
        ("AuditLog", Resp::AuditLog(vec![])),
        ("Orgs", Resp::Orgs(vec![])),
        (
            "Leased",
            Resp::Leased { session: s, deadline_ms: 0, ttl_ms: 0, reattached: false, token: SessionToken([0; 32]) },
        ),
        ("Extended", Resp::Extended { deadline_ms: 0, token: SessionToken([0; 32]) }),
        ("Pools", Resp::Pools(vec![])),
        ("SessionViews", Resp::SessionViews(vec![])),
        ("UserLimits", Resp::UserLimits(vec![])),
        ("Page", Resp::Page { items: PageItems::Orgs(vec![]), next: None }),
        ("Nodes", Resp::Nodes(vec![])),
        ("Route", Resp::Route { server: String::new() }),
        ("Events", Resp::Events { events: vec![], next: 0 }),
        ("WebhookAdded", Resp::WebhookAdded { id: "x".into(), secret: "x".into() }),
        ("Webhooks", Resp::Webhooks(vec![])),
        ("Deliveries", Resp::Deliveries(vec![])),
        (
            "WhatIf",
            Resp::WhatIf(license_broker::proto::WhatIfReport {
                sessions: 0,
                refusals: 0,
                median_ms: 0,
                truncated: false,
                outcomes: vec![],
            }),
        ),
    ];
    for (name, resp) in &resps {
        let n = variant(resp);
        let line = format!("{n:>4}: {name}");
        let alt = format!("{n}: {name}");
        assert!(DOC.contains(&line) || DOC.contains(&alt), "PROTOCOL.md lacks `{alt}`");
    }
    let o = || org.clone();
    let lists: Vec<(&str, ListOf, PageItems)> = vec![
        ("Status", ListOf::Status { org: None }, PageItems::Pools(vec![])),
        ("Sessions", ListOf::Sessions { org: o() }, PageItems::Sessions(vec![])),
        ("Machines", ListOf::Machines { org: o() }, PageItems::Machines(vec![])),
        ("Users", ListOf::Users { org: o() }, PageItems::Users(vec![])),
        ("Keys", ListOf::Keys { org: o() }, PageItems::Keys(vec![])),
        ("Grants", ListOf::Grants { org: o(), pool: None }, PageItems::Grants(vec![])),
        ("Offline", ListOf::Offline { org: o() }, PageItems::Offline(vec![])),
        ("Audit", ListOf::Audit { org: o() }, PageItems::Audit(vec![])),
        ("Orgs", ListOf::Orgs, PageItems::Orgs(vec![])),
        ("UserLimits", ListOf::UserLimits { org: o(), pool: p }, PageItems::UserLimits(vec![])),
        (
            "Usage",
            ListOf::Usage { org: o(), pool: None, from_ms: 0, to_ms: 1, step_ms: 60_000 },
            PageItems::Usage(vec![]),
        ),
        ("Ended", ListOf::Ended { org: o(), from_ms: 0, to_ms: 1 }, PageItems::Ended(vec![])),
    ];
    let section = |name: &str| {
        let start = DOC.find(&format!("{name} = enum {{")).unwrap_or_else(|| panic!("no {name} in PROTOCOL.md"));
        &DOC[start..start + DOC[start..].find("\n}").unwrap()]
    };
    for (name, of, items) in &lists {
        // The same index in both enums: a page answers with its list's items.
        assert_eq!(variant(of), variant(items), "{name}");
        let line = format!("{:>4}: {name}", variant(of));
        assert!(section("ListOf").contains(&line), "ListOf lacks `{line}`");
        let item_name = if *name == "Status" { "Pools" } else { name };
        let line = format!("{:>4}: {item_name}", variant(items));
        assert!(section("PageItems").contains(&line), "PageItems lacks `{line}`");
    }
    let notices: Vec<(&str, Notice)> = vec![
        ("SessionEnded", Notice::SessionEnded { session: s, reason: license_broker::proto::EndReason::Expired }),
        ("Draining", Notice::Draining { grace_ms: 0 }),
        ("Queued", Notice::Queued { nonce: Nonce(1), position: 1 }),
    ];
    for (name, notice) in &notices {
        let n = variant(notice);
        assert!(DOC.contains(&format!("  {n}: {name} ")), "PROTOCOL.md lacks notice `{n}: {name}`");
    }
}
