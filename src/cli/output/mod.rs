//! Human tables and `--json` output for the list commands.
//!
//! Each listed type says once how it looks as a table row and as a JSON
//! object; `print` does the rest. The JSON is a documented CLI format of its
//! own (times as `_ms` numbers, pools and roles as their names), not the
//! wire's encoding, so it is spelled out here rather than derived.

//!
//! Reading order: `Listing` and the commands' entry points here →
//! `printer` (the streaming table and JSON writer) → the listed types by
//! subject: `live` (pools, sessions, machines, limits, nodes), `directory`
//! (orgs, users, keys, licenses, the audit trail), `history` (usage and
//! ended sessions, the what-if replay).

mod directory;
mod history;
mod live;
mod printer;

pub use history::{usage_table, what_if_table};

use license_broker::client::{Client, ClientError};
use license_broker::proto::{EndedSession, ListOf, NodeInfo, PageItems, PoolState, ReservationInfo};
use serde_json::Value;

use self::printer::Printer;

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

pub fn status(pools: &[PoolState], as_json: bool) {
    if pools.is_empty() && !as_json {
        println!("no pools yet (the operator creates them with `pool set`)");
        return;
    }
    print(pools, as_json);
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
