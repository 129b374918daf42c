//! Request latencies for `/metrics` (`lbroker_request_duration_seconds`):
//! per kind of request, a histogram of the time from the read that brought
//! the request to the write of its answer, as the broker sees it.
//!
//! Kept cheap for the hot path: a stream tallies the requests of one read
//! by kind and records the whole tally once, after its answers are
//! written, with one clock reading per read (a pipelined batch of 64
//! acquires costs one `record`, not 64). The counts are sharded by thread,
//! each shard on cache lines of its own, so two cores recording never
//! write the same line; a scrape sums the shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::proto::Req;

/// The kinds of request, as the `op` label names them.
pub const OPS: [&str; 10] =
    ["acquire", "checkout", "renew", "release", "reattach", "register", "activate", "status", "list", "admin"];

/// Upper bounds of the buckets, in microseconds (then +Inf).
pub const BOUNDS_US: [u64; 13] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

const BUCKETS: usize = BOUNDS_US.len() + 1;
const SHARDS: usize = 8;

/// The kind of a request, as an index into `OPS`; `None` for one whose
/// answer comes later (a `Checkout` that may wait in the queue, an
/// `Events` that may wait for an event).
pub fn op_of(req: &Req) -> Option<usize> {
    Some(match req {
        Req::Acquire { .. } => 0,
        Req::Checkout { wait_ms: 0, .. } => 1,
        Req::Checkout { .. } => return None,
        Req::Renew { .. } | Req::Label { .. } => 2,
        Req::Release { .. } => 3,
        Req::Reattach { .. } | Req::ReattachLabelled { .. } => 4,
        Req::RegisterMachine { .. } | Req::RegisterEphemeral { .. } => 5,
        Req::Activate { .. } => 6,
        Req::Status { .. } | Req::Check { .. } | Req::CheckLabelled { .. } => 7,
        Req::ListKeys { .. }
        | Req::ListUsers { .. }
        | Req::ListMachines { .. }
        | Req::ListSessions { .. }
        | Req::ListGrants { .. }
        | Req::ListOffline { .. }
        | Req::Audit { .. }
        | Req::ListOrgs
        | Req::ListUserLimits { .. }
        | Req::OfflinePublicKey
        | Req::List { .. }
        | Req::WhatIf { .. }
        | Req::Nodes
        | Req::Route { .. }
        | Req::Events { wait_ms: 0, .. }
        | Req::ListWebhooks { .. }
        | Req::WebhookDeliveries { .. } => 8,
        // Both wait: on a first event, on a receiver's answer.
        Req::Events { .. } | Req::RedeliverWebhook { .. } => return None,
        Req::CreateOrg { .. }
        | Req::SetPool { .. }
        | Req::AddUser { .. }
        | Req::CreateKey { .. }
        | Req::RevokeKey { .. }
        | Req::RemoveMachine { .. }
        | Req::KillSession { .. }
        | Req::Grant { .. }
        | Req::RevokeGrant { .. }
        | Req::CreateOffline { .. }
        | Req::RevokeOffline { .. }
        | Req::TransferOffline { .. }
        | Req::RemoveUser { .. }
        | Req::SetSubscription { .. }
        | Req::SetUserLimit { .. }
        | Req::SetMachinePolicy { .. }
        | Req::SetPoolAlerts { .. }
        | Req::SetLabelLimit { .. }
        | Req::AddWebhook { .. }
        | Req::RemoveWebhook { .. }
        | Req::RotateWebhookSecret { .. }
        | Req::SetReservation { .. } => 9,
    })
}

/// The requests of one read, by kind.
#[derive(Default)]
pub struct Tally {
    counts: [u32; OPS.len()],
    any: bool,
}

impl Tally {
    /// Counts one request of kind `op` (from `op_of`).
    pub fn add(&mut self, op: Option<usize>) {
        if let Some(i) = op {
            self.counts[i] += 1;
            self.any = true;
        }
    }
}

