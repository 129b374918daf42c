//! `Checkout` requests: an acquire with the job's labels that, asked to,
//! waits in the pool's queue for a seat, answered when one comes.
//!
//! The core keeps the queue and hands a freed seat to the head waiter as a
//! `Grant` (see `core::queue`); this module is the waiter's side. Each
//! queued request gets a task that holds its place and waits for the grant,
//! its deadline, or its stream going away. The stream keeps reading and
//! answering other requests meanwhile: the late answer reaches it through a
//! channel (`Late`).
//!
//! Whatever ends the wait, the place is given up exactly once (`Place`'s
//! guard): a waiter that is gone never keeps a seat, and a grant that
//! arrives as its waiter leaves goes on to the next one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::handler::{Call, Reply};
use super::ConnCtx;
use super::Shared;
use crate::core::{
    Claimant, ConnId, Denial, Email, Grant, KeyHash, Labels, Millis, Nonce, Place, QueueWait, Target, Waited,
};
use crate::proto::{ErrorCode, Notice, Version, WireError};

/// Encoded answers a stream writes when they come (late `Checkout` answers).
pub(super) type Late = mpsc::Sender<Vec<u8>>;

/// Late answers a stream buffers before a waiter's send waits for room.
pub(super) const LATE_QUEUE: usize = 64;

/// Longest wait a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// Longest a queued request waits for room to tell its position.
const NOTICE_WAIT: Duration = Duration::from_secs(1);

/// Requests one connection may have waiting at once: a member cannot fill
/// a pool's queue (and the broker's memory) from one connection.
pub const MAX_WAITS_PER_CONNECTION: u32 = 1024;

/// What a `Checkout` asks for.
pub(super) struct WaitReq {
    pub id: u64,
    pub target: Target,
    pub nonce: Nonce,
    /// Zero: do not queue.
    pub wait: Duration,
    pub labels: Labels,
}

impl WaitReq {
    fn claimant(&self, conn: ConnId) -> Claimant {
        Claimant { nonce: self.nonce, conn, labels: self.labels.clone() }
    }
}

/// Answers a `Checkout` now (admitted or refused), or queues it and
/// returns `None`: its task sends the answer through `late`.
pub(super) async fn start(call: &Call<'_>, req: WaitReq, late: &Late) -> Option<Reply> {
    let (ops, who) = (&call.shared.ops, req.claimant(call.ctx.id));
    if let Err(e) = ops.admitting() {
        return Some(Err(e));
    }
    if req.wait.is_zero() {
        let admitted = ops.acquire_as(call.c(), &req.target, &who).await;
        return Some(admitted.map(|lease| {
            call.book(&req.target, &lease, &req.labels);
            call.with_token(&req.target, req.nonce, lease)
        }));
    }
    let Some(slot) = Slot::take(call.ctx) else {
        ops.deny(&req.target, Denial::QueueFull);
        let msg = format!("this connection already has {MAX_WAITS_PER_CONNECTION} requests waiting");
        return Some(Err(WireError::new(ErrorCode::QueueFull, msg)));
    };
    let mut inbox = None;
    let joined = ops.join_queue(call.c(), &req.target, &who, || {
        let (tx, rx) = oneshot::channel::<Grant>();
        inbox = Some(rx);
        Box::new(move |grant| tx.send(grant))
    });
    let place = match joined.await {
        Err(e) => return Some(Err(e)),
        Ok(Waited::Leased(lease)) => {
            call.book(&req.target, &lease, &who.labels);
            return Some(Ok(call.with_token(&req.target, req.nonce, lease)));
        }
        Ok(Waited::Queued(place)) => place,
    };
    // Invariant: the deliverer was made (it made the place).
    let rx = inbox.expect("the queue was joined through the deliverer");
    // Guarded from here on: if this future is dropped (its connection
    // closed) the place is given up.
    let held = Held { place, rx: Some(rx) };
    queued(call, &req, held.place.position).await;
    let task = Waiter {
        shared: call.shared.clone(),
        ctx: call.ctx.clone(),
        key: call.key,
        user: call.p.email.clone(),
        joined: call.now,
        proto: call.proto,
        req,
        late: late.clone(),
    };
    tokio::spawn(task.run(held, slot));
    None
}

/// Tells the runner its place. The position is worth a short wait for
/// room in the connection's notice queue (a client that does not read
/// them only slows itself); after that it is dropped, like any notice: the
/// answer never depends on it.
async fn queued(call: &Call<'_>, req: &WaitReq, position: u32) {
    let notice = Notice::Queued { nonce: req.nonce, position };
    call.shared.notices.tell(call.ctx.id, notice, NOTICE_WAIT).await;
    let target = &req.target;
    tracing::debug!(org = %target.org, pool = %target.pool, machine = %target.machine, position, "queued");
}

/// One queued request's task.
struct Waiter {
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    /// The caller's key, to check it again when the seat comes.
    key: KeyHash,
    /// Who waits and since when, for the queue alert's event.
    user: Email,
    joined: Millis,
    proto: Version,
    req: WaitReq,
    late: Late,
}

