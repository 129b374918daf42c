//! Who may open a connection: strangers (connections that have not yet
//! authenticated a stream) get a budget of their own, a share of
//! `--max-connections`, and each source address gets a cap on its
//! strangers and on its handshakes per second. So a flood of silent or
//! failing connections from one address cannot fill the broker, and
//! legitimate clients, which authenticate within milliseconds and then no
//! longer count as strangers, keep getting in.
//!
//! When the budget (or an address's share of it) is full, a newcomer is not
//! refused: the oldest stranger (of that address) is evicted, its
//! connection closed, and the newcomer takes its place. Holding connections
//! open no longer shuts anyone out; an attacker would have to open them
//! faster than a client authenticates, and a CI fleet behind the
//! attacker's NAT address still gets in.
//!
//! Every count is released exactly once: by the connection's first welcomed
//! `Hello`, by its eviction, or when the connection ends without either
//! (the `Pass` guard).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::core::hash::FastMap;

/// The gate's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateLimits {
    /// Connections not yet authenticated, over all addresses.
    pub strangers: usize,
    /// Connections not yet authenticated, per source address.
    pub strangers_per_address: u32,
    /// New connections (handshakes) per second, per source address.
    pub handshakes_per_address: u32,
    /// Failed `Hello`s per second, per source address: past it, the
    /// failing connection is closed and the address gets no new connection
    /// until the next second.
    pub failed_hellos_per_address: u32,
    /// New connections per second from an address whose connection was
    /// closed for misbehaving before it authenticated (no `Hello` in time,
    /// junk, repeated wrong keys, answers left unread), for `PENALTY_SECONDS`
    /// after: an attacker reconnecting as fast as it is thrown out costs the
    /// broker a handshake now and then instead of its CPU.
    pub penalized_handshakes_per_address: u32,
}

impl GateLimits {
    /// The defaults for a broker of `max_connections`: a quarter of them
    /// for strangers (at least 16), 256 strangers and 1,000 handshakes a
    /// second per address (a CI fleet behind one NAT reconnecting after a
    /// restart still gets about half of what two cores can handshake).
    pub fn for_max_connections(max_connections: usize) -> GateLimits {
        GateLimits {
            strangers: (max_connections / 4).max(16),
            strangers_per_address: 256,
            handshakes_per_address: 1_000,
            failed_hellos_per_address: 100,
            penalized_handshakes_per_address: 10,
        }
    }
}

/// How long an address stays penalized after a connection of its was
/// closed for misbehaving before authenticating.
pub const PENALTY_SECONDS: u64 = 10;

/// Addresses tracked at once; beyond this, new addresses are refused until
/// idle ones are forgotten (spoofed sources cannot grow the table).
const MAX_SOURCES: usize = 65_536;

/// Why a connection was refused at the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This address opened too many connections this second.
    AddressRate,
    /// This address failed to authenticate too often this second.
    AddressFailures,
    /// This address's connections misbehaved before authenticating lately,
    /// and it used up its reduced handshakes for this second.
    Penalized,
    /// Too many addresses are being tracked.
    Sources,
}

impl Refusal {
    /// For logs.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::AddressRate => "too many handshakes per second from this address",
            Refusal::AddressFailures => "too many failed Hellos per second from this address",
            Refusal::Penalized => "this address's connections misbehaved before authenticating: throttled",
            Refusal::Sources => "too many source addresses tracked",
        }
    }
}

#[derive(Default)]
struct Source {
    strangers: u32,
    /// The second `handshakes` counts.
    second: u64,
    handshakes: u32,
    /// The second `failures` counts.
    failed_second: u64,
    failures: u32,
    /// Penalized (reduced handshake rate) before this second.
    penalized_until: u64,
}

/// Counts strangers, globally and per address.
pub(crate) struct Gate {
    limits: GateLimits,
    strangers: AtomicUsize,
    /// Strangers evicted to make room for newer ones (for the log and metrics).
    evicted: AtomicU64,
    state: Mutex<State>,
}

/// What the gate's lock guards.
#[derive(Default)]
struct State {
    sources: FastMap<IpAddr, Source>,
    /// Strangers in the order they were admitted, oldest first. Released
    /// ones are skipped and compacted away, so it holds at most about
    /// twice the budget.
    order: VecDeque<(IpAddr, Arc<Slot>)>,
}

/// One admitted connection's place in the budget.
#[derive(Default)]
struct Slot {
    /// Its counts were given back (welcomed, evicted or dropped).
    released: AtomicBool,
    /// Told when it is evicted: its connection closes.
    evicted: Notify,
}

/// A connection admitted at the gate; counts as a stranger until `welcomed`,
/// evicted or dropped.
pub(crate) struct Pass {
    gate: Arc<Gate>,
    addr: IpAddr,
    slot: Arc<Slot>,
}