/// One kind's histogram in one shard.
#[derive(Default)]
struct Hist {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

#[repr(align(128))]
#[derive(Default)]
struct Shard {
    ops: [Hist; OPS.len()],
}

/// Every kind's histogram, sharded by thread.
pub struct Latencies {
    shards: Box<[Shard]>,
    /// Off when nothing serves `/metrics`: then recording costs nothing.
    enabled: bool,
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies::new(true)
    }
}

/// One kind's totals at a scrape.
#[derive(Debug)]
pub struct OpLatency {
    /// The `op` label.
    pub op: &'static str,
    /// (upper bound in seconds, count in this bucket alone), the last
    /// bound infinite, which the encoder writes as +Inf (it also makes
    /// the counts cumulative).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the latencies, seconds.
    pub sum: f64,
    /// Requests counted.
    pub count: u64,
}

impl Latencies {
    /// Histograms that record (`enabled`) or ignore what they are given.
    pub fn new(enabled: bool) -> Latencies {
        Latencies { shards: (0..SHARDS).map(|_| Shard::default()).collect(), enabled }
    }

    /// Whether recording is on (the stream skips its clock reading if not).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records that every request in `tally` took `elapsed`, and empties it.
    pub fn record(&self, tally: &mut Tally, elapsed: Duration) {
        if !tally.any || !self.enabled {
            return;
        }
        let us = elapsed.as_micros() as u64;
        let bucket = BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(BOUNDS_US.len());
        let ns = elapsed.as_nanos() as u64;
        let shard = &self.shards[shard_index()];
        for (hist, n) in shard.ops.iter().zip(tally.counts.iter_mut()) {
            if *n > 0 {
                let n64 = u64::from(std::mem::take(n));
                // Relaxed: independent counters, summed at scrape time.
                hist.buckets[bucket].fetch_add(n64, Ordering::Relaxed);
                hist.sum_ns.fetch_add(ns.saturating_mul(n64), Ordering::Relaxed);
            }
        }
        tally.any = false;
    }

    /// Every kind's totals, summed over the shards (kinds never seen included, at 0).
    pub fn snapshot(&self) -> Vec<OpLatency> {
        OPS.iter()
            .enumerate()
            .map(|(i, op)| {
                let mut counts = [0u64; BUCKETS];
                let mut sum_ns = 0u64;
                for shard in self.shards.iter() {
                    let h = &shard.ops[i];
                    for (c, b) in counts.iter_mut().zip(&h.buckets) {
                        *c += b.load(Ordering::Relaxed);
                    }
                    sum_ns += h.sum_ns.load(Ordering::Relaxed);
                }
                let buckets = counts
                    .iter()
                    .enumerate()
                    .map(|(b, c)| (BOUNDS_US.get(b).map_or(f64::INFINITY, |us| *us as f64 / 1e6), *c))
                    .collect();
                OpLatency { op, buckets, sum: sum_ns as f64 / 1e9, count: counts.iter().sum() }
            })
            .collect()
    }
}

/// This thread's shard, assigned round-robin on first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_lands_in_its_bucket_once_per_request() {
        let l = Latencies::default();
        let mut t = Tally::default();
        t.add(Some(0));
        t.add(Some(0));
        t.add(Some(3));
        t.add(None);
        l.record(&mut t, Duration::from_micros(700));
        l.record(&mut t, Duration::from_micros(700)); // emptied: records nothing
        let s = l.snapshot();
        let acquire = &s[0];
        assert_eq!((acquire.op, acquire.count), ("acquire", 2));
        // 700 µs: above 500 µs, within 1 ms.
        assert_eq!(acquire.buckets[3], (0.0005, 0));
        assert_eq!(acquire.buckets[4], (0.001, 2));
        assert_eq!(acquire.buckets.last(), Some(&(f64::INFINITY, 0)));
        assert!((acquire.sum - 0.0014).abs() < 1e-9);
        assert_eq!(s[3].count, 1);
        assert_eq!(s[1].count, 0);
    }

    #[test]
    fn every_request_kind_has_an_op_but_a_waiting_checkout() {
        let org = crate::value::OrgName::new("o").unwrap();
        assert_eq!(op_of(&Req::ListOrgs), Some(8));
        assert_eq!(op_of(&Req::Status { org: Some(org) }), Some(7));
    }
}
