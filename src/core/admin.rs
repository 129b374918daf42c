//! Planning of admin requests: authorise, validate, and say which durable
//! changes would carry them out. Nothing here mutates memory; the shell
//! commits the plan to the store and then calls `Broker::apply`.

use super::broker::Broker;
use super::error::{Error, Result};
use super::id::{Email, KeyHash, MachineId, OrgName, Role, SessionId};
use super::pool::PoolId;
use super::record::{AuditAction, Change, Record};
use super::time::{format_end_date, Millis, DAY_MS};
use super::Principal;

/// The operator's identity in the audit trail.
pub const OPERATOR_EMAIL: &str = "operator@localhost";

/// Largest quota a pool can have; far above any real purchase, small
/// enough that counters never approach their 32-bit limit.
pub const MAX_QUOTA: u32 = 10_000_000;

/// A member of an org, for `user list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user.
    pub email: Email,
    /// Their role.
    pub role: Role,
    /// When they were added.
    pub created: Millis,
}

/// An API key's metadata, for `key list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its public id (first 6 bytes of the hash, hex).
    pub id: String,
    /// Whose key it is.
    pub email: Email,
    /// When it was created.
    pub created: Millis,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl Broker {
    /// The records of a fresh broker: the operator's key, the `default` org
    /// (subscription through 9999-12-31) and its Owner with a key.
    pub fn plan_bootstrap(&self, operator_key: KeyHash, owner: &Email, owner_key: KeyHash, now: Millis) -> Vec<Change> {
        // Invariant: these literals satisfy the validators (every test fixture bootstraps through here).
        let default = OrgName::new("default").expect("valid org name");
        let end = Millis::from_civil_date(9999, 12, 31).map_or(Millis::MAX, |m| Millis(m.0 + DAY_MS));
        vec![
            self.plan_operator_key(operator_key, now),
            Change::Put(Record::Org { name: default.clone(), subscription_end: end, created: now }),
            Change::Put(Record::User { org: default.clone(), email: owner.clone(), role: Role::Owner, created: now }),
            Change::Put(Record::Key {
                hash: owner_key,
                org: Some(default),
                email: owner.clone(),
                created: now,
                revoked: false,
            }),
        ]
    }

    /// A new operator key: for a fresh broker, or minted offline by whoever
    /// holds the data dir when the operator's key is lost.
    pub fn plan_operator_key(&self, hash: KeyHash, now: Millis) -> Change {
        // Invariant: the literal satisfies the email rules (every test fixture mints one).
        let operator = Email::new(OPERATOR_EMAIL).expect("valid email");
        Change::Put(Record::Key { hash, org: None, email: operator, created: now, revoked: false })
    }

    /// Operator: a new org with its first Owner and that Owner's key.
    pub fn plan_create_org(
        &self,
        p: &Principal,
        name: &OrgName,
        subscription_end: Millis,
        owner: &Email,
        owner_key: KeyHash,
        now: Millis,
    ) -> Result<Vec<Change>> {
        p.require_operator()?;
        reserved_for_operator(owner)?;
        if subscription_end <= now {
            return Err(Error::invalid("subscription end", "must be today or later"));
        }
        self.with_dir(|dir| match dir.orgs.contains_key(name) {
            true => Err(Error::AlreadyExists { what: "org", name: name.to_string() }),
            false => Ok(()),
        })?;
        Ok(vec![
            Change::Put(Record::Org { name: name.clone(), subscription_end, created: now }),
            Change::Put(Record::User { org: name.clone(), email: owner.clone(), role: Role::Owner, created: now }),
            Change::Put(Record::Key {
                hash: owner_key,
                org: Some(name.clone()),
                email: owner.clone(),
                created: now,
                revoked: false,
            }),
            self.audit(name, p, AuditAction::OrgCreated, format!("owner={owner}"), now),
        ])
    }

    /// Operator: renews or changes an org's subscription; `end` is midnight
    /// after its last day. Pools admit again at once if it had lapsed.
    pub fn plan_set_subscription(&self, p: &Principal, org: &OrgName, end: Millis, now: Millis) -> Result<Vec<Change>> {
        p.require_operator()?;
        if end <= now {
            return Err(Error::invalid("subscription end", "must be today or later"));
        }
        let (old, created) = self.with_dir(|dir| dir.org(org).map(|o| (o.subscription_end, o.created)))?;
        let detail = format!("last_day {} -> {}", format_end_date(old), format_end_date(end));
        Ok(vec![
            Change::Put(Record::Org { name: org.clone(), subscription_end: end, created }),
            self.audit(org, p, AuditAction::SubscriptionChanged, detail, now),
        ])
    }

    /// Operator: creates a pool or changes its quota. Lowering it below the
    /// seats, machines or grants in use cuts nothing; it refuses new ones
    /// until usage is below the new quota.
    pub fn plan_set_pool(
        &self,
        p: &Principal,
        org: &OrgName,
        pool: PoolId,
        quota: u32,
        now: Millis,
    ) -> Result<Vec<Change>> {
        p.require_operator()?;
        if quota > MAX_QUOTA {
            return Err(Error::invalid("quota", format!("at most {MAX_QUOTA}")));
        }
        let old = self.with_dir(|dir| dir.org(org).map(|o| o.pools.get(&pool).cloned()))?;
        // A pool's reservations add up to at most its quota: lowering it
        // below them is refused (lower the reservations first).
        let reserved: u64 = old.iter().flat_map(|h| h.reservations()).map(|r| u64::from(r.seats)).sum();
        if reserved > u64::from(quota) {
            return Err(Error::ReservedPastQuota { quota, reserved: u32::try_from(reserved).unwrap_or(u32::MAX) });
        }
        let old = old.map(|h| h.quota());
        let detail = match old {
            Some(old) => format!("pool={pool} quota {old} -> {quota}"),
            None => format!("pool={pool} created with quota {quota}"),
        };
        let mut changes = vec![
            Change::Put(Record::Pool { org: org.clone(), pool, quota }),
            self.audit(org, p, AuditAction::QuotaChanged, detail, now),
        ];
        if old.is_none() && self.ceilings() {
            // A new pool starts with no seats for sessions; the first
            // admission raises the ceiling.
            changes.push(Change::Put(Record::Ceiling { org: org.clone(), pool, seats: 0 }));
        }
        Ok(changes)
    }

    /// Owner/Admin: adds a member. Only Owners add Owners.
    pub fn plan_add_user(
        &self,
        p: &Principal,
        org: &OrgName,
        email: &Email,
        role: Role,
        now: Millis,
    ) -> Result<Vec<Change>> {
        p.require_admin(org)?;
        if role == Role::Operator {
            return Err(Error::invalid("role", "expected owner, admin or user"));
        }
        p.require_may_manage(role)?;
        reserved_for_operator(email)?;
        self.with_dir(|dir| {
            if dir.org(org)?.users.contains_key(email) {
                return Err(Error::AlreadyExists { what: "user", name: email.to_string() });
            }
            Ok(())
        })?;
        Ok(vec![
            Change::Put(Record::User { org: org.clone(), email: email.clone(), role, created: now }),
            self.audit(org, p, AuditAction::UserAdded, format!("user={email} role={role}"), now),
        ])
    }

    /// Owner/Admin: a new API key for a member (only Owners mint Owner keys).
    pub fn plan_create_key(
        &self,
        p: &Principal,
        org: &OrgName,
        email: &Email,
        hash: KeyHash,
        now: Millis,
    ) -> Result<Vec<Change>> {
        p.require_admin(org)?;
        let role = self.with_dir(|dir| {
            dir.org(org)?.users.get(email).map(|u| u.role).ok_or_else(|| Error::not_found("user", email))
        })?;
        p.require_may_manage(role)?;
        Ok(vec![
            Change::Put(Record::Key {
                hash,
                org: Some(org.clone()),
                email: email.clone(),
                created: now,
                revoked: false,
            }),
            self.audit(org, p, AuditAction::KeyCreated, format!("key={} user={email}", hash.key_id()), now),
        ])
    }

    /// Owner/Admin: revokes a key of their org, named by its id or the key's hash.
    pub fn plan_revoke_key(&self, p: &Principal, org: &OrgName, key: KeyRef, now: Millis) -> Result<Vec<Change>> {
        p.require_admin(org)?;
        self.with_dir(|dir| {
            let found = dir.keys.iter().find(|(hash, entry)| {
                entry.org.as_ref() == Some(org)
                    && match &key {
                        KeyRef::Id(id) => hash.key_id() == *id,
                        KeyRef::Hash(h) => *hash == h,
                    }
            });
            let (hash, entry) = found.ok_or_else(|| Error::not_found("api key", key.describe()))?;
            let role = dir.org(org)?.users.get(&entry.email).map_or(Role::User, |u| u.role);
            p.require_may_manage(role)?;
            Ok(vec![
                Change::Put(Record::Key {
                    hash: *hash,
                    org: entry.org.clone(),
                    email: entry.email.clone(),
                    created: entry.created,
                    revoked: true,
                }),
                self.audit(org, p, AuditAction::KeyRevoked, format!("key={} user={}", hash.key_id(), entry.email), now),
            ])
        })
    }

    /// Owner/Admin: removes a machine from one pool, or from every pool of
    /// the org: its KRE registration, and any node-locked activation bound
    /// to it (whose seat comes back). Its live sessions end (revoked).
    pub fn plan_remove_machine(
        &self,
        p: &Principal,
        org: &OrgName,
        pool: Option<PoolId>,
        machine: &MachineId,
        now: Millis,
    ) -> Result<Vec<Change>> {
        p.require_admin(org)?;
        let mut changes: Vec<Change> = self.with_dir(|dir| {
            let mut out = Vec::new();
            for h in dir.org(org)?.pools.values().filter(|h| pool.is_none_or(|want| h.id == want)) {
                if h.has_machine(machine) {
                    out.push(Change::RemoveMachine { org: org.clone(), pool: h.id, machine: machine.clone() });
                }
                for email in h.bound_to(machine) {
                    out.push(Change::RemoveBinding { org: org.clone(), pool: h.id, email });
                }
            }
            Ok::<_, Error>(out)
        })?;
        if changes.is_empty() {
            return Err(Error::not_found("machine", machine));
        }
        let scope = pool.map_or("every pool".to_string(), |p| p.to_string());
        changes.push(self.audit(org, p, AuditAction::MachineRemoved, format!("machine={machine} from={scope}"), now));
        Ok(changes)
    }

    /// Operator: every org.
    pub fn orgs(&self, p: &Principal) -> Result<Vec<OrgInfo>> {
        p.require_operator()?;
        self.with_dir(|dir| {
            let mut v: Vec<OrgInfo> = dir
                .orgs
                .iter()
                .map(|(name, e)| OrgInfo {
                    name: name.clone(),
                    subscription_end: e.subscription_end,
                    created: e.created,
                    pools: e.pools.len() as u32,
                    users: e.users.len() as u32,
                })
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(v)
        })
    }

    /// Owner/Admin: removes a member: revokes their keys, frees their
    /// grants and node-locked activations, and (on apply) ends their live
    /// sessions. Only Owners remove Owners; nobody removes themselves.
    pub fn plan_remove_user(&self, p: &Principal, org: &OrgName, email: &Email, now: Millis) -> Result<Vec<Change>> {
        p.require_admin(org)?;
        if &p.email == email {
            return Err(Error::invalid("user", "you cannot remove yourself; another Owner or Admin can"));
        }
        let mut changes = self.with_dir(|dir| {
            let entry = dir.org(org)?;
            let role = entry.users.get(email).map(|u| u.role).ok_or_else(|| Error::not_found("user", email))?;
            p.require_may_manage(role)?;
            let mut out = vec![Change::RemoveUser { org: org.clone(), email: email.clone() }];
            for (hash, key) in dir.keys.iter().filter(|(_, k)| k.org.as_ref() == Some(org) && &k.email == email) {
                let (created, revoked) = (key.created, true);
                out.push(Change::Put(Record::Key {
                    hash: *hash,
                    org: key.org.clone(),
                    email: email.clone(),
                    created,
                    revoked,
                }));
            }
            for pool in entry.pools.values() {
                if pool.binding(email).is_some() {
                    out.push(Change::RemoveBinding { org: org.clone(), pool: pool.id, email: email.clone() });
                }
                if pool.has_grant(email) {
                    out.push(Change::RemoveGrant { org: org.clone(), pool: pool.id, email: email.clone() });
                }
            }
            Ok::<_, Error>(out)
        })?;
        changes.push(self.audit(org, p, AuditAction::UserRemoved, format!("user={email}"), now));
        Ok(changes)
    }

    /// Owner/Admin: the audit line of ending someone's session; the shell
    /// commits it, then kills the session (`kill`).
    pub fn plan_kill(&self, p: &Principal, org: &OrgName, session: SessionId, now: Millis) -> Result<Vec<Change>> {
        p.require_admin(org)?;
        let info =
            self.sessions.info(session, |pool| &pool.org == org).ok_or_else(|| Error::not_found("session", session))?;
        let detail = format!("session={session} pool={} machine={} user={}", info.pool, info.machine, info.user);
        Ok(vec![self.audit(org, p, AuditAction::SessionKilled, detail, now)])
    }

    /// Refuses unless `p` may read `org`'s members and API keys: its
    /// Owners and Admins (the operator manages orgs, not their people).
    /// The console offers its Members tab by this same rule.
    pub fn require_members_reader(&self, p: &Principal, org: &OrgName) -> Result<()> {
        p.require_admin(org)
    }

    /// Owner/Admin: the org's members.
    pub fn users(&self, p: &Principal, org: &OrgName) -> Result<Vec<UserInfo>> {
        self.require_members_reader(p, org)?;
        self.with_dir(|dir| {
            let mut v: Vec<UserInfo> = dir
                .org(org)?
                .users
                .iter()
                .map(|(email, u)| UserInfo { email: email.clone(), role: u.role, created: u.created })
                .collect();
            v.sort_by(|a, b| a.email.cmp(&b.email));
            Ok(v)
        })
    }

    /// Owner/Admin: the org's API keys (metadata only).
    pub fn keys(&self, p: &Principal, org: &OrgName) -> Result<Vec<KeyInfo>> {
        self.require_members_reader(p, org)?;
        self.with_dir(|dir| {
            dir.org(org)?;
            let mut v: Vec<KeyInfo> = dir
                .keys
                .iter()
                .filter(|(_, k)| k.org.as_ref() == Some(org))
                .map(|(h, k)| KeyInfo {
                    id: h.key_id(),
                    email: k.email.clone(),
                    created: k.created,
                    revoked: k.revoked,
                })
                .collect();
            v.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
            Ok(v)
        })
    }
}

/// Refuses the operator's own email for a member: in the audit trail the
/// operator must never be someone an Owner added.
fn reserved_for_operator(email: &Email) -> Result<()> {
    match email.as_str() == OPERATOR_EMAIL {
        true => Err(Error::invalid("email", format!("{OPERATOR_EMAIL} is reserved for the broker's operator"))),
        false => Ok(()),
    }
}

/// An org, for `org list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgInfo {
    /// Its name.
    pub name: OrgName,
    /// Midnight UTC after the subscription's last day.
    pub subscription_end: Millis,
    /// When it was created.
    pub created: Millis,
    /// Its pools.
    pub pools: u32,
    /// Its members.
    pub users: u32,
}

/// How a key to revoke is named: its short id, or the key itself (hashed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// The 12-hex-digit id shown by `key list`.
    Id(String),
    /// The hash of the full key.
    Hash(KeyHash),
}

impl KeyRef {
    fn describe(&self) -> String {
        match self {
            KeyRef::Id(id) => id.clone(),
            KeyRef::Hash(h) => h.key_id(),
        }
    }
}
