//! Rules of the core on a driven clock: no sockets, no sleeps.

use std::time::Duration;

use super::error::ExpiryLimit;
use super::testkit::{key, mid, t, Fixture};
use super::*;

const TTL: Duration = Duration::from_secs(30);

fn world(quota: u32) -> Fixture {
    Fixture::new(quota, 2, TTL)
}

#[test]
fn admits_exactly_the_quota() {
    let w = world(3);
    w.register("m1").unwrap();
    for n in 0..3 {
        w.acquire("m1", n, 1, t(0)).unwrap();
    }
    assert_eq!(w.acquire("m1", 99, 1, t(0)), Err(Error::QuotaExceeded { quota: 3 }));
    let s = &w.broker.status(&w.owner, None).unwrap()[0];
    assert_eq!((s.in_use, s.admitted, s.rejected), (3, 3, 1));
}

#[test]
fn acquire_needs_a_registered_machine() {
    let w = world(3);
    assert_eq!(w.acquire("m1", 1, 1, t(0)), Err(Error::MachineNotRegistered));
}

#[test]
fn machine_registrations_capped_and_removal_frees_a_slot() {
    let w = world(2);
    assert_eq!(w.register("a"), Ok(Registration::New));
    assert_eq!(w.register("b"), Ok(Registration::New));
    assert_eq!(w.register("a"), Ok(Registration::Known));
    assert_eq!(w.register("c"), Err(Error::MachineLimit { quota: 2 }));
    let lease = w.acquire("a", 1, 7, t(0)).unwrap();
    let plan = w.broker.plan_remove_machine(&w.owner, &w.org, None, &mid("a"), t(0)).unwrap();
    let ended = w.broker.apply(&plan, t(0));
    assert_eq!(ended.len(), 1, "the removed machine's session is revoked");
    assert_eq!((ended[0].info.session, ended[0].reason, ended[0].conn), (lease.session, EndReason::Revoked, ConnId(7)));
    assert_eq!(w.in_use(), 0);
    assert_eq!(w.register("c"), Ok(Registration::New));
}

#[test]
fn lease_expires_at_its_deadline_and_frees_the_seat() {
    let w = world(1);
    w.register("m").unwrap();
    let lease = w.acquire("m", 1, 1, t(0)).unwrap();
    assert_eq!(lease.deadline, t(30_000));
    assert_eq!(w.broker.next_deadline(), Some(t(30_000)));
    assert!(w.broker.expire(t(29_999)).is_empty());
    assert_eq!(w.acquire("m", 2, 1, t(29_999)), Err(Error::QuotaExceeded { quota: 1 }));
    let ended = w.broker.expire(t(30_000));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].reason, EndReason::Expired);
    assert_eq!(w.broker.next_deadline(), None);
    assert!(w.acquire("m", 2, 1, t(30_000)).is_ok());
}

#[test]
fn renewed_leases_are_moved_not_expired_however_many_come_up_at_once() {
    // More than one expiry batch, all in one shard's index at one instant.
    let n = 3_000u128;
    let w = Fixture::new(n as u32, 0, TTL);
    w.register("m").unwrap();
    let leases: Vec<Lease> = (0..n).map(|i| w.acquire("m", i, 1, t(0)).unwrap()).collect();
    for l in &leases[1..] {
        assert_eq!(w.broker.renew(&w.owner, l.session, t(10_000)), Ok(t(40_000)));
    }
    let ended = w.broker.expire(t(30_000));
    assert_eq!(ended.len(), 1, "only the lease that was not renewed ends");
    assert_eq!(ended[0].info.session, leases[0].session);
    assert_eq!(w.broker.next_deadline(), Some(t(40_000)), "the others now sit at their renewed deadline");
    assert_eq!(w.broker.expire(t(40_000)).len(), n as usize - 1);
    assert_eq!((w.in_use(), w.broker.next_deadline()), (0, None));
}

#[test]
fn a_lease_renewed_for_longer_than_its_slot_can_lag_is_moved_and_still_expires_on_time() {
    // A slot keeps how far its index entry lags its deadline in 32 bits of
    // ms (49.7 days): heartbeats of a 40-day lease push it past that.
    let day = 86_400_000u64;
    let w = Fixture::new(1, 0, Duration::from_millis(40 * day));
    w.register("m").unwrap();
    let lease = w.acquire("m", 1, 1, t(0)).unwrap();
    for k in 1..=4 {
        let renewed = w.broker.renew(&w.owner, lease.session, t(k * 30 * day));
        assert_eq!(renewed, Ok(t(k * 30 * day + 40 * day)));
        assert!(w.broker.expire(t(k * 30 * day)).is_empty(), "renewed {k} times, still live");
    }
    assert!(w.broker.expire(t(160 * day - 1)).is_empty());
    let ended = w.broker.expire(t(160 * day));
    assert_eq!((ended.len(), w.in_use(), w.broker.next_deadline()), (1, 0, None));
}

#[test]
fn a_seat_freed_by_expiry_is_not_dated_before_it_whatever_the_requests_stamp() {
    // A stream stamps a whole read once, so a request stamped at 29.99 s can
    // be served after the expiry task ended a lease at 30.005 s.
    let w = world(1);
    w.register("m").unwrap();
    w.acquire("m", 1, 1, t(0)).unwrap();
    assert_eq!(w.broker.expire(t(30_005)).len(), 1);
    let next = w.acquire("m", 2, 2, t(29_990)).unwrap();
    assert_eq!(next.deadline, t(30_005).after(TTL), "starts at the expiry, not at its stale stamp");
    let status = w.pool_status();
    assert_eq!(status.in_use, 1);
}

#[test]
fn heartbeat_extends_and_late_heartbeat_is_refused() {
    let w = world(1);
    w.register("m").unwrap();
    let lease = w.acquire("m", 1, 1, t(0)).unwrap();
    assert_eq!(w.broker.renew(&w.owner, lease.session, t(20_000)), Ok(t(50_000)));
    assert!(w.broker.expire(t(30_000)).is_empty(), "renewed lease outlives the old deadline");
    assert_eq!(w.broker.next_deadline(), Some(t(50_000)));
    // Deadline passed but the expiry task has not run yet: still refused, seat freed.
    assert_eq!(w.broker.renew(&w.owner, lease.session, t(50_000)), Err(Error::SessionExpired));
    assert_eq!(w.in_use(), 0);
    assert_eq!(w.broker.next_deadline(), Some(Millis(0)), "its end waits to be announced");
    let ended = w.broker.expire(t(50_001));
    assert_eq!(ended.len(), 1, "the end found by the heartbeat is announced by the expiry pass");
    assert_eq!((ended[0].info.session, ended[0].reason, ended[0].at), (lease.session, EndReason::Expired, t(50_000)));
    assert_eq!(w.in_use(), 0, "the seat came back exactly once");
    assert!(w.broker.expire(t(60_000)).is_empty(), "and its end was announced once");
    assert_eq!(w.broker.next_deadline(), None);
}

#[test]
fn a_lease_its_own_nonce_finds_expired_is_ended_announced_once_and_its_seat_retaken() {
    let w = world(1);
    w.register("m").unwrap();
    let old = w.acquire("m", 42, 1, t(0)).unwrap();
    // Past the deadline, before the expiry task: the runner acquires again.
    let new = w.acquire("m", 42, 2, t(30_001)).unwrap();
    assert!(!new.reattached && new.session != old.session, "a new session on the freed seat");
    assert_eq!(w.in_use(), 1);
    let ended = w.broker.expire(t(30_002));
    assert_eq!(ended.len(), 1, "the old lease's end is announced, not lost");
    assert_eq!((ended[0].info.session, ended[0].reason, ended[0].conn), (old.session, EndReason::Expired, ConnId(1)));
    assert!(w.broker.expire(t(30_003)).is_empty());
    assert_eq!(w.in_use(), 1, "the new session holds the one seat");
}

