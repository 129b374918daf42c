//! Human tables and `--json` output for the list commands.
//!
//! Each listed type says once how it looks as a table row and as a JSON
//! object; `print` does the rest. The JSON is a documented CLI format of its
//! own (times as `_ms` numbers, pools and roles as their names), not the
//! wire's encoding, so it is spelled out here rather than derived.

use license_broker::proto::{
    AuditEntry, GrantInfo, KeyInfo, MachineInfo, OfflineInfo, OrgInfo, PoolState, SessionView, UserInfo, UserLimitInfo,
};
use license_broker::value::{format_end_date, format_utc, Product};
use serde_json::{json, Value};

/// A type the CLI lists.
trait Listing {
    /// The JSON key the list is printed under.
    const KEY: &'static str;
    /// The table's column titles.
    const HEADER: &'static [&'static str];
    /// One JSON object.
    fn json(&self) -> Value;
    /// One table row, a cell per column.
    fn row(&self) -> Vec<String>;
}

/// Prints `list` as `{KEY: [...]}` or as an aligned table.
fn print<T: Listing>(list: &[T], as_json: bool) {
    if as_json {
        println!("{}", json!({ T::KEY: list.iter().map(T::json).collect::<Vec<_>>() }));
    } else {
        table(T::HEADER, list.iter().map(T::row).collect());
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub fn status(pools: &[PoolState], as_json: bool) {
    if pools.is_empty() && !as_json {
        println!("no pools yet (the operator creates them with `pool set`)");
        return;
    }
    print(pools, as_json);
}

pub fn user_limits(list: &[UserLimitInfo], as_json: bool) {
    print(list, as_json);
}

impl Listing for UserLimitInfo {
    const KEY: &'static str = "limits";
    const HEADER: &'static [&'static str] = &["USER", "MAX", "SESSIONS"];
    fn json(&self) -> Value {
        let max = if self.max == u32::MAX { Value::Null } else { Value::from(self.max) };
        json!({ "user": self.email.as_str(), "max": max, "sessions": self.sessions })
    }
    fn row(&self) -> Vec<String> {
        let max = if self.max == u32::MAX { "-".to_string() } else { self.max.to_string() };
        vec![self.email.to_string(), max, self.sessions.to_string()]
    }
}

pub fn sessions(list: &[SessionView], as_json: bool) {
    print(list, as_json);
}

pub fn machines(list: &[MachineInfo], as_json: bool) {
    print(list, as_json);
}

pub fn users(list: &[UserInfo], as_json: bool) {
    print(list, as_json);
}

pub fn keys(list: &[KeyInfo], as_json: bool) {
    print(list, as_json);
}

pub fn grants(list: &[GrantInfo], as_json: bool) {
    print(list, as_json);
}

pub fn offline(list: &[OfflineInfo], as_json: bool) {
    print(list, as_json);
}

pub fn audit(list: &[AuditEntry], as_json: bool) {
    print(list, as_json);
}

pub fn orgs(list: &[OrgInfo], as_json: bool) {
    print(list, as_json);
}

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

impl Listing for PoolState {
    const KEY: &'static str = "pools";
    const HEADER: &'static [&'static str] =
        &["ORG", "POOL", "QUOTA", "IN USE", "WAITING", "MACHINES", "ADMITTED", "REJECTED", "GRANTS", "OFFLINE"];
    fn json(&self) -> Value {
        let (s, waiting) = (&self.status, self.waiting);
        json!({
            "org": s.org.as_str(), "pool": s.pool.to_string(), "quota": s.quota,
            "in_use": s.in_use, "waiting": waiting, "machines": s.machines, "admitted": s.admitted,
            "rejected": s.rejected, "grants": s.grants, "activations": s.activations, "offline": s.offline,
        })
    }
    fn row(&self) -> Vec<String> {
        let s = &self.status;
        // Grants mean something for KSE pools only; KRE shows a dash.
        let grants = if s.pool.product == Product::Kse { s.grants.to_string() } else { "-".to_string() };
        vec![
            s.org.to_string(),
            s.pool.to_string(),
            s.quota.to_string(),
            s.in_use.to_string(),
            self.waiting.to_string(),
            s.machines.to_string(),
            s.admitted.to_string(),
            s.rejected.to_string(),
            grants,
            s.offline.to_string(),
        ]
    }
}

impl Listing for SessionView {
    const KEY: &'static str = "sessions";
    const HEADER: &'static [&'static str] = &["SESSION", "POOL", "MACHINE", "USER", "STARTED", "EXPIRES", "LABELS"];
    fn json(&self) -> Value {
        let s = &self.info;
        let labels: serde_json::Map<String, Value> =
            self.labels.iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect();
        json!({
            "session": s.session.to_string(), "pool": s.pool.to_string(), "machine": s.machine.as_str(),
            "user": s.user.as_str(), "started_ms": s.started.0, "deadline_ms": s.deadline.0, "labels": labels,
        })
    }
    fn row(&self) -> Vec<String> {
        let s = &self.info;
        vec![
            s.session.to_string(),
            s.pool.to_string(),
            s.machine.to_string(),
            s.user.to_string(),
            format_utc(s.started),
            format_utc(s.deadline),
            self.labels.to_string(),
        ]
    }
}

impl Listing for MachineInfo {
    const KEY: &'static str = "machines";
    const HEADER: &'static [&'static str] = &["POOL", "MACHINE", "REGISTERED"];
    fn json(&self) -> Value {
        json!({ "pool": self.pool.to_string(), "machine": self.machine.as_str(), "registered_ms": self.registered.0 })
    }
    fn row(&self) -> Vec<String> {
        vec![self.pool.to_string(), self.machine.to_string(), format_utc(self.registered)]
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