impl Gate {
    pub fn new(limits: GateLimits) -> Gate {
        Gate { limits, strangers: AtomicUsize::new(0), evicted: AtomicU64::new(0), state: Mutex::default() }
    }

    /// Admits a new connection from `addr` in second `second` (evicting the
    /// oldest stranger when the budget or the address's share is full), or
    /// says why not.
    pub fn admit(self: &Arc<Self>, addr: IpAddr, second: u64) -> Result<Pass, Refusal> {
        let mut state = self.state.lock();
        let State { sources, .. } = &mut *state;
        if !sources.contains_key(&addr) && sources.len() >= MAX_SOURCES {
            sources.retain(|_, s| {
                s.strangers > 0 || s.second >= second || s.failed_second >= second || s.penalized_until > second
            });
            if sources.len() >= MAX_SOURCES {
                return Err(Refusal::Sources);
            }
        }
        let source = sources.entry(addr).or_default();
        if source.second != second {
            (source.second, source.handshakes) = (second, 0);
        }
        if source.failed_second == second && source.failures >= self.limits.failed_hellos_per_address {
            return Err(Refusal::AddressFailures);
        }
        if second < source.penalized_until && source.handshakes >= self.limits.penalized_handshakes_per_address {
            return Err(Refusal::Penalized);
        }
        if source.handshakes >= self.limits.handshakes_per_address {
            return Err(Refusal::AddressRate);
        }
        source.handshakes += 1;
        let address_full = source.strangers >= self.limits.strangers_per_address;
        if address_full {
            self.evict(&mut state, Some(addr));
        }
        // Relaxed: changed only under the state lock, which orders it.
        if self.strangers.load(Ordering::Relaxed) >= self.limits.strangers {
            self.evict(&mut state, None);
        }
        Ok(self.enter(&mut state, addr))
    }

    /// Counts a new stranger from `addr`.
    fn enter(self: &Arc<Self>, state: &mut State, addr: IpAddr) -> Pass {
        state.sources.entry(addr).or_default().strangers += 1;
        self.strangers.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        if state.order.len() >= 2 * self.limits.strangers.max(16) {
            state.order.retain(|(_, s)| !s.released.load(Ordering::Acquire));
        }
        state.order.push_back((addr, slot.clone()));
        Pass { gate: self.clone(), addr, slot }
    }

    /// Evicts the oldest stranger (from `addr`, if given): its counts are
    /// given back now and its connection is told to close.
    fn evict(&self, state: &mut State, addr: Option<IpAddr>) {
        let oldest = state
            .order
            .iter()
            .position(|(a, s)| addr.is_none_or(|addr| *a == addr) && !s.released.load(Ordering::Acquire));
        let Some((from, slot)) = oldest.and_then(|i| state.order.remove(i)) else { return };
        if !slot.released.swap(true, Ordering::AcqRel) {
            self.give_back(state, from);
            self.evicted.fetch_add(1, Ordering::Relaxed);
            slot.evicted.notify_one();
        }
    }

    /// Counts a failed `Hello` from `addr` in second `second`; true when
    /// the address is past its limit (close the connection).
    pub fn failed(&self, addr: IpAddr, second: u64) -> bool {
        let sources = &mut self.state.lock().sources;
        // An address with a connection open is normally tracked; one whose
        // entry was pruned (a welcomed connection no longer counts as a
        // stranger) starts counting again. Only open connections fail
        // Hellos, so this cannot grow the table past what `admit` allows.
        let source = sources.entry(addr).or_default();
        if source.failed_second != second {
            (source.failed_second, source.failures) = (second, 0);
        }
        source.failures = source.failures.saturating_add(1);
        source.failures > self.limits.failed_hellos_per_address
    }

    /// A connection from `addr` was closed for misbehaving before it
    /// authenticated: the address gets the reduced handshake rate for the
    /// next `PENALTY_SECONDS`.
    pub fn penalize(&self, addr: IpAddr, second: u64) {
        // An address with a connection open is tracked (its pass); `or_default`
        // only re-creates an entry pruned meanwhile, as in `failed`.
        self.state.lock().sources.entry(addr).or_default().penalized_until = second + PENALTY_SECONDS;
    }

    fn release(&self, addr: IpAddr) {
        self.give_back(&mut self.state.lock(), addr);
    }

    /// Gives back one stranger's counts.
    fn give_back(&self, state: &mut State, addr: IpAddr) {
        self.strangers.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = state.sources.get_mut(&addr) {
            s.strangers = s.strangers.saturating_sub(1);
        }
    }

    /// Strangers evicted for newer ones since the start.
    #[cfg(test)]
    fn evictions(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections not yet authenticated.
    #[cfg(test)]
    fn strangers(&self) -> usize {
        self.strangers.load(Ordering::Relaxed)
    }
}

impl Pass {
    /// The connection authenticated: it no longer counts as a stranger.
    pub fn welcomed(&self) {
        if !self.slot.released.swap(true, Ordering::AcqRel) {
            self.gate.release(self.addr);
        }
    }

