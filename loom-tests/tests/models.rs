//! loom models of the admission core, run on the shipped code with loom's
//! primitives swapped in by `license_broker::sync`. Each asserts its
//! invariant in every interleaving loom explores.

#![cfg(broker_loom)]

use loom::sync::Arc;
use loom::thread;

use license_broker::core::{EndReason, Error, Registration};
use loom_tests::{model, t, Fixture};

/// 1a. Two acquires race for the last seat: exactly one wins, the other sees QUOTA_EXCEEDED.
#[test]
fn acquires_at_quota_minus_one_admit_exactly_one() {
    model(|| {
        let f = Arc::new(Fixture::new(2));
        f.acquire(100, t(0)).unwrap();
        let (a, b) = f.nonces_in_distinct_shards();
        let handles: Vec<_> = [a, b]
            .into_iter()
            .map(|n| {
                let f = f.clone();
                thread::spawn(move || f.acquire(n, t(0)))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 1, "{results:?}");
        assert!(results.iter().any(|r| *r == Err(Error::QuotaExceeded { quota: 2 })));
        assert_eq!(f.in_use(), 2);
    });
}

/// 1b. At quota, concurrent acquires are all refused and nothing moves.
#[test]
fn acquires_at_quota_admit_none() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        f.acquire(100, t(0)).unwrap();
        let handles: Vec<_> = (1..=2u128)
            .map(|n| {
                let f = f.clone();
                thread::spawn(move || f.acquire(n, t(0)))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), Err(Error::QuotaExceeded { quota: 1 }));
        }
        assert_eq!(f.in_use(), 1);
    });
}

/// 1c. Three acquirers, quota two, from empty: never more than two admitted,
/// checked inside the threads as well as at the end.
#[test]
fn three_acquirers_never_exceed_quota_two() {
    model(|| {
        let f = Arc::new(Fixture::new(2));
        let handles: Vec<_> = (1..=3u128)
            .map(|n| {
                let f = f.clone();
                thread::spawn(move || {
                    let r = f.acquire(n, t(0));
                    assert!(f.in_use() <= 2, "over quota mid-flight");
                    r.is_ok()
                })
            })
            .collect();
        let admitted = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
        assert_eq!(admitted, 2);
        assert_eq!(f.in_use(), 2);
    });
}

/// 2. Release racing expiry of the same session: the seat comes back exactly
/// once and the session ends with exactly one reason.
#[test]
fn release_racing_expiry_returns_the_seat_once() {
    model(|| {
        // A second, longer session keeps a seat, so a seat returned twice
        // shows as 0 in use instead of hiding behind the counter's floor.
        let f = Arc::new(Fixture::new(2));
        let (a, b) = f.nonces_in_distinct_shards();
        let lease = f.acquire(a, t(0)).unwrap();
        f.acquire(b, t(1)).unwrap();
        let fr = f.clone();
        let releaser = thread::spawn(move || fr.broker.release(&fr.owner, lease.session, t(0)));
        let fe = f.clone();
        let expirer = thread::spawn(move || fe.broker.expire(lease.deadline));
        let released = releaser.join().unwrap();
        let expired = expirer.join().unwrap();
        let reasons: Vec<EndReason> =
            released.iter().map(|e| e.reason).chain(expired.iter().map(|e| e.reason)).collect();
        assert_eq!(reasons.len(), 1, "exactly one end: {reasons:?}");
        assert_eq!(f.in_use(), 1);
        assert!(f.acquire(7, lease.deadline).is_ok(), "the seat is usable again");
        assert_eq!(f.in_use(), 2);
    });
}

/// 3. Heartbeat racing expiry: either the renewal wins (the session lives,
/// with the new deadline) or expiry wins (the renewal is told it expired).
#[test]
fn renew_racing_expiry_is_one_or_the_other() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        let lease = f.acquire(1, t(0)).unwrap();
        let renew_at = t(29_999);
        let fr = f.clone();
        let renewer = thread::spawn(move || fr.broker.renew(&fr.owner, lease.session, renew_at));
        let fe = f.clone();
        let expirer = thread::spawn(move || fe.broker.expire(lease.deadline));
        let renewed = renewer.join().unwrap();
        let expired = expirer.join().unwrap();
        match renewed {
            Ok(deadline) => {
                assert!(expired.is_empty(), "renewed and expired at once");
                assert_eq!(deadline, renew_at.after(loom_tests::TTL));
                assert_eq!(f.in_use(), 1);
                assert_eq!(f.broker.next_deadline(), Some(deadline));
            }
            Err(e) => {
                assert_eq!(e, Error::SessionExpired);
                assert_eq!(expired.len(), 1);
                assert_eq!(expired[0].reason, EndReason::Expired);
                assert_eq!(f.in_use(), 0);
                assert_eq!(f.broker.next_deadline(), None);
            }
        }
    });
}