#[test]
fn same_nonce_reattaches_without_a_second_seat() {
    let w = world(2);
    w.register("m").unwrap();
    let a = w.acquire("m", 42, 1, t(0)).unwrap();
    let b = w.acquire("m", 42, 2, t(10_000)).unwrap();
    assert_eq!(a.session, b.session);
    assert!(b.reattached && !a.reattached);
    assert_eq!(b.deadline, t(40_000));
    assert_eq!(w.in_use(), 1);
    // The old connection closing no longer ends it: the new one owns it.
    assert!(w.broker.close_connection(ConnId(1), [a.session], t(0)).is_empty());
    let ended = w.broker.close_connection(ConnId(2), [a.session], t(0));
    assert_eq!(ended[0].reason, EndReason::ConnectionClosed);
    assert_eq!(w.in_use(), 0);
}

#[test]
fn nonce_of_an_expired_session_gets_a_fresh_one() {
    let w = world(1);
    w.register("m").unwrap();
    let a = w.acquire("m", 42, 1, t(0)).unwrap();
    let b = w.acquire("m", 42, 1, t(30_000)).unwrap();
    assert_ne!(a.session, b.session);
    assert!(!b.reattached);
    assert_eq!(w.in_use(), 1);
}

#[test]
fn every_end_has_one_reason_and_one_seat() {
    let w = world(3);
    w.register("m").unwrap();
    let a = w.acquire("m", 1, 1, t(0)).unwrap();
    let b = w.acquire("m", 2, 1, t(0)).unwrap();
    let c = w.acquire("m", 3, 1, t(0)).unwrap();
    assert_eq!(w.broker.release(&w.owner, a.session, t(0)).unwrap().reason, EndReason::Released);
    assert_eq!(w.broker.kill(&w.owner, &w.org, b.session, t(0)).unwrap().reason, EndReason::Revoked);
    assert_eq!(w.broker.close_connection(ConnId(1), [c.session], t(0))[0].reason, EndReason::ConnectionClosed);
    assert_eq!(w.in_use(), 0);
    assert_eq!(w.broker.release(&w.owner, a.session, t(0)).unwrap_err(), Error::SessionExpired);
    assert!(w.broker.kill(&w.owner, &w.org, b.session, t(0)).is_err());
    assert!(w.broker.expire(t(100_000)).is_empty());
    assert_eq!(w.in_use(), 0);
}

#[test]
fn lowered_quota_admits_nothing_until_usage_drains() {
    let w = world(3);
    w.register("m").unwrap();
    let leases: Vec<_> = (0..3).map(|n| w.acquire("m", n, 1, t(0)).unwrap()).collect();
    w.broker.apply(&w.broker.plan_set_pool(&w.operator, &w.org, PoolId::KRE_DEFAULT, 1, t(0)).unwrap(), t(0));
    assert_eq!(w.in_use(), 3, "existing sessions are not cut");
    w.broker.release(&w.owner, leases[0].session, t(0)).unwrap();
    assert_eq!(w.acquire("m", 10, 1, t(0)), Err(Error::QuotaExceeded { quota: 1 }));
    w.broker.release(&w.owner, leases[1].session, t(0)).unwrap();
    w.broker.release(&w.owner, leases[2].session, t(0)).unwrap();
    assert!(w.acquire("m", 10, 1, t(0)).is_ok());
}

#[test]
fn nothing_admitted_after_the_subscription_ends() {
    let w = world(3);
    let name = OrgName::new("acme").unwrap();
    let owner = Email::new("o@acme").unwrap();
    let end = parse_end_of_date("2026-01-01").unwrap(); // before t(0), in 2026-11
    assert!(matches!(
        w.broker.plan_create_org(&w.operator, &name, end, &owner, key(9), t(0)),
        Err(Error::Invalid { .. })
    ));
    let end = Millis(t(0).0 + DAY_MS);
    w.broker.apply(&w.broker.plan_create_org(&w.operator, &name, end, &owner, key(9), t(0)).unwrap(), t(0));
    w.broker.apply(&w.broker.plan_set_pool(&w.operator, &name, PoolId::KRE_DEFAULT, 1, t(0)).unwrap(), t(0));
    let acme = w.broker.authenticate(&key(9)).unwrap();
    let target = Target { org: name.clone(), pool: PoolId::KRE_DEFAULT, machine: mid("m") };
    w.commit(w.broker.register(&acme, &target, t(0), false).unwrap());
    let r = w.broker.acquire(&acme, &target, Nonce(1), ConnId(1), end);
    assert_eq!(r, Err(Error::SubscriptionExpired));
    // Renewed: the lapsed org admits again at once.
    let renewed = Millis(end.0 + 365 * DAY_MS);
    assert!(w.broker.plan_set_subscription(&acme, &name, renewed, end).is_err(), "operator only");
    w.broker.apply(&w.broker.plan_set_subscription(&w.operator, &name, renewed, end).unwrap(), t(0));
    assert!(w.broker.acquire(&acme, &target, Nonce(1), ConnId(1), end).is_ok());
}

#[test]
fn roles_and_orgs_are_enforced() {
    let w = world(3);
    let user = w.add_member("u@default", Role::User, 3);
    let admin = w.add_member("a@default", Role::Admin, 4);
    let other = OrgName::new("other").unwrap();
    w.broker.apply(
        &w.broker
            .plan_create_org(&w.operator, &other, Millis::MAX, &Email::new("o@other").unwrap(), key(5), t(0))
            .unwrap(),
        t(0),
    );
    let stranger = w.broker.authenticate(&key(5)).unwrap();
    let email = Email::new("x@default").unwrap();
    let forbidden = |r: Result<Vec<Change>>| assert!(matches!(r, Err(Error::Forbidden(_))), "{r:?}");
    // Quotas are the operator's alone: not even the Owner raises their own.
    forbidden(w.broker.plan_set_pool(&w.owner, &w.org, PoolId::KRE_DEFAULT, 100, t(0)));
    forbidden(w.broker.plan_create_org(&w.owner, &other, Millis::MAX, &email, key(8), t(0)));
    // Users administer nothing; strangers nothing of ours; the operator no members.
    for p in [&user, &stranger, &w.operator] {
        forbidden(w.broker.plan_add_user(p, &w.org, &email, Role::User, t(0)));
        forbidden(w.broker.plan_create_key(p, &w.org, &Email::new("u@default").unwrap(), key(8), t(0)));
        forbidden(w.broker.plan_revoke_key(p, &w.org, KeyRef::Hash(key(3)), t(0)));
        forbidden(w.broker.plan_remove_machine(p, &w.org, None, &mid("m"), t(0)));
        assert!(matches!(w.broker.sessions(p, &w.org), Err(Error::Forbidden(_))));
        assert!(matches!(w.broker.machines(p, &w.org), Err(Error::Forbidden(_))));
        assert!(matches!(w.broker.users(p, &w.org), Err(Error::Forbidden(_))));
        assert!(matches!(w.broker.keys(p, &w.org), Err(Error::Forbidden(_))));
    }
    // Admins cannot create Owners or act on an Owner's keys.
    forbidden(w.broker.plan_add_user(&admin, &w.org, &email, Role::Owner, t(0)));
    forbidden(w.broker.plan_create_key(&admin, &w.org, &Email::new("owner@default").unwrap(), key(8), t(0)));
    forbidden(w.broker.plan_revoke_key(&admin, &w.org, KeyRef::Hash(key(2)), t(0)));
    assert!(w.broker.plan_add_user(&admin, &w.org, &email, Role::User, t(0)).is_ok());
    // A stranger cannot run sessions on, or see, our pools.
    assert!(matches!(w.broker.register(&stranger, &w.target("m"), t(0), false), Err(Error::Forbidden(_))));
    assert!(matches!(w.broker.status(&stranger, Some(&w.org)), Err(Error::Forbidden(_))));
    assert!(w.broker.status(&stranger, None).unwrap().is_empty());
    // A stranger cannot renew, release or kill our sessions.
    w.register("m").unwrap();
    let lease = w.acquire("m", 1, 1, t(0)).unwrap();
    assert_eq!(w.broker.renew(&stranger, lease.session, t(1)), Err(Error::SessionExpired));
    assert!(w.broker.release(&stranger, lease.session, t(0)).is_err());
    assert!(w.broker.kill(&stranger, &other, lease.session, t(0)).is_err());
    assert_eq!(w.in_use(), 1);
}

