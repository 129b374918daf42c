//! Delivers each webhook its org's events, in order, at least once, off
//! every request path: a task per webhook of the orgs this broker serves,
//! started and stopped by `run` as webhooks come and go (and, in a
//! cluster, as orgs move). Each task reads the outbox after the webhook's
//! durable cursor, POSTs each event it wants (`events::send`, signed:
//! `events::sign`) and moves the cursor past it; an event is retried with
//! capped, jittered backoff until its receiver answers 2xx, the webhook
//! marked failing once that took longer than `Settings::retry_for`. The
//! cursor is written after each page (and each 2 s of deliveries), so a
//! crash or a failover redelivers at most a page: the same events, with
//! the same ids and idempotency keys. A request handler never waits on
//! any of it: it only reads the health board.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tokio::sync::watch;

use super::Operations;
use crate::client::Backoff;
use crate::core::{Change, Event, Record, WebhookView};
use crate::events::hooks::{Attempt, Health, FIRST_BACKOFF, MAX_BACKOFF};
use crate::events::{json, send, sign, target, PAGE};

/// How often the set of webhooks is compared with the tasks running.
pub const RECONCILE: Duration = Duration::from_secs(1);

/// Longest the cursor goes unwritten while a page is being delivered.
pub const CURSOR_EVERY: Duration = Duration::from_secs(2);

/// Runs a task per webhook until told to stop.
pub async fn run(ops: Arc<Operations>, mut stop: watch::Receiver<bool>) {
    let mut tasks: HashMap<(String, String), (WebhookView, watch::Sender<bool>)> = HashMap::new();
    loop {
        let hooks = ops.core.webhooks_to_deliver();
        let wanted: HashMap<(String, String), WebhookView> =
            hooks.into_iter().map(|v| ((v.hook.org.to_string(), v.hook.id.clone()), v)).collect();
        // A webhook removed, moved away, or changed (a new secret): its task stops.
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
    let mut cursor = view.delivered;
    loop {
        // Woken by another org's commit: nothing new here, no read.
        if ops.outbox.last_known(&view.hook.org).is_some_and(|last| last <= cursor) {
            tokio::select! {
                _ = written.changed() => continue,
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = stop.changed() => return,
            }
        }
        let page = match read(&ops, &view, cursor).await {
            Ok(page) => page,
            Err(why) => {
                tracing::warn!(org = %view.hook.org, webhook = %view.hook.id, "reading the outbox: {why}");
                Vec::new()
            }
        };
        if let Some(first) = page.first().filter(|e| e.seq > cursor + 1) {
            health.missed(first.seq - cursor - 1);
        }
        if page.is_empty() {
            tokio::select! {
                _ = written.changed() => continue,
                _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
                _ = stop.changed() => return,
            }
        }
        let mut saved = (cursor, Instant::now());
        for e in &page {
            // Told to stop (removed, moved away, a new secret): not one more, even mid-page.
            let stopped = stop.has_changed().unwrap_or(true);
            if stopped || (view.hook.wants(&e.kind()) && !deliver(&ops, &view, &health, e, &mut stop).await) {
                return save(&ops, &view, cursor, saved.0).await;
            }
            cursor = e.seq;
            if saved.1.elapsed() >= CURSOR_EVERY {
                save(&ops, &view, cursor, saved.0).await;
                saved = (cursor, Instant::now());
            }
        }
        save(&ops, &view, cursor, saved.0).await;
    }
}

/// The events after `cursor`, off the async threads.
async fn read(ops: &Operations, view: &WebhookView, cursor: u64) -> Result<Vec<Event>, String> {
    let (store, org) = (ops.store.clone(), view.hook.org.clone());
    let read = tokio::task::spawn_blocking(move || store.events_after(&org, cursor, PAGE));
    match read.await {
        Ok(Ok((events, _))) => Ok(events),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes the webhook's cursor if it moved since `saved`.
async fn save(ops: &Operations, view: &WebhookView, cursor: u64, saved: u64) {
    if cursor == saved {
        return;
    }
    let record = Record::WebhookCursor { org: view.hook.org.clone(), id: view.hook.id.clone(), delivered: cursor };
    let changes = vec![Change::Put(record)];
    match ops.commit(changes.clone()).await {
        Ok(()) => drop(ops.core.apply(&changes, ops.clock.now())),
        Err(e) => tracing::warn!(org = %view.hook.org, webhook = %view.hook.id, "webhook cursor not written: {e}"),
    }
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