/// 4. The same runner nonce acquiring from two threads: one session, one seat.
#[test]
fn duplicate_nonce_takes_one_seat() {
    model(|| {
        let f = Arc::new(Fixture::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let f = f.clone();
                thread::spawn(move || f.acquire(42, t(0)).unwrap())
            })
            .collect();
        let leases: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(leases[0].session, leases[1].session);
        assert_eq!(leases.iter().filter(|l| l.reattached).count(), 1);
        assert_eq!(f.in_use(), 1);
    });
}

/// 5. Machine registrations at the cap: never more machines than the quota;
/// re-registering a known machine is idempotent.
#[test]
fn machine_registrations_never_exceed_the_cap() {
    model(|| {
        let f = Arc::new(Fixture::new(2)); // machine "m" already registered
        let handles: Vec<_> = ["a", "b", "m"]
            .into_iter()
            .map(|name| {
                let f = f.clone();
                thread::spawn(move || f.register(name))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results[2], Ok(Registration::Known), "known machine is idempotent");
        let new = results[..2].iter().filter(|r| **r == Ok(Registration::New)).count();
        let limited = results[..2].iter().filter(|r| **r == Err(Error::MachineLimit { quota: 2 })).count();
        assert_eq!((new, limited), (1, 1), "{results:?}");
        assert_eq!(f.machines(), 2);
    });
}

/// 6. Quota lowered while acquires are in flight.
///
/// Guarantee: every admission is decided by one compare-and-swap over the
/// packed (quota, in use) word, so it is checked against the quota in force
/// at that instant, never a stale one. Here the quota drops from 2 to 1 while
/// two acquires run, one of them issued after the change returned: whichever
/// order the steps take, exactly one session is admitted.
#[test]
fn lowered_quota_is_never_exceeded_by_in_flight_acquires() {
    model(|| {
        let f = Arc::new(Fixture::new(2));
        let (a, b) = f.nonces_in_distinct_shards();
        let fl = f.clone();
        let lowerer = thread::spawn(move || {
            fl.set_quota(1);
            fl.acquire(a, t(0)).is_ok()
        });
        let fa = f.clone();
        let acquirer = thread::spawn(move || fa.acquire(b, t(0)).is_ok());
        let admitted = [lowerer.join().unwrap(), acquirer.join().unwrap()];
        assert_eq!(admitted.iter().filter(|a| **a).count(), 1, "{admitted:?}");
        assert_eq!(f.in_use(), 1);
    });
}

/// 7. Admin kill racing the runner's release and lease expiry: one end, one
/// reason, one seat back.
#[test]
fn kill_racing_release_and_expiry_ends_once() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        let lease = f.acquire(1, t(0)).unwrap();
        let fk = f.clone();
        let killer =
            thread::spawn(move || fk.broker.kill(&fk.owner, &fk.org, lease.session, t(0)).ok().map(|e| e.reason));
        let fr = f.clone();
        let releaser = thread::spawn(move || fr.broker.release(&fr.owner, lease.session, t(0)).ok().map(|e| e.reason));
        let expired: Vec<_> = f.broker.expire(lease.deadline).into_iter().map(|e| e.reason).collect();
        let mut reasons: Vec<EndReason> = expired;
        reasons.extend(killer.join().unwrap());
        reasons.extend(releaser.join().unwrap());
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert_eq!(f.in_use(), 0);
    });
}

