//! The history on the core's own clock: minutes, rollups, sessions and
//! replays from real lease events, without sockets.

use std::time::Duration;

use super::*;
use crate::core::testkit::{t, Fixture};
use crate::core::{EndReason, Error, DAY_MS};

/// A timeline starting on a minute boundary.
fn timeline() -> impl Fn(u64) -> Millis {
    let first = t(0).0 / MINUTE_MS + 1;
    move |ms| Millis(first * MINUTE_MS + ms)
}

#[test]
fn minutes_hours_sessions_and_what_if_from_lease_events() {
    let at = timeline();
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path(), Retention::default()).unwrap();
    let w = Fixture::new(2, 2, Duration::from_secs(300));
    w.register("m").unwrap();
    let base = at(0);
    h.record(w.broker.harvest(base), base, Vec::new(), true).unwrap();
    let a = w.acquire("m", 1, 1, at(10_000)).unwrap();
    w.acquire("m", 2, 1, at(20_000)).unwrap();
    assert_eq!(w.acquire("m", 3, 1, at(30_000)), Err(Error::QuotaExceeded { quota: 2 }));
    // A runner that waits for a seat instead (handed a's seat when it is released).
    let (waited, _inbox) = w.wait("m", 4, 1, at(40_000));
    assert!(matches!(waited, Ok(crate::core::Waited::Queued(_))), "{waited:?}");
    h.record(w.broker.harvest(at(60_500)), at(60_500), Vec::new(), true).unwrap();
    let ended = w.broker.release(&w.owner, a.session, at(70_000)).unwrap();
    h.record(w.broker.harvest(at(120_500)), at(120_500), vec![ended], true).unwrap();

    let org = w.org.to_string();
    let pool = "kre-floating-annual";
    let minutes = h.usage(&org, pool, base, at(180_000), MINUTE_MS).unwrap();
    assert_eq!(minutes.len(), 2, "{minutes:?}");
    let (m0, m1) = (&minutes[0].usage, &minutes[1].usage);
    assert_eq!((minutes[0].start, minutes[1].start), (base.0, base.0 + MINUTE_MS));
    // Minute 0: a from 10 s, b from 20 s; a refusal. Minute 1: a until 70 s, b throughout.
    assert_eq!((m0.peak, m0.trough, m0.quota, m0.seat_ms, m0.admitted, m0.denied[0]), (2, 0, 2, 90_000, 2, 1));
    assert_eq!((m0.queued, m1.queued), (1, 0));
    assert_eq!((m1.peak, m1.trough, m1.seat_ms, m1.ends), (2, 1, 70_000, [1, 0, 0, 0]));
    assert!((minutes[0].average() - 1.5).abs() < 1e-9);
    // The hour holds both minutes.
    let hour = h.usage(&org, pool, base, at(180_000), 60 * MINUTE_MS).unwrap();
    assert_eq!(hour.len(), 1);
    assert_eq!((hour[0].usage.peak, hour[0].usage.seat_ms, hour[0].usage.admitted), (2, 160_000, 2));
    let five = h.usage(&org, pool, base, at(600_000), 5 * MINUTE_MS).unwrap();
    assert_eq!(five.len(), 1, "five-minute steps read minutes and sum them");
    assert_eq!(five[0].usage.seat_ms, 160_000);
    // The ended session, with its times.
    let (rows, next) = h.sessions(&org, (base, at(600_000)), None, 10, &|_| true).unwrap();
    assert!(next.is_none());
    assert_eq!(rows.len(), 1);
    let r = &rows[0].1;
    assert_eq!((r.start, r.end, r.reason.as_str()), (at(10_000).0, at(70_000).0, EndReason::Released.name()));
    // What if: one seat would have refused b (and the refused acquire);
    // three would have admitted everything.
    let live = w.broker.live_starts(&w.owner, &w.org, crate::core::PoolId::KRE_DEFAULT).unwrap();
    let wi = h.what_if(&org, pool, base, at(120_000), &live, 1..=3).unwrap();
    assert_eq!((wi.sessions, wi.refusals), (2, 1));
    let denied: Vec<u64> = wi.outcomes.iter().map(|o| o.denied).collect();
    assert_eq!(denied, vec![2, 1, 0], "{wi:?}");
}

