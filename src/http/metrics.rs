//! `/metrics`: a snapshot of the broker's numbers, encoded by
//! `prometheus-client` in the OpenMetrics text format.
//!
//! Read at scrape time from the same state `status` reads (the core's pool
//! counters, which survive restarts, and the shell's connection count), so
//! there is nothing to keep in step on the hot path. Never a session, a user
//! or a machine as a label: the labels are `org` and `pool` only, and the
//! `org` label is capped (`MAX_ORGS`, the busiest first); the rest are
//! folded into `org="_other"`, and `lbroker_orgs_folded` says how many.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet as NoLabels};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::core::hash::{FastMap, FastSet};
use crate::core::{Millis, OrgName, PoolId, PoolStatus};
use crate::http::Web;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Orgs labelled by name; the rest share `org="_other"`.
pub const MAX_ORGS: usize = 100;

/// The label an org past `MAX_ORGS` is folded into.
const OTHER: &str = "_other";

/// Encodes the broker's metrics now.
pub fn render(web: &Web) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("lbroker");
    registry.register_collector(Box::new(Snapshot::take(web)));
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry)?;
    Ok(body)
}

/// One pool's numbers, summed when orgs are folded.
#[derive(Debug, Default, Clone, Copy)]
struct Numbers {
    in_use: u64,
    quota: u64,
    machines: u64,
    waiting: u64,
    admitted: u64,
    rejected: u64,
    grants: u64,
    activations: u64,
    offline: u64,
    ends: [u64; 4],
    denied: [u64; crate::core::Denial::ALL.len()],
    seat_ms: u64,
    machines_expired: u64,
    reserved: u64,
    reserved_free: u64,
}

impl Numbers {
    fn add(&mut self, s: &PoolStatus) {
        self.in_use += u64::from(s.in_use);
        self.quota += u64::from(s.quota);
        self.machines += u64::from(s.machines);
        self.waiting += u64::from(s.waiting);
        self.admitted += s.admitted;
        self.rejected += s.rejected;
        self.grants += u64::from(s.grants);
        self.activations += u64::from(s.activations);
        self.offline += u64::from(s.offline);
        self.machines_expired += s.machines_expired;
        self.reserved += u64::from(s.reserved);
        self.reserved_free += u64::from(s.reserved_free);
        for (e, n) in self.ends.iter_mut().zip(s.ends) {
            *e += n;
        }
        for (d, n) in self.denied.iter_mut().zip(s.denied) {
            *d += n;
        }
    }
}

/// The broker's numbers at one instant.
#[derive(Debug)]
struct Snapshot {
    /// (org label, pool) → numbers.
    pools: BTreeMap<(String, String), Numbers>,
    /// org label → subscription end, Unix seconds (named orgs only).
    subscriptions: BTreeMap<String, u64>,
    folded: usize,
    connections: u64,
    auth_failures: u64,
    /// Webhooks marked failing.
    webhooks_failing: usize,
    /// Leases lost that got no event.
    events_dropped: u64,
    /// Leaps of the wall clock ahead of the broker's, and its lead now (ms).
    clock: (u64, i64),
    latencies: Vec<crate::latency::OpLatency>,
    /// (ended sessions dropped, closed minutes dropped, file bytes), if the history is on.
    history: Option<(u64, u64, u64)>,
    /// On a cluster node: its lease and orgs.
    cluster: Option<Cluster>,
}

/// A cluster node's part in its cluster, at a scrape.
#[derive(Debug)]
struct Cluster {
    serving: bool,
    orgs: u64,
    known: u64,
}

/// The names of the `MAX_ORGS` busiest orgs (by seats in use, then by
/// name), which keep their own labels; and how many orgs there are.
fn busiest<'a>(pools: &'a [PoolStatus], subscriptions: &'a [(OrgName, Millis)]) -> (FastSet<&'a str>, usize) {
    let mut load: FastMap<&str, u64> = subscriptions.iter().map(|(org, _)| (org.as_str(), 0)).collect();
    for p in pools {
        *load.entry(p.org.as_str()).or_default() += u64::from(p.in_use);
    }
    let orgs = load.len();
    let mut ranked: Vec<(&str, u64)> = load.into_iter().collect();
    let order = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
    if ranked.len() > MAX_ORGS {
        ranked.select_nth_unstable_by(MAX_ORGS, order);
        ranked.truncate(MAX_ORGS);
    }
    (ranked.into_iter().map(|(org, _)| org).collect(), orgs)
}