/// 8. A grant revoked while its holder activates (KSE floating): no session
/// of the revoked user survives, whichever way the steps interleave; the
/// activation either fails NOT_LICENSED or its session is swept.
#[test]
fn grant_revoke_racing_activation_leaves_no_session() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        let kse = f.with_kse_grant(2);
        let email = f.owner.email.clone();
        let plan = f.broker.plan_revoke_grant(&f.owner, &f.org, kse, &email, t(0)).unwrap();
        let fa = f.clone();
        let activator = thread::spawn(move || {
            let target = fa.target_in(kse, "laptop");
            fa.broker.acquire(&fa.owner, &target, license_broker::core::Nonce(5), license_broker::core::ConnId(1), t(1))
        });
        let fr = f.clone();
        let revoker = thread::spawn(move || fr.broker.apply(&plan, t(0)).len());
        let activated = activator.join().unwrap();
        let swept = revoker.join().unwrap();
        match activated {
            Ok(_) => assert_eq!(swept, 1, "an admitted session must be swept by the revoke"),
            Err(e) => assert_eq!(e, Error::NotLicensed),
        }
        assert_eq!(f.broker.live_sessions(), 0);
        let status = f.broker.status(&f.operator, Some(&f.org)).unwrap();
        assert!(status.iter().all(|s| s.in_use == 0), "{status:?}");
    });
}

/// 9. A machine removed while a runner on it acquires: no session on the
/// removed machine survives; the acquire either fails or is swept.
#[test]
fn machine_removal_racing_acquire_leaves_no_session() {
    model(|| {
        let f = Arc::new(Fixture::new(2)); // machine "m" registered
        let m = license_broker::core::MachineId::new("m").unwrap();
        let plan = f.broker.plan_remove_machine(&f.owner, &f.org, None, &m, t(0)).unwrap();
        let fa = f.clone();
        let acquirer = thread::spawn(move || fa.acquire(1, t(1)));
        let fr = f.clone();
        let remover = thread::spawn(move || fr.broker.apply(&plan, t(0)).len());
        let acquired = acquirer.join().unwrap();
        let swept = remover.join().unwrap();
        match acquired {
            Ok(_) => assert_eq!(swept, 1, "an admitted session must be swept by the removal"),
            Err(e) => assert_eq!(e, Error::MachineNotRegistered),
        }
        assert_eq!(f.broker.live_sessions(), 0);
        assert_eq!(f.in_use(), 0);
    });
}

/// 10. After a restart, a runner of the previous run re-attaches while the
/// hold ends and a newcomer acquires: each held seat goes to exactly one
/// of them (the re-attach or the hold's end), and the seat count always
/// equals the sessions plus the seats still held.
#[test]
fn reattach_racing_the_end_of_the_hold_counts_every_seat_once() {
    model(|| {
        let (f, hold) = Fixture::restarted(3, 1);
        let f = Arc::new(f);
        assert_eq!((hold.seats, f.in_use()), (1, 1));
        let (a, b) = f.nonces_in_distinct_shards();
        let fr = f.clone();
        let reattacher = thread::spawn(move || {
            let target = fr.target("m");
            fr.broker.reattach(
                &fr.owner,
                &target,
                license_broker::core::Nonce(a),
                license_broker::core::ConnId(1),
                t(20_000),
                true,
            )
        });
        let fe = f.clone();
        let ender = thread::spawn(move || fe.broker.expire(hold.until).len());
        let fa = f.clone();
        let newcomer = thread::spawn(move || fa.acquire(b, t(20_000)));
        // Either may meet the ceiling (2) while the hold's seat is on its
        // way back (the shell would raise it and retry); never the quota,
        // and never both: at most one of them holds the second seat.
        let admitted = |r: license_broker::core::Result<license_broker::core::Lease>| match r {
            Ok(lease) => {
                assert!(!lease.reattached);
                1
            }
            Err(e) => {
                assert_eq!(e, Error::CeilingReached);
                0
            }
        };
        let came_in = admitted(reattacher.join().unwrap()) + admitted(newcomer.join().unwrap());
        assert!(came_in >= 1);
        // The fresh sessions' deadlines (t(50_000)) are after the hold's end (t(40_000)).
        assert_eq!(ender.join().unwrap(), 0);
        assert_eq!(f.broker.live_sessions(), came_in);
        assert_eq!(f.in_use() as usize, came_in, "the held seat went to the re-attach or back to the pool, once");
    });
}

