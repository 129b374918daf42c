//! Several brokers on etcd (docs/CLUSTER.md). Nothing outside this module
//! speaks to etcd.
//!
//! - `etcd`: a client of etcd's v3 API (its JSON gateway).
//! - `store`: the records in etcd behind the `Store` trait, every write
//!   fenced on the owner claim's revision.
//! - `ownership`: the claim, its lease, and how long the owner may serve.
//! - `secrets`: the keys every node must share, kept in etcd.
//! - `membership`: which nodes are in the cluster (for `nodes`, `status`).
//! - `redirect`: what a node that does not serve answers.
//! - `node`: a node's life: standing by, serving, handing over.
//! - `placement`: which node should serve which org (for spreading orgs
//!   over nodes; not used yet: one node serves every org).

pub mod etcd;
pub mod membership;
pub mod node;
pub mod ownership;
pub mod placement;
pub mod redirect;
pub mod secrets;
pub mod store;

pub use membership::Membership;
pub use node::{ClusterOptions, Event};
pub use ownership::Validity;
