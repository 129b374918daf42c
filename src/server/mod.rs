//! The QUIC door: owns the UDP socket, the connections and their streams,
//! and moves bytes between them and the operations both doors share.
//!
//! Reading order: `running` (start: binds, opens the data dir with
//! `datadir`, builds the operations, spawns the tasks; the `Running`
//! handle) → `connection` (one per QUIC connection: budgets, the Hello
//! deadline, notices) → `stream` (one per request stream: frames,
//! pipelining) with `hello` (authentication) → `handler` (one request →
//! one operation, answered now or later; `waiting` for a queued
//! `Checkout`, `paging` for lists). `wire` converts core views to the
//! protocol's types; `token` signs session tokens; `gate` budgets
//! strangers; `options` is what a command line sets.
//!
//! It decides nothing: who may, the rules and every durable change are in
//! `crate::operations` and the core.

mod connection;
mod datadir;
mod gate;
mod handler;
mod hello;
mod options;
mod paging;
mod reports;
mod running;
mod socket;
mod stream;
mod tickets;
mod token;
mod waiting;
mod webhooks;
mod wire;

pub use socket::bind as bind_udp;

pub use crate::clock::Clock;
pub(crate) use datadir::{ensure_secrets, secret_files};
pub use datadir::{mint_operator_key, SIGNING_KEY_FILE, STORE_FILE, TICKET_KEY_FILE, TOKEN_KEY_FILE};
pub use gate::GateLimits;
pub use options::{BootstrapKeys, ClusterSeat, HttpTls, Options, CLUSTER_CLOCK_SKEW};
pub use running::{start, start_with, Running};
pub use stream::{MAX_STRANGER_REFUSALS, NOT_READING_CODE, STRANGER_REFUSALS_CODE};

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::core::hash::FastSet;
use crate::core::{ConnId, OrgName, SessionId};
use crate::latency::{Latencies, OpLatency};
use crate::operations::Operations;

/// The QUIC door's state, shared by its tasks.
pub(crate) struct Shared {
    /// What every request comes to.
    pub ops: Arc<Operations>,
    /// Notice senders by connection, for pushing session ends and draining.
    pub notices: Arc<connection::Notices>,
    /// Uniqueness of connection ids.
    pub next_conn: AtomicU64,
    /// Open connections and request latencies (what `/metrics` shows of this door).
    pub load: Arc<Load>,
    /// Signalled when the last open connection ends (shutdown waits on it).
    pub conns_gone: Notify,
    pub options: Options,
    /// Rate limit of the failed-authentication log.
    pub auth_log: LogBudget,
    /// Signs and checks session tokens.
    pub tokens: token::Tokens,
    /// Budgets connections that have not authenticated yet.
    pub gate: Arc<gate::Gate>,
    /// In a cluster: the connections of each org's members, so that an org
    /// handed to another node has its connections closed (they reconnect
    /// and are redirected). Empty on a single broker.
    pub members: DashMap<ConnId, (OrgName, quinn::Connection)>,
}

impl Shared {
    /// Resolves once no connection is open.
    async fn all_connections_gone(&self) {
        loop {
            let gone = self.conns_gone.notified();
            tokio::pin!(gone);
            // Registered before the check, so a close between the two still wakes us.
            gone.as_mut().enable();
            // Relaxed: paired with the Notify, which orders the wake-up.
            if self.load.open.load(Ordering::Relaxed) == 0 {
                return;
            }
            gone.await;
        }
    }

    /// A connection is being closed for misbehaving: if none of its streams
    /// authenticated, its address gets the gate's reduced handshake rate
    /// for a while (see `GateLimits::penalized_handshakes_per_address`).
    pub(crate) fn penalize(&self, ctx: &ConnCtx) {
        // Relaxed: a hint; a member's connection is never penalized once seen.
        if !ctx.authenticated.load(Ordering::Relaxed) {
            self.gate.penalize(ctx.conn.remote_address().ip(), self.ops.clock().now().0 / 1000);
        }
    }
}

/// This door's load: the one part of its state the web door sees.
pub(crate) struct Load {
    /// Connections open now (bounded by `Options::max_connections`).
    pub open: AtomicUsize,
    /// Request latencies by kind.
    pub latencies: Latencies,
}

/// What the web door's `/metrics` shows of this door.
impl crate::http::Door for Load {
    fn connections(&self) -> u64 {
        // Relaxed: a gauge read once per scrape.
        self.open.load(Ordering::Relaxed) as u64
    }

    fn latencies(&self) -> Vec<OpLatency> {
        self.latencies.snapshot()
    }
}

/// State of one connection, shared by its streams: what the shell needs
/// to end the connection's sessions on a clean close.
pub(crate) struct ConnCtx {
    /// Identifies the connection to the core (session ownership).
    pub id: ConnId,
    /// Sessions acquired through this connection and not yet ended by it.
    pub sessions: parking_lot::Mutex<FastSet<SessionId>>,
    /// Signalled when a stream of this connection is welcomed (its `Hello`
    /// authenticated), which lifts the connection's Hello deadline.
    pub welcomed: Notify,
    /// `Hello`s of this connection that failed to authenticate.
    pub failed_hellos: std::sync::atomic::AtomicU32,
    /// Whether any stream of this connection has authenticated.
    pub authenticated: AtomicBool,
    /// Frames refused (undecodable, or a request before `Hello`) while no
    /// stream of this connection had authenticated.
    pub stranger_refusals: std::sync::atomic::AtomicU32,
    /// The connection itself, to close it from a stream.
    pub conn: quinn::Connection,
    /// Its `Checkout` requests still waiting (bounded, see `waiting`).
    pub waits: std::sync::atomic::AtomicU32,
}

/// Lets through at most `PER_SECOND` log lines a second, so a flood of
/// failures cannot flood the log.
#[derive(Default)]
pub(crate) struct LogBudget {
    /// (second, lines logged in it), packed as second << 16 | count.
    window: AtomicU64,
}

impl LogBudget {
    const PER_SECOND: u64 = 10;

    /// Whether one more line may be logged at `now`.
    pub fn allow(&self, now: crate::core::Millis) -> bool {
        let second = now.0 / 1000;
        // Relaxed: an approximate budget; a few lines more or less is fine.
        let prev = self.window.load(Ordering::Relaxed);
        let (s, n) = (prev >> 16, prev & 0xffff);
        let next = if s == second { (second << 16) | (n + 1).min(0xffff) } else { (second << 16) | 1 };
        let _ = self.window.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed);
        s != second || n < Self::PER_SECOND
    }
}