/// 11. Lowering a ceiling races an admission: the admission either fits
/// under the lowered limit or is refused for the ceiling, and the value
/// the lowering returns (what the shell then writes) covers every session.
#[test]
fn lowering_the_ceiling_racing_an_admission_never_undercounts() {
    model(|| {
        let (f, _) = Fixture::restarted(100, 0);
        let f = Arc::new(f);
        // Raised to headroom (8) over 0 sessions by `restarted`; lift it far
        // above, as if the pool had been busy, so that lowering applies.
        let ceiling = license_broker::core::Record::Ceiling {
            org: f.org.clone(),
            pool: license_broker::core::PoolId::KRE_DEFAULT,
            seats: 60,
        };
        f.broker.apply(&[license_broker::core::Change::Put(ceiling)], t(0));
        // Two quiet passes first: the third lowers.
        assert!(f.broker.lower_ceilings(false).is_empty());
        assert!(f.broker.lower_ceilings(false).is_empty());
        let fl = f.clone();
        let lowerer = thread::spawn(move || fl.broker.lower_ceilings(false));
        let fa = f.clone();
        let acquirer = thread::spawn(move || fa.acquire(1, t(1)));
        let lowered = lowerer.join().unwrap();
        acquirer.join().unwrap().expect("far below any ceiling");
        let seats = match lowered.as_slice() {
            [license_broker::core::Record::Ceiling { seats, .. }] => *seats,
            other => panic!("one pool lowered, not {other:?}"),
        };
        assert!(seats >= 1, "a ceiling lowered to no room at all: {seats}");
        assert!(f.in_use() <= seats);
        assert_eq!(f.in_use(), 1);
    });
}

/// The waiter's place in the queue (it was queued, not admitted).
fn place(w: license_broker::core::Waited) -> license_broker::core::Place {
    match w {
        license_broker::core::Waited::Queued(p) => p,
        other => panic!("expected to queue: {other:?}"),
    }
}

/// 12. Queue: a freed seat racing the head waiter's departure (as the
/// shell's guard leaves: leave, else close the inbox and drop what came).
/// The seat is given to exactly one waiter, and is not lost: it ends with
/// the second waiter, counted once.
#[test]
fn a_seat_freed_as_the_head_waiter_leaves_goes_to_the_next_once() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        let held = f.acquire(100, t(0)).unwrap();
        let (first, a) = f.wait(1);
        let (_, b) = f.wait(2);
        let first = place(first.unwrap());
        let fr = f.clone();
        let releaser = thread::spawn(move || fr.broker.release(&fr.owner, held.session, t(0)).map(|_| ()));
        let leaver = thread::spawn(move || {
            if !first.leave() {
                // Granted meanwhile: gone waiters hand the seat back.
                drop(a.close());
            }
        });
        releaser.join().unwrap().unwrap();
        leaver.join().unwrap();
        let grant = b.take();
        assert!(grant.is_some(), "the seat reached the next waiter");
        assert_eq!(f.in_use(), 1, "counted once");
        assert_eq!(f.pool_status().waiting, 0);
    });
}

/// 13. Queue: while someone waits, a newcomer's plain acquire racing a
/// release never takes the freed seat; the waiter gets it.
#[test]
fn a_newcomer_never_takes_a_seat_from_a_waiter() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        let held = f.acquire(100, t(0)).unwrap();
        let (_, a) = f.wait(1);
        let fr = f.clone();
        let releaser = thread::spawn(move || fr.broker.release(&fr.owner, held.session, t(0)).map(|_| ()));
        let fn_ = f.clone();
        let newcomer = thread::spawn(move || fn_.acquire(2, t(0)));
        releaser.join().unwrap().unwrap();
        assert_eq!(newcomer.join().unwrap(), Err(Error::QuotaExceeded { quota: 1 }));
        let grant = a.take();
        assert!(grant.is_some(), "the waiter got the seat");
        assert_eq!(f.in_use(), 1);
    });
}