    /// Completes when the connection is evicted for a newer stranger (at
    /// once if it already was).
    pub async fn evicted(&self) {
        self.slot.evicted.notified().await
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.welcomed();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn gate(strangers: usize, per_address: u32, rate: u32) -> Arc<Gate> {
        Arc::new(Gate::new(GateLimits {
            strangers,
            strangers_per_address: per_address,
            handshakes_per_address: rate,
            failed_hellos_per_address: 4,
            penalized_handshakes_per_address: 2,
        }))
    }

    #[test]
    fn an_address_whose_connection_misbehaved_gets_few_handshakes_for_a_while() {
        let g = gate(100, 100, 100);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        g.admit(a, 1).unwrap().welcomed();
        g.penalize(a, 1);
        // Second 1 already had one handshake: one more fits the reduced rate.
        assert!(g.admit(a, 1).is_ok());
        assert_eq!(g.admit(a, 1).err(), Some(Refusal::Penalized));
        assert!(g.admit(b, 1).is_ok(), "other addresses are not affected");
        for second in 2..1 + PENALTY_SECONDS {
            let admitted = (0..5).filter(|_| g.admit(a, second).is_ok()).count();
            assert_eq!(admitted, 2, "second {second}: the reduced rate");
        }
        let admitted = (0..5).filter(|_| g.admit(a, 1 + PENALTY_SECONDS).is_ok()).count();
        assert_eq!(admitted, 5, "the penalty ends");
    }

    #[test]
    fn an_address_that_keeps_failing_to_authenticate_is_shut_out_for_the_second() {
        let g = gate(100, 100, 100);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let _conns: Vec<Pass> = (0..3).map(|_| g.admit(a, 1).unwrap()).collect();
        let _other = g.admit(b, 1).unwrap();
        let over: Vec<bool> = (0..5).map(|_| g.failed(a, 1)).collect();
        assert_eq!(over, [false, false, false, false, true], "the fifth failure in a second closes its connection");
        assert_eq!(g.admit(a, 1).err(), Some(Refusal::AddressFailures));
        assert!(g.admit(b, 1).is_ok(), "other addresses are not affected");
        assert!(g.admit(a, 2).is_ok(), "the next second the address may try again");
    }

    #[test]
    fn an_address_at_its_share_gives_up_its_oldest_stranger() {
        let g = gate(10, 3, 100);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<Pass> = (0..3).map(|_| g.admit(a, 1).unwrap()).collect();
        let other = g.admit(b, 1).unwrap();
        // The fourth from `a` takes the place of `a`'s oldest, not `b`'s.
        let newest = g.admit(a, 1).unwrap();
        assert!(evicted(&held[0]) && !evicted(&held[1]) && !evicted(&other));
        assert_eq!(g.strangers(), 4);
        // Authenticating frees the slot; an evicted or welcomed pass frees nothing twice.
        held[1].welcomed();
        drop(held);
        assert_eq!(g.strangers(), 2);
        other.welcomed();
        other.welcomed();
        drop((other, newest));
        assert_eq!(g.strangers(), 0);
        assert_eq!(g.evictions(), 1);
    }

    #[test]
    fn a_full_budget_evicts_the_oldest_stranger_and_the_rate_bounds_everyone() {
        let g = gate(2, 5, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let p1 = g.admit(a, 1).unwrap();
        let p2 = g.admit(b, 1).unwrap();
        p2.welcomed();
        let p3 = g.admit(b, 1).unwrap();
        // Full: the newcomer from `c` gets in, the oldest stranger (`p1`) goes.
        let p4 = g.admit(c, 1).unwrap();
        assert!(evicted(&p1) && !evicted(&p3) && !evicted(&p4));
        assert_eq!(g.strangers(), 2);
        drop((p1, p2, p3, p4));
        assert_eq!(g.strangers(), 0);
        // Three handshakes a second from one address, then refused until the next second.
        for _ in 0..2 {
            g.admit(a, 1).unwrap().welcomed();
        }
        assert_eq!(g.admit(a, 1).err(), Some(Refusal::AddressRate));
        assert!(g.admit(a, 2).is_ok());
    }

    #[test]
    fn the_order_of_strangers_stays_bounded_by_the_budget() {
        let g = gate(16, 1_000, 1_000_000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10_000 {
            g.admit(a, 1).unwrap().welcomed();
        }
        assert!(g.state.lock().order.len() <= 32);
        assert_eq!(g.strangers(), 0);
    }

    /// Whether the pass's connection was told to close.
    fn evicted(p: &Pass) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        std::pin::pin!(p.evicted()).poll(&mut cx).is_ready()
    }
}