#[test]
fn minutes_survive_reopening_and_retention_prunes_them() {
    let at = timeline();
    let dir = tempfile::tempdir().unwrap();
    let keep = Retention { minutes: Duration::from_secs(120), hours: Duration::from_secs(7200), days: None };
    let w = Fixture::new(2, 2, Duration::from_secs(3_600));
    w.register("m").unwrap();
    let org = w.org.to_string();
    let pool = "kre-floating-annual";
    {
        let h = History::open(dir.path(), keep.clone()).unwrap();
        h.record(w.broker.harvest(at(0)), at(0), Vec::new(), true).unwrap();
        w.acquire("m", 1, 1, at(1_000)).unwrap();
        h.record(w.broker.harvest(at(60_000)), at(60_000), Vec::new(), true).unwrap();
        // Ten minutes later (the session held throughout: idle minutes).
        h.record(w.broker.harvest(at(600_000)), at(600_000), Vec::new(), true).unwrap();
        let all = h.usage(&org, pool, at(0), at(600_000), MINUTE_MS).unwrap();
        assert_eq!(all.len(), 10, "{all:#?}");
        assert!(all[1..].iter().all(|p| p.usage.seat_ms == MINUTE_MS && (p.usage.peak, p.usage.trough) == (1, 1)));
        assert!(all.iter().all(|p| p.usage.quota == 2), "{all:#?}");
        h.prune(at(600_000), &[(org.clone(), pool.to_string())]).unwrap();
    }
    let h = History::open(dir.path(), keep).unwrap();
    let kept = h.usage(&org, pool, at(0), at(600_000), MINUTE_MS).unwrap();
    assert_eq!(kept.len(), 2, "two minutes of minutes are kept, across a reopen");
    let hours = h.usage(&org, pool, at(0), at(600_000), 60 * MINUTE_MS).unwrap();
    assert_eq!(hours[0].usage.seat_ms, 59_000 + 9 * MINUTE_MS, "the hour keeps what the pruned minutes held");
}

/// At most `READERS` reports are computed at once; the next waits for a
/// turn and gets one as soon as a report finishes.
#[tokio::test]
async fn reports_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path(), Retention::default()).unwrap();
    let mut turns = Vec::new();
    for _ in 0..READERS {
        turns.push(h.reading().await.expect("a turn"));
    }
    let waiting = tokio::time::timeout(Duration::from_millis(50), h.reading()).await;
    assert!(waiting.is_err(), "a report past the bound waits");
    turns.pop();
    let next = tokio::time::timeout(Duration::from_secs(5), h.reading()).await;
    assert!(matches!(next, Ok(Some(_))), "and gets its turn when one finishes");
}

