//! The core in random states: a byte string drives acquires, re-attaches,
//! renewals, releases, kills, quota changes, ceiling raises and lowerings,
//! expiry, a restart's hold, and the wait queue (joining, leaving,
//! claiming or dropping a granted seat) on a broker with durable ceilings
//! on (as shipped). After every step the seats in use cover the live
//! sessions and exceed them by no more than the seats the hold took plus
//! the seats granted to waiters and not yet claimed; no acquire is admitted
//! at or over the quota; paging through the sessions lists each live one
//! exactly once; the seat time the broker reports is exactly the integral
//! of the live sessions over time, and the minutes harvested for the
//! history never add up to more; nothing panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use license_broker::core::testkit::{t, Fixture, Inbox};
use license_broker::core::{ConnId, Error, Nonce, Place, SessionId, Waited};

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
    let mut waiters: Vec<(u128, Inbox, Place)> = Vec::new();
    // The integral of live sessions over time, from the steps (sessions
    // change only at a step's instant), and what harvests handed over.
    let (mut expected_ms, mut sessions_before, mut harvested_ms) = (0u64, 0u64, 0u64);
    for op in data.chunks(2) {
        let (kind, arg) = (op[0] % 15, *op.get(1).unwrap_or(&0));
        let step = u64::from(arg) * 100;
        now += step;
        expected_ms += sessions_before * step;
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
                let _ = f.broker.release(&f.owner, s, at);
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
            10 => {
                let nonce = 100 + u128::from(arg % 16);
                match f.wait("m", nonce, 3, at) {
                    (Ok(Waited::Leased(lease)), _) if !lease.reattached => live.push(lease.session),
                    (Ok(Waited::Leased(_)), _) => {}
                    (Ok(Waited::Queued(place)), inbox) => waiters.push((nonce, inbox, place)),
                    (Err(Error::CeilingReached | Error::QuotaExceeded { .. }), _) => {}
                    (Err(e), _) => panic!("wait: {e}"),
                }
            }
            11 if !waiters.is_empty() => {
                // A waiter gives up (its deadline, its connection), as the shell's guard does.
                let (_, inbox, place) = waiters.remove(usize::from(arg) % waiters.len());
                if !place.leave() {
                    drop(inbox.close());
                }
            }
            12 if !waiters.is_empty() => {
                let i = usize::from(arg) % waiters.len();
                if let Some(grant) = waiters[i].1.take() {
                    let (nonce, _, _) = waiters.remove(i);
                    if let Ok(lease) = f.claim("m", nonce, 3, at, grant) {
                        if !lease.reattached {
                            live.push(lease.session);
                        }
                    }
                }
            }
            13 => {
                // Paging through the live sessions, a few at a time, lists
                // each exactly once, whatever slots were reused before.
                let org = f.target("m").org;
                let (mut seen, mut after) = (Vec::new(), None);
                loop {
                    let (page, more) = f.broker.sessions_page(&f.owner, &org, after, usize::from(arg % 4) + 1).unwrap();
                    after = page.last().map(|s| s.session);
                    seen.extend(page.into_iter().map(|s| s.session));
                    if !more {
                        break;
                    }
                }
                let mut all: Vec<SessionId> =
                    f.broker.sessions(&f.owner, &org).unwrap().iter().map(|s| s.session).collect();
                seen.sort();
                all.sort();
                assert_eq!(seen, all, "paging lost or repeated a session");
            }
            14 => {
                let h = f.broker.harvest(at);
                assert_eq!(h.dropped, 0);
                harvested_ms +=
                    h.minutes.iter().map(|(_, _, c)| c.tally.seat_ms + c.idle * c.held * 60_000).sum::<u64>();
            }
            _ => {}
        }
        let got: u64 = f.broker.seat_ms(at).iter().map(|(_, _, ms)| ms).sum();
        sessions_before = f.broker.live_sessions() as u64;
        assert_eq!(got, expected_ms, "seat time reported vs the integral of live sessions");
        assert!(harvested_ms <= got, "harvested {harvested_ms} ms of {got}");
        let (in_use, sessions) = (f.in_use(), f.broker.live_sessions() as u32);
        let granted = waiters.iter().filter(|(_, inbox, _)| inbox.has_grant()).count() as u32;
        assert!(in_use >= sessions + granted, "{sessions} sessions and {granted} grants on {in_use} seats");
        assert!(
            in_use - sessions - granted <= extra_max,
            "{in_use} seats for {sessions} sessions and {granted} grants, hold {extra_max}"
        );
    }
    // Every waiter leaves in the end, as the shell's guard makes them (a
    // queued waiter and its pool refer to each other until it does).
    for (_, inbox, place) in waiters {
        if !place.leave() {
            drop(inbox.close());
        }
    }
});