impl Waiter {
    async fn run(self, mut held: Held, _slot: Slot) {
        let wait = self.req.wait;
        let deadline = tokio::time::Instant::now() + wait;
        // The pool's queue alert, read once: told of as it passes, if the wait is longer.
        let mut alert = held.place.queue_alert().filter(|a| *a < wait);
        let grant = loop {
            // Invariant: `rx` is taken only below, after this borrow ends.
            let rx = held.rx.as_mut().expect("receiver held until the grant");
            let overdue = async {
                match alert {
                    Some(a) => tokio::time::sleep(a).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                g = rx => break g.ok(),
                _ = tokio::time::sleep_until(deadline) => break None,
                // The stream is gone (its connection closed): give up the place.
                _ = self.late.closed() => return,
                _ = overdue => self.overdue(alert.take()),
            }
        };
        let grant = match grant {
            Some(g) => Some(g),
            // Timed out; unless the seat was granted as the clock ran out.
            None => held.settle().await,
        };
        held.rx = None;
        let reply = match grant {
            None => {
                self.shared.ops.deny(&self.req.target, Denial::QueueTimeout);
                Err(WireError::new(
                    ErrorCode::QueueTimeout,
                    format!("no seat came within {wait:?}; the pool is still full (see `status` for its queue)"),
                ))
            }
            Some(grant) => self.claim(grant),
        };
        self.answer(reply).await;
    }

    /// Tells that this runner has waited past its pool's queue alert (once:
    /// the caller took the alert). Never waits (`Operations::waited_long`).
    fn overdue(&self, alert: Option<Duration>) {
        let Some(alert) = alert else { return };
        let t = &self.req.target;
        let w = QueueWait {
            pool: t.pool,
            machine: t.machine.clone(),
            user: self.user.clone(),
            nonce: self.req.nonce.0,
            joined: self.joined,
            threshold_ms: alert.as_millis() as u64,
            labels: self.req.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        self.shared.ops.waited_long(&t.org, w);
    }

    /// Turns the granted seat into the runner's session (the rules are
    /// checked again: the key, the machine, the grant, the subscription).
    fn claim(&self, grant: Grant) -> Reply {
        let (ops, req) = (&self.shared.ops, &self.req);
        let (p, lease) = ops.claim(&self.key, &req.target, &req.claimant(self.ctx.id), grant)?;
        // One token from this task: nothing to share with a next one.
        let fixed = Default::default();
        let call = Call {
            shared: &self.shared,
            ctx: &self.ctx,
            p: &p,
            key: self.key,
            now: ops.clock().now(),
            proto: self.proto,
            fixed: &fixed,
        };
        call.book(&req.target, &lease, &req.labels);
        Ok(call.with_token(&req.target, req.nonce, lease))
    }

    /// Sends the late answer. A session the runner will never hear of
    /// (its stream or connection went away meanwhile) is ended at once.
    async fn answer(&self, reply: Reply) {
        let session = match &reply {
            Ok(crate::proto::Resp::Leased { session, .. }) => Some(*session),
            _ => None,
        };
        let mut bytes = Vec::new();
        super::stream::respond(self.req.id, super::stream::into_outcome(reply), self.proto, &mut bytes);
        let sent = self.late.send(bytes).await.is_ok();
        if let Some(session) = session.filter(|_| !sent || self.ctx.conn.close_reason().is_some()) {
            self.ctx.sessions.lock().remove(&session);
            self.shared.ops.close_connection(self.ctx.id, vec![session]);
        }
    }
}

/// A queued request's place and the receiver of its grant. Dropped while
/// still holding them (the stream went away, the task was cancelled), it
/// leaves the queue or gives back a seat granted meanwhile.
struct Held {
    place: Place,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl Held {
    /// After the deadline: leaves the queue, or, if the seat was granted
    /// as the deadline passed, takes it (its delivery is under way).
    async fn settle(&mut self) -> Option<Grant> {
        if self.place.leave() {
            self.rx = None;
            return None;
        }
        self.rx.take()?.await.ok()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        if self.place.leave() {
            return;
        }
        // Granted: after `close` no delivery can succeed, so a grant is
        // either here now or handed back to the queue by its delivery.
        rx.close();
        if let Ok(grant) = rx.try_recv() {
            drop(grant);
        }
    }
}

/// One of a connection's waiting requests (see `MAX_WAITS_PER_CONNECTION`).
struct Slot(Arc<ConnCtx>);

impl Slot {
    fn take(ctx: &Arc<ConnCtx>) -> Option<Slot> {
        // Relaxed: a per-connection count, exact under its own RMWs.
        let before = ctx.waits.fetch_add(1, Ordering::Relaxed);
        if before >= MAX_WAITS_PER_CONNECTION {
            ctx.waits.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(ctx.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.waits.fetch_sub(1, Ordering::Relaxed);
    }
}
