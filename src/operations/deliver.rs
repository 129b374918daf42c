//! Delivers each webhook its org's events, in order, at least once, off
//! every request path: a task per webhook of the orgs this broker serves,
//! started and stopped by `run` as webhooks come and go (and, in a
//! cluster, as orgs move). Each task reads the outbox after the webhook's
//! durable cursor, POSTs each event it wants (`events::send`, signed:
//! `events::sign`) and moves the cursor past it; an event is retried with
//! capped, jittered backoff until its receiver answers 2xx, the webhook
//! marked failing once that took longer than `Settings::retry_for`. The
//! cursor is written at most every 2 s while events come and once they
//! stop (`Cursor`), so a crash or a failover redelivers at most the last
//! 2 s of deliveries: the same events, with the same ids and idempotency
//! keys; a clean stop or a planned handover writes every cursor as
//! delivered then (`write_cursors`). A request handler never waits on
//! any of it: it only reads the health board, which has the cursor as
//! delivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tokio::sync::watch;

use super::Operations;
use crate::client::Backoff;
use crate::core::{Event, OrgName, WebhookView};
use crate::events::hooks::{Attempt, Health, FIRST_BACKOFF, MAX_BACKOFF};
use crate::events::{json, send, sign, target, PAGE};

/// How often the set of webhooks is compared with the tasks running.
pub const RECONCILE: Duration = Duration::from_secs(1);

/// Longest a delivered cursor goes unwritten.
pub const CURSOR_EVERY: Duration = Duration::from_secs(2);

