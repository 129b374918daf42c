//! What a stranger may hold of the web door, per source address and in
//! all, as the QUIC door's gate does for its side: connections open at
//! once and new ones per second, failed authentications per second, and
//! report answers in flight (each can be megabytes). Connections that ask
//! for anything but `/metrics` and `/healthz` share `Limits::connections`;
//! `Limits::reserved` more are for scrapes alone, so no dashboard or API
//! client, hostile or not, can take the slot a scrape needs.
//!
//! Every count is released exactly once, by dropping the guard that took it
//! (`Held`, `ReportPass`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::core::hash::FastMap;

/// The web door's budgets and deadlines (`Options::http_limits`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections that may ask for the console, the API or anything else.
    pub connections: usize,
    /// Further connections for `/metrics` and `/healthz` only.
    pub reserved: usize,
    /// Connections one source address may hold open at once.
    pub per_address: u32,
    /// New connections one source address may open per second.
    pub new_per_address: u32,
    /// Failed authentications (bearer keys, sign-ins, the metrics token)
    /// one source address may make per second; past it, its requests that
    /// authenticate are refused (429) and it gets no new connection until
    /// the next second. The QUIC door's `--max-failed-hellos-per-address`.
    pub failures_per_address: u32,
    /// Report answers (the API, the org page) computed or being written at once.
    pub reports: usize,
    /// Report answers one source address may have in flight at once.
    pub reports_per_address: u32,
    /// The TLS handshake must be done within this, then each request head
    /// must arrive within this (which is also the keep-alive idle).
    pub head: Duration,
    /// A connection whose client takes none of its answer for this long is closed.
    pub write_stall: Duration,
    /// How long one connection may stay open, whatever it does.
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 96,
            reserved: 16,
            per_address: 16,
            new_per_address: 64,
            failures_per_address: 100,
            reports: 4,
            reports_per_address: 2,
            head: Duration::from_secs(5),
            write_stall: Duration::from_secs(10),
            lifetime: Duration::from_secs(60),
        }
    }
}

/// Addresses tracked at once; beyond this, new addresses are refused until
/// idle ones are forgotten.
const MAX_SOURCES: usize = 65_536;

/// Why a connection or a request was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The address holds `per_address` connections already.
    Open,
    /// The address opened `new_per_address` connections this second.
    Rate,
    /// The address failed to authenticate too often this second.
    Failures,
    /// Too many addresses are tracked.
    Sources,
    /// The address (or everyone) has as many reports in flight as allowed.
    Reports,
}

impl Refused {
    /// For the log.
    pub fn name(self) -> &'static str {
        match self {
            Refused::Open => "too many connections open from this address",
            Refused::Rate => "too many new connections per second from this address",
            Refused::Failures => "too many failed authentications per second from this address",
            Refused::Sources => "too many source addresses",
            Refused::Reports => "too many reports in flight",
        }
    }
}

/// One source address's counts.
#[derive(Default)]
struct Source {
    open: u32,
    /// The second `opened` counts in.
    second: u64,
    opened: u32,
    failed_second: u64,
    failures: u32,
    reports: u32,
}

impl Source {
    /// Nothing held and nothing counted in `second`: may be forgotten.
    fn idle(&self, second: u64) -> bool {
        self.open == 0 && self.reports == 0 && self.second < second && self.failed_second < second
    }
}

/// The web door's budgets.
pub struct Budget {
    limits: Limits,
    sources: Mutex<FastMap<IpAddr, Source>>,
    /// Connections that asked for more than a scrape.
    general: Arc<Semaphore>,
    /// Report answers in flight, over all addresses.
    reports: Arc<Semaphore>,
    /// Seconds count from here.
    started: std::time::Instant,
    /// (second, lines logged in it): refusals and failures are logged at
    /// most `LOG_LINES` times a second.
    log: Mutex<(u64, u32)>,
}

