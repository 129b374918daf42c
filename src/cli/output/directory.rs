//! Who and what an org is made of, as tables and JSON: orgs, users, API
//! keys, KSE licenses and offline licenses, and the audit trail of changes
//! to them.

use license_broker::proto::{AuditEntry, GrantInfo, KeyInfo, OfflineInfo, OrgInfo, UserInfo};
use license_broker::value::{format_end_date, format_utc};
use serde_json::{json, Value};

use super::Listing;

impl Listing for OrgInfo {
    const KEY: &'static str = "orgs";
    const HEADER: &'static [&'static str] = &["ORG", "SUBSCRIPTION ENDS", "POOLS", "USERS", "CREATED"];
    fn json(&self) -> Value {
        json!({ "org": self.name.as_str(), "last_day": format_end_date(self.subscription_end),
                "pools": self.pools, "users": self.users, "created_ms": self.created.0 })
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.to_string(),
            format_end_date(self.subscription_end),
            self.pools.to_string(),
            self.users.to_string(),
            format_utc(self.created),
        ]
    }
}

impl Listing for UserInfo {
    const KEY: &'static str = "users";
    const HEADER: &'static [&'static str] = &["EMAIL", "ROLE", "ADDED"];
    fn json(&self) -> Value {
        json!({ "email": self.email.as_str(), "role": self.role.name(), "created_ms": self.created.0 })
    }
    fn row(&self) -> Vec<String> {
        vec![self.email.to_string(), self.role.to_string(), format_utc(self.created)]
    }
}

impl Listing for KeyInfo {
    const KEY: &'static str = "keys";
    const HEADER: &'static [&'static str] = &["ID", "EMAIL", "CREATED", "STATE"];
    fn json(&self) -> Value {
        json!({ "id": self.id, "email": self.email.as_str(), "created_ms": self.created.0, "revoked": self.revoked })
    }
    fn row(&self) -> Vec<String> {
        let state = if self.revoked { "revoked" } else { "active" };
        vec![self.id.clone(), self.email.to_string(), format_utc(self.created), state.into()]
    }
}

impl Listing for GrantInfo {
    const KEY: &'static str = "licenses";
    const HEADER: &'static [&'static str] = &["POOL", "LICENSED USER", "GRANTED", "ACTIVATED ON"];
    fn json(&self) -> Value {
        json!({ "pool": self.pool.to_string(), "email": self.email.as_str(), "granted_ms": self.granted.0,
                "machine": self.machine.as_ref().map(|m| m.as_str()) })
    }
    fn row(&self) -> Vec<String> {
        let machine = self.machine.as_ref().map_or("-".to_string(), |m| m.to_string());
        vec![self.pool.to_string(), self.email.to_string(), format_utc(self.granted), machine]
    }
}

impl Listing for OfflineInfo {
    const KEY: &'static str = "offline";
    const HEADER: &'static [&'static str] = &["POOL", "LICENSE", "MACHINE", "LAST DAY", "CREATED BY", "STATE"];
    fn json(&self) -> Value {
        json!({ "pool": self.pool.to_string(), "id": self.id, "machine": self.machine.as_str(), "issued_ms": self.issued.0,
                "last_day": self.last_day, "created_by": self.created_by.as_str(), "active": self.active })
    }
    fn row(&self) -> Vec<String> {
        let state = if self.active { "active" } else { "expired" };
        vec![
            self.pool.to_string(),
            self.id.clone(),
            self.machine.to_string(),
            self.last_day.clone(),
            self.created_by.to_string(),
            state.into(),
        ]
    }
}

impl Listing for AuditEntry {
    const KEY: &'static str = "audit";
    const HEADER: &'static [&'static str] = &["WHEN", "WHO", "WHAT", "DETAIL"];
    fn json(&self) -> Value {
        json!({ "at_ms": self.at.0, "actor": self.actor.as_str(), "action": self.action.name(), "detail": self.detail })
    }
    fn row(&self) -> Vec<String> {
        vec![format_utc(self.at), self.actor.to_string(), self.action.name().to_string(), self.detail.clone()]
    }
}
