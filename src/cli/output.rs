//! Human tables and `--json` output for the list commands.

use license_broker::proto::{
    AuditEntry, GrantInfo, KeyInfo, MachineInfo, OfflineInfo, PoolStatus, SessionInfo, UserInfo,
};
use license_broker::value::format_utc;
use serde_json::json;

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

pub fn status(pools: &[PoolStatus], as_json: bool) {
    if as_json {
        let v: Vec<_> = pools
            .iter()
            .map(|p| {
                json!({
                    "org": p.org.as_str(), "pool": p.pool.to_string(), "quota": p.quota,
                    "in_use": p.in_use, "machines": p.machines, "admitted": p.admitted, "rejected": p.rejected,
                    "grants": p.grants, "activations": p.activations, "offline": p.offline,
                })
            })
            .collect();
        println!("{}", json!({ "pools": v }));
        return;
    }
    if pools.is_empty() {
        println!("no pools yet (the operator creates them with `pool set`)");
        return;
    }
    let rows = pools
        .iter()
        .map(|p| {
            vec![
                p.org.to_string(),
                p.pool.to_string(),
                p.quota.to_string(),
                p.in_use.to_string(),
                p.machines.to_string(),
                p.admitted.to_string(),
                p.rejected.to_string(),
                kse_column(p.pool.product == license_broker::core::Product::Kse, p.grants),
                p.offline.to_string(),
            ]
        })
        .collect();
    table(&["ORG", "POOL", "QUOTA", "IN USE", "MACHINES", "ADMITTED", "REJECTED", "GRANTS", "OFFLINE"], rows);
}

/// Grants mean something for KSE pools only; KRE shows a dash.
fn kse_column(kse: bool, n: u32) -> String {
    if kse {
        n.to_string()
    } else {
        "-".to_string()
    }
}

pub fn sessions(list: &[SessionInfo], as_json: bool) {
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                json!({
                    "session": s.session.to_string(), "pool": s.pool.to_string(), "machine": s.machine.as_str(),
                    "user": s.user.as_str(), "started_ms": s.started.0, "deadline_ms": s.deadline.0,
                })
            })
            .collect();
        println!("{}", json!({ "sessions": v }));
        return;
    }
    let rows = list
        .iter()
        .map(|s| {
            vec![
                s.session.to_string(),
                s.pool.to_string(),
                s.machine.to_string(),
                s.user.to_string(),
                format_utc(s.started),
                format_utc(s.deadline),
            ]
        })
        .collect();
    table(&["SESSION", "POOL", "MACHINE", "USER", "STARTED", "EXPIRES"], rows);
}

pub fn machines(list: &[MachineInfo], as_json: bool) {
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|m| json!({ "pool": m.pool.to_string(), "machine": m.machine.as_str(), "registered_ms": m.registered.0 }))
            .collect();
        println!("{}", json!({ "machines": v }));
        return;
    }
    let rows = list.iter().map(|m| vec![m.pool.to_string(), m.machine.to_string(), format_utc(m.registered)]).collect();
    table(&["POOL", "MACHINE", "REGISTERED"], rows);
}

pub fn users(list: &[UserInfo], as_json: bool) {
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|u| json!({ "email": u.email.as_str(), "role": u.role.name(), "created_ms": u.created.0 }))
            .collect();
        println!("{}", json!({ "users": v }));
        return;
    }
    let rows = list.iter().map(|u| vec![u.email.to_string(), u.role.to_string(), format_utc(u.created)]).collect();
    table(&["EMAIL", "ROLE", "ADDED"], rows);
}

pub fn keys(list: &[KeyInfo], as_json: bool) {
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|k| json!({ "id": k.id, "email": k.email.as_str(), "created_ms": k.created.0, "revoked": k.revoked }))
            .collect();
        println!("{}", json!({ "keys": v }));
        return;
    }
    let rows = list
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.email.to_string(),
                format_utc(k.created),
                if k.revoked { "revoked" } else { "active" }.into(),
            ]
        })
        .collect();
    table(&["ID", "EMAIL", "CREATED", "STATE"], rows);
}

pub fn grants(list: &[GrantInfo], as_json: bool) {
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|g| {
                json!({ "pool": g.pool.to_string(), "email": g.email.as_str(), "granted_ms": g.granted.0,
                        "machine": g.machine.as_ref().map(|m| m.as_str()) })
            })
            .collect();
        println!("{}", json!({ "licenses": v }));
        return;
    }
    let rows = list
        .iter()
        .map(|g| {
            let machine = g.machine.as_ref().map_or("-".to_string(), |m| m.to_string());
            vec![g.pool.to_string(), g.email.to_string(), format_utc(g.granted), machine]
        })
        .collect();
    table(&["POOL", "LICENSED USER", "GRANTED", "ACTIVATED ON"], rows);
}

pub fn offline(list: &[OfflineInfo], as_json: bool) {
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|o| {
                json!({ "pool": o.pool.to_string(), "id": o.id, "machine": o.machine.as_str(), "issued_ms": o.issued.0,
                        "last_day": o.last_day, "created_by": o.created_by.as_str(), "active": o.active })
            })
            .collect();
        println!("{}", json!({ "offline": v }));
        return;
    }
    let rows = list
        .iter()
        .map(|o| {
            let state = if o.active { "active" } else { "expired" };
            vec![
                o.pool.to_string(),
                o.id.clone(),
                o.machine.to_string(),
                o.last_day.clone(),
                o.created_by.to_string(),
                state.into(),
            ]
        })
        .collect();
    table(&["POOL", "LICENSE", "MACHINE", "LAST DAY", "CREATED BY", "STATE"], rows);
}

pub fn audit(list: &[AuditEntry], as_json: bool) {
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|e| json!({ "at_ms": e.at.0, "actor": e.actor.as_str(), "action": e.action.name(), "detail": e.detail }))
            .collect();
        println!("{}", json!({ "audit": v }));
        return;
    }
    let rows = list
        .iter()
        .map(|e| vec![format_utc(e.at), e.actor.to_string(), e.action.name().to_string(), e.detail.clone()])
        .collect();
    table(&["WHEN", "WHO", "WHAT", "DETAIL"], rows);
}
