//! Several brokers on etcd (docs/CLUSTER.md). Nothing outside this module
//! speaks to etcd.
//!
//! - `etcd`: a client of etcd's v3 API (its JSON gateway), over the
//!   kept-alive connections of `link`.
//! - `store`: the records in etcd behind the `Store` trait, each org's
//!   writes fenced on its claim's revision (`fences`), under the keys of
//!   `layout`, called from blocking threads through `bridge`.
//! - `ownership`: a node's lease, the orgs' claims, and how long a node
//!   may serve.
//! - `secrets`: the keys every node must share, kept in etcd.
//! - `membership`: the cluster as a node last read it (live nodes, claims).
//! - `placement`: which node should serve which org (rendezvous hashing).
//! - `peer`: the reads of other nodes' slices of an org's history, signed
//!   with a key every node derives from the shared session-token key.
//! - `seat`: what the broker asks of the cluster (does this node serve an
//!   org, where is a key's org served, a claim for a new org).
//!
//! The node that runs a broker on these (`crate::node`) sits above the
//! broker; the broker asks only its `Seat`.

mod bridge;
pub mod etcd;
mod fences;
mod layout;
pub(crate) mod link;
pub mod membership;
pub mod ownership;
pub mod peer;
pub mod placement;
pub mod seat;
pub mod secrets;
pub mod store;

pub use membership::Membership;
pub use ownership::Validity;
pub use seat::{Route, Seat};
