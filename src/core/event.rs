//! The events the broker tells the outside about (docs/EVENTS.md): what
//! one is, as the outbox keeps it. The core only names them; numbering
//! them (an org's outbox sequence), writing them in the same commit as the
//! change that caused them, encoding and delivering them belong to the
//! shell (`crate::events`).
//!
//! An event's `seq` is its place in its org's outbox, the cursor a reader
//! resumes after; its idempotency key names the fact itself, so a fact
//! told twice (redelivered, re-read after a failover) carries the same key.

use serde::{Deserialize, Serialize};

use super::id::{Email, MachineId, OrgName};
use super::pool::PoolId;
use super::record::AuditEntry;
use super::time::Millis;

/// One event of an org's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The org it concerns.
    pub org: OrgName,
    /// Its place in the org's outbox: 1, 2, 3 … in commit order, never reused.
    pub seq: u64,
    /// When the fact happened.
    pub at: Millis,
    /// What happened. (New variants go last: the index is the encoding.)
    pub body: EventBody,
}

/// What an event says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventBody {
    /// An entry of the org's audit trail was written.
    Audit(AuditEntry),
    /// A session ended without its runner giving it back: its lease
    /// expired (no renewal in time) or it was revoked (killed, its machine,
    /// grant or member removed).
    Lease(LeaseLost),
    /// Admissions to a pool refused in one minute, counted by reason: one
    /// event per pool and minute however many there were.
    Refused {
        /// The pool.
        pool: PoolId,
        /// The minute (Unix minutes).
        minute: u64,
        /// Refusals by error code, `QUOTA_EXCEEDED` first, then
        /// `Denial::ALL`'s order (as the history keeps them).
        denied: Vec<u64>,
    },
    /// A machine was refused registration: the pool's machines are at its
    /// quota (told at most once per pool and minute).
    MachineLimit {
        /// The pool.
        pool: PoolId,
        /// Its quota (the most machines).
        quota: u32,
        /// The machine refused.
        machine: MachineId,
        /// The minute (Unix minutes).
        minute: u64,
    },
    /// The org's subscription ends within `days` days (14, 7 or 1).
    SubscriptionEnding {
        /// When it ends (midnight UTC after its last day).
        end: Millis,
        /// The notice: 14, 7 or 1.
        days: u32,
    },
    /// A runner has waited in a pool's queue past the pool's queue alert
    /// (told once per wait, as the threshold passes).
    QueueWait(QueueWait),
    /// A pool was busy (at least `alerts::BUSY_PERCENT` of its quota on
    /// average) for its busy alert's minutes in a row, or is back (a
    /// minute under `alerts::CALM_PERCENT`).
    PoolBusy {
        /// The pool.
        pool: PoolId,
        /// Busy (true) or back (false).
        busy: bool,
        /// The run's first busy minute (Unix minutes).
        since: u64,
        /// The minute that decided it.
        minute: u64,
        /// That minute's mean use, in percent of the quota.
        level: u32,
        /// The pool's quota then.
        quota: u32,
    },
    /// A cluster node began serving the org: taken over (its previous
    /// node gone, or none known) or handed on to it by a node still live.
    /// Told by the node now serving it.
    OrgMoved {
        /// The node now serving it.
        node: String,
        /// The node that served it before, if this node saw it.
        previous: Option<String>,
        /// Handed on by a live node (true), or taken over (false).
        handed: bool,
        /// The claim's fence: one per move.
        fence: i64,
    },
}

/// A runner waiting in a queue past its pool's alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueWait {
    /// The pool.
    pub pool: PoolId,
    /// The machine it waits on.
    pub machine: MachineId,
    /// The user whose key it waits with.
    pub user: Email,
    /// The runner's nonce (with `joined`, names the wait).
    pub nonce: u128,
    /// When it joined the queue.
    pub joined: Millis,
    /// The pool's queue alert then, in ms.
    pub threshold_ms: u64,
    /// The job's labels.
    pub labels: Vec<(String, String)>,
}

/// The notices before a subscription ends, in days, latest first.
pub const SUBSCRIPTION_NOTICES: [u32; 3] = [14, 7, 1];

/// A session its runner lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseLost {
    /// The pool.
    pub pool: PoolId,
    /// The session's id.
    pub session: u64,
    /// The machine it ran on.
    pub machine: MachineId,
    /// The user whose key held it.
    pub user: Email,
    /// When it started.
    pub started: Millis,
    /// Revoked (true) or expired (false).
    pub revoked: bool,
    /// The job's labels.
    pub labels: Vec<(String, String)>,
}

impl Event {
    /// The event's id: its org and its place there, unique in the broker.
    pub fn id(&self) -> String {
        format!("{}/{}", self.org, self.seq)
    }