/// Log lines a second about refusals and failed authentications (the QUIC
/// door's budget).
const LOG_LINES: u32 = 10;

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            sources: Mutex::new(FastMap::default()),
            general: Arc::new(Semaphore::new(limits.connections.max(1))),
            reports: Arc::new(Semaphore::new(limits.reports.max(1))),
            started: std::time::Instant::now(),
            log: Mutex::new((0, 0)),
        }
    }

    /// Whether one more line may be logged this second.
    pub fn may_log(&self) -> bool {
        let second = self.second();
        let mut log = self.log.lock();
        if log.0 != second {
            *log = (second, 0);
        }
        log.1 += 1;
        log.1 <= LOG_LINES
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Held, Refused> {
        let (second, l) = (self.second(), &self.limits);
        let mut sources = self.sources.lock();
        if !sources.contains_key(&ip) && sources.len() >= MAX_SOURCES {
            sources.retain(|_, s| !s.idle(second));
            if sources.len() >= MAX_SOURCES {
                return Err(Refused::Sources);
            }
        }
        let s = sources.entry(ip).or_default();
        if s.failed_second == second && s.failures >= l.failures_per_address {
            return Err(Refused::Failures);
        }
        if s.second != second {
            (s.second, s.opened) = (second, 0);
        }
        if s.opened >= l.new_per_address {
            return Err(Refused::Rate);
        }
        s.opened += 1;
        if s.open >= l.per_address {
            return Err(Refused::Open);
        }
        s.open += 1;
        Ok(Held { budget: self.clone(), ip })
    }

    /// Counts a failed authentication from `ip`: how many this second, and
    /// whether that is past the limit.
    pub fn failed(&self, ip: IpAddr) -> (u32, bool) {
        let second = self.second();
        let mut sources = self.sources.lock();
        // Counted even past MAX_SOURCES: an address failing has a connection,
        // so it has an entry unless the table was pruned meanwhile.
        let s = sources.entry(ip).or_default();
        if s.failed_second != second {
            (s.failed_second, s.failures) = (second, 0);
        }
        s.failures = s.failures.saturating_add(1);
        (s.failures, s.failures >= self.limits.failures_per_address)
    }

    /// Whether `ip` failed to authenticate too often this second (its
    /// attempts are refused until the next).
    pub fn shut_out(&self, ip: IpAddr) -> bool {
        let second = self.second();
        let sources = self.sources.lock();
        sources.get(&ip).is_some_and(|s| s.failed_second == second && s.failures >= self.limits.failures_per_address)
    }

    /// A turn to compute and write one report for `ip`, if its share and
    /// the door's are not spent.
    pub fn report(self: &Arc<Self>, ip: IpAddr) -> Result<ReportPass, Refused> {
        let global = self.reports.clone().try_acquire_owned().map_err(|_| Refused::Reports)?;
        let mut sources = self.sources.lock();
        let s = sources.entry(ip).or_default();
        if s.reports >= self.limits.reports_per_address {
            return Err(Refused::Reports);
        }
        s.reports += 1;
        Ok(ReportPass { budget: self.clone(), ip, _global: global })
    }

    /// A general connection's slot, if one is free.
    pub fn general(&self) -> Option<OwnedSemaphorePermit> {
        self.general.clone().try_acquire_owned().ok()
    }

    fn release(&self, ip: IpAddr, what: impl FnOnce(&mut Source)) {
        let second = self.second();
        let mut sources = self.sources.lock();
        if let Some(s) = sources.get_mut(&ip) {
            what(s);
            if s.idle(second) {
                sources.remove(&ip);
            }
        }
    }
}

/// An open connection's place in its address's count.
pub struct Held {
    budget: Arc<Budget>,
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.release(self.ip, |s| s.open = s.open.saturating_sub(1));
    }
}

/// A report in flight: held until its answer is written or dropped.
pub struct ReportPass {
    budget: Arc<Budget>,
    ip: IpAddr,
    _global: OwnedSemaphorePermit,
}

impl Drop for ReportPass {
    fn drop(&mut self) {
        self.budget.release(self.ip, |s| s.reports = s.reports.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_address: u32, new_per_address: u32) -> Arc<Budget> {
        Arc::new(Budget::new(Limits { per_address, new_per_address, failures_per_address: 3, ..Limits::default() }))
    }

    #[test]
    fn an_address_holds_its_share_and_gets_it_back() {
        let b = budget(2, 100);
        let (a, other) = ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());
        let held: Vec<_> = (0..2).map(|_| b.admit(a).unwrap()).collect();
        assert_eq!(b.admit(a).err(), Some(Refused::Open));
        assert!(b.admit(other).is_ok(), "another address is not affected");
        drop(held);
        assert!(b.admit(a).is_ok(), "closing gives the slots back");
    }

    #[test]
    fn new_connections_per_second_are_bounded_even_when_closed_at_once() {
        let b = budget(100, 3);
        let a = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            drop(b.admit(a).unwrap());
        }
        assert_eq!(b.admit(a).err(), Some(Refused::Rate));
    }

    #[test]
    fn failing_too_often_shuts_the_address_out_for_the_second() {
        let b = budget(100, 100);
        let a = "127.0.0.2".parse().unwrap();
        let over: Vec<bool> = (0..4).map(|_| b.failed(a).1).collect();
        assert_eq!(over, [false, false, true, true]);
        assert!(b.shut_out(a));
        assert_eq!(b.admit(a).err(), Some(Refused::Failures));
        assert!(!b.shut_out("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn reports_in_flight_are_bounded_per_address_and_in_all() {
        let b = Arc::new(Budget::new(Limits { reports: 3, reports_per_address: 2, ..Limits::default() }));
        let (a, c) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let mine = [b.report(a).unwrap(), b.report(a).unwrap()];
        assert_eq!(b.report(a).err(), Some(Refused::Reports));
        let theirs = b.report(c).unwrap();
        assert_eq!(b.report(c).err(), Some(Refused::Reports), "the door's total is spent");
        drop(mine);
        assert!(b.report(a).is_ok());
        drop(theirs);
    }
}