/// KSE's assigned and activated licenses over time, from the harvests:
/// each minute keeps what the harvest that closed it saw, and a longer
/// period the most of either at any harvest in it.
#[test]
fn assigned_and_activated_kse_licenses_over_time() {
    use crate::core::{ConnId, Nonce, Role};
    let at = timeline();
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path(), Retention::default()).unwrap();
    let w = Fixture::new(2, 2, Duration::from_secs(300));
    let a = w.add_member("a@x.io", Role::User, 7);
    let b = w.add_member("b@x.io", Role::User, 8);
    let kse = w.with_kse_grant("kse-node-locked-annual", 3, &a);
    w.apply(w.broker.plan_grant(&w.owner, &w.org, kse, &b.email, t(0)));
    h.record(w.broker.harvest(at(60_500)), at(60_500), Vec::new(), true).unwrap();
    let pending = w.broker.activate(&a, &w.target_in(kse, "pc-1"), Nonce(0), ConnId(0), at(70_000)).unwrap();
    w.commit(pending);
    h.record(w.broker.harvest(at(120_500)), at(120_500), Vec::new(), true).unwrap();
    w.apply(w.broker.plan_revoke_grant(&w.owner, &w.org, kse, &b.email, at(130_000)));
    h.record(w.broker.harvest(at(180_500)), at(180_500), Vec::new(), true).unwrap();

    let (org, pool) = (w.org.to_string(), kse.to_string());
    let minutes = h.usage(&org, &pool, at(0), at(240_000), MINUTE_MS).unwrap();
    let seen: Vec<(u64, u32, u32)> =
        minutes.iter().map(|p| ((p.start - at(0).0) / MINUTE_MS, p.usage.assigned, p.usage.activated)).collect();
    // Minute 0 had no seat in use: its licenses are kept only on the hour.
    let idle = if (at(0).0 / MINUTE_MS).is_multiple_of(60) { vec![(0, 2, 0)] } else { vec![] };
    assert_eq!(seen, [idle, vec![(1, 2, 1), (2, 1, 1)]].concat(), "{minutes:#?}");
    let hour = h.usage(&org, &pool, at(0), at(240_000), 60 * MINUTE_MS).unwrap();
    assert_eq!((hour[0].usage.assigned, hour[0].usage.activated), (2, 1), "the hour keeps the most of each");
    let kre = h.usage(&org, "kre-floating-annual", at(0), at(240_000), MINUTE_MS).unwrap();
    assert!(kre.iter().all(|p| (p.usage.assigned, p.usage.activated) == (0, 0)), "{kre:#?}");
}

/// A KSE pool with licensed users and no use costs a row an hour, not a
/// row a minute: its licenses are sampled on the hour.
#[test]
fn an_idle_pool_with_licensed_users_is_sampled_on_the_hour() {
    use crate::core::Role;
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path(), Retention::default()).unwrap();
    let w = Fixture::new(2, 2, Duration::from_secs(300));
    let a = w.add_member("a@x.io", Role::User, 7);
    let kse = w.with_kse_grant("kse-floating-annual", 3, &a);
    // Ninety minutes of harvests, one a minute, from 10 minutes before an hour.
    let hour = (t(0).0 / (60 * MINUTE_MS) + 1) * 60 * MINUTE_MS;
    for m in 0..90 {
        let now = Millis(hour - 10 * MINUTE_MS + m * MINUTE_MS + 500);
        h.record(w.broker.harvest(now), now, Vec::new(), true).unwrap();
    }
    let rows = h.usage(&w.org.to_string(), &kse.to_string(), Millis(hour - DAY_MS), Millis(hour + DAY_MS), MINUTE_MS);
    let starts: Vec<u64> = rows.unwrap().iter().map(|p| p.start).collect();
    assert_eq!(starts, [hour, hour + 60 * MINUTE_MS], "ninety minutes, a row on each of the two hours");
}

#[test]
fn machines_released_unused_are_counted_on_the_minute_of_their_harvest() {
    let at = timeline();
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path(), Retention::default()).unwrap();
    let w = Fixture::new(2, 2, Duration::from_secs(30));
    let base = at(0);
    h.record(w.broker.harvest(base), base, Vec::new(), true).unwrap();
    w.register_ephemeral("ci-1", base).unwrap();
    let lease = w.acquire("ci-1", 1, 1, at(1_000)).unwrap();
    w.broker.release(&w.owner, lease.session, at(2_000)).unwrap();
    assert_eq!(w.expire_machines(at(2_000)).len(), 1);
    h.record(w.broker.harvest(at(60_500)), at(60_500), Vec::new(), true).unwrap();
    let minutes = h.usage(&w.org.to_string(), "kre-floating-annual", base, at(120_000), MINUTE_MS).unwrap();
    let expired: Vec<u64> = minutes.iter().map(|m| m.usage.expired).collect();
    assert_eq!(expired, [1], "{minutes:?}");
}
