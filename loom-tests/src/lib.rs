//! loom models of the broker core live in `tests/`; they compile only with
//! `RUSTFLAGS="--cfg broker_loom"` (see `.ci/test`). This library adapts the
//! core's shared fixture (`license_broker::core::testkit`) to the models:
//! two session shards, and KRE machine `m` registered.

#![cfg(broker_loom)]

use std::ops::Deref;
use std::time::Duration;

use license_broker::core::testkit;
use license_broker::core::{Lease, Nonce, PoolId, Result};

pub use license_broker::core::testkit::t;

/// The lease TTL of every model.
pub const TTL: Duration = Duration::from_secs(30);

/// The shared fixture with org `default`, its KRE pool at `quota`, machine `m` registered.
pub struct Fixture(testkit::Fixture);

impl Deref for Fixture {
    type Target = testkit::Fixture;
    fn deref(&self) -> &testkit::Fixture {
        &self.0
    }
}

impl Fixture {
    /// Builds the fixture; call inside `loom::model`.
    pub fn new(quota: u32) -> Fixture {
        // Two shards: few loom objects, yet acquires can race on the seat
        // counter without sharing a shard lock (see `nonces_in_distinct_shards`).
        let f = Fixture(testkit::Fixture::new(quota, 1, TTL));
        if quota > 0 {
            f.register("m").unwrap();
        }
        f
    }

    /// The same with durable session ceilings on (as the broker ships),
    /// after a restart: the KRE pool's durable ceiling was `held`, so that
    /// many seats are held for the previous run's runners, and the ceiling
    /// has since been raised to the quota.
    pub fn restarted(quota: u32, held: u32) -> (Fixture, license_broker::core::Hold) {
        use license_broker::core::{Change, Record};
        let f = Fixture(testkit::Fixture::with_ceilings(quota, 1, TTL));
        f.register("m").unwrap();
        let ceiling = Record::Ceiling { org: f.org.clone(), pool: PoolId::KRE_DEFAULT, seats: held };
        f.broker.apply(&[Change::Put(ceiling)], t(0));
        let hold = f.broker.hold_reserves(t(0)).expect("ceilings are on");
        while f.raise().is_some() {}
        (f, hold)
    }

    /// Acquires on machine `m` with the given nonce at `now`.
    pub fn acquire(&self, nonce: u128, now: license_broker::core::Millis) -> Result<Lease> {
        self.0.acquire("m", nonce, 1, now)
    }

    /// Waits for a seat on machine `m` with the given nonce; a grant lands in the inbox.
    pub fn wait(&self, nonce: u128) -> (Result<license_broker::core::Waited>, testkit::Inbox) {
        self.0.wait("m", nonce, 1, t(0))
    }

    /// Caps the Owner's sessions in the KRE pool at `max` (as the Owner).
    pub fn cap_owner(&self, max: u32) {
        let email = self.owner.email.clone();
        self.0.apply(self.broker.plan_set_user_limit(
            &self.owner,
            &self.org,
            PoolId::KRE_DEFAULT,
            &email,
            Some(max),
            t(0),
        ));
    }

    /// Acquires on machine `m` with the given nonce, carrying `team=web` if `web`.
    pub fn acquire_labelled(&self, nonce: u128, web: bool) -> Result<Lease> {
        self.acquire_labelled_at(nonce, web, t(0))
    }

    /// As `acquire_labelled`, stamped `now`.
    pub fn acquire_labelled_at(&self, nonce: u128, web: bool, now: license_broker::core::Millis) -> Result<Lease> {
        use license_broker::core::{Claimant, ConnId};
        let pairs = web.then(|| ("team".to_string(), "web".to_string()));
        let labels = license_broker::value::Labels::new(pairs).expect("a valid label");
        let who = Claimant { nonce: Nonce(nonce), conn: ConnId(1), labels };
        self.broker.acquire_as(&self.owner, &self.target("m"), &who, now)
    }

