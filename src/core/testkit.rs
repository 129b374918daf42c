//! A ready-made broker for tests, models and benchmarks: the operator, the
//! `default` org with its Owner, and its KRE pool, built through the same
//! plan → apply path the shell uses (with no store: every pending change
//! is settled as committed).
//!
//! One fixture for the core's unit tests, the model-based test, the loom
//! models and the benchmarks, so they all exercise the broker the same way.
//! Test support only: its calls panic on a refusal the caller did not expect
//! (`expect` with the step that failed). Compiled for the crate's own unit
//! tests and behind the `testkit` feature (off by default) for the others.

use std::convert::Infallible;
use std::time::Duration;

use super::{
    Broker, Config, ConnId, Email, KeyHash, Lease, MachineId, Millis, Nonce, OrgName, Pending, PoolId, Principal,
    Registration, Result, Role, Target,
};

/// The fixture's API key hashes: `key(1)` is the operator's, `key(2)` the Owner's.
pub fn key(n: u8) -> KeyHash {
    KeyHash([n; 32])
}

/// Instant `ms` of a test's timeline (a fixed date in 2026).
pub fn t(ms: u64) -> Millis {
    Millis(1_795_000_000_000 + ms)
}

/// A machine id from a literal.
pub fn mid(s: &str) -> MachineId {
    MachineId::new(s).expect("test machine ids are valid")
}

/// A broker with the `default` org and its KRE pool.
pub struct Fixture {
    /// The broker under test.
    pub broker: Broker,
    /// The broker's operator.
    pub operator: Principal,
    /// The `default` org's Owner.
    pub owner: Principal,
    /// `default`.
    pub org: OrgName,
}

impl Fixture {
    /// Bootstraps a broker with `2^shard_bits` session shards and lease
    /// `ttl`, and gives the `default` org a KRE pool of `quota`, at `t(0)`.
    pub fn new(quota: u32, shard_bits: u32, ttl: Duration) -> Fixture {
        Fixture::with_config(quota, Config { lease_ttl: ttl, shard_bits, ..Config::default() })
    }

    /// The same with durable session ceilings on, as the shell runs it:
    /// the new pool starts with a ceiling of 0, so the first acquire meets
    /// `CeilingReached` until `raise` settles a ceiling record.
    pub fn with_ceilings(quota: u32, shard_bits: u32, ttl: Duration) -> Fixture {
        Fixture::with_config(quota, Config { lease_ttl: ttl, shard_bits, ceilings: true, ..Config::default() })
    }

    /// Bootstraps a broker with `config`; see `new`.
    pub fn with_config(quota: u32, config: Config) -> Fixture {
        let broker = Broker::new(config);
        let owner_email = Email::new("owner@default").expect("valid email");
        broker.apply(&broker.plan_bootstrap(key(1), &owner_email, key(2), t(0)), t(0));
        let operator = broker.authenticate(&key(1)).expect("operator key bootstrapped");
        let owner = broker.authenticate(&key(2)).expect("owner key bootstrapped");
        let org = OrgName::new("default").expect("valid org name");
        let f = Fixture { broker, operator, owner, org };
        f.set_quota(PoolId::KRE_DEFAULT, quota);
        f
    }

    /// The records a cluster's store would hold for the org (as another
    /// node adopting it reads them): its bootstrap, its KRE pool of
    /// `quota`, machine `m` and a durable ceiling of `ceiling`.
    pub fn org_records(&self, quota: u32, ceiling: u32) -> Vec<super::Record> {
        use super::{Change, Record};
        let owner_email = Email::new("owner@default").expect("valid email");
        let mut records: Vec<Record> = self
            .broker
            .plan_bootstrap(key(1), &owner_email, key(2), t(0))
            .into_iter()
            .filter_map(|c| match c {
                Change::Put(r @ (Record::Org { .. } | Record::User { .. } | Record::Key { org: Some(_), .. })) => {
                    Some(r)
                }
                _ => None,
            })
            .collect();
        let (org, pool) = (self.org.clone(), PoolId::KRE_DEFAULT);
        records.push(Record::Pool { org: org.clone(), pool, quota });
        records.push(Record::Machine { org: org.clone(), pool, machine: mid("m"), registered: t(0) });
        records.push(Record::Ceiling { org, pool, seats: ceiling });
        records
    }

    /// Settles a pending change as committed; returns its value.
    pub fn commit<T>(&self, pending: Pending<T>) -> T {
        match pending.settle(&self.broker, Ok::<(), Infallible>(()), t(0)) {
            Ok((value, _)) => value,
            Err(never) => match never {},
        }
    }

    /// Raises the KRE pool's ceiling as the shell would (plan, commit,
    /// settle); returns the new ceiling, or `None` if none was needed.
    pub fn raise(&self) -> Option<u32> {
        let pending = self.broker.plan_ceiling(&self.org, PoolId::KRE_DEFAULT)?;
        let seats = match pending.changes() {
            [super::Change::Put(super::Record::Ceiling { seats, .. })] => *seats,
            other => panic!("a ceiling plan writes one ceiling record, not {other:?}"),
        };
        self.commit(pending);
        Some(seats)
    }

    /// Applies an admin plan, as the shell does after committing it.
    pub fn apply(&self, plan: Result<Vec<super::Change>>) {
        self.broker.apply(&plan.expect("the plan is allowed"), t(0));
    }

    /// The KRE pool on `machine`.
    pub fn target(&self, machine: &str) -> Target {
        self.target_in(PoolId::KRE_DEFAULT, machine)
    }