#[test]
fn revoked_key_no_longer_authenticates() {
    let w = world(1);
    let user = w.add_member("u@default", Role::User, 3);
    assert_eq!(user.role, Role::User);
    let id = key(3).key_id();
    w.broker.apply(&w.broker.plan_revoke_key(&w.owner, &w.org, KeyRef::Id(id), t(0)).unwrap(), t(0));
    assert_eq!(w.broker.authenticate(&key(3)), Err(Error::Unauthorized));
    assert_eq!(w.broker.authenticate(&key(77)), Err(Error::Unauthorized));
}

#[test]
fn expiry_scales_to_many_leases() {
    let w = world(100_000);
    w.register("m").unwrap();
    for n in 0..50_000u128 {
        w.acquire("m", n, 1, Millis(t(0).0 + (n as u64 % 1000))).unwrap();
    }
    let ended = w.broker.expire(t(30_499));
    assert_eq!(ended.len(), 25_000);
    assert_eq!(w.in_use(), 25_000);
    assert_eq!(w.broker.next_deadline(), Some(t(30_500)));
}

// ---- KSE grants, activations, offline licenses ----

fn pool_id(s: &str) -> PoolId {
    s.parse().unwrap()
}

trait Kse {
    fn set_pool(&self, pool: &str, quota: u32);
    fn grant(&self, pool: &str, email: &str) -> Result<()>;
    fn activate(&self, p: &Principal, pool: PoolId, machine: &str, now: Millis) -> Result<Activation>;
    fn offline(&self, pool: &str, machine: &str, last_day_end: Millis, id: u128, now: Millis) -> Result<LicenseFields>;
    fn pool_in_use(&self, pool: &str) -> u32;
}

impl Kse for Fixture {
    fn set_pool(&self, pool: &str, quota: u32) {
        self.set_quota(pool_id(pool), quota);
    }

    fn grant(&self, pool: &str, email: &str) -> Result<()> {
        let plan = self.broker.plan_grant(&self.owner, &self.org, pool_id(pool), &Email::new(email).unwrap(), t(0))?;
        self.broker.apply(&plan, t(0));
        Ok(())
    }

    fn activate(&self, p: &Principal, pool: PoolId, machine: &str, now: Millis) -> Result<Activation> {
        let pending = self.broker.activate(p, &self.target_in(pool, machine), Nonce(0), ConnId(0), now)?;
        Ok(self.commit(pending))
    }

    fn offline(&self, pool: &str, machine: &str, last_day_end: Millis, id: u128, now: Millis) -> Result<LicenseFields> {
        let order = OfflineOrder { target: self.target_in(pool_id(pool), machine), last_day_end, id: OfflineId(id) };
        let pending = self.broker.create_offline(&self.owner, &order, now, |_| "file".into())?;
        Ok(self.commit(pending).0)
    }

    fn pool_in_use(&self, pool: &str) -> u32 {
        self.broker.status(&self.owner, None).unwrap().iter().find(|s| s.pool == pool_id(pool)).unwrap().in_use
    }
}

const DAY: u64 = DAY_MS;

#[test]
fn grants_are_capped_by_quota_and_transferable() {
    let w = world(1);
    w.set_pool("kse-floating-annual", 2);
    let a = w.add_member("a@default", Role::User, 3);
    w.add_member("b@default", Role::User, 4);
    w.add_member("c@default", Role::User, 5);
    w.grant("kse-floating-annual", "a@default").unwrap();
    w.grant("kse-floating-annual", "b@default").unwrap();
    assert_eq!(w.grant("kse-floating-annual", "c@default"), Err(Error::GrantLimit { quota: 2 }));
    assert!(matches!(w.grant("kre-floating-annual", "c@default"), Err(Error::Invalid { .. })), "KRE needs no grant");
    // Transfer: revoke from a, grant to c. Revoking ends a's live sessions.
    let lease = w
        .broker
        .acquire(&a, &w.target_in(pool_id("kse-floating-annual"), "laptop"), Nonce(1), ConnId(9), t(0))
        .unwrap();
    let plan = w
        .broker
        .plan_revoke_grant(&w.owner, &w.org, pool_id("kse-floating-annual"), &Email::new("a@default").unwrap(), t(1))
        .unwrap();
    let ended = w.broker.apply(&plan, t(0));
    assert_eq!((ended.len(), ended[0].info.session, ended[0].reason), (1, lease.session, EndReason::Revoked));
    assert_eq!(
        w.broker.acquire(&a, &w.target_in(pool_id("kse-floating-annual"), "laptop"), Nonce(2), ConnId(9), t(2)),
        Err(Error::NotLicensed)
    );
    w.grant("kse-floating-annual", "c@default").unwrap();
    // Lowering the quota below the grants keeps them but refuses new ones.
    w.set_pool("kse-floating-annual", 1);
    assert_eq!(w.broker.grants(&w.owner, &w.org, None).unwrap().len(), 2);
    let plan = w
        .broker
        .plan_revoke_grant(&w.owner, &w.org, pool_id("kse-floating-annual"), &Email::new("b@default").unwrap(), t(1))
        .unwrap();
    w.broker.apply(&plan, t(0));
    assert_eq!(w.grant("kse-floating-annual", "a@default"), Err(Error::GrantLimit { quota: 1 }));
}

#[test]
fn node_locked_activation_binds_one_machine_until_freed() {
    let w = world(1);
    w.set_pool("kse-node-locked-annual", 1);
    let a = w.add_member("a@default", Role::User, 3);
    let b = w.add_member("b@default", Role::User, 4);
    let pool = pool_id("kse-node-locked-annual");
    assert_eq!(w.activate(&a, pool, "m1", t(0)), Err(Error::NotLicensed));
    w.grant("kse-node-locked-annual", "a@default").unwrap();
    assert_eq!(w.activate(&a, pool, "m1", t(0)), Ok(Activation::Bound { already: false }));
    assert_eq!(w.pool_in_use("kse-node-locked-annual"), 1, "a binding holds a seat");
    assert_eq!(w.activate(&a, pool, "m1", t(1)), Ok(Activation::Bound { already: true }));
    assert_eq!(w.activate(&a, pool, "m2", t(1)), Err(Error::AlreadyActivated { machine: mid("m1") }));
    assert!(matches!(
        w.broker.acquire(&a, &w.target_in(pool, "m1"), Nonce(1), ConnId(1), t(1)),
        Err(Error::Invalid { .. })
    ));
    let _ = b;
    // The Owner frees m1; a may activate elsewhere.
    w.broker.apply(&w.broker.plan_remove_machine(&w.owner, &w.org, Some(pool), &mid("m1"), t(2)).unwrap(), t(0));
    assert_eq!(w.pool_in_use("kse-node-locked-annual"), 0);
    assert!(matches!(w.activate(&a, pool, "m2", t(3)), Ok(Activation::Bound { already: false })));
}

