//! The sans-I/O core: orgs, pools, machines, sessions, admission, leases and
//! expiry. It never reads a clock (every call takes `now`), never spawns,
//! never does I/O, and builds without tokio or quinn. Its shared state uses
//! only the primitives of `crate::sync`, so loom can model it as shipped.

pub mod admin;
pub mod broker;
pub mod directory;
pub mod error;
pub mod hash;
pub mod id;
pub mod licensing;
pub mod pool;
pub mod pool_id;
pub mod record;
pub mod seats;
pub mod session;
mod shard;
pub mod time;

#[cfg(all(test, not(broker_loom)))]
mod tests;

pub use admin::{KeyInfo, KeyRef, UserInfo, MAX_QUOTA};
pub use broker::{Broker, Config, MachineInfo};
pub use directory::Principal;
pub use error::{Error, ErrorCode, Result};
pub use id::{Email, KeyHash, MachineId, Nonce, OrgName, Role, SessionId};
pub use licensing::{Activation, GrantInfo, OfflineInfo, Reservation, OFFLINE_MAX_DAYS};
pub use pool::{Kind, OfflineEntry, PoolId, PoolStatus, Product, Registration, Term};
pub use record::{AuditAction, AuditEntry, Change, OfflineLicense, Record, Table};
pub use session::{ConnId, EndReason, Ended, Lease, SessionInfo};
pub use time::{format_end_date, format_utc, parse_end_of_date, Millis};
