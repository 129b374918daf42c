//! Codec benchmarks: encode and decode of each message on the hot path.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use license_broker::proto::PoolStatus;
use license_broker::proto::*;
use license_broker::value::{MachineId, OrgName, PoolId, SessionId};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn pair<T: Serialize + DeserializeOwned>(c: &mut Criterion, name: &str, msg: T) {
    let mut buf = Vec::with_capacity(256);
    c.bench_function(&format!("encode {name}"), |b| {
        b.iter(|| {
            buf.clear();
            encode(black_box(&msg), &mut buf);
            buf.len()
        })
    });
    buf.clear();
    encode(&msg, &mut buf);
    let body = buf[4..].to_vec();
    c.bench_function(&format!("decode {name}"), |b| b.iter(|| postcard::from_bytes::<T>(black_box(&body)).is_ok()));
}

fn messages(c: &mut Criterion) {
    let org = OrgName::new("acme-ci").unwrap();
    let machine = MachineId::new("3f2a9c0d5e7b41a8b6c2d9e0f1a2b3c4").unwrap();
    let session = SessionId(0x0000_0001_0000_3f07);
    let req = |body| ClientFrame::Request(Request { id: 123_456, body });
    let resp = |r| ServerFrame::Response(Response { id: 123_456, outcome: Outcome::Ok(r) });
    pair(
        c,
        "Hello",
        ClientFrame::Hello(Hello {
            version: VERSION,
            api_key: format!("lbk_{}", "ab".repeat(32)),
            client: "license-broker/0.1.0".into(),
        }),
    );
    pair(
        c,
        "Acquire",
        req(Req::Acquire {
            org: org.clone(),
            pool: PoolId::KRE_DEFAULT,
            machine: machine.clone(),
            nonce: license_broker::value::Nonce(u128::MAX / 3),
        }),
    );
    pair(c, "Renew", req(Req::Renew { session }));
    pair(c, "Release", req(Req::Release { session }));
    pair(c, "RegisterMachine", req(Req::RegisterMachine { org: org.clone(), pool: PoolId::KRE_DEFAULT, machine }));
    pair(
        c,
        "Admitted",
        resp(Resp::Admitted { session, deadline_ms: 1_795_823_839_671, ttl_ms: 30_000, reattached: false }),
    );
    pair(c, "Renewed", resp(Resp::Renewed { deadline_ms: 1_795_823_839_671 }));
    pair(c, "Released", resp(Resp::Released));
    pair(
        c,
        "Error",
        ServerFrame::Response(Response {
            id: 1,
            outcome: Outcome::Err(WireError::new(
                license_broker::proto::ErrorCode::QuotaExceeded,
                "quota exceeded: all 3 licenses of the pool are in use",
            )),
        }),
    );
    let status = PoolStatus {
        org,
        pool: PoolId::KRE_DEFAULT,
        quota: 100,
        in_use: 42,
        machines: 17,
        admitted: 1_000_000,
        rejected: 12,
        grants: 0,
        activations: 0,
        offline: 0,
    };
    pair(c, "Status (4 pools)", resp(Resp::Status(vec![status; 4])));
    pair(c, "Notice", Notice::SessionEnded { session, reason: license_broker::proto::EndReason::Expired });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = messages
}
criterion_main!(benches);