    /// A runner of the run before re-attaching on machine `m` with the
    /// given nonce, carrying `team=web` (a version 7 `ReattachLabelled`).
    pub fn reattach_web(&self, nonce: u128) -> Result<Lease> {
        use license_broker::core::{Claimant, ConnId};
        let labels = license_broker::value::Labels::new([("team".to_string(), "web".to_string())]);
        let who = Claimant { nonce: Nonce(nonce), conn: ConnId(1), labels: labels.expect("a valid label") };
        self.broker.reattach_as(&self.owner, &self.target("m"), &who, t(0), true)
    }

    /// Caps the KRE pool's sessions carrying `team=web` at `max` (as the Owner).
    pub fn cap_web(&self, max: u32) {
        let label = ("team".to_string(), "web".to_string());
        let plan =
            self.broker.plan_set_label_limit(&self.owner, &self.org, PoolId::KRE_DEFAULT, label, Some(max), t(0));
        self.0.apply(plan);
    }

    /// Reserves `seats` seats of the KRE pool for sessions carrying `team=web` (as the Owner).
    pub fn reserve_web(&self, seats: u32) {
        let label = ("team".to_string(), "web".to_string());
        let plan = self.broker.plan_set_reservation(&self.owner, (&self.org, PoolId::KRE_DEFAULT), label, seats, t(0));
        self.0.apply(plan);
    }

    /// Waits for a seat on machine `m`, carrying `team=web` if `web`; a grant lands in the inbox.
    pub fn wait_labelled(&self, nonce: u128, web: bool) -> (Result<license_broker::core::Waited>, testkit::Inbox) {
        use license_broker::core::{Claimant, ConnId};
        let pairs = web.then(|| ("team".to_string(), "web".to_string()));
        let labels = license_broker::value::Labels::new(pairs).expect("a valid label");
        let who = Claimant { nonce: Nonce(nonce), conn: ConnId(1), labels };
        let inbox = testkit::Inbox::default();
        (self.broker.wait(&self.owner, &self.target("m"), &who, t(0), inbox.deliver()), inbox)
    }

    /// The `team=web` reservation: (seats reserved, sessions on them, seats held).
    pub fn web_reserved(&self) -> (u32, u32, u32) {
        let all = self.broker.reservations(&self.owner, &self.org).unwrap();
        all.first().map_or((0, 0, 0), |(_, r)| (r.seats, r.in_use, r.held))
    }

    /// (sessions counted in the `team=web` cap, live KRE sessions carrying it).
    pub fn web_cap_count(&self) -> (u32, usize) {
        let counted = self.broker.label_limits(&self.owner, &self.org, PoolId::KRE_DEFAULT).unwrap();
        let sessions = self.broker.sessions(&self.owner, &self.org).unwrap();
        let live = sessions.iter().filter(|s| s.labels.get("team") == Some("web")).count();
        (counted.first().map_or(0, |c| c.3), live)
    }

    /// (sessions counted in the Owner's KRE cap, the Owner's live KRE sessions).
    pub fn owner_cap_count(&self) -> (u32, usize) {
        let counted = self.broker.user_limits(&self.owner, &self.org, PoolId::KRE_DEFAULT).unwrap();
        let live = self.broker.sessions(&self.owner, &self.org).unwrap().len();
        (counted.first().map_or(0, |c| c.2), live)
    }

    /// Two nonces whose sessions live in different shards, so their acquires meet only at the seat counter.
    pub fn nonces_in_distinct_shards(&self) -> (u128, u128) {
        let shard = |n: u128| self.broker.session_shard(&self.org, PoolId::KRE_DEFAULT, Nonce(n)).unwrap();
        let first = 1u128;
        let second = (2..1000).find(|n| shard(*n) != shard(first)).expect("two shards are both reachable");
        (first, second)
    }

    /// Adds a KSE floating pool of `quota` and grants it to the Owner.
    pub fn with_kse_grant(&self, quota: u32) -> PoolId {
        self.0.with_kse_grant("kse-floating-annual", quota, &self.owner)
    }

    /// Sets the KRE pool's quota as the operator.
    pub fn set_quota(&self, quota: u32) {
        self.0.set_quota(PoolId::KRE_DEFAULT, quota);
    }
}