#[test]
fn offline_license_holds_a_seat_until_it_expires() {
    let w = world(1);
    w.set_pool("kre-node-locked-annual", 2);
    let now = t(0);
    let today_end = Millis((now.0 / DAY + 1) * DAY);
    let r = w.offline("kre-node-locked-annual", "air-gapped", Millis(today_end.0 + 10 * DAY), 7, now).unwrap();
    assert_eq!(w.pool_in_use("kre-node-locked-annual"), 1);
    assert_eq!(w.broker.next_deadline(), Some(r.expires));
    // One machine, one live offline license.
    assert!(matches!(
        w.offline("kre-node-locked-annual", "air-gapped", Millis(today_end.0 + 20 * DAY), 8, now),
        Err(Error::AlreadyExists { .. })
    ));
    w.offline("kre-node-locked-annual", "other", Millis(today_end.0 + 5 * DAY), 9, now).unwrap();
    assert!(matches!(
        w.offline("kre-node-locked-annual", "third", Millis(today_end.0 + 5 * DAY), 10, now),
        Err(Error::QuotaExceeded { quota: 2 })
    ));
    // Time passes: the 5-day one returns its seat at its expiry, not before.
    w.broker.expire(Millis(today_end.0 + 5 * DAY - 1));
    assert_eq!(w.pool_in_use("kre-node-locked-annual"), 2);
    w.broker.expire(Millis(today_end.0 + 5 * DAY));
    assert_eq!(w.pool_in_use("kre-node-locked-annual"), 1);
    w.broker.expire(r.expires);
    assert_eq!(w.pool_in_use("kre-node-locked-annual"), 0);
    // Expired ones stay listed; a new one for the same machine is allowed now.
    let listed = w.broker.offline_licenses(&w.owner, &w.org).unwrap();
    assert_eq!(listed.iter().filter(|o| !o.active).count(), 2);
    w.offline("kre-node-locked-annual", "air-gapped", Millis(r.expires.0 + 30 * DAY), 11, r.expires).unwrap();
    assert_eq!(w.pool_in_use("kre-node-locked-annual"), 1);
}

