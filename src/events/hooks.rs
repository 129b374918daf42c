//! What this run knows of each webhook's deliveries beyond its durable
//! cursor: whether it is failing (retried past `Settings::retry_for`
//! without a 2xx), the last error, and its recent attempts, for `webhook
//! list`, `webhook deliveries` and `/metrics`. Lost at a restart, by
//! design: the cursor, in the store, is what delivery resumes from.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::core::{Millis, OrgName};

/// Attempts remembered per webhook.
pub const RECENT: usize = 20;

/// How deliveries are made.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Whether receivers on the broker's own networks are allowed
    /// (`serve --webhook-allow-private`; `target`).
    pub allow_private: bool,
    /// How long one event is retried before its webhook is marked failing
    /// (it is retried on after, every `MAX_BACKOFF`).
    pub retry_for: Duration,
    /// The bound of one request: connect, TLS, send, the answer's head.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { allow_private: false, retry_for: Duration::from_secs(3600), timeout: Duration::from_secs(10) }
    }
}

/// The first wait before a retry; doubled up to `MAX_BACKOFF`, jittered.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One attempt to deliver an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The event's id.
    pub event: String,
    /// When the attempt began.
    pub at: Millis,
    /// The receiver's status (0: no answer).
    pub status: u16,
    /// How long it took.
    pub latency_ms: u64,
    /// Why it failed (empty: delivered).
    pub error: String,
}

/// One webhook's state in this run.
#[derive(Debug, Default)]
pub struct Health {
    failing: AtomicBool,
    recent: Mutex<VecDeque<Attempt>>,
    /// Events skipped because they left the outbox before delivery.
    missed: AtomicU64,
    /// The cursor delivered past this run (the stored one trails it by
    /// up to `deliver::CURSOR_EVERY`).
    delivered: AtomicU64,
    /// Its org is being handed on, or the broker stops: no delivery is
    /// started from now on, so the cursor written then stays true.
    halted: AtomicBool,
    /// A delivery is under way (set before `halted` is looked at): the
    /// cursor is written once it has ended.
    busy: AtomicBool,
}

impl Health {
    /// Whether it is marked failing.
    pub fn failing(&self) -> bool {
        // Relaxed: a status for display; no other memory depends on it.
        self.failing.load(Ordering::Relaxed)
    }

    /// Marks it failing, or not.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Starts no more deliveries (`Board::halt`).
    pub fn halt(&self) {
        // SeqCst: a delivery that starts after this store is not allowed;
        // the write of the cursor follows it.
        self.halted.store(true, Ordering::SeqCst);
    }

    /// Whether its deliveries are halted.
    pub fn halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Marks a delivery under way, or over.
    pub fn set_busy(&self, busy: bool) {
        // SeqCst: with `halt`'s, either the task sees the halt before it
        // delivers or the halting side sees it busy and waits.
        self.busy.store(busy, Ordering::SeqCst);
    }

    /// Records an attempt (the oldest beyond `RECENT` forgotten).
    pub fn attempted(&self, a: Attempt) {
        let mut recent = self.recent.lock();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(a);
    }

    /// The recent attempts, newest last.
    pub fn recent(&self) -> Vec<Attempt> {
        self.recent.lock().iter().cloned().collect()
    }

    /// Counts events that left the outbox before they were delivered.
    pub fn missed(&self, n: u64) {
        self.missed.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes the cursor delivered past.
    pub fn delivered_to(&self, seq: u64) {
        self.delivered.fetch_max(seq, Ordering::Relaxed);
    }

    /// The cursor delivered past this run (0: none yet).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Events that left the outbox before they were delivered, this run.
    pub fn missed_count(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

/// Every webhook's health, by org and id.
#[derive(Debug, Default)]
pub struct Board {
    map: Mutex<HashMap<(OrgName, String), Arc<Health>>>,
}

impl Board {
    /// The health of `org`'s webhook `id` (made on first use).
    pub fn of(&self, org: &OrgName, id: &str) -> Arc<Health> {
        self.map.lock().entry((org.clone(), id.to_string())).or_default().clone()
    }

    /// Halts the deliveries of the webhooks of the orgs `which` takes.
    pub fn halt(&self, which: impl Fn(&OrgName) -> bool) {
        self.map.lock().iter().filter(|((o, _), _)| which(o)).for_each(|(_, h)| h.halt());
    }

    /// Lets the webhooks of `org` deliver again (it is served here again).
    pub fn resume(&self, org: &OrgName) {
        self.map
            .lock()
            .iter()
            .filter(|((o, _), _)| o == org)
            .for_each(|(_, h)| h.halted.store(false, Ordering::SeqCst));
    }

    /// Waits until no delivery of the orgs `which` takes is under way, at
    /// most `limit` (a receiver that does not answer holds it no longer).
    pub async fn idle(&self, which: impl Fn(&OrgName) -> bool, limit: Duration) {
        let busy = || self.map.lock().iter().any(|((o, _), h)| which(o) && h.busy.load(Ordering::SeqCst));
        let deadline = tokio::time::Instant::now() + limit;
        while busy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Forgets the webhooks `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&OrgName, &str) -> bool) {
        self.map.lock().retain(|(o, id), _| keep(o, id));
    }

    /// How many webhooks are failing.
    pub fn failing(&self) -> usize {
        self.map.lock().values().filter(|h| h.failing()).count()
    }
}
