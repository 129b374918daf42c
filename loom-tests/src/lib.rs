//! loom models of the broker core live in `tests/`; they compile only with
//! `RUSTFLAGS="--cfg broker_loom"` (see `.ci/test`). This library holds the
//! fixture they share: a broker with one org, one KRE pool and one machine.

#![cfg(broker_loom)]

use std::time::Duration;

use license_broker::core::{
    Broker, Config, Email, KeyHash, Lease, MachineId, Millis, Nonce, OrgName, PoolId, Principal, Result,
};

/// The lease TTL of every model.
pub const TTL: Duration = Duration::from_secs(30);

/// A broker with org `default`, its KRE pool at `quota`, machine `m` registered.
pub struct Fixture {
    /// The broker under test (shared with model threads through loom's Arc).
    pub broker: Broker,
    /// The org's Owner.
    pub owner: Principal,
    /// The operator.
    pub operator: Principal,
    /// `default`.
    pub org: OrgName,
}

/// Instant `ms` of the model's timeline.
pub fn t(ms: u64) -> Millis {
    Millis(1_795_000_000_000 + ms)
}

impl Fixture {
    /// Builds the fixture; call inside `loom::model`.
    pub fn new(quota: u32) -> Fixture {
        // Two shards: few loom objects, yet acquires can race on the seat
        // counter without sharing a shard lock (see `nonces_in_distinct_shards`).
        let broker = Broker::new(Config { lease_ttl: TTL, shard_bits: 1 });
        let owner_email = Email::new("owner@default").unwrap();
        broker.apply(&broker.plan_bootstrap(KeyHash([1; 32]), &owner_email, KeyHash([2; 32]), t(0)));
        let operator = broker.authenticate(&KeyHash([1; 32])).unwrap();
        let owner = broker.authenticate(&KeyHash([2; 32])).unwrap();
        let org = OrgName::new("default").unwrap();
        broker.apply(&broker.plan_set_pool(&operator, &org, PoolId::KRE_DEFAULT, quota, t(0)).unwrap());
        let f = Fixture { broker, owner, operator, org };
        if quota > 0 {
            f.register("m").unwrap();
        }
        f
    }

    /// Registers a machine and applies the change as the shell would after committing it.
    pub fn register(&self, machine: &str) -> Result<license_broker::core::Registration> {
        let m = MachineId::new(machine).unwrap();
        let (reg, change) = self.broker.register_machine(&self.owner, &self.org, PoolId::KRE_DEFAULT, &m, t(0))?;
        if let Some(c) = change {
            self.broker.apply(&[c]);
        }
        Ok(reg)
    }

    /// Acquires on machine `m` with the given nonce at `now`.
    pub fn acquire(&self, nonce: u128, now: Millis) -> Result<Lease> {
        let m = MachineId::new("m").unwrap();
        self.broker.acquire(&self.owner, &self.org, PoolId::KRE_DEFAULT, m, Nonce(nonce), 1, now)
    }

    /// Two nonces whose sessions live in different shards, so their acquires meet only at the seat counter.
    pub fn nonces_in_distinct_shards(&self) -> (u128, u128) {
        let shard = |n: u128| self.broker.session_shard(&self.org, PoolId::KRE_DEFAULT, Nonce(n)).unwrap();
        let first = 1u128;
        let second = (2..1000).find(|n| shard(*n) != shard(first)).expect("two shards are both reachable");
        (first, second)
    }

    /// Seats in use.
    pub fn in_use(&self) -> u32 {
        self.broker.status(&self.operator, Some(&self.org)).unwrap()[0].in_use
    }

    /// Registered machines.
    pub fn machines(&self) -> u32 {
        self.broker.status(&self.operator, Some(&self.org)).unwrap()[0].machines
    }

    /// Adds a KSE floating pool of `quota` and grants it to the Owner.
    pub fn with_kse_grant(&self, quota: u32) -> PoolId {
        let kse: PoolId = "kse-floating-annual".parse().unwrap();
        self.broker.apply(&self.broker.plan_set_pool(&self.operator, &self.org, kse, quota, t(0)).unwrap());
        let email = self.owner.email.clone();
        self.broker.apply(&self.broker.plan_grant(&self.owner, &self.org, kse, &email, t(0)).unwrap());
        kse
    }

    /// Sets the quota as the operator.
    pub fn set_quota(&self, quota: u32) {
        let plan = self.broker.plan_set_pool(&self.operator, &self.org, PoolId::KRE_DEFAULT, quota, t(0)).unwrap();
        self.broker.apply(&plan);
    }
}