impl Snapshot {
    fn take(web: &Web) -> Snapshot {
        let (pools, subscriptions) = web.ops.core().census();
        let seat_ms = web.ops.core().seat_ms(web.ops.clock().now());
        // Borrowed names and fast maps: ten thousand pools are scraped in
        // milliseconds, and nothing is allocated per pool.
        let seat: FastMap<(&str, PoolId), u64> = seat_ms.iter().map(|(o, p, ms)| ((o.as_str(), *p), *ms)).collect();
        let (named, orgs) = busiest(&pools, &subscriptions);
        let mut sums: FastMap<(&str, PoolId), Numbers> = FastMap::default();
        for p in &pools {
            let org = p.org.as_str();
            let n = sums.entry((if named.contains(org) { org } else { OTHER }, p.pool)).or_default();
            n.add(p);
            n.seat_ms += seat.get(&(p.org.as_str(), p.pool)).copied().unwrap_or(0);
        }
        let out = sums.into_iter().map(|((org, pool), n)| ((org.to_string(), pool.to_string()), n)).collect();
        let subs = subscriptions
            .iter()
            .filter(|(org, _)| named.contains(org.as_str()))
            .map(|(org, end)| (org.to_string(), end.0 / 1000))
            .collect();
        Snapshot {
            pools: out,
            subscriptions: subs,
            folded: orgs.saturating_sub(named.len()),
            connections: web.quic.connections(),
            auth_failures: web.ops.core().auth_failures(),
            webhooks_failing: web.ops.webhooks_failing(),
            events_dropped: web.ops.events_dropped(),
            clock: (web.ops.leaps().count(), web.ops.leaps().wall_ahead_ms()),
            latencies: web.quic.latencies(),
            // Relaxed: statistics read once per scrape.
            history: web.ops.history().map(|h| {
                use std::sync::atomic::Ordering::Relaxed;
                (h.dropped_sessions.load(Relaxed), h.dropped_minutes.load(Relaxed), h.file_bytes())
            }),
            // A cluster node: whether its lease is valid, the orgs it
            // serves, the orgs the cluster has (as last read).
            cluster: web.ops.cluster().map(|seat| Cluster {
                serving: seat.valid(),
                orgs: seat.orgs_served() as u64,
                known: seat.orgs_known() as u64,
            }),
        }
    }

    /// One family of per-pool values.
    fn per_pool(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        (name, help, kind): (&str, &str, MetricType),
        value: impl Fn(&Numbers) -> u64,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for ((org, pool), n) in &self.pools {
            let labels = [("org", org.as_str()), ("pool", pool.as_str())];
            let metric = family.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value(n)).encode(metric)?,
                _ => ConstGauge::new(value(n) as i64).encode(metric)?,
            }
        }
        Ok(())
    }
}