    /// The event's type, `family.name` (docs/EVENTS.md lists each).
    pub fn kind(&self) -> String {
        match &self.body {
            EventBody::Audit(e) => format!("audit.{}", e.action.name()),
            EventBody::Lease(l) => format!("lease.{}", if l.revoked { "revoked" } else { "expired" }),
            EventBody::SubscriptionEnding { .. } => "subscription.ending".to_string(),
            EventBody::Refused { .. } => "pool.refused".to_string(),
            EventBody::MachineLimit { .. } => "machine.limit_reached".to_string(),
            EventBody::QueueWait(_) => "queue.wait_exceeded".to_string(),
            EventBody::PoolBusy { busy: true, .. } => "pool.busy".to_string(),
            EventBody::PoolBusy { busy: false, .. } => "pool.busy_ended".to_string(),
            EventBody::OrgMoved { handed: true, .. } => "cluster.org_handed_on".to_string(),
            EventBody::OrgMoved { handed: false, .. } => "cluster.org_taken".to_string(),
        }
    }

    /// The key that names the fact, the same however often it is told.
    pub fn idempotency_key(&self) -> String {
        match &self.body {
            EventBody::Audit(e) => format!("audit:{}:{:x}:{:x}", e.org, e.at.0, e.seq),
            // A session ends once.
            EventBody::Lease(l) => format!("lease:{}:{:016x}", self.org, l.session),
            EventBody::SubscriptionEnding { end, days } => format!("subscription:{}:{:x}:{days}", self.org, end.0),
            EventBody::Refused { pool, minute, .. } => format!("refused:{}:{pool}:{minute}", self.org),
            EventBody::MachineLimit { pool, minute, .. } => format!("machine_limit:{}:{pool}:{minute}", self.org),
            EventBody::QueueWait(w) => format!("queue_wait:{}:{}:{:x}:{:x}", self.org, w.pool, w.nonce, w.joined.0),
            EventBody::PoolBusy { pool, busy, since, .. } => {
                format!("{}:{}:{pool}:{since}", if *busy { "busy" } else { "busy_ended" }, self.org)
            }
            EventBody::OrgMoved { fence, .. } => format!("org_moved:{}:{fence}", self.org),
        }
    }
}

/// An outbox entry's key: `org/seq` in fixed-width hex, so an org's events
/// sort in their order.
pub fn event_key(org: &OrgName, seq: u64) -> String {
    format!("{org}/{seq:016x}")
}

impl super::Broker {
    /// The subscription notices due at `now`: (org, its end, the notice in days).
    pub fn subscription_notices(&self, now: Millis) -> Vec<(OrgName, Millis, u32)> {
        self.with_dir(|dir| {
            dir.orgs
                .iter()
                .filter_map(|(org, o)| {
                    subscription_notice(o.subscription_end, now, o.notice).map(|d| (org.clone(), o.subscription_end, d))
                })
                .collect()
        })
    }
}

/// The notice due for a subscription ending at `end`, at `now`: the
/// smallest of `SUBSCRIPTION_NOTICES` at least the days left (rounded
/// up), unless `given` (the last notice given for this same end) already
/// covers it. None once it has ended.
pub fn subscription_notice(end: Millis, now: Millis, given: Option<(Millis, u32)>) -> Option<u32> {
    if now >= end {
        return None;
    }
    let left = (end.0 - now.0).div_ceil(super::time::DAY_MS);
    let due = SUBSCRIPTION_NOTICES.iter().copied().filter(|d| u64::from(*d) >= left).min()?;
    match given {
        Some((e, d)) if e == end && d <= due => None,
        _ => Some(due),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::DAY_MS;

    #[test]
    fn notices_at_14_7_and_1_days_once_each_and_again_for_a_new_end() {
        let end = Millis(100 * DAY_MS);
        let at = |days_left: f64| Millis(end.0 - (days_left * DAY_MS as f64) as u64);
        assert_eq!(subscription_notice(end, at(20.0), None), None, "too early");
        assert_eq!(subscription_notice(end, at(14.0), None), Some(14));
        assert_eq!(subscription_notice(end, at(13.5), Some((end, 14))), None, "given already");
        assert_eq!(subscription_notice(end, at(6.9), Some((end, 14))), Some(7));
        assert_eq!(subscription_notice(end, at(3.0), None), Some(7), "a late start gives the one due now");
        assert_eq!(subscription_notice(end, at(0.5), Some((end, 7))), Some(1));
        assert_eq!(subscription_notice(end, at(0.5), Some((end, 1))), None);
        assert_eq!(subscription_notice(end, end, None), None, "ended: no notice");
        let renewed = Millis(end.0 + 365 * DAY_MS);
        assert_eq!(subscription_notice(renewed, at(0.5), Some((end, 1))), None, "a year away");
        assert_eq!(subscription_notice(end, at(6.0), Some((Millis(1), 1))), Some(7), "given for another end");
    }
}