    /// Pool `pool` of the org, on `machine`.
    pub fn target_in(&self, pool: PoolId, machine: &str) -> Target {
        Target { org: self.org.clone(), pool, machine: mid(machine) }
    }

    /// Registers `machine` in the KRE pool as the Owner, committed.
    pub fn register(&self, machine: &str) -> Result<Registration> {
        Ok(self.commit(self.broker.register(&self.owner, &self.target(machine), t(0), false)?))
    }

    /// Registers `machine` in the KRE pool as the Owner, ephemeral, at `now`, committed.
    pub fn register_ephemeral(&self, machine: &str, now: Millis) -> Result<Registration> {
        Ok(self.commit(self.broker.register(&self.owner, &self.target(machine), now, true)?))
    }

    /// Sets the KRE pool's machine policy as the operator, at `now`.
    pub fn set_policy(&self, idle: Option<Duration>, ephemeral: bool, now: Millis) {
        let policy = super::Policy { idle, ephemeral };
        let plan = self.broker.plan_set_policy(&self.operator, &self.org, PoolId::KRE_DEFAULT, policy, now);
        self.broker.apply(&plan.expect("the operator may"), now);
    }

    /// Releases the machines due at `now`, as the expiry task does (committed).
    pub fn expire_machines(&self, now: Millis) -> Vec<super::Expired> {
        let Some(pending) = self.broker.plan_machine_expiry(now) else { return Vec::new() };
        match pending.settle(&self.broker, Ok::<(), Infallible>(()), now) {
            Ok((value, _)) => {
                self.broker.count_expired(&value);
                value
            }
            Err(never) => match never {},
        }
    }

    /// Acquires a KRE session as the Owner.
    pub fn acquire(&self, machine: &str, nonce: u128, conn: u64, now: Millis) -> Result<Lease> {
        self.broker.acquire(&self.owner, &self.target(machine), Nonce(nonce), ConnId(conn), now)
    }

    /// Waits for a KRE seat as the Owner; a grant lands in the returned inbox.
    pub fn wait(&self, machine: &str, nonce: u128, conn: u64, now: Millis) -> (Result<super::Waited>, Inbox) {
        let inbox = Inbox::default();
        let deliver = inbox.deliver();
        let who = super::Claimant { nonce: Nonce(nonce), conn: ConnId(conn), labels: Default::default() };
        (self.broker.wait(&self.owner, &self.target(machine), &who, now, deliver), inbox)
    }

    /// Turns a delivered grant into the waiter's session.
    pub fn claim(&self, machine: &str, nonce: u128, conn: u64, now: Millis, grant: super::Grant) -> Result<Lease> {
        let who = super::Claimant { nonce: Nonce(nonce), conn: ConnId(conn), labels: Default::default() };
        self.broker.claim(&self.owner, &self.target(machine), &who, now, grant)
    }

    /// Creates or changes a pool's quota, as the operator.
    pub fn set_quota(&self, pool: PoolId, quota: u32) {
        self.apply(self.broker.plan_set_pool(&self.operator, &self.org, pool, quota, t(0)));
    }

    /// The first pool's numbers, as the operator sees them.
    pub fn pool_status(&self) -> super::PoolStatus {
        self.broker.status(&self.operator, Some(&self.org)).expect("the operator reads any org").remove(0)
    }

    /// Seats in use in the org's first pool.
    pub fn in_use(&self) -> u32 {
        self.pool_status().in_use
    }

    /// Registered machines in the org's first pool.
    pub fn machines(&self) -> u32 {
        self.pool_status().machines
    }

    /// Adds a member with API key `key(k)` and returns them as a principal.
    pub fn add_member(&self, email: &str, role: Role, k: u8) -> Principal {
        let email = Email::new(email).expect("valid email");
        self.apply(self.broker.plan_add_user(&self.owner, &self.org, &email, role, t(0)));
        self.apply(self.broker.plan_create_key(&self.owner, &self.org, &email, key(k), t(0)));
        self.broker.authenticate(&key(k)).expect("key just created")
    }

    /// Adds a KSE pool of `quota` and grants it to `who`.
    pub fn with_kse_grant(&self, pool: &str, quota: u32, who: &Principal) -> PoolId {
        let kse: PoolId = pool.parse().expect("valid pool id");
        self.set_quota(kse, quota);
        self.apply(self.broker.plan_grant(&self.owner, &self.org, kse, &who.email, t(0)));
        kse
    }
}

/// Where a waiter's grant lands; `closed` makes deliveries fail, as for a
/// waiter that is gone.
#[derive(Clone)]
pub struct Inbox {
    slot: crate::sync::Arc<crate::sync::Mutex<(Option<super::Grant>, bool)>>,
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox { slot: crate::sync::Arc::new(crate::sync::Mutex::new((None, false))) }
    }
}

impl Inbox {
    /// The closure the queue calls with the grant.
    pub fn deliver(&self) -> super::Deliver {
        let slot = self.slot.clone();
        Box::new(move |grant| {
            let mut s = slot.lock();
            match s.1 {
                true => Err(grant),
                false => {
                    s.0 = Some(grant);
                    Ok(())
                }
            }
        })
    }

    /// The grant, if one was delivered (taken out).
    pub fn take(&self) -> Option<super::Grant> {
        self.slot.lock().0.take()
    }

    /// Whether a grant waits in the inbox.
    pub fn has_grant(&self) -> bool {
        self.slot.lock().0.is_some()
    }

    /// From now on deliveries fail; returns a grant delivered before.
    pub fn close(&self) -> Option<super::Grant> {
        let mut s = self.slot.lock();
        s.1 = true;
        s.0.take()
    }
}