impl Snapshot {
    /// `denials_total`, labelled org, pool and reason (the error code).
    fn denials(&self, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let help = "Admissions refused since the pool was created, by error code (survives restarts).";
        let mut denials = e.encode_descriptor("denials", help, None, MetricType::Counter)?;
        for ((org, pool), n) in &self.pools {
            let counts = std::iter::once(n.rejected).chain(n.denied);
            for (code, count) in crate::proto::ErrorCode::DENIALS.iter().zip(counts) {
                let labels = [("org", org.as_str()), ("pool", pool.as_str()), ("reason", code.name())];
                ConstCounter::new(count).encode(denials.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// `session_ends_total`, labelled org, pool and reason.
    fn session_ends(&self, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let help = "Sessions ended since the pool was created, by reason (survives restarts).";
        let mut ends = e.encode_descriptor("session_ends", help, None, MetricType::Counter)?;
        for ((org, pool), n) in &self.pools {
            for (reason, count) in crate::core::EndReason::ALL.iter().zip(n.ends) {
                let labels = [("org", org.as_str()), ("pool", pool.as_str()), ("reason", reason.name())];
                ConstCounter::new(count).encode(ends.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let e = &mut encoder;
        self.pool_families(e)?;
        self.broker_families(e)?;
        if let Some((sessions, minutes, bytes)) = self.history {
            let help = "Ended sessions and closed minutes the utilization history did not keep because it was behind (this run).";
            let mut dropped = e.encode_descriptor("history_dropped", help, None, MetricType::Counter)?;
            ConstCounter::new(sessions).encode(dropped.encode_family(&[("what", "sessions")])?)?;
            ConstCounter::new(minutes).encode(dropped.encode_family(&[("what", "minutes")])?)?;
            one(e, "history_bytes", "Size of the utilization history's file (history.redb).", bytes as i64)?;
        }
        if let Some(c) = &self.cluster {
            let help = "On a node of a cluster: 1 while its etcd lease is known to last (it serves its orgs), else 0 (absent on a single broker).";
            one(e, "cluster_serving", help, i64::from(c.serving))?;
            one(e, "cluster_orgs", "On a node of a cluster: the orgs it serves.", c.orgs as i64)?;
            let help = "On a node of a cluster: the orgs the cluster has, as this node last read them.";
            one(e, "cluster_orgs_known", help, c.known as i64)?;
        }
        build_info(e)
    }
}

/// One gauge family with one value and no labels.
fn one(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Snapshot {
    /// The families labelled by org and pool, and the subscriptions' ends.
    fn pool_families(&self, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let in_use =
            "Seats held: sessions, node-locked activations, live offline licenses, seats held after a restart.";
        self.per_pool(e, ("seats_in_use", in_use, Gauge), |n| n.in_use)?;
        self.per_pool(e, ("seats_quota", "Licenses bought (the pool's quota).", Gauge), |n| n.quota)?;
        self.per_pool(e, ("machines_registered", "Registered machine IDs.", Gauge), |n| n.machines)?;
        self.per_pool(e, ("queue_waiting", "Runners waiting in the pool's queue.", Gauge), |n| n.waiting)?;
        let reserved = "Seats reserved for sessions carrying a job label (pool reserve), in use or not.";
        self.per_pool(e, ("seats_reserved", reserved, Gauge), |n| n.reserved)?;
        let free = "Reserved seats no session sits on: held for their label, not counted in seats_in_use.";
        self.per_pool(e, ("seats_reserved_free", free, Gauge), |n| n.reserved_free)?;
        let expired = "Machines the broker released unused (idle limit, ephemeral) since the pool was created (survives restarts).";
        self.per_pool(e, ("machines_expired", expired, Counter), |n| n.machines_expired)?;
        let admitted = "Sessions admitted since the pool was created (survives restarts).";
        self.per_pool(e, ("admissions", admitted, Counter), |n| n.admitted)?;
        self.denials(e)?;
        self.session_ends(e)?;
        let help = "Seat-seconds held by sessions since the pool was created (survives restarts): its rate over the quota is utilization.";
        let mut seat = e.encode_descriptor("seat_seconds", help, None, Counter)?;
        for ((org, pool), n) in &self.pools {
            let labels = [("org", org.as_str()), ("pool", pool.as_str())];
            ConstCounter::new(n.seat_ms as f64 / 1000.0).encode(seat.encode_family(&labels)?)?;
        }
        self.per_pool(e, ("kse_grants", "Licensed users of a KSE pool.", Gauge), |n| n.grants)?;
        let activations = "Node-locked KSE activations (each holds a seat).";
        self.per_pool(e, ("kse_activations", activations, Gauge), |n| n.activations)?;
        self.per_pool(e, ("offline_licenses", "Offline licenses holding a seat.", Gauge), |n| n.offline)?;
        let help = "When the org's subscription ends (nothing is admitted from then on), Unix seconds.";
        let mut subs = e.encode_descriptor("subscription_end_timestamp_seconds", help, None, Gauge)?;
        for (org, end) in &self.subscriptions {
            ConstGauge::new(*end as i64).encode(subs.encode_family(&[("org", org.as_str())])?)?;
        }
        Ok(())
    }

    /// The broker's own families: folded orgs, connections, failed keys, latencies.
    fn broker_families(&self, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let folded = "Orgs whose numbers are summed under org=\"_other\" (past the first 100).";
        one(e, "orgs_folded", folded, self.folded as i64)?;
        one(e, "connections_open", "QUIC connections open.", self.connections as i64)?;
        let help = "Webhooks whose event was retried past --webhook-retry-for without a 2xx (docs/EVENTS.md).";
        one(e, "webhooks_failing", help, self.webhooks_failing as i64)?;
        let help =
            "Leases lost (expired, revoked) that got no event: the queue to the outbox was full, or its write failed.";
        ConstCounter::new(self.events_dropped).encode(e.encode_descriptor(
            "events_dropped",
            help,
            None,
            MetricType::Counter,
        )?)?;
        let help = "Hellos refused for an unknown or revoked API key (survives restarts).";
        ConstCounter::new(self.auth_failures).encode(e.encode_descriptor(
            "auth_failures",
            help,
            None,
            MetricType::Counter,
        )?)?;
        let help = "Leaps of the wall clock ahead of the broker's own clock seen in this run (not followed).";
        ConstCounter::new(self.clock.0).encode(e.encode_descriptor(
            "clock_leaps",
            help,
            None,
            MetricType::Counter,
        )?)?;
        let help = "How far the wall clock reads ahead of the broker's clock, seconds (a restart beyond --max-clock-leap is refused).";
        let ahead = ConstGauge::new(self.clock.1 as f64 / 1000.0);
        ahead.encode(e.encode_descriptor("clock_wall_ahead_seconds", help, None, MetricType::Gauge)?)?;
        let help = "Time from the read that brought a request to the write of its answer, by kind of request.";
        let mut durations = e.encode_descriptor("request_duration_seconds", help, None, MetricType::Histogram)?;
        for l in &self.latencies {
            durations.encode_family(&[("op", l.op)])?.encode_histogram::<NoLabels>(l.sum, l.count, &l.buckets, None)?;
        }
        Ok(())
    }
}

fn build_info(e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let mut build = e.encode_descriptor("build_info", "The broker's version.", None, MetricType::Gauge)?;
    ConstGauge::new(1).encode(build.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(org: &str, in_use: u32) -> PoolStatus {
        PoolStatus {
            org: OrgName::new(org).expect("a valid org name"),
            pool: PoolId::KRE_DEFAULT,
            quota: 100,
            in_use,
            machines: 0,
            admitted: 0,
            rejected: 0,
            grants: 0,
            activations: 0,
            offline: 0,
            waiting: 0,
            held: 0,
            ends: [0; 4],
            denied: Default::default(),
            machines_expired: 0,
            reserved: 0,
            reserved_free: 0,
        }
    }

    #[test]
    fn the_busiest_orgs_keep_their_names_ties_by_name() {
        // 150 orgs with pools (org-000 busiest, then fewer seats, the last 60
        // idle), and 5 with no pool at all: 155 orgs.
        let pools: Vec<PoolStatus> = (0..150).map(|i| pool(&format!("org-{i:03}"), 90u32.saturating_sub(i))).collect();
        let subs: Vec<(OrgName, Millis)> =
            (0..155).map(|i| (OrgName::new(format!("org-{i:03}")).expect("valid"), Millis(0))).collect();
        let (named, orgs) = busiest(&pools, &subs);
        assert_eq!(orgs, 155);
        let mut named: Vec<&str> = named.into_iter().collect();
        named.sort_unstable();
        let want: Vec<String> = (0..MAX_ORGS).map(|i| format!("org-{i:03}")).collect();
        assert_eq!(named, want, "the 90 busy ones, then the idle ones by name");
    }
}
