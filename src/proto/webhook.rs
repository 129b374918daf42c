//! The webhooks' wire types (protocol version 5): what `ListWebhooks` and
//! `WebhookDeliveries` answer. Plain values: the broker fills them from
//! its records and this run's delivery health.

use serde::{Deserialize, Serialize};

/// A webhook as `webhook list` shows it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookInfo {
    /// Its id, 12 hex digits.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Its filters (empty: every event).
    pub events: Vec<String>,
    /// When it was added (Unix ms).
    pub created_ms: u64,
    /// The cursor of the last event delivered (or skipped by its filters).
    pub delivered: u64,
    /// Events in the outbox after it, waiting.
    pub backlog: u64,
    /// Whether an event has been retried past the retry time without a 2xx.
    pub failing: bool,
    /// Events that left the outbox (retention) before they were delivered, this run.
    pub missed: u64,
    /// The last attempt's error (empty: it delivered, or none was made).
    pub last_error: String,
}

/// One attempt to deliver an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryInfo {
    /// The event's id (`ORG/CURSOR`).
    pub event: String,
    /// When the attempt began (Unix ms).
    pub at_ms: u64,
    /// The receiver's status (0: no answer).
    pub status: u16,
    /// How long it took (ms).
    pub latency_ms: u64,
    /// Why it failed (empty: delivered).
    pub error: String,
}
