//! Human tables and `--json` output for the list commands.
//!
//! Each listed type says once how it looks as a table row and as a JSON
//! object; `print` does the rest. The JSON is a documented CLI format of its
//! own (times as `_ms` numbers, pools and roles as their names), not the
//! wire's encoding, so it is spelled out here rather than derived.

use license_broker::client::{Client, ClientError};
use license_broker::proto::{
    AuditEntry, EndedSession, GrantInfo, KeyInfo, LabelLimitInfo, ListOf, MachineInfo, MachineUseInfo, NodeInfo,
    OfflineInfo, OrgInfo, PageItems, PoolState, ReservationInfo, SessionView, UsagePoint, UserInfo, UserLimitInfo,
};
use license_broker::value::{format_end_date, format_utc, Millis, Product};
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

/// Prints a list as its pages arrive: each item is written once and never
/// held, so a million sessions print in constant memory. A table's column
/// widths are set by the first page (a longer cell later widens only its own
/// row); JSON is one `{KEY: [...]}` object written item by item, an item
/// per line (so it also greps and streams line by line). Output
/// stops quietly when stdout closes (`| head`).
struct Printer {
    as_json: bool,
    /// Column widths once the first page set them; items written so far.
    widths: Option<Vec<usize>>,
    written: usize,
    out: std::io::BufWriter<std::io::Stdout>,
    closed: bool,
}

impl Printer {
    fn new(as_json: bool) -> Printer {
        let out = std::io::BufWriter::new(std::io::stdout());
        Printer { as_json, widths: None, written: 0, out, closed: false }
    }

    fn page<T: Listing>(&mut self, list: &[T]) {
        if self.widths.is_none() {
            let widths = match self.as_json {
                true => {
                    self.write(format_args!("{{\"{}\":[", T::KEY));
                    Vec::new()
                }
                false => {
                    let mut widths: Vec<usize> = T::HEADER.iter().map(|h| h.len()).collect();
                    for row in list.iter().map(T::row) {
                        for (w, cell) in widths.iter_mut().zip(&row) {
                            *w = (*w).max(cell.len());
                        }
                    }
                    let header = T::HEADER.iter().map(|s| s.to_string()).collect();
                    self.line(&widths, header);
                    widths
                }
            };
            self.widths = Some(widths);
        }
        let widths = self.widths.clone().unwrap_or_default();
        for item in list {
            match self.as_json {
                true => {
                    let comma = if self.written == 0 { "" } else { "," };
                    self.write(format_args!("{comma}\n{}", item.json()));
                }
                false => self.line(&widths, item.row()),
            }
            self.written += 1;
        }
    }

    fn line(&mut self, widths: &[usize], cells: Vec<String>) {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        self.write(format_args!("{}\n", padded.join("  ").trim_end()));
    }

    fn write(&mut self, text: std::fmt::Arguments<'_>) {
        use std::io::Write;
        if !self.closed && self.out.write_fmt(text).is_err() {
            self.closed = true;
        }
    }

    fn finish(mut self) {
        use std::io::Write;
        if self.as_json {
            let newline = if self.written == 0 { "" } else { "\n" };
            self.write(format_args!("{newline}]}}\n"));
        }
        let _ = self.out.flush();
    }
}

/// Prints a whole list (one page).
fn print<T: Listing>(list: &[T], as_json: bool) {
    let mut p = Printer::new(as_json);
    p.page(list);
    p.finish();
}

/// Pages through a list on the broker, printing each page as it arrives.
pub async fn paged(c: &Client, of: ListOf, as_json: bool) -> Result<(), ClientError> {
    let mut p = Printer::new(as_json);
    c.each_page(of, |items| match items {
        PageItems::Pools(v) => p.page(&v),
        PageItems::Sessions(v) => p.page(&v),
        PageItems::Machines(v) => p.page(&v),
        PageItems::Users(v) => p.page(&v),
        PageItems::Keys(v) => p.page(&v),
        PageItems::Grants(v) => p.page(&v),
        PageItems::Offline(v) => p.page(&v),
        PageItems::Audit(v) => p.page(&v),
        PageItems::Orgs(v) => p.page(&v),
        PageItems::UserLimits(v) => p.page(&v),
        PageItems::Usage(v) => p.page(&v),
        PageItems::Ended(v) => p.page(&v),
        PageItems::MachineUses(v) => p.page(&v),
        PageItems::LabelLimits(v) => p.page(&v),
        PageItems::Reservations(v) => p.page(&v),
    })
    .await?;
    p.finish();
    Ok(())
}

/// As `paged` for ended sessions, printing only those `keep` keeps; the
/// nodes of a cluster whose part is missing.
pub async fn paged_ended(
    c: &Client,
    of: ListOf,
    as_json: bool,
    keep: impl Fn(&EndedSession) -> bool,
) -> Result<Vec<license_broker::proto::MissingNode>, ClientError> {
    let mut p = Printer::new(as_json);
    let missing = c
        .each_page(of, |items| {
            if let PageItems::Ended(v) = items {
                p.page(&v.into_iter().filter(|s| keep(s)).collect::<Vec<_>>());
            }
        })
        .await?;
    p.finish();
    Ok(missing)
}