#[test]
fn offline_licenses_refused_with_the_rule_that_applies() {
    let w = world(1);
    for pool in ["kse-node-locked-monthly", "kse-floating-annual", "kse-node-locked-annual"] {
        w.set_pool(pool, 5);
    }
    let user = w.add_member("u@default", Role::User, 3);
    let now = t(0);
    let today_end = Millis((now.0 / DAY + 1) * DAY);
    let in_days = |d: u64| Millis(today_end.0 + d * DAY);
    let reserve = |p: &Principal, pool: &str, end: Millis| {
        let order = OfflineOrder { target: w.target_in(pool_id(pool), "m"), last_day_end: end, id: OfflineId(1) };
        w.broker.create_offline(p, &order, now, |_| String::new()).map(|_| ())
    };
    assert!(matches!(reserve(&w.owner, "kse-node-locked-monthly", in_days(1)), Err(Error::OfflineNotAllowed { .. })));
    assert!(matches!(reserve(&w.owner, "kse-floating-annual", in_days(1)), Err(Error::OfflineNotAllowed { .. })));
    assert!(matches!(reserve(&user, "kse-node-locked-annual", in_days(1)), Err(Error::Forbidden(_))));
    match reserve(&w.owner, "kse-node-locked-annual", in_days(61)) {
        Err(e @ Error::ExpiryTooLate { limit: ExpiryLimit::MaxDays, .. }) => {
            assert!(e.to_string().contains("60 days"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(reserve(&w.owner, "kse-node-locked-annual", Millis(today_end.0 - DAY)).is_err(), "yesterday");
    // A subscription ending sooner than 60 days is the limit that applies.
    let acme = OrgName::new("acme").unwrap();
    let owner = Email::new("o@acme").unwrap();
    w.broker.apply(&w.broker.plan_create_org(&w.operator, &acme, in_days(10), &owner, key(9), now).unwrap(), t(0));
    w.broker
        .apply(&w.broker.plan_set_pool(&w.operator, &acme, pool_id("kse-node-locked-annual"), 3, now).unwrap(), t(0));
    let acme_owner = w.broker.authenticate(&key(9)).unwrap();
    // The window the console offers is the one enforced.
    let window = w.broker.offline_window(&acme_owner, &acme, now).unwrap();
    assert_eq!((window.first, window.last, window.limit), (today_end, in_days(10), ExpiryLimit::Subscription));
    let default_window = w.broker.offline_window(&w.owner, &w.org, now).unwrap();
    assert_eq!((default_window.last, default_window.limit), (in_days(60), ExpiryLimit::MaxDays));
    assert!(matches!(w.broker.offline_window(&user, &w.org, now), Err(Error::Forbidden(_))));
    let target = Target { org: acme.clone(), pool: pool_id("kse-node-locked-annual"), machine: mid("m") };
    let order = OfflineOrder { target, last_day_end: in_days(11), id: OfflineId(2) };
    let r = w.broker.create_offline(&acme_owner, &order, now, |_| String::new()).map(|_| ());
    match r {
        Err(e @ Error::ExpiryTooLate { limit: ExpiryLimit::Subscription, .. }) => {
            assert!(e.to_string().contains("subscription"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Nothing above took a seat.
    assert_eq!(w.pool_in_use("kse-node-locked-annual"), 0);
    // Revoke and transfer are refused outright.
    w.offline("kse-node-locked-annual", "m", in_days(3), 0xabc, now).unwrap();
    let id = format!("{:032x}", 0xabc);
    assert!(matches!(w.broker.refuse_offline_change(&w.owner, &w.org, &id), Error::OfflineIrrevocable { .. }));
    assert!(matches!(w.broker.refuse_offline_change(&user, &w.org, &id), Error::Forbidden(_)));
}

#[test]
fn restart_restores_activations_and_offline_seats() {
    let w = world(1);
    w.set_pool("kse-node-locked-annual", 3);
    let a = w.add_member("a@default", Role::User, 3);
    w.grant("kse-node-locked-annual", "a@default").unwrap();
    let pending =
        w.broker.activate(&a, &w.target_in(pool_id("kse-node-locked-annual"), "m1"), Nonce(0), ConnId(0), t(0));
    let pending = pending.unwrap();
    let changes = pending.changes().to_vec();
    assert_eq!(w.commit(pending), Activation::Bound { already: false });
    let today_end = Millis((t(0).0 / DAY + 1) * DAY);
    w.offline("kse-node-locked-annual", "m2", Millis(today_end.0 + DAY), 5, t(0)).unwrap();
    // Replay everything durable into a fresh broker, as a restart does.
    let fresh = Broker::new(Config { lease_ttl: TTL, shard_bits: 2, ..Config::default() });
    let mut durable = fresh.plan_bootstrap(key(1), &Email::new("owner@default").unwrap(), key(2), t(0));
    durable.push(Change::Put(Record::Pool { org: w.org.clone(), pool: pool_id("kse-node-locked-annual"), quota: 3 }));
    durable.push(Change::Put(Record::User {
        org: w.org.clone(),
        email: Email::new("a@default").unwrap(),
        role: Role::User,
        created: t(0),
    }));
    durable.extend(changes.iter().filter(|c| !matches!(c, Change::Put(Record::Audit(_)))).cloned());
    durable.push(Change::Put(Record::Grant {
        org: w.org.clone(),
        pool: pool_id("kse-node-locked-annual"),
        email: Email::new("a@default").unwrap(),
        granted: t(0),
    }));
    let r = w.broker.offline_licenses(&w.owner, &w.org).unwrap();
    assert_eq!(r.len(), 1);
    durable.push(Change::Put(Record::Offline {
        org: w.org.clone(),
        pool: pool_id("kse-node-locked-annual"),
        license: OfflineLicense {
            id: OfflineId(5),
            machine: mid("m2"),
            issued: t(0),
            expires: Millis(today_end.0 + DAY),
            created_by: Email::new("owner@default").unwrap(),
            file: "file".into(),
        },
    }));
    fresh.apply(&durable, t(0));
    fresh.apply(&durable, t(0)); // applying twice changes nothing
    let owner = fresh.authenticate(&key(2)).unwrap();
    let in_use = |b: &Broker| b.status(&owner, None).unwrap()[0].in_use;
    assert_eq!(in_use(&fresh), 2, "binding and offline license hold their seats after a restart");
    fresh.expire(Millis(today_end.0 + DAY));
    assert_eq!(in_use(&fresh), 1, "the offline seat returns at expiry");
}

#[test]
fn a_registration_admits_nobody_until_it_is_committed() {
    let w = world(2);
    let pending = w.broker.register(&w.owner, &w.target("new"), t(0), false).unwrap();
    assert_eq!(w.acquire("new", 1, 1, t(0)), Err(Error::MachineNotRegistered), "not durable yet");
    assert!(!w.broker.is_registered(&w.owner, &w.target("new")).unwrap());
    assert_eq!(w.machines(), 0, "status counts durable machines only");
    // It holds its slot of the cap meanwhile.
    let second = w.broker.register(&w.owner, &w.target("other"), t(0), false).unwrap();
    assert!(matches!(
        w.broker.register(&w.owner, &w.target("third"), t(0), false),
        Err(Error::MachineLimit { quota: 2 })
    ));
    // A failed commit gives the slot back; a committed one admits.
    assert_eq!(second.settle(&w.broker, Err("disk full"), t(0)).err(), Some("disk full"));
    assert_eq!(w.commit(pending), Registration::New);
    assert!(w.acquire("new", 1, 1, t(0)).is_ok());
    assert_eq!(w.register("third"), Ok(Registration::New));
}

#[test]
fn a_checkpoint_since_the_last_writes_only_the_pools_that_changed() {
    let w = world(1);
    w.register("m").unwrap();
    let pool_records = |records: &[Record]| records.iter().filter(|r| r.org().is_some()).count();
    let (all, figures) = w.broker.checkpoint_since(t(1), &Default::default());
    assert_eq!(pool_records(&all), 4, "counts, ends, denials and seat time of the one pool");
    let (quiet, figures) = w.broker.checkpoint_since(t(2), &figures);
    assert_eq!(pool_records(&quiet), 0, "nothing changed");
    assert!(quiet.contains(&Record::Clock { high_water: t(2) }), "the clock is always written");
    let lease = w.acquire("m", 1, 1, t(3)).unwrap();
    w.broker.release(&w.owner, lease.session, t(4)).unwrap();
    let (busy, figures) = w.broker.checkpoint_since(t(5), &figures);
    let admitted = busy.iter().find_map(|r| match r {
        Record::Counters { admitted, .. } => Some(*admitted),
        _ => None,
    });
    assert_eq!(admitted, Some(1), "an admission since the last checkpoint is written");
    assert_eq!(busy, w.broker.checkpoint(t(5)), "and the same records as a full checkpoint");
    assert_eq!(pool_records(&w.broker.checkpoint_since(t(6), &figures).0), 0);
}

#[test]
fn checkpoint_carries_admission_counts_and_the_clock_into_the_next_run() {
    let w = world(1);
    w.register("m").unwrap();
    w.acquire("m", 1, 1, t(0)).unwrap();
    assert!(w.acquire("m", 2, 1, t(0)).is_err());
    let records = w.broker.checkpoint(t(5));
    assert!(records.contains(&Record::Clock { high_water: t(5) }));
    let next = Fixture::new(1, 2, TTL);
    next.broker.apply(&records.into_iter().map(Change::Put).collect::<Vec<_>>(), t(0));
    let st = next.pool_status();
    assert_eq!((st.admitted, st.rejected), (1, 1));
    assert_eq!(next.broker.high_water(), t(5));
    next.register("m").unwrap();
    next.acquire("m", 1, 1, t(6)).unwrap();
    assert_eq!(next.pool_status().admitted, 2, "this run's admissions add to the earlier ones");
}

#[test]
fn nobody_can_be_added_as_the_operator() {
    let w = world(1);
    let operator = Email::new(admin::OPERATOR_EMAIL).unwrap();
    let add = w.broker.plan_add_user(&w.owner, &w.org, &operator, Role::User, t(0));
    assert!(matches!(add, Err(Error::Invalid { what: "email", .. })), "{add:?}");
    let name = OrgName::new("acme").unwrap();
    let org = w.broker.plan_create_org(&w.operator, &name, t(86_400_000), &operator, key(9), t(0));
    assert!(matches!(org, Err(Error::Invalid { what: "email", .. })), "{org:?}");
}

#[test]
fn only_the_holder_renews_or_releases_a_session() {
    let w = world(2);
    w.register("m").unwrap();
    let lease = w.acquire("m", 1, 1, t(0)).unwrap();
    let other = w.add_member("u@default", Role::User, 3);
    let admin = w.add_member("a@default", Role::Admin, 4);
    for p in [&other, &admin] {
        assert_eq!(w.broker.renew(p, lease.session, t(1)), Err(Error::SessionExpired), "looks ended to {}", p.email);
        assert_eq!(w.broker.release(p, lease.session, t(0)).map(|e| e.reason), Err(Error::SessionExpired));
    }
    assert_eq!(w.in_use(), 1, "nothing was released");
    assert!(w.broker.renew(&w.owner, lease.session, t(1)).is_ok(), "the holder renews");
    let ended = w.broker.kill(&admin, &w.org, lease.session, t(0)).unwrap();
    assert_eq!(ended.reason, EndReason::Revoked, "an Admin ends it with kill");
}

fn ceiling_world(quota: u32) -> Fixture {
    let w = Fixture::with_ceilings(quota, 2, TTL);
    w.register("m").unwrap();
    w
}

#[test]
fn sessions_admitted_past_the_ceiling_only_after_it_is_raised() {
    let w = ceiling_world(100);
    assert_eq!(w.acquire("m", 1, 1, t(0)), Err(Error::CeilingReached), "a new pool's ceiling is 0");
    assert_eq!(w.raise(), Some(1));
    assert_eq!(w.raise(), None, "a raise that is no longer needed writes nothing");
    w.acquire("m", 1, 1, t(0)).unwrap();
    assert_eq!(w.acquire("m", 2, 1, t(0)), Err(Error::CeilingReached));
    // Each raise adds a quarter of the sessions held (at least one).
    let mut raises = vec![];
    for n in 2..=40 {
        if w.acquire("m", n, 1, t(0)) == Err(Error::CeilingReached) {
            raises.push(w.raise().unwrap());
            w.acquire("m", n, 1, t(0)).unwrap();
        }
    }
    // (The first counts the two refusals of nonce 2 above as two waiting admissions.)
    assert_eq!(raises, [3, 4, 5, 6, 7, 8, 10, 12, 15, 18, 22, 27, 33, 41]);
    let s = w.pool_status();
    assert_eq!((s.in_use, s.rejected), (40, 0), "a ceiling refusal is not a quota refusal");
}

#[test]
fn the_ceiling_never_passes_the_quota_and_the_quota_still_refuses() {
    let w = ceiling_world(10);
    for n in 0..10 {
        if w.acquire("m", n, 1, t(0)) == Err(Error::CeilingReached) {
            assert!(w.raise().unwrap() <= 10);
            w.acquire("m", n, 1, t(0)).unwrap();
        }
    }
    assert_eq!(w.acquire("m", 10, 1, t(0)), Err(Error::QuotaExceeded { quota: 10 }));
    assert_eq!(w.raise(), None);
}

#[test]
fn an_idle_pool_lowers_its_ceiling_in_memory_first() {
    let w = ceiling_world(1000);
    let mut leases = Vec::new();
    for n in 0..100 {
        loop {
            match w.acquire("m", n, 1, t(0)) {
                Ok(l) => break leases.push(l),
                Err(Error::CeilingReached) => assert!(w.raise().is_some()),
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(w.broker.lower_ceilings(false).is_empty(), "a busy pool keeps its ceiling");
    for l in &leases[..98] {
        w.broker.release(&w.owner, l.session, t(0)).unwrap();
    }
    // Lowered only after three passes without a raise: a pool whose use
    // swings is not lowered and raised again every pass.
    assert!(w.broker.lower_ceilings(false).is_empty());
    let lowered = w.broker.lower_ceilings(false);
    assert_eq!(lowered.len(), 1);
    assert!(matches!(lowered[0], Record::Ceiling { seats: 3, .. }), "{lowered:?}");
    // Memory obeys the lower value before anything is written.
    w.acquire("m", 200, 1, t(0)).unwrap();
    assert_eq!(w.acquire("m", 300, 1, t(0)), Err(Error::CeilingReached));
    // At a drain, exactly what sessions hold.
    assert!(w.broker.lower_ceilings(true).is_empty(), "already exactly the 3 sessions held");
    w.broker.release(&w.owner, leases[98].session, t(0)).unwrap();
    assert!(matches!(w.broker.lower_ceilings(true)[..], [Record::Ceiling { seats: 2, .. }]));
}

#[test]
fn durable_holders_do_not_count_against_the_ceiling() {
    let w = Fixture::with_ceilings(3, 2, TTL);
    let kse = w.with_kse_grant("kse-node-locked-annual", 3, &w.owner);
    let bound = w.broker.activate(&w.owner, &w.target_in(kse, "pc"), Nonce(1), ConnId(1), t(0)).unwrap();
    assert_eq!(w.commit(bound), Activation::Bound { already: false });
    let status = w.broker.status(&w.owner, None).unwrap();
    assert_eq!(status.iter().find(|s| s.pool == kse).unwrap().in_use, 1);
}

/// A broker restarted over `w`'s records, with a durable ceiling of `ceiling` on the KRE pool.
fn restarted(w: &Fixture, ceiling: u32, previous: Option<Record>) -> Fixture {
    let r = Fixture::with_ceilings(10, 2, TTL);
    r.register("m").unwrap();
    let mut records =
        vec![Change::Put(Record::Ceiling { org: w.org.clone(), pool: PoolId::KRE_DEFAULT, seats: ceiling })];
    records.extend(previous.map(Change::Put));
    r.broker.apply(&records, t(0));
    r
}

#[test]
fn a_restart_holds_the_ceiling_for_the_previous_runs_runners() {
    let w = ceiling_world(10);
    let r = restarted(&w, 4, None);
    let hold = r.broker.hold_reserves(t(1_000)).unwrap();
    assert_eq!((hold.seats, hold.until), (4, t(1_000 + 30_000 + 10_000)));
    assert_eq!(hold.record, Record::Leases { ttl_ms: 30_000, hold_until: hold.until });
    assert_eq!(r.in_use(), 4);
    // A newcomer needs a raise (the ceiling covers the held seats), then fits under the quota.
    assert_eq!(r.acquire("m", 50, 1, t(1_000)), Err(Error::CeilingReached));
    assert_eq!(r.raise(), Some(5), "4 held, and a quarter more (at least one)");
    r.acquire("m", 50, 1, t(1_000)).unwrap();
    assert_eq!(r.in_use(), 5);
    // A runner of the previous run takes its held seat: nothing new is counted.
    let target = r.target("m");
    let back = r.broker.reattach(&r.owner, &target, Nonce(7), ConnId(2), t(2_000), true).unwrap();
    assert!(!back.reattached);
    assert_eq!((r.in_use(), r.broker.status(&r.owner, None).unwrap()[0].admitted), (5, 1));
    // Twice with the same nonce: the same session, no second seat.
    let again = r.broker.reattach(&r.owner, &target, Nonce(7), ConnId(3), t(2_500), true).unwrap();
    assert_eq!((again.session, again.reattached, r.in_use()), (back.session, true, 5));
    // Both sessions' leases run out before the hold ends; the held seats stay held.
    assert_eq!(r.broker.expire(Millis(hold.until.0 - 1)).len(), 2);
    assert_eq!(r.broker.next_deadline(), Some(hold.until));
    assert_eq!(r.in_use(), 3);
    // The hold ends: the three seats nobody came back for are free again.
    r.broker.expire(hold.until);
    assert_eq!((r.in_use(), r.broker.next_deadline()), (0, None));
    // Past the hold a re-attach is an acquire like any other.
    let late = r.broker.reattach(&r.owner, &target, Nonce(8), ConnId(2), hold.until, true).unwrap();
    assert!(!late.reattached);
    assert_eq!(r.in_use(), 1);
}

#[test]
fn a_hold_covers_the_previous_runs_ttl_and_any_earlier_hold() {
    let w = ceiling_world(10);
    let previous = Record::Leases { ttl_ms: 120_000, hold_until: t(500_000) };
    let r = restarted(&w, 2, Some(previous));
    assert_eq!(r.broker.hold_reserves(t(1_000)).unwrap().until, t(500_000));
    let previous = Record::Leases { ttl_ms: 120_000, hold_until: t(0) };
    let r = restarted(&w, 2, Some(previous));
    assert_eq!(r.broker.hold_reserves(t(1_000)).unwrap().until, t(1_000 + 120_000 + 10_000));
}

#[test]
fn a_pool_without_a_ceiling_record_holds_every_seat_not_held_durably() {
    // A data dir written before ceilings existed: the safe guess is every seat.
    let legacy = Fixture::new(6, 2, TTL);
    assert_eq!(legacy.broker.hold_reserves(t(0)), None, "ceilings off: nothing held");
    let old = Broker::new(Config { ceilings: true, ..Config::default() });
    let org = OrgName::new("acme").unwrap();
    old.apply(
        &[
            Change::Put(Record::Org { name: org.clone(), subscription_end: Millis::MAX, created: t(0) }),
            Change::Put(Record::Pool { org: org.clone(), pool: PoolId::KRE_DEFAULT, quota: 6 }),
        ],
        t(0),
    );
    assert_eq!(old.hold_reserves(t(0)).unwrap().seats, 6);
}

#[test]
fn a_runner_of_this_run_cannot_reattach_to_an_ended_session() {
    let w = ceiling_world(10);
    assert!(w.raise().is_some());
    let lease = w.acquire("m", 1, 1, t(0)).unwrap();
    let target = w.target("m");
    let again = w.broker.reattach(&w.owner, &target, Nonce(1), ConnId(2), t(1), false).unwrap();
    assert_eq!((again.session, again.reattached), (lease.session, true));
    w.broker.kill(&w.owner, &w.org, lease.session, t(0)).unwrap();
    assert_eq!(w.broker.reattach(&w.owner, &target, Nonce(1), ConnId(2), t(2), false), Err(Error::SessionExpired));
    assert_eq!(w.in_use(), 0);
}

#[test]
fn a_raise_makes_room_for_every_admission_waiting_for_it() {
    let w = ceiling_world(100);
    assert_eq!(w.raise(), Some(1));
    w.acquire("m", 0, 1, t(0)).unwrap();
    // Twenty newcomers arrive at once and all meet the ceiling.
    for n in 1..=20 {
        assert_eq!(w.acquire("m", n, 1, t(0)), Err(Error::CeilingReached));
    }
    assert_eq!(w.raise(), Some(21), "one raise for all twenty");
    for n in 1..=20 {
        w.acquire("m", n, 1, t(0)).unwrap();
    }
}

#[test]
fn labels_travel_with_the_session_and_only_its_holder_relabels_it() {
    let w = world(2);
    w.register("m").unwrap();
    let labels = Labels::new([("job".to_string(), "e2e".to_string())]).unwrap();
    let who = Claimant { nonce: Nonce(1), conn: ConnId(1), labels: labels.clone() };
    let lease = w.broker.acquire_as(&w.owner, &w.target("m"), &who, t(0)).unwrap();
    assert_eq!(w.broker.sessions(&w.owner, &w.org).unwrap()[0].labels, labels);
    let other = w.add_member("u@default", Role::User, 9);
    let relabel = Labels::new([("job".to_string(), "nightly".to_string())]).unwrap();
    assert_eq!(w.broker.label(&other, lease.session, relabel.clone()), Err(Error::SessionExpired));
    w.broker.label(&w.owner, lease.session, relabel.clone()).unwrap();
    assert_eq!(w.broker.sessions(&w.owner, &w.org).unwrap()[0].labels, relabel);
    let ended = w.broker.release(&w.owner, lease.session, t(0)).unwrap();
    assert_eq!(ended.info.labels, relabel, "the end carries them (for the log and usage history)");
}

#[test]
fn a_user_cap_limits_that_user_alone_and_counts_sessions_older_than_it() {
    let w = world(5);
    w.register("m").unwrap();
    let cap =
        |max| w.apply(w.broker.plan_set_user_limit(&w.owner, &w.org, PoolId::KRE_DEFAULT, &w.owner.email, max, t(0)));
    let first = w.acquire("m", 1, 1, t(0)).unwrap();
    let second = w.acquire("m", 2, 1, t(0)).unwrap();
    cap(Some(1));
    // The two sessions from before the cap are counted, not cut.
    assert_eq!(w.broker.user_limits(&w.owner, &w.org, PoolId::KRE_DEFAULT).unwrap()[0].2, 2);
    assert_eq!(w.acquire("m", 3, 1, t(0)), Err(Error::UserLimit { max: 1 }));
    w.broker.release(&w.owner, first.session, t(0)).unwrap();
    assert_eq!(w.acquire("m", 3, 1, t(0)), Err(Error::UserLimit { max: 1 }), "still at the cap");
    w.broker.release(&w.owner, second.session, t(0)).unwrap();
    let third = w.acquire("m", 3, 1, t(0)).unwrap();
    assert_eq!(w.acquire("m", 3, 1, t(1)).unwrap().session, third.session, "a retry takes no second count");
    // Another member is not capped.
    let other = w.add_member("u@default", Role::User, 9);
    let target = w.target("m");
    assert!(w.broker.acquire(&other, &target, Nonce(50), ConnId(2), t(0)).is_ok());
    // Expiry gives the count back too; no cap admits freely again.
    assert_eq!(w.broker.expire(t(40_000)).len(), 2);
    cap(None);
    for n in 10..13 {
        w.acquire("m", n, 1, t(40_000)).unwrap();
    }
    assert_eq!(
        w.broker.user_limits(&w.owner, &w.org, PoolId::KRE_DEFAULT).unwrap()[0],
        (w.owner.email.clone(), u32::MAX, 3)
    );
}

#[test]
fn session_ends_are_counted_by_reason_and_carried_across_a_restart() {
    let w = world(4);
    w.register("m").unwrap();
    let l: Vec<_> = (0..4).map(|n| w.acquire("m", n, 1, t(0)).unwrap()).collect();
    w.broker.release(&w.owner, l[0].session, t(0)).unwrap();
    w.broker.renew(&w.owner, l[1].session, t(20_000)).unwrap();
    w.broker.renew(&w.owner, l[2].session, t(20_000)).unwrap();
    assert_eq!(w.broker.expire(t(31_000)).len(), 1, "the one never renewed");
    w.broker.kill(&w.owner, &w.org, l[1].session, t(0)).unwrap();
    w.broker.close_connection(ConnId(1), [l[2].session], t(0));
    // Released, expired, revoked, connection closed.
    assert_eq!(w.pool_status().ends, [1, 1, 1, 1]);
    let saved: Vec<Change> = w.broker.checkpoint(t(40_000)).into_iter().map(Change::Put).collect();
    let again = world(4);
    again.broker.apply(&saved, t(0));
    assert_eq!(again.pool_status().ends, [1, 1, 1, 1], "restored from the checkpoint's records");
    assert_eq!((again.pool_status().admitted, again.pool_status().rejected), (4, 0));
}

#[test]
fn failed_authentications_are_counted_across_restarts() {
    let w = world(1);
    w.broker.note_auth_failure();
    w.broker.note_auth_failure();
    let saved: Vec<Change> = w.broker.checkpoint(t(1_000)).into_iter().map(Change::Put).collect();
    let again = world(1);
    again.broker.apply(&saved, t(0));
    again.broker.note_auth_failure();
    assert_eq!(again.broker.auth_failures(), 3);
}

#[test]
fn denials_are_counted_by_reason_and_carried_across_a_restart() {
    use crate::core::Denial;
    let w = world(1);
    w.broker.note_denial(&w.org, PoolId::KRE_DEFAULT, Denial::UserLimit);
    w.broker.note_denial(&w.org, PoolId::KRE_DEFAULT, Denial::QueueTimeout);
    w.broker.note_denial(&w.org, PoolId::KRE_DEFAULT, Denial::QueueTimeout);
    // A pool that does not exist counts nothing (and creates nothing).
    let kse: PoolId = "kse-floating-annual".parse().unwrap();
    w.broker.note_denial(&w.org, kse, Denial::NotLicensed);
    assert_eq!(w.pool_status().denied, [1, 0, 2, 0, 0, 0, 0, 0]);
    let saved: Vec<Change> = w.broker.checkpoint(t(1_000)).into_iter().map(Change::Put).collect();
    let again = world(1);
    again.broker.apply(&saved, t(0));
    again.broker.note_denial(&again.org, PoolId::KRE_DEFAULT, Denial::UserLimit);
    assert_eq!(again.pool_status().denied, [2, 0, 2, 0, 0, 0, 0, 0], "restored, then counting on");
    // A record written before `LABEL_LIMIT` was counted (seven reasons) restores as it was.
    let old = Record::Denials { org: w.org.clone(), pool: PoolId::KRE_DEFAULT, by_reason: vec![3, 0, 0, 0, 0, 0, 1] };
    let older = world(1);
    older.broker.apply(&[Change::Put(old)], t(0));
    assert_eq!(older.pool_status().denied, [3, 0, 0, 0, 0, 0, 1, 0]);
}

#[test]
fn seat_time_and_minutes_are_exact_across_shards_and_survive_a_restart() {
    // A timeline starting on a minute boundary.
    let first = t(0).0 / usage::MINUTE_MS + 1;
    let at = |ms: u64| Millis(first * usage::MINUTE_MS + ms);
    let w = world(3);
    w.register("m1").unwrap();
    // Nonces 1..=8 spread over the 4 shards; two sessions held, in two shards at least.
    let a = w.acquire("m1", 1, 1, at(10_000)).unwrap();
    let _b = w.acquire("m1", 2, 1, at(20_000)).unwrap();
    w.broker.release(&w.owner, a.session, at(70_000)).unwrap();
    assert_eq!(w.acquire("m1", 3, 1, at(80_000)).map(|_| ()), Ok(()));
    w.acquire("m1", 4, 1, at(90_000)).unwrap();
    assert_eq!(w.acquire("m1", 5, 1, at(100_000)), Err(Error::QuotaExceeded { quota: 3 }));
    let seat_ms = |b: &Broker, now| b.seat_ms(now).iter().map(|(_, _, ms)| ms).sum::<u64>();
    // Minute 0: a 50 s + b 40 s. Minute 1: a 10 s + b 60 s + c 40 s + d 30 s. Minute 2 so far: b, c, d 5 s each.
    assert_eq!(seat_ms(&w.broker, at(125_000)), 90_000 + 140_000 + 15_000);
    let h = w.broker.harvest(at(125_000));
    let mut minutes: std::collections::BTreeMap<u64, usage::Tally> = Default::default();
    for (_, _, c) in &h.minutes {
        minutes.entry(c.minute).or_default().add(&c.tally);
        for idle in 1..=c.idle {
            let held = usage::Tally { seat_ms: c.held * usage::MINUTE_MS, ..Default::default() };
            minutes.entry(c.minute + idle).or_default().add(&held);
        }
    }
    let m0 = usage::Tally { seat_ms: 90_000, admitted: 2, ..Default::default() };
    let m1 = usage::Tally { seat_ms: 140_000, admitted: 2, rejected: 1, ends: [1, 0, 0, 0] };
    assert_eq!(minutes.into_iter().collect::<Vec<_>>(), vec![(first, m0), (first + 1, m1)]);
    let pool = &h.pools[0];
    assert_eq!((pool.peak, pool.trough, pool.quota), (3, 0, 3), "{pool:?}");
    let next = w.broker.harvest(at(130_000));
    assert!(next.minutes.is_empty(), "minute 2 is still open");
    assert_eq!((next.pools[0].peak, next.pools[0].trough), (3, 3), "a window with no change is its level");
    // The counter survives a restart through the checkpoint.
    let saved: Vec<Change> = w.broker.checkpoint(at(130_000)).into_iter().map(Change::Put).collect();
    assert!(saved.iter().any(|c| matches!(c, Change::Put(Record::SeatTime { ms: 260_000, .. }))), "{saved:?}");
    let again = world(3);
    again.broker.apply(&saved, at(0));
    assert_eq!(seat_ms(&again.broker, at(200_000)), 260_000);
}

#[test]
fn adopting_an_org_holds_its_ceiling_for_the_previous_owners_runners_then_forgetting_it_leaves_nothing() {
    let w = ceiling_world(10);
    // Another node: it knows the cluster's global records (a run with a longer TTL wrote its mark).
    let b = Broker::new(Config { lease_ttl: TTL, ceilings: true, shard_bits: 2, ..Config::default() });
    b.apply(&[Change::Put(Record::Leases { ttl_ms: 60_000, hold_until: t(0) })], t(0));
    assert!(b.authenticate(&key(2)).is_err(), "not adopted yet: the org's keys are unknown here");
    assert_eq!(b.adopt_org(&w.org, w.org_records(10, 4), t(1_000)).0, 4);
    let until = t(1_000 + 60_000 + 10_000);
    assert_eq!(b.next_deadline(), Some(until), "the longest recorded TTL, plus the grace");
    let owner = b.authenticate(&key(2)).unwrap();
    let in_use = |b: &Broker| b.status(&owner, None).unwrap()[0].in_use;
    assert_eq!(in_use(&b), 4, "the ceiling's seats are held");
    // A runner of the previous owner takes a held seat; a newcomer needs a raise first.
    let target = w.target("m");
    assert!(!b.reattach(&owner, &target, Nonce(7), ConnId(1), t(2_000), true).unwrap().reattached);
    assert_eq!(in_use(&b), 4);
    assert_eq!(b.acquire(&owner, &target, Nonce(8), ConnId(1), t(2_000)), Err(Error::CeilingReached));
    // The hold ends: only the runner that came back holds a seat.
    let session = b.sessions.list(|_| true)[0].session;
    b.renew(&owner, session, t(25_000)).unwrap();
    b.renew(&owner, session, t(50_000)).unwrap();
    b.expire(until);
    assert_eq!(in_use(&b), 1);
    // Handed on: the org, its keys, sessions and deadlines are gone; the rest stays.
    assert!(b.adopt_org(&w.org, w.org_records(10, 1), t(3_000)).0 <= 1);
    b.forget_orgs(std::slice::from_ref(&w.org), t(3_000));
    assert!(b.authenticate(&key(2)).is_err());
    assert_eq!((b.live_sessions(), b.next_deadline(), b.org_names()), (0, None, vec![]));
    // And it can be adopted again, from its records alone.
    assert_eq!(b.adopt_org(&w.org, w.org_records(10, 3), t(4_000)).0, 3);
    assert_eq!(b.org_names(), vec![w.org.clone()]);
}

#[test]
fn a_session_handed_on_with_its_org_counts_its_seat_time_here_and_its_end_nowhere() {
    // Its runner re-attaches at the next node, which counts its end: the
    // history, summed over the nodes, counts each session's end once.
    let first = t(0).0 / usage::MINUTE_MS + 1;
    let at = |ms: u64| Millis(first * usage::MINUTE_MS + ms);
    let w = world(3);
    w.register("m1").unwrap();
    w.acquire("m1", 1, 1, at(10_000)).unwrap();
    w.broker.forget_orgs(std::slice::from_ref(&w.org), at(40_000));
    let h = w.broker.harvest(at(125_000));
    let mut total = usage::Tally::default();
    for (_, _, c) in &h.minutes {
        total.add(&c.tally);
    }
    assert_eq!(total, usage::Tally { seat_ms: 30_000, admitted: 1, ..Default::default() });
}

#[test]
fn a_handover_writes_the_ceiling_down_to_the_sessions_held_and_admits_nothing_past_it() {
    let w = ceiling_world(10);
    let mut leases = Vec::new();
    for n in 0..5 {
        loop {
            match w.acquire("m", n, 1, t(0)) {
                Ok(l) => break leases.push(l),
                Err(Error::CeilingReached) => assert!(w.raise().is_some()),
                Err(e) => panic!("{e}"),
            }
        }
    }
    w.broker.release(&w.owner, leases[0].session, t(0)).unwrap();
    w.broker.release(&w.owner, leases[1].session, t(0)).unwrap();
    assert!(!w.broker.holding(&w.org), "nothing held: this node made every session");
    // Written down to the 3 sessions left, at once (no quiet passes), and
    // from that instant nothing is admitted past them here.
    let written = w.broker.ceilings_to_sessions(std::slice::from_ref(&w.org));
    assert!(matches!(written[..], [Record::Ceiling { seats: 3, .. }]), "{written:?}");
    assert_eq!(w.acquire("m", 9, 1, t(0)), Err(Error::CeilingReached));
    assert!(w.broker.ceilings_to_sessions(std::slice::from_ref(&w.org)).is_empty(), "already there");
    // The next node holds just those 3 seats for their runners.
    let next = Broker::new(Config { lease_ttl: TTL, ceilings: true, shard_bits: 2, ..Config::default() });
    assert_eq!(next.adopt_org(&w.org, w.org_records(10, 3), t(1_000)).0, 3);
    assert!(next.holding(&w.org), "held until the hold is over");
    next.expire(t(1_000).after(TTL + Duration::from_secs(10)));
    assert!(!next.holding(&w.org));
}
