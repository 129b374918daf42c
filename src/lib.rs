//! license-broker: a floating-license session broker over QUIC.
//!
//! Reading order, bottom up (each layer imports only those before it):
//!
//! 1. `value`: the validated ids, names, instants and denial reasons every
//!    layer shares; `sync`: the concurrency facade (std/parking_lot, or
//!    loom under `--cfg broker_loom`).
//! 2. `core`: every rule, sans I/O, no clock (every call takes `now`); it
//!    counts its own refusals and emits what ended. `proto`: the wire's own
//!    types, frames and codes (imports `value` only; `proto::Version` names
//!    what each protocol version can do).
//! 3. `store` (records behind the `Store` trait, redb), `cluster` (the
//!    records in etcd, org ownership, and the `Seat` a broker asks),
//!    `history` (rollups of what the core emits), `clock`, `offline`,
//!    `keys`, `tls`, `latency`.
//! 4. `operations`: one function per kind of request, behind both doors:
//!    who may and what changes is the core's, commit and settle happen
//!    here once; the expiry and checkpoint tasks.
//! 5. The two doors: `server` (QUIC: connections, streams, `Hello`, session
//!    tokens, budgets for strangers; `server::start` runs a broker) and
//!    `http` (the web door: `/metrics`, the reports' API, the dashboard).
//!    Neither imports the other's state; both call `operations`.
//! 6. `node`: a cluster node's supervisor, above the broker it runs.
//! 7. `client`: what the CLI, the tests and the load harness speak with
//!    (`client::Keeper` keeps one lease: heartbeat, re-attach, give back).
//!
//! See ../shared/DESIGN.md for the picture and what must never import what.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod core;
pub mod proto;
pub mod sync;
pub mod value;

#[cfg(feature = "server")]
pub mod client;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod cluster;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod events;
#[cfg(feature = "server")]
pub mod history;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod latency;
#[cfg(feature = "server")]
pub mod machine_id;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod offline;
#[cfg(feature = "server")]
pub mod operations;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod tls;