/// 14. Queue: joining racing the release of the last seat never strands
/// the waiter beside a free seat: it is admitted at once or granted the
/// freed seat, and the seat is counted once.
#[test]
fn joining_the_queue_racing_a_release_is_never_stranded() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        let held = f.acquire(100, t(0)).unwrap();
        let fr = f.clone();
        let releaser = thread::spawn(move || fr.broker.release(&fr.owner, held.session, t(0)).map(|_| ()));
        let fw = f.clone();
        let waiter = thread::spawn(move || {
            let (w, inbox) = fw.wait(1);
            (w.unwrap(), inbox)
        });
        releaser.join().unwrap().unwrap();
        let (waited, inbox) = waiter.join().unwrap();
        let admitted = matches!(waited, license_broker::core::Waited::Leased(_));
        let grant = inbox.take();
        assert!(admitted || grant.is_some(), "a free seat and a waiter never both remain");
        assert_eq!(f.in_use(), 1);
        assert_eq!(f.pool_status().waiting, 0);
    });
}

/// 15. Queue: two seats freed at once with two waiters: each waiter gets
/// exactly one, none twice.
#[test]
fn two_seats_freed_at_once_go_one_to_each_waiter() {
    model(|| {
        let f = Arc::new(Fixture::new(2));
        let (n1, n2) = f.nonces_in_distinct_shards();
        let x = f.acquire(n1, t(0)).unwrap();
        let y = f.acquire(n2, t(0)).unwrap();
        let (_, a) = f.wait(500);
        let (_, b) = f.wait(501);
        let handles: Vec<_> = [x, y]
            .into_iter()
            .map(|l| {
                let f = f.clone();
                thread::spawn(move || f.broker.release(&f.owner, l.session, t(0)).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        let (ga, gb) = (a.take(), b.take());
        assert!(ga.is_some() && gb.is_some(), "one seat each");
        assert_eq!(f.in_use(), 2);
        drop((ga, gb));
        assert_eq!(f.in_use(), 0, "both seats come back once");
    });
}

/// 16. Per-user cap: two acquires of a user capped at 1 race (on distinct
/// shards, meeting only at the cap's word): exactly one is admitted.
#[test]
fn a_user_capped_at_one_gets_exactly_one_of_two_racing_sessions() {
    model(|| {
        let f = Arc::new(Fixture::new(3));
        f.cap_owner(1);
        let (a, b) = f.nonces_in_distinct_shards();
        let handles: Vec<_> = [a, b]
            .into_iter()
            .map(|n| {
                let f = f.clone();
                thread::spawn(move || f.acquire(n, t(0)))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results.iter().any(|r| *r == Err(Error::UserLimit { max: 1 })));
        assert_eq!(f.owner_cap_count(), (1, 1));
        assert_eq!(f.in_use(), 1, "the refused one took no pool seat");
    });
}

/// 17. Per-user cap created while the user's sessions are being admitted:
/// every live session of the user ends up counted exactly once (the sweep
/// or the admission's own re-check), so the cap is exact from then on.
#[test]
fn a_cap_created_racing_admissions_counts_every_session_once() {
    model(|| {
        let f = Arc::new(Fixture::new(3));
        let (a, b) = f.nonces_in_distinct_shards();
        let fc = f.clone();
        let capper = thread::spawn(move || fc.cap_owner(1));
        let fa = f.clone();
        let admitter = thread::spawn(move || (fa.acquire(a, t(0)).is_ok(), fa.acquire(b, t(0)).is_ok()));
        capper.join().unwrap();
        let (first, _second) = admitter.join().unwrap();
        assert!(first, "nothing capped the first session");
        let (counted, live) = f.owner_cap_count();
        assert_eq!(counted as usize, live, "every live session counted once");
        assert!(f.acquire(7, t(0)).is_err(), "at or over the cap, nothing more");
    });
}

/// 20. Label cap: two sessions carrying `team=web` (capped at 1) and one
/// without it race on distinct shards: exactly one labelled session is
/// admitted, the unlabelled one always is, and the refused one took no
/// pool seat.
#[test]
fn a_label_cap_is_never_exceeded_by_racing_admissions() {
    model(|| {
        let f = Arc::new(Fixture::new(3));
        f.cap_web(1);
        let (a, b) = f.nonces_in_distinct_shards();
        let handles: Vec<_> = [(a, true), (b, true), (99, false)]
            .into_iter()
            .map(|(n, web)| {
                let f = f.clone();
                thread::spawn(move || f.acquire_labelled(n, web))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results[..2].iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results[..2].contains(&Err(Error::LabelLimit { max: 1 })));
        assert!(results[2].is_ok(), "an unlabelled session is not capped");
        assert_eq!(f.web_cap_count(), (1, 1));
        assert_eq!(f.in_use(), 2, "the refused one took no pool seat");
    });
}

/// 21. A label cap created while sessions carrying the label are admitted:
/// each is counted exactly once (the sweep or the admission's re-check).
#[test]
fn a_label_cap_created_racing_admissions_counts_every_session_once() {
    model(|| {
        let f = Arc::new(Fixture::new(3));
        let (a, b) = f.nonces_in_distinct_shards();
        let fc = f.clone();
        let capper = thread::spawn(move || fc.cap_web(1));
        let fa = f.clone();
        let admitter = thread::spawn(move || (fa.acquire_labelled(a, true).is_ok(), fa.acquire_labelled(b, true)));
        capper.join().unwrap();
        let (first, _second) = admitter.join().unwrap();
        assert!(first, "nothing capped the first session");
        let (counted, live) = f.web_cap_count();
        assert_eq!(counted as usize, live, "every live labelled session counted once");
        assert!(f.acquire_labelled(7, true).is_err(), "at or over the cap, nothing more");
    });
}

/// 9. The history's per-minute extremes: a harvest racing a runner's
/// acquire and release loses neither value: each lands in the window the
/// harvest closed or in the next one, never nowhere.
#[test]
fn harvest_racing_seat_changes_loses_no_extreme() {
    model(|| {
        let f = Arc::new(Fixture::new(3));
        f.acquire(100, t(0)).unwrap();
        // Seed the window at today's level (1), as the first harvest does.
        let _ = f.broker.harvest(t(0));
        let fa = f.clone();
        let runner = thread::spawn(move || {
            let lease = fa.acquire(1, t(0)).unwrap();
            fa.broker.release(&fa.owner, lease.session, t(0)).unwrap();
        });
        let fh = f.clone();
        let harvester = thread::spawn(move || fh.broker.harvest(t(0)).pools[0].clone());
        runner.join().unwrap();
        let raced = harvester.join().unwrap();
        let last = f.broker.harvest(t(0)).pools[0].clone();
        assert_eq!(raced.peak.max(last.peak), 2, "the peak of 2 was lost: {raced:?} then {last:?}");
        assert_eq!(raced.trough.min(last.trough), 1, "{raced:?} then {last:?}");
        assert_eq!((last.peak, last.trough).1, 1);
    });
}

/// 17. In a cluster, a node adopts an org (holding its ceiling's seats for
/// the previous owner's runners) while its expiry task runs: the hold is
/// either ended by that pass or left for a later one, never lost or ended
/// twice, and once it is due every held seat is back.
#[test]
fn adopting_an_org_racing_the_expiry_task_ends_its_hold_once() {
    model(|| {
        use license_broker::core::{Broker, Config};
        let w = Fixture::new(3);
        let records = w.org_records(3, 2);
        let config = Config { lease_ttl: loom_tests::TTL, ceilings: true, shard_bits: 1, ..Config::default() };
        let b = Arc::new(Broker::new(config));
        let ba = b.clone();
        let org = w.org.clone();
        let adopter = thread::spawn(move || ba.adopt_org(&org, records, t(0)).0);
        let be = b.clone();
        let expirer = thread::spawn(move || be.expire(t(1_000_000)).len());
        assert_eq!(adopter.join().unwrap(), 2);
        assert_eq!(expirer.join().unwrap(), 0);
        let owner = b.authenticate(&license_broker::core::testkit::key(2)).unwrap();
        let in_use = || b.status(&owner, None).unwrap()[0].in_use;
        assert!(in_use() == 2 || in_use() == 0, "held, or ended by the racing pass");
        // The hold's end (one TTL and the grace after t(0)) comes, once.
        let until = t(0).after(loom_tests::TTL + Config::default().restart_grace);
        assert_eq!(b.next_deadline().is_some(), in_use() == 2);
        b.expire(until);
        assert_eq!((in_use(), b.next_deadline()), (0, None));
    });
}

/// The machine `m` of a fixture of `quota`, unused since t(0) in a pool
/// whose idle limit (1 s) has passed at t(1_000): due for release.
fn idle_machine(quota: u32) -> Arc<Fixture> {
    let f = Arc::new(Fixture::new(quota)); // machine "m" registered
    f.set_policy(Some(std::time::Duration::from_secs(1)), false, t(0));
    f
}

/// 18. Machines that come and go: the expiry of an idle machine races a
/// session starting on it. Either the session starts first (the machine
/// stays: the expiry's close fails) or the release is planned first (the
/// acquire is refused `MACHINE_NOT_REGISTERED` and the machine goes); never
/// a live session on a released machine, never a released machine that
/// had just started a session.
#[test]
fn an_expiry_racing_a_session_start_never_releases_a_machine_in_use() {
    model(|| {
        let f = idle_machine(2);
        let fa = f.clone();
        let acquirer = thread::spawn(move || fa.acquire(1, t(1_000)));
        let fe = f.clone();
        let expirer = thread::spawn(move || fe.expire_machines(t(1_000)).len());
        let acquired = acquirer.join().unwrap();
        let released = expirer.join().unwrap();
        match acquired {
            Ok(_) => {
                assert_eq!(released, 0, "a machine that just started a session was released");
                assert_eq!((f.machines(), f.broker.live_sessions()), (1, 1));
            }
            Err(e) => {
                assert_eq!(e, Error::MachineNotRegistered);
                assert_eq!((released, f.machines(), f.broker.live_sessions(), f.in_use()), (1, 0, 0, 0));
            }
        }
    });
}

/// 19. At the machine cap, an idle machine's expiry races a new machine's
/// registration and the idle machine's own re-registration: registered
/// machines never exceed the quota (checked inside the threads too), the
/// newcomer gets the slot only once the release has taken it back, and the
/// re-registration is told the machine is on its way out, or finds it.
#[test]
fn an_expiry_racing_registrations_never_lets_one_past_the_cap() {
    model(|| {
        let f = idle_machine(1);
        let fr = f.clone();
        let newcomer = thread::spawn(move || {
            let r = fr.register("n");
            assert!(fr.machines() <= 1);
            r
        });
        let fk = f.clone();
        let again = thread::spawn(move || fk.register("m"));
        let fe = f.clone();
        let expirer = thread::spawn(move || {
            let n = fe.expire_machines(t(1_000)).len();
            assert!(fe.machines() <= 1);
            n
        });
        let (new, again, released) = (newcomer.join().unwrap(), again.join().unwrap(), expirer.join().unwrap());
        assert!(f.machines() <= 1, "past the cap");
        match new {
            Ok(Registration::New) => assert_eq!(released, 1, "a slot came from nowhere"),
            other => assert_eq!(other, Err(Error::MachineLimit { quota: 1 })),
        }
        match again {
            // Known, on its way out, or registered anew after its release
            // (then the newcomer was refused: the cap holds, checked above).
            Ok(Registration::Known | Registration::New)
            | Err(Error::MachineNotRegistered)
            | Err(Error::MachineLimit { .. }) => {}
            other => panic!("re-registration: {other:?}"),
        }
    });
}

/// A seat freed by an expiry, taken by a request stamped a moment before
/// it (a stream stamps a whole read once): the new session is never dated
/// before the expiry, so no one is on record in a dead runner's seat
/// before its deadline, and the seat is counted once.
#[test]
fn a_seat_taken_racing_its_expiry_is_never_dated_before_it() {
    model(|| {
        let f = Arc::new(Fixture::new(1));
        let (a, b) = f.nonces_in_distinct_shards();
        let lease = f.acquire(a, t(0)).unwrap();
        let expired_at = lease.deadline.after(std::time::Duration::from_millis(5));
        let fe = f.clone();
        let expirer = thread::spawn(move || fe.broker.expire(expired_at).len());
        let fa = f.clone();
        let stale = license_broker::core::Millis(lease.deadline.0 - 10);
        let taker = thread::spawn(move || fa.acquire(b, stale));
        assert_eq!(expirer.join().unwrap(), 1);
        let taken = taker.join().unwrap();
        if let Ok(next) = &taken {
            let started = next.deadline.0 - loom_tests::TTL.as_millis() as u64;
            assert!(started >= expired_at.0, "dated {started}, the seat was freed at {}", expired_at.0);
        }
        assert_eq!(f.in_use(), u32::from(taken.is_ok()), "the seat is counted once");
    });
}
