//! What is in use now, as tables and JSON: pools, sessions, machines,
//! per-user and per-label limits, reservations, a cluster's nodes (`status`,
//! `session list`, `machine list`, `pool limits`, `nodes`).

use license_broker::proto::{
    LabelLimitInfo, MachineInfo, MachineUseInfo, NodeInfo, PoolState, ReservationInfo, SessionView, UserLimitInfo,
};
use license_broker::value::{format_utc, Product};
use serde_json::{json, Value};

use super::Listing;

impl Listing for NodeInfo {
    const KEY: &'static str = "nodes";
    const HEADER: &'static [&'static str] = &["NODE", "ADDRESS", "ORGS", "SERVES"];
    fn json(&self) -> Value {
        json!({
            "name": self.name, "advertise": self.advertise, "serving": self.serving,
            "org_count": self.org_count, "orgs": self.orgs,
        })
    }
    fn row(&self) -> Vec<String> {
        let mut serves = self.orgs.join(",");
        if (self.orgs.len() as u32) < self.org_count {
            serves.push_str(&format!(",... ({} more)", self.org_count - self.orgs.len() as u32));
        }
        vec![
            self.name.clone(),
            self.advertise.clone(),
            self.org_count.to_string(),
            if serves.is_empty() { "-".to_string() } else { serves },
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

impl Listing for MachineUseInfo {
    const KEY: &'static str = "machines";
    const HEADER: &'static [&'static str] = &["POOL", "MACHINE", "REGISTERED", "LAST USE", "HOLDS", "EPHEMERAL"];
    fn json(&self) -> Value {
        json!({ "pool": self.pool.to_string(), "machine": self.machine.as_str(), "registered_ms": self.registered.0,
            "last_use_ms": self.last_use.map(|m| m.0), "holds": self.holds, "ephemeral": self.ephemeral })
    }
    fn row(&self) -> Vec<String> {
        // An untracked pool keeps no last use: "-".
        let last = self.last_use.map_or("-".to_string(), format_utc);
        let ephemeral = if self.ephemeral { "yes" } else { "no" };
        let (pool, machine, registered) =
            (self.pool.to_string(), self.machine.to_string(), format_utc(self.registered));
        vec![pool, machine, registered, last, self.holds.to_string(), ephemeral.to_string()]
    }
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

impl Listing for LabelLimitInfo {
    const KEY: &'static str = "label_limits";
    const HEADER: &'static [&'static str] = &["LABEL", "MAX", "SESSIONS"];
    fn json(&self) -> Value {
        json!({ "key": self.key, "value": self.value, "max": self.max, "sessions": self.sessions })
    }
    fn row(&self) -> Vec<String> {
        vec![format!("{}={}", self.key, self.value), self.max.to_string(), self.sessions.to_string()]
    }
}

impl Listing for ReservationInfo {
    const KEY: &'static str = "reservations";
    const HEADER: &'static [&'static str] = &["POOL", "LABEL", "SEATS", "IN USE", "HELD"];
    fn json(&self) -> Value {
        json!({
            "pool": self.pool.to_string(), "key": self.key, "value": self.value, "seats": self.seats,
            "in_use": self.in_use, "held": self.held,
        })
    }
    fn row(&self) -> Vec<String> {
        let label = format!("{}={}", self.key, self.value);
        vec![self.pool.to_string(), label, self.seats.to_string(), self.in_use.to_string(), self.held.to_string()]
    }
}
