//! Events out (docs/EVENTS.md): what the broker tells scripts and
//! receivers, never at the expense of admission.
//!
//! The core names what happened (`core::Event`); here each event is
//! numbered in its org's outbox and written in the same store commit as
//! the change that caused it (`outbox`), so a crash or a cluster failover
//! loses none; encoded as the documented, versioned JSON (`json`); read by
//! the stream (`GET /api/v1/events`, `license-broker events`) after any
//! cursor within the retention; and trimmed past that retention
//! (`retention`). Webhooks (an org's URLs, kept by the core as records)
//! get them signed (`sign`), only at addresses they may reach (`target`),
//! over the cluster's own HTTP client pieces (`send`), by a task per
//! webhook (`operations::deliver`) whose health this run keeps (`hooks`).
//! Nothing here runs on the admission path: admission writes no audit
//! entry, so it stamps no event, and no request handler awaits a delivery.

pub mod hooks;
pub mod json;
pub mod outbox;
pub mod retention;
pub mod send;
pub mod sign;
pub mod target;

pub use outbox::Outbox;

use std::time::Duration;

/// Events kept per org, at most: the oldest beyond it are trimmed (so is
/// anything older than `RETENTION`), whatever a reader has read.
pub const MAX_PER_ORG: u64 = 100_000;

/// How long an event is kept: a reader may resume after any cursor this young.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most events one read of the stream answers.
pub const PAGE: usize = 100;

/// Longest a read of the stream waits for a first event (a long poll).
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Reads waiting at once, broker-wide: one past it is answered at once,
/// empty (its reader asks again), so waiting readers hold no more than this.
pub const MAX_WAITERS: usize = 256;