/// The last line of `status` on a cluster: how many orgs each node serves.
pub fn cluster_line(nodes: &[NodeInfo]) {
    if nodes.is_empty() {
        return;
    }
    let each: Vec<String> =
        nodes.iter().map(|n| format!("{} ({}) {} orgs", n.name, n.advertise, n.org_count)).collect();
    println!("cluster of {} nodes: {}; `nodes` names each node's orgs", nodes.len(), each.join(", "));
}

/// `nodes`.
pub fn nodes(nodes: &[NodeInfo], as_json: bool) {
    if nodes.is_empty() && !as_json {
        println!("a single broker (not a cluster)");
        return;
    }
    print(nodes, as_json);
}

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

pub fn status(pools: &[PoolState], as_json: bool) {
    if pools.is_empty() && !as_json {
        println!("no pools yet (the operator creates them with `pool set`)");
        return;
    }
    print(pools, as_json);
}

impl Listing for UsagePoint {
    const KEY: &'static str = "points";
    const HEADER: &'static [&'static str] =
        &["POOL", "START", "PEAK", "AVERAGE", "TROUGH", "QUOTA", "ADMITTED", "DENIED"];
    fn json(&self) -> Value {
        json!({
            "pool": self.pool.to_string(), "start": format_utc(Millis(self.start_ms)), "peak": self.peak,
            "average": self.seat_ms as f64 / self.step_ms.max(1) as f64, "trough": self.trough, "quota": self.quota,
            "admitted": self.admitted, "denied": self.denied.iter().sum::<u64>(),
        })
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.pool.to_string(),
            format_utc(Millis(self.start_ms)),
            self.peak.to_string(),
            format!("{:.2}", self.seat_ms as f64 / self.step_ms.max(1) as f64),
            self.trough.to_string(),
            self.quota.to_string(),
            self.admitted.to_string(),
            self.denied.iter().sum::<u64>().to_string(),
        ]
    }
}

impl Listing for EndedSession {
    const KEY: &'static str = "sessions";
    const HEADER: &'static [&'static str] =
        &["SESSION", "POOL", "USER", "MACHINE", "START", "END", "SECONDS", "REASON"];
    fn json(&self) -> Value {
        let row = license_broker::history::EndedRow {
            pool: self.pool.clone(),
            user: self.user.clone(),
            machine: self.machine.clone(),
            start: self.start_ms,
            end: self.end_ms,
            reason: self.reason.clone(),
            labels: self.labels.clone(),
        };
        license_broker::history::export::session_json(self.session.0, &row)
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.session.to_string(),
            self.pool.clone(),
            self.user.clone(),
            self.machine.clone(),
            format_utc(Millis(self.start_ms)),
            format_utc(Millis(self.end_ms)),
            format!("{:.1}", self.end_ms.saturating_sub(self.start_ms) as f64 / 1000.0),
            self.reason.clone(),
        ]
    }
}

/// A usage series as a table: one line per pool and step.
pub fn usage_table(all: &[license_broker::history::report::Series]) {
    let mut p = Printer::new(false);
    for s in all {
        let points: Vec<UsagePoint> = s
            .points
            .iter()
            .map(|pt| UsagePoint {
                pool: s.pool,
                quota_now: s.quota,
                start_ms: pt.start,
                step_ms: pt.step_ms,
                peak: pt.usage.peak,
                trough: pt.usage.trough,
                quota: pt.usage.quota,
                seat_ms: pt.usage.seat_ms,
                admitted: pt.usage.admitted,
                denied: pt.usage.denied.clone(),
                ends: pt.usage.ends,
                queued: pt.usage.queued,
            })
            .collect();
        p.page(&points);
    }
    p.finish();
}

/// A what-if replay as a table.
pub fn what_if_table(w: &license_broker::history::WhatIf) {
    println!(
        "replayed {} sessions and {} refusals (as sessions of the median length, {:.0} s){}",
        w.sessions,
        w.refusals,
        w.median_ms as f64 / 1000.0,
        if w.truncated { "; the demand was cut short (too much of it)" } else { "" }
    );
    println!("{:<6}  {:>9}  {:>8}  {:>11}", "SEATS", "ADMITTED", "DENIED", "AT CAPACITY");
    for o in &w.outcomes {
        println!("{:<6}  {:>9}  {:>8}  {:>10.1}%", o.seats, o.admitted, o.denied, o.at_capacity() * 100.0);
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

/// A pool's reservations (`pool limits --reservations`).
pub fn reservations(list: &[ReservationInfo], as_json: bool) {
    print(list, as_json);
}

/// `status`'s line per reservation, under the pools' table.
pub fn reserved_lines(list: &[ReservationInfo]) {
    for r in list {
        let owed = r.seats.saturating_sub(r.held);
        let owed = if owed > 0 { format!(", {owed} owed until seats free") } else { String::new() };
        println!("reserved {}={} in {}: {} seats, {} in use{owed}", r.key, r.value, r.pool, r.seats, r.in_use);
    }
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
