//! An event as the stream and the webhooks carry it: one JSON object per
//! event, the envelope every type shares and the type's `data`
//! (docs/EVENTS.md holds the schema of each). A type's `version` grows
//! when its `data` changes in a way an old reader would misread; adding a
//! field does not change it.

use serde_json::{json, Value};

use crate::core::{format_utc, Event, EventBody};

/// The version of the envelope and of every type's `data` so far.
pub const VERSION: u32 = 1;

/// The event's JSON document.
pub fn event_json(e: &Event) -> Value {
    json!({
        "id": e.id(),
        "type": e.kind(),
        "version": VERSION,
        "org": e.org.as_str(),
        "cursor": e.seq,
        "time": format_utc(e.at),
        "time_ms": e.at.0,
        "idempotency_key": e.idempotency_key(),
        "data": data(&e.body),
    })
}

/// The type's own fields.
fn data(body: &EventBody) -> Value {
    match body {
        EventBody::Audit(a) => json!({
            "actor": a.actor.as_str(),
            "action": a.action.name(),
            "detail": a.detail,
        }),
        EventBody::Lease(l) => json!({
            "pool": l.pool.to_string(),
            "session": format!("{:016x}", l.session),
            "machine": l.machine.as_str(),
            "user": l.user.as_str(),
            "started": format_utc(l.started),
            "started_ms": l.started.0,
            "labels": l.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }),
        EventBody::Refused { pool, minute, denied } => refused(pool, *minute, denied),
        EventBody::MachineLimit { pool, quota, machine, minute } => json!({
            "pool": pool.to_string(),
            "quota": quota,
            "machine": machine.as_str(),
            "minute": format_utc(crate::core::Millis(minute * 60_000)),
        }),
        EventBody::QueueWait(w) => queue_wait(w),
        EventBody::PoolBusy { pool, since, minute, level, quota, .. } => json!({
            "pool": pool.to_string(),
            "since": format_utc(crate::core::Millis(since * 60_000)),
            "since_ms": since * 60_000,
            "minute": format_utc(crate::core::Millis(minute * 60_000)),
            "minute_ms": minute * 60_000,
            "percent": level,
            "quota": quota,
        }),
        EventBody::OrgMoved { node, previous, fence, .. } => {
            let mut v = json!({ "node": node, "fence": fence });
            if let Some(p) = previous {
                v["previous"] = json!(p);
            }
            v
        }
        EventBody::SubscriptionEnding { end, days } => json!({
            "last_day": crate::core::format_end_date(*end),
            "ends": format_utc(*end),
            "ends_ms": end.0,
            "days": days,
        }),
    }
}

/// A pool's refusals of one minute, by code (those with none left out).
fn refused(pool: &crate::core::PoolId, minute: u64, denied: &[u64]) -> Value {
    let codes = crate::proto::ErrorCode::DENIALS.iter().map(|c| c.name());
    let by_code: serde_json::Map<String, Value> =
        codes.zip(denied).filter(|(_, n)| **n > 0).map(|(c, n)| (c.to_string(), json!(n))).collect();
    json!({
        "pool": pool.to_string(),
        "minute": format_utc(crate::core::Millis(minute * 60_000)),
        "minute_ms": minute * 60_000,
        "total": denied.iter().sum::<u64>(),
        "by_code": by_code,
    })
}

/// A runner queued past its pool's alert.
fn queue_wait(w: &crate::core::QueueWait) -> Value {
    json!({
        "pool": w.pool.to_string(),
        "machine": w.machine.as_str(),
        "user": w.user.as_str(),
        "joined": format_utc(w.joined),
        "joined_ms": w.joined.0,
        "threshold_ms": w.threshold_ms,
        "labels": w.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{AuditAction, AuditEntry, Email, Millis, OrgName};

    #[test]
    fn an_audit_event_carries_its_envelope_and_data() {
        let org = OrgName::new("acme").unwrap();
        let entry = AuditEntry {
            org: org.clone(),
            at: Millis(1_795_737_600_123),
            seq: 0x2a,
            actor: Email::new("owner@acme.example").unwrap(),
            action: AuditAction::KeyRevoked,
            detail: "key=k1 user=a@acme.example".into(),
        };
        let e = Event { org, seq: 9, at: entry.at, body: EventBody::Audit(entry) };
        let v = event_json(&e);
        assert_eq!(v["id"], "acme/9");
        assert_eq!(v["type"], "audit.key_revoked");
        assert_eq!(v["version"], 1);
        assert_eq!(v["cursor"], 9);
        assert_eq!(v["time"], "2026-11-27T00:00:00Z");
        assert_eq!(v["time_ms"], 1_795_737_600_123u64);
        assert_eq!(v["idempotency_key"], "audit:acme:1a21a4d407b:2a");
        assert_eq!(v["data"]["actor"], "owner@acme.example");
        assert_eq!(v["data"]["detail"], "key=k1 user=a@acme.example");
    }
}
