//! One task per QUIC connection: accepts its request streams, pushes its
//! notices, and on a clean close ends the sessions it still holds.
//!
//! A connection that merely vanishes (timeout, reset) keeps its sessions
//! until their leases expire, so a runner that reconnects within the TTL
//! re-attaches with its nonce instead of losing its seat.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};

use dashmap::DashMap;

use super::{stream, ConnCtx, Shared};
use crate::core::hash::FastSet;
use crate::core::{ConnId, Ended, SessionId};
use crate::operations::Holders;
use crate::proto::{encode, Notice};

/// QUIC application close code for a connection that sent no `Hello` in time.
pub const HELLO_TIMEOUT_CODE: u32 = 2;

/// QUIC application close code of every connection of a cluster node that
/// stopped serving (it lost its claim): reconnect, and be redirected.
pub const NOT_SERVING_CODE: u32 = 6;

/// Notices queued per connection before new ones are dropped.
const NOTICE_QUEUE: usize = 256;

/// Each connection's notice queue: how a session's holder hears that it
/// ended (expired, killed, revoked) and that the broker drains.
#[derive(Default)]
pub(crate) struct Notices(DashMap<ConnId, mpsc::Sender<Notice>>);

impl Notices {
    /// Queues `notice` on every connection.
    pub fn tell_all(&self, notice: Notice) {
        for entry in self.0.iter() {
            let _ = entry.value().try_send(notice.clone());
        }
    }

    /// Queues `notice` on `conn`, waiting up to `wait` for room (a client
    /// that does not read them only slows itself), else drops it.
    pub async fn tell(&self, conn: ConnId, notice: Notice, wait: std::time::Duration) {
        if let Some(tx) = self.0.get(&conn).map(|tx| tx.clone()) {
            let _ = tokio::time::timeout(wait, tx.send(notice)).await;
        }
    }
}

impl Holders for Notices {
    fn ended(&self, e: &Ended) {
        if let Some(tx) = self.0.get(&e.conn) {
            // Notices are advisory: a full queue means the client is not
            // reading, and its next request will say the session is gone.
            let _ = tx.try_send(Notice::SessionEnded { session: e.info.session, reason: e.reason.into() });
        }
    }
}

/// Accepts connections until told to stop, refusing those over the limit.
pub(super) async fn accept_loop(shared: Arc<Shared>, endpoint: quinn::Endpoint, mut stop: watch::Receiver<bool>) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = stop.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        // Relaxed: an approximate limit; a few connections over it during a burst is harmless.
        let open = shared.load.open.load(Ordering::Relaxed);
        if shared.ops.is_draining() || open >= shared.options.max_connections {
            tracing::debug!(open, "refusing connection");
            incoming.refuse();
            continue;
        }
        let addr = incoming.remote_address();
        let pass = match shared.gate.admit(addr.ip(), shared.ops.clock().now().0 / 1000) {
            Ok(pass) => pass,
            Err(refusal) => {
                if shared.auth_log.allow(shared.ops.clock().now()) {
                    tracing::warn!(remote = %addr, reason = refusal.name(), "refusing connection");
                }
                incoming.refuse();
                continue;
            }
        };
        shared.load.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(shared.clone(), incoming, pass, stop.clone()));
    }
}

async fn serve(shared: Arc<Shared>, incoming: quinn::Incoming, pass: super::gate::Pass, stop: watch::Receiver<bool>) {
    let _open = OpenGuard(shared.clone());
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("handshake failed: {e}");
            return;
        }
    };
    let ctx = opened(&shared, conn);
    let reason = streams(&shared, &ctx, pass, stop).await;
    shared.notices.0.remove(&ctx.id);
    shared.members.remove(&ctx.id);
    let clean = matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == 0);
    if clean {
        let held: Vec<SessionId> = ctx.sessions.lock().drain().collect();
        shared.ops.close_connection(ctx.id, held);
    }
    tracing::debug!(conn = ctx.id.0, clean, "connection closed: {reason}");
}

