//! Several brokers on etcd (issue: high availability). Nothing outside
//! this module speaks to etcd.
//!
//! So far: `etcd`, the client of etcd's v3 API the rest will build on (the
//! records' store, org ownership with lease-bound claims and revision
//! fencing), and `placement`, which node should serve which org.
//! `serve --cluster` does not exist yet.

pub mod etcd;
pub mod placement;
