//! license-broker: a floating-license session broker over QUIC.
//!
//! Reading order: `server` (listener, connections, expiry task) → `proto`
//! (the wire's own types, no I/O) → `core` (every rule, no I/O, no clock).
//! `value` holds the validated ids and instants both build on, so neither
//! imports the other; `server::wire` converts between them. `store` keeps
//! durable records; `client` is the library the CLI, the tests and the load
//! harness use.

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