/// Runs a task per webhook until told to stop.
pub async fn run(ops: Arc<Operations>, mut stop: watch::Receiver<bool>) {
    let mut tasks: HashMap<(String, String), (WebhookView, watch::Sender<bool>)> = HashMap::new();
    loop {
        // In a cluster, only the orgs served here: one being taken over is
        // in memory before its fence is set (its hold written first), and
        // may be given back instead.
        let served = |v: &WebhookView| ops.cluster.as_ref().is_none_or(|c| c.serves(&v.hook.org));
        let hooks = ops.core.webhooks_to_deliver().into_iter().filter(served);
        let wanted: HashMap<(String, String), WebhookView> =
            hooks.map(|v| ((v.hook.org.to_string(), v.hook.id.clone()), v)).collect();
        // A webhook removed, moved away (or not served here), or changed (a
        // new secret): its task stops.
        tasks.retain(|key, (view, _)| wanted.get(key).is_some_and(|w| w.hook == view.hook));
        for (key, view) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(key) {
                let (tx, rx) = watch::channel(false);
                tokio::spawn(endpoint(ops.clone(), view.clone(), rx));
                slot.insert((view, tx));
            }
        }
        ops.hooks.retain(|o, id| tasks.contains_key(&(o.to_string(), id.to_string())));
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One webhook's deliveries, until `stop` changes (or is dropped).
async fn endpoint(ops: Arc<Operations>, view: WebhookView, mut stop: watch::Receiver<bool>) {
    let health = ops.hooks.of(&view.hook.org, &view.hook.id);
    let mut written = ops.outbox.subscribe();
    // A task started again (a new secret) goes on from where the last one
    // delivered, not from a stored cursor up to `CURSOR_EVERY` behind.
    let mut cursor = Cursor::new(view.delivered.max(health.delivered()));
    // After a wait with no word of a commit, the outbox is read anyway.
    let mut look = true;
    loop {
        // Woken by another org's commit: nothing new here, no read.
        let idle = !look && ops.outbox.last_known(&view.hook.org).is_some_and(|last| last <= cursor.at);
        // Halted: no delivery until its org is served here again (or a stop).
        let page = if idle || health.halted() { Vec::new() } else { read(&ops, &view, cursor.at).await };
        if page.is_empty() {
            // Idle: the cursor is written once it has waited `CURSOR_EVERY`.
            let wake = cursor.due().unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
            tokio::select! {
                _ = written.changed() => look = false,
                _ = tokio::time::sleep_until(wake.into()) => look = !cursor.save(&ops, &view).await,
                _ = stop.changed() => {
                    cursor.save(&ops, &view).await;
                    return;
                }
            }
            continue;
        }
        if let Some(first) = page.first().filter(|e| e.seq > cursor.at + 1) {
            health.missed(first.seq - cursor.at - 1);
        }
        for e in &page {
            // Due before a delivery that may be retried for a long while.
            if cursor.due().is_some_and(|due| due <= Instant::now()) {
                cursor.save(&ops, &view).await;
            }
            match step(&ops, &view, &health, e, &mut stop).await {
                Step::Delivered => cursor.at = e.seq,
                Step::Stop => {
                    cursor.save(&ops, &view).await;
                    return;
                }
                // Its cursor is written by whoever halted it; it waits.
                Step::Halted => break,
            }
        }
        look = false;
    }
}

/// What became of one event of a page.
enum Step {
    /// Delivered, or skipped by the webhook's filters.
    Delivered,
    /// Told to stop (removed, moved away, a new secret): not one more.
    Stop,
    /// Halted (its org handed on, the broker stopping): none now.
    Halted,
}

/// Delivers `e` if the webhook wants it, unless told to stop or halted,
/// marked busy meanwhile (before the halt is looked at: `Health::set_busy`).
async fn step(
    ops: &Operations,
    view: &WebhookView,
    health: &Health,
    e: &Event,
    stop: &mut watch::Receiver<bool>,
) -> Step {
    let stopped = |stop: &watch::Receiver<bool>| stop.has_changed().unwrap_or(true);
    health.set_busy(true);
    let step = match stopped(stop) || health.halted() {
        false if !view.hook.wants(&e.kind()) || deliver(ops, view, health, e, stop).await => Step::Delivered,
        _ if stopped(stop) => Step::Stop,
        _ => Step::Halted,
    };
    if let Step::Delivered = step {
        health.delivered_to(e.seq);
    }
    health.set_busy(false);
    step
}

/// Writes `orgs`' webhook cursors as delivered this run (the health board
/// has them ahead of the store by up to `CURSOR_EVERY`): what a node does
/// as it hands orgs on (under their fences) or stops cleanly, so the next
/// node or run sends again nothing its receivers took. Their deliveries
/// are halted first (none starts after the write), and one under way is
/// waited for, at most the delivery timeout (past it, a receiver that has
/// not answered may get that event again).
pub async fn write_cursors(ops: &Operations, orgs: &[OrgName]) {
    ops.hooks.halt(|o| orgs.contains(o));
    ops.hooks.idle(|o| orgs.contains(o), ops.delivery.timeout).await;
    let _writer = ops.writer.lock().await;
    let changes = ops.core.plan_webhook_cursors(orgs, |o, id| ops.hooks.of(o, id).delivered());
    if changes.is_empty() {
        return;
    }
    match ops.commit(changes.clone()).await {
        Ok(()) => {
            ops.core.apply(&changes, ops.clock.now());
        }
        Err(e) => tracing::warn!("webhook cursors not written (their last deliveries are sent again): {e}"),
    }
}

/// `org` is served here again (taken over): its webhooks, halted if it
/// was handed on from here before, deliver again.
pub fn resume(ops: &Operations, org: &OrgName) {
    ops.hooks.resume(org);
}

/// A webhook's cursor: where its deliveries are, and where the store has
/// it. Written at most every `CURSOR_EVERY` while events come (one at a
/// time, a write each was most of what ten webhooks cost), before a
/// delivery once due (a failing receiver may take hours), and
/// `CURSOR_EVERY` after the last write once they stop; a crash or a
/// failover redelivers what came after.
struct Cursor {
    at: u64,
    saved: u64,
    saved_when: Instant,
}

impl Cursor {
    fn new(at: u64) -> Cursor {
        Cursor { at, saved: at, saved_when: Instant::now() }
    }

    /// When it should be written, if it moved since it last was.
    fn due(&self) -> Option<Instant> {
        (self.at != self.saved).then_some(self.saved_when + CURSOR_EVERY)
    }

    /// Writes it if it moved; true when it tried (a failed write is tried
    /// again once due). Planned and committed under the writer lock, so a
    /// removal is wholly before it (nothing is written: the webhook is
    /// gone, and its cursor with it) or after it (and removes what it wrote).
    async fn save(&mut self, ops: &Operations, view: &WebhookView) -> bool {
        if self.at == self.saved {
            return false;
        }
        self.saved_when = Instant::now();
        let _writer = ops.writer.lock().await;
        let Some(change) = ops.core.plan_webhook_cursor(&view.hook.org, &view.hook.id, self.at) else {
            // Removed, or stored as far already (a clean stop's write): nothing to keep.
            self.saved = self.at;
            return true;
        };
        let changes = vec![change];
        match ops.commit(changes.clone()).await {
            Ok(()) => {
                ops.core.apply(&changes, ops.clock.now());
                self.saved = self.at;
            }
            // Tried again once due: the store is not hammered.
            Err(e) => tracing::warn!(org = %view.hook.org, webhook = %view.hook.id, "webhook cursor not written: {e}"),
        }
        true
    }
}

/// The events after `cursor`, off the async threads (none when the
/// outbox cannot be read: said in the log, tried again on the next wake).
async fn read(ops: &Operations, view: &WebhookView, cursor: u64) -> Vec<Event> {
    let (store, org) = (ops.store.clone(), view.hook.org.clone());
    let read = tokio::task::spawn_blocking(move || store.events_after(&org, cursor, PAGE));
    let why = match read.await {
        Ok(Ok((events, _))) => return events,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::warn!(org = %view.hook.org, webhook = %view.hook.id, "reading the outbox: {why}");
    Vec::new()
}

/// Delivers `e` until its receiver takes it (true) or the task is told
/// to stop (false).
async fn deliver(
    ops: &Operations,
    view: &WebhookView,
    health: &Health,
    e: &Event,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let body = Bytes::from(json::event_json(e).to_string());
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let first = Instant::now();
    loop {
        let error = once(ops, view, health, e, body.clone()).await.error;
        if error.is_empty() {
            health.set_failing(false);
            return true;
        }
        if health.halted() {
            // Its org is handed on, or the broker stops: the event waits for the next.
            return false;
        }
        if first.elapsed() >= ops.delivery.retry_for && !health.failing() {
            health.set_failing(true);
            tracing::warn!(org = %view.hook.org, webhook = %view.hook.id, "webhook failing: {error}");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => return false,
        }
    }
}

/// One attempt, bounded by `Settings::timeout`, recorded in `health`.
pub(super) async fn once(ops: &Operations, view: &WebhookView, health: &Health, e: &Event, body: Bytes) -> Attempt {
    let (at, started) = (ops.clock.now(), Instant::now());
    let outcome = tokio::time::timeout(ops.delivery.timeout, attempt(ops, view, e, body)).await;
    let (status, error) = match outcome.unwrap_or_else(|_| Err((0, "no answer in time".to_string()))) {
        Ok(status) => (status, String::new()),
        Err(failed) => failed,
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    let a = Attempt { event: e.id(), at, status, latency_ms, error };
    health.attempted(a.clone());
    a
}

/// One request: resolved, checked, signed and sent; the status if 2xx.
async fn attempt(ops: &Operations, view: &WebhookView, e: &Event, body: Bytes) -> Result<u16, (u16, String)> {
    let failed = |why: String| (0, why);
    let t = target::parse(&view.hook.url).map_err(failed)?;
    let addr = target::resolve(&t, ops.delivery.allow_private).await.map_err(failed)?;
    let timestamp = ops.clock.now().0 / 1000;
    let headers = vec![
        (sign::HEADER_ID, e.id()),
        (sign::HEADER_IDEMPOTENCY, e.idempotency_key()),
        (sign::HEADER_TYPE, e.kind()),
        (sign::HEADER_TIMESTAMP, timestamp.to_string()),
        (sign::HEADER_SIGNATURE, sign::signature(&view.hook.secret, timestamp, &body)),
    ];
    let status = send::send(send::Post { target: &t, addr, headers, body }).await.map_err(failed)?;
    match status {
        200..=299 => Ok(status),
        _ => Err((status, format!("answered {status}"))),
    }
}
