//! Core benchmarks: admission, renewal and expiry, in process, no I/O.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use license_broker::core::testkit::{t, Fixture};
use license_broker::core::{ConnId, Lease, Millis, Nonce, Ticket};

/// The shared core fixture, 64 shards as the broker runs, machine `m`
/// registered, and a ticket resolved once as a stream's cache would hold it.
struct World {
    f: Fixture,
    ticket: Ticket,
}

impl std::ops::Deref for World {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.f
    }
}

fn world(quota: u32) -> World {
    let f = Fixture::new(quota, 6, Duration::from_secs(30));
    f.register("m").unwrap();
    let ticket = f.broker.resolve(&f.owner, &f.target("m")).unwrap();
    World { f, ticket }
}

fn admit(w: &World, nonce: u128, at: Millis) -> license_broker::core::Result<Lease> {
    w.broker.admit(&w.ticket, Nonce(nonce), ConnId(1), at)
}

fn pair(w: &World, nonce: u128) {
    let lease = admit(w, nonce, t(0)).unwrap();
    w.broker.release(&w.owner, black_box(lease.session), t(0)).unwrap();
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

    // The same pair in a pool with a machine policy: each session holds
    // its machine's tenure (what a pool without one never pays).
    let w = world(1_000_000);
    w.set_policy(Some(Duration::from_secs(7 * 86_400)), false, t(0));
    let w = World { ticket: w.broker.resolve(&w.owner, &w.target("m")).unwrap(), f: w.f };
    c.bench_function("acquire+release uncontended, machine tracked (idle policy)", |b| {
        b.iter(|| {
            n += 1;
            pair(&w, n)
        })
    });

    labelled(c);
    reserved(c);

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

/// A labelled checkout's pair (a ticket resolved per acquire, as
/// `Checkout` does) in a pool with no label cap, then with 1 and 10 caps
/// (one matching the session's label): what label caps cost an admission.
fn labelled(c: &mut Criterion) {
    let labels = license_broker::value::Labels::new([("team".into(), "web".into())]).unwrap();
    for caps in [0, 1, 10] {
        let w = world(1_000_000);
        for i in 0..caps {
            let value = if i == 0 { "web".to_string() } else { format!("team{i}") };
            let plan = w.broker.plan_set_label_limit(
                &w.owner,
                &w.org,
                license_broker::core::PoolId::KRE_DEFAULT,
                ("team".into(), value),
                Some(u32::MAX),
                t(0),
            );
            w.apply(plan);
        }
        let mut n = 0u128;
        c.bench_function(&format!("labelled acquire+release, {caps} label caps"), |b| {
            b.iter(|| {
                n += 1;
                let who = license_broker::core::Claimant { nonce: Nonce(n), conn: ConnId(1), labels: labels.clone() };
                let lease = w.broker.acquire_as(&w.owner, &w.target("m"), &who, t(0)).unwrap();
                w.broker.release(&w.owner, black_box(lease.session), t(0)).unwrap();
            })
        });
    }
}

/// A checkout's pair in a pool with 10 reservations and 10 label caps
/// (one of each matching `team=web`): labelled (on a reserved seat), and
/// unlabelled (a shared seat, past the reservations' held seats). Beside
/// `labelled`'s pool without either: what reservations cost an admission.
fn reserved(c: &mut Criterion) {
    use license_broker::core::PoolId;
    let w = world(1_000_000);
    for i in 0..10 {
        let value = if i == 0 { "web".to_string() } else { format!("team{i}") };
        let label = ("team".to_string(), value);
        w.apply(w.broker.plan_set_reservation(&w.owner, (&w.org, PoolId::KRE_DEFAULT), label.clone(), 100, t(0)));
        w.apply(w.broker.plan_set_label_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, label, Some(u32::MAX), t(0)));
    }
    for (name, pairs) in [("labelled", vec![("team".to_string(), "web".to_string())]), ("unlabelled", vec![])] {
        let labels = license_broker::value::Labels::new(pairs).unwrap();
        let mut n = 0u128;
        c.bench_function(&format!("{name} acquire+release, 10 reservations and 10 label caps"), |b| {
            b.iter(|| {
                n += 1;
                let who = license_broker::core::Claimant { nonce: Nonce(n), conn: ConnId(1), labels: labels.clone() };
                let lease = w.broker.acquire_as(&w.owner, &w.target("m"), &who, t(0)).unwrap();
                w.broker.release(&w.owner, black_box(lease.session), t(0)).unwrap();
            })
        });
    }
}

fn renewal(c: &mut Criterion) {
    let w = world(10_000);
    let sessions: Vec<_> = (0..10_000u128).map(|n| admit(&w, n, t(0)).unwrap().session).collect();
    let mut i = 0usize;
    let mut now = t(0).0;
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
        let at = t(n / 1000 * 1000 + n % 1000);
        admit(&w, n.into(), at).unwrap();
    }
    let mut cursor = t(30_000).0;
    let mut refill = live as u128;
    c.bench_function("expire the next due lease with 1,000,000 live", |b| {
        b.iter_batched(
            || {
                // Keep the table at a million: re-admit what the last run expired.
                while w.broker.live_sessions() < live as usize {
                    refill += 1;
                    let _ = admit(&w, refill, Millis(cursor));
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

/// The machine task's look (a pass and when to look next) with 100,000
/// tracked machines and none due: an idle limit of an hour, every machine
/// used at its registration.
fn machines(c: &mut Criterion) {
    let n = 100_000u32;
    let f = Fixture::new(n + 1, 6, Duration::from_secs(30));
    f.set_policy(Some(Duration::from_secs(3_600)), false, t(0));
    for i in 0..n {
        f.register(&format!("m{i}")).unwrap();
    }
    c.bench_function("machine task's look, 100,000 tracked machines, none due", |b| {
        b.iter(|| (f.broker.plan_machine_expiry(t(1_000)).is_none(), f.broker.next_machine_due()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = admission, renewal, expiry, machines
}
criterion_main!(benches);