/// A connection's state, and its notice queue and task.
fn opened(shared: &Shared, conn: quinn::Connection) -> Arc<ConnCtx> {
    // Relaxed: uniqueness only.
    let id = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = mpsc::channel(NOTICE_QUEUE);
    shared.notices.0.insert(id, tx);
    tokio::spawn(push_notices(conn.clone(), rx));
    tracing::debug!(conn = id.0, remote = %conn.remote_address(), "connection open");
    Arc::new(ConnCtx {
        id,
        sessions: Mutex::new(FastSet::default()),
        welcomed: Notify::new(),
        failed_hellos: 0.into(),
        authenticated: false.into(),
        stranger_refusals: 0.into(),
        conn,
        waits: 0.into(),
    })
}

/// Accepts the connection's request streams until it closes; why it closed.
async fn streams(
    shared: &Arc<Shared>,
    ctx: &Arc<ConnCtx>,
    pass: super::gate::Pass,
    mut stop: watch::Receiver<bool>,
) -> quinn::ConnectionError {
    let conn = &ctx.conn;
    // A stranger gets `hello_timeout` to authenticate a stream; keep-alives
    // alone do not hold a connection (and its slot) open.
    let welcomed = ctx.welcomed.notified();
    let hello_deadline = tokio::time::sleep(shared.options.hello_timeout);
    let evicted = pass.evicted();
    tokio::pin!(welcomed, hello_deadline, evicted);
    let mut waiting_for_hello = true;
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    tokio::spawn(stream::serve(shared.clone(), ctx.clone(), send, recv));
                }
                Err(e) => return e,
            },
            _ = &mut welcomed, if waiting_for_hello => {
                waiting_for_hello = false;
                // Authenticated: no longer a stranger (a dropped pass releases
                // too), so it gets a member's streams and windows.
                pass.welcomed();
                crate::tls::Limits::member(shared.options.max_streams).apply(conn);
            }
            // The broker stops serving on this endpoint (a cluster node
            // that lost its claim): the client reconnects elsewhere.
            Ok(()) = stop.changed() => {
                conn.close(quinn::VarInt::from_u32(NOT_SERVING_CODE), b"this node no longer serves; reconnect");
            }
            // The strangers' budget was full and a newer connection took
            // this one's place: closed, as late to authenticate, unpenalized.
            _ = &mut evicted, if waiting_for_hello => {
                waiting_for_hello = false;
                tracing::debug!(conn = ctx.id.0, remote = %conn.remote_address(), "evicted for a newer stranger");
                conn.close(quinn::VarInt::from_u32(HELLO_TIMEOUT_CODE), b"no Hello before the budget was needed");
            }
            _ = &mut hello_deadline, if waiting_for_hello => {
                waiting_for_hello = false;
                tracing::debug!(conn = ctx.id.0, remote = %conn.remote_address(), "no Hello in time: closing");
                conn.close(quinn::VarInt::from_u32(HELLO_TIMEOUT_CODE), b"no Hello within the deadline");
                shared.penalize(ctx);
            }
        }
    }
}

/// Opens the server's notice stream on the first notice and writes them all.
async fn push_notices(conn: quinn::Connection, mut rx: mpsc::Receiver<Notice>) {
    let mut send = None;
    let mut buf = Vec::new();
    while let Some(notice) = rx.recv().await {
        if send.is_none() {
            match conn.open_uni().await {
                Ok(s) => send = Some(s),
                Err(_) => return,
            }
        }
        buf.clear();
        encode(&notice, &mut buf);
        while let Ok(more) = rx.try_recv() {
            encode(&more, &mut buf);
        }
        if let Some(s) = send.as_mut() {
            if s.write_all(&buf).await.is_err() {
                return;
            }
        }
    }
}

/// Counts a connection as open for as long as its task lives.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.load.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.conns_gone.notify_waiters();
        }
    }
}
