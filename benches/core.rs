//! Core benchmarks: admission, renewal and expiry, in process, no I/O.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use license_broker::core::{Broker, Config, Email, KeyHash, MachineId, Millis, Nonce, OrgName, PoolId, Principal};

const T0: u64 = 1_795_000_000_000;

struct World {
    broker: Broker,
    owner: Principal,
    pool: license_broker::sync::Arc<license_broker::core::pool::Pool>,
    machine: MachineId,
}

fn world(quota: u32) -> World {
    let broker = Broker::new(Config { lease_ttl: Duration::from_secs(30), shard_bits: 6 });
    let email = Email::new("owner@default").unwrap();
    broker.apply(&broker.plan_bootstrap(KeyHash([1; 32]), &email, KeyHash([2; 32]), Millis(T0)));
    let op = broker.authenticate(&KeyHash([1; 32])).unwrap();
    let owner = broker.authenticate(&KeyHash([2; 32])).unwrap();
    let org = OrgName::new("default").unwrap();
    broker.apply(&broker.plan_set_pool(&op, &org, PoolId::KRE_DEFAULT, quota, Millis(T0)).unwrap());
    let machine = MachineId::new("m").unwrap();
    let (_, c) = broker.register_machine(&owner, &org, PoolId::KRE_DEFAULT, &machine, Millis(T0)).unwrap();
    broker.apply(&[c.unwrap()]);
    let pool = broker.member_pool(&owner, &org, PoolId::KRE_DEFAULT).unwrap();
    World { broker, owner, pool, machine }
}

fn pair(w: &World, nonce: u128) {
    let lease = w.broker.acquire_on(&w.owner, &w.pool, w.machine.clone(), Nonce(nonce), 1, Millis(T0), 0).unwrap();
    w.broker.release(&w.owner, black_box(lease.session)).unwrap();
}

fn admission(c: &mut Criterion) {
    let w = world(1_000_000);
    let mut n = 0u128;
    c.bench_function("acquire+release uncontended", |b| {
        b.iter(|| {
            n += 1;
            pair(&w, n)
        })
    });

    let w = Arc::new(world(1_000_000));
    c.bench_function("acquire+release contended, 2 threads, one pool", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u128 {
                    let w = w.clone();
                    s.spawn(move || {
                        for i in 0..iters.div_ceil(2) as u128 {
                            pair(&w, (t << 64) | i);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
}

fn renewal(c: &mut Criterion) {
    let w = world(10_000);
    let sessions: Vec<_> = (0..10_000u128)
        .map(|n| w.broker.acquire_on(&w.owner, &w.pool, w.machine.clone(), Nonce(n), 1, Millis(T0), 0).unwrap().session)
        .collect();
    let mut i = 0usize;
    let mut now = T0;
    c.bench_function("heartbeat renew (10k live)", |b| {
        b.iter(|| {
            i = (i + 1) % sessions.len();
            now += 1;
            w.broker.renew(&w.owner, sessions[i], Millis(now)).unwrap()
        })
    });
}

fn expiry(c: &mut Criterion) {
    let live = 1_000_000u64;
    let w = world(2_000_000);
    // One deadline per millisecond over 1000 s; each run expires the next
    // millisecond's lease while a million stay live.
    for n in 0..live {
        let at = Millis(T0 + n / 1000 * 1000 + n % 1000);
        w.broker.acquire_on(&w.owner, &w.pool, w.machine.clone(), Nonce(n.into()), 1, at, 0).unwrap();
    }
    let mut cursor = T0 + 30_000;
    let mut refill = live as u128;
    c.bench_function("expire the next due lease with 1,000,000 live", |b| {
        b.iter_batched(
            || {
                // Keep the table at a million: re-admit what the last run expired.
                while w.broker.live_sessions() < live as usize {
                    refill += 1;
                    let _ =
                        w.broker.acquire_on(&w.owner, &w.pool, w.machine.clone(), Nonce(refill), 1, Millis(cursor), 0);
                }
                cursor += 1;
                Millis(cursor)
            },
            |now| w.broker.expire(now).len(),
            BatchSize::PerIteration,
        )
    });
    c.bench_function("next deadline with 1,000,000 live leases", |b| b.iter(|| w.broker.next_deadline()));
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = admission, renewal, expiry
}
criterion_main!(benches);
