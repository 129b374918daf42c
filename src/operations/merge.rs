//! How the nodes' slices of an org's history add up (`gathered`). Pure:
//! no I/O, no clock.
//!
//! An org is served by one node at a time, so each node's rows cover the
//! time it served the org: a period's rollups sum across nodes (seat time,
//! admissions, refusals, ends), with the peak the highest of the nodes'
//! (two nodes never hold the org's seats at once but for a handover's
//! instant). Ended sessions merge by the order and the cursor every node
//! already pages by, (end ms, session id).

use std::collections::BTreeMap;

use crate::history::report::Series;
use crate::history::{EndedRow, Point, SessionsPage, Usage};

/// One node's rollups of one pool: (start ms, step ms, usage) per step.
pub type PoolSlice = (String, Vec<(u64, u64, Usage)>);

/// Folds the other nodes' slices into `series` (this node's), by pool
/// and step start; a slice of a pool not asked about is ignored.
pub fn series(series: &mut [Series], slices: &[Vec<PoolSlice>]) {
    for s in series.iter_mut() {
        let name = s.pool.to_string();
        let mut by_start: BTreeMap<u64, Point> = s.points.drain(..).map(|p| (p.start, p)).collect();
        for (_, points) in slices.iter().flatten().filter(|(pool, _)| *pool == name) {
            for (start, step_ms, usage) in points {
                match by_start.get_mut(start) {
                    Some(p) => p.usage.merge(usage),
                    None => {
                        by_start.insert(*start, Point { start: *start, step_ms: *step_ms, usage: usage.clone() });
                    }
                }
            }
        }
        s.points = by_start.into_values().collect();
    }
}

/// Merges pages read with the same cursor and `limit` on each node: every
/// row up to the least of the nodes' next cursors (past it some node has
/// not been read yet), in (end, session) order, the first `limit` of them;
/// the next cursor is the last row taken when `limit` were, else that
/// least cursor (none when every node read to the end of the range).
pub fn pages(pages: Vec<SessionsPage>, limit: usize) -> SessionsPage {
    let bound = pages.iter().filter_map(|(_, next)| *next).min();
    let mut rows: BTreeMap<(u64, u64), EndedRow> = BTreeMap::new();
    for (page, _) in pages {
        for (id, row) in page {
            let key = (row.end, id);
            if bound.is_none_or(|b| key <= b) {
                rows.entry(key).or_insert(row);
            }
        }
    }
    let taken: Vec<(u64, EndedRow)> = rows.into_iter().take(limit).map(|((_, id), row)| (id, row)).collect();
    let next = match taken.last() {
        Some((id, row)) if taken.len() == limit => Some((row.end, *id)),
        _ => bound,
    };
    (taken, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(end: u64) -> EndedRow {
        EndedRow {
            pool: "kre-floating-annual".into(),
            user: "a@x.io".into(),
            machine: "ci-1".into(),
            start: end.saturating_sub(10),
            end,
            reason: "released".into(),
            labels: Vec::new(),
        }
    }

    /// A node's page as `Db::sessions` reads it: rows after `after`, at most `limit`.
    fn page(node: &[(u64, u64)], after: Option<(u64, u64)>, limit: usize) -> SessionsPage {
        let rest: Vec<&(u64, u64)> = node.iter().filter(|k| after.is_none_or(|a| **k > a)).collect();
        let taken: Vec<(u64, EndedRow)> = rest.iter().take(limit).map(|(end, id)| (*id, row(*end))).collect();
        let next = (rest.len() > limit).then(|| *rest[limit - 1]);
        (taken, next)
    }

    #[test]
    fn merged_pages_walk_every_nodes_rows_once_in_order() {
        // Node A served the org first, B after; their ends interleave at the handover.
        let a: Vec<(u64, u64)> = vec![(10, 1), (20, 2), (30, 3), (40, 4), (45, 9)];
        let b: Vec<(u64, u64)> = vec![(40, 5), (41, 6), (50, 7), (60, 8)];
        for limit in 1..=10 {
            let (mut after, mut walked) = (None, Vec::new());
            for _ in 0..20 {
                let (rows, next) = pages(vec![page(&a, after, limit), page(&b, after, limit)], limit);
                assert!(rows.len() <= limit);
                walked.extend(rows.iter().map(|(id, r)| (r.end, *id)));
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            let mut all: Vec<(u64, u64)> = a.iter().chain(&b).copied().collect();
            all.sort();
            assert_eq!(walked, all, "limit {limit}");
        }
    }

    #[test]
    fn a_page_stops_where_a_node_stopped_reading() {
        // A stopped at (20, 2) (its scan bound): B's (30, 5) must wait for
        // A's next page, which may hold (25, 3).
        let a = (vec![(1, row(10)), (2, row(20))], Some((20, 2)));
        let b = (vec![(4, row(15)), (5, row(30))], None);
        let (rows, next) = pages(vec![a, b], 10);
        assert_eq!(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 4, 2]);
        assert_eq!(next, Some((20, 2)));
    }

    #[test]
    fn rollups_sum_by_step_and_the_peak_is_the_highest() {
        let pool: crate::core::PoolId = "kre-floating-annual".parse().unwrap();
        let u = |seat_ms, admitted, peak| Usage { seat_ms, admitted, peak, denied: vec![0; 3], ..Usage::default() };
        let p = |start, usage| Point { start, step_ms: 60_000, usage };
        let mut mine =
            vec![Series { pool, quota: 4, points: vec![p(60_000, u(1_000, 1, 1)), p(120_000, u(500, 0, 2))] }];
        let theirs = vec![(pool.to_string(), vec![(0, 60_000, u(7, 1, 3)), (60_000, 60_000, u(2_000, 2, 3))])];
        let elsewhere = vec![("kse-floating-annual".to_string(), vec![(0, 60_000, u(9, 9, 9))])];
        series(&mut mine, &[theirs, elsewhere]);
        let got: Vec<(u64, u64, u64, u32)> =
            mine[0].points.iter().map(|p| (p.start, p.usage.seat_ms, p.usage.admitted, p.usage.peak)).collect();
        assert_eq!(got, [(0, 7, 1, 3), (60_000, 3_000, 3, 3), (120_000, 500, 0, 2)]);
    }
}
