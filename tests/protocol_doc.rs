//! docs/PROTOCOL.md is normative: its worked examples and error table must
//! match what the code puts on the wire.

use license_broker::core::{ErrorCode, MachineId, OrgName, PoolId, SessionId};
use license_broker::proto::*;

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
                nonce: 300,
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
    ];
    for e in examples {
        assert!(DOC.contains(&format!("    {e}\n")), "PROTOCOL.md lacks the example {e}");
    }
}

#[test]
fn error_table_lists_every_code_with_its_wire_number() {
    for (n, code) in ErrorCode::ALL.iter().enumerate() {
        let bytes = postcard::to_allocvec(code).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&(n as u32)).unwrap(), "{code} is variant {n}");
        assert!(DOC.contains(&format!("| {n} | {} |", code.name())), "PROTOCOL.md lacks row {n} {code}");
    }
}
