//! The core in random states: a byte string drives acquires, re-attaches,
//! renewals, releases, kills, quota changes, ceiling raises and lowerings,
//! expiry and a restart's hold on a broker with durable ceilings on (as
//! shipped). After every step the seats in use cover the live sessions and
//! exceed them by no more than the seats the hold took; no acquire is
//! admitted at or over the quota; nothing panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use license_broker::core::testkit::{t, Fixture};
use license_broker::core::{ConnId, Error, Nonce, SessionId};

fuzz_target!(|data: &[u8]| {
    let f = Fixture::with_ceilings(4, 1, Duration::from_secs(30));
    if f.register("m").is_err() {
        return;
    }
    let mut quota = 4u32;
    let mut now = 0u64;
    let mut live: Vec<SessionId> = Vec::new();
    let mut held = false;
    // Seats in use beyond the live sessions: only what a hold took.
    let mut extra_max = 0u32;
    for op in data.chunks(2) {
        let (kind, arg) = (op[0] % 10, *op.get(1).unwrap_or(&0));
        now += u64::from(arg) * 100;
        let at = t(now);
        match kind {
            0 | 1 => {
                match f.acquire("m", u128::from(arg % 16), 1, at) {
                    Ok(lease) => {
                        // (An expired session of the same nonce may have been
                        // ended to make room, so compare after, not before.)
                        let after = f.in_use();
                        assert!(lease.reattached || after <= quota, "admitted up to {after} of {quota}");
                        if !lease.reattached {
                            live.push(lease.session);
                        }
                    }
                    Err(Error::CeilingReached | Error::QuotaExceeded { .. }) => {}
                    Err(e) => panic!("acquire: {e}"),
                }
            }
            2 => {
                let target = f.target("m");
                if let Ok(lease) =
                    f.broker.reattach(&f.owner, &target, Nonce(u128::from(arg % 16)), ConnId(2), at, true)
                {
                    if !lease.reattached {
                        live.push(lease.session);
                    }
                }
            }
            3 if !live.is_empty() => {
                let s = live.remove(usize::from(arg) % live.len());
                let _ = f.broker.release(&f.owner, s);
            }
            4 if !live.is_empty() => {
                let s = live[usize::from(arg) % live.len()];
                let _ = f.broker.renew(&f.owner, s, at);
            }
            5 => {
                let _ = f.raise();
            }
            6 => {
                let _ = f.broker.lower_ceilings(arg % 2 == 0);
            }
            7 => {
                quota = u32::from(arg % 8);
                f.set_quota(license_broker::core::PoolId::KRE_DEFAULT, quota);
            }
            8 => {
                let _ = f.broker.expire(at);
            }
            9 if !held => {
                // A restart's hold on top of whatever is live (as after a crash).
                if let Some(hold) = f.broker.hold_reserves(at) {
                    held = true;
                    extra_max = hold.seats as u32;
                }
            }
            _ => {}
        }
        let (in_use, sessions) = (f.in_use(), f.broker.live_sessions() as u32);
        assert!(in_use >= sessions, "{sessions} sessions on {in_use} seats");
        assert!(in_use - sessions <= extra_max, "{in_use} seats for {sessions} sessions, hold {extra_max}");
    }
});
