//! The web door's connections: accepted, admitted by the budgets
//! (`budget`: per source address, at once and per second), wrapped in TLS
//! (unless the door is plain), and served by hyper's HTTP/1, each inside
//! its deadlines: the TLS handshake and then every request head within
//! `Limits::head` (so an idle keep-alive ends then too), no answer left
//! untaken for `Limits::write_stall`, no connection older than
//! `Limits::lifetime`. At most `connections + reserved` are served at once;
//! when all are taken, a new connection takes the slot of the one idle
//! longest (`roster`), or waits for one to free up to `Limits::head`. The
//! TLS handshake runs on the connection's own task, so a client that never
//! finishes one holds its slot for seconds, never the accept loop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use super::budget::{Budget, Held, Limits};
use super::roster::{Place, Roster};

/// A connection's claim on a general slot (`Budget::general`), taken by
/// its first request for more than a scrape and kept until it closes;
/// handed to the handlers in the request's extensions.
#[derive(Clone, Default)]
pub struct Lane(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Lane {
    /// Whether the connection holds a general slot, taking one if free.
    pub fn general(&self, budget: &Budget) -> bool {
        let mut slot = self.0.lock();
        if slot.is_none() {
            *slot = budget.general();
        }
        slot.is_some()
    }
}

/// How long a connection's end waits for its answer in flight when the
/// broker stops.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` and serves `app` on each until `stop`
/// fires; with `tls`, every connection speaks TLS first.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    budget: Arc<Budget>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = *budget.limits();
    let slots = Arc::new(Semaphore::new((limits.connections + limits.reserved).max(1)));
    let roster = Arc::new(Roster::new());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: try again a little later.
                    tracing::debug!("web door accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let admitted = match budget.admit(peer.ip()) {
            Ok(held) => slot(&slots, &roster, limits.head).await.map(|slot| (slot, held)).ok_or("every slot is busy"),
            Err(why) => Err(why.name()),
        };
        let (slot, held) = match admitted {
            Ok(admitted) => admitted,
            Err(why) => {
                if budget.may_log() {
                    tracing::warn!(remote = %peer, reason = why, door = "http", "refusing connection");
                }
                continue;
            }
        };
        let place = roster.join();
        let conn = Conn { peer, app: app.clone(), limits, _slot: (slot, held), place, stop: stop.clone() };
        tokio::spawn(conn.run(tcp, tls.clone()));
    }
}

/// A slot for a new connection: a free one, else the one the connection
/// idle longest holds (it is closed), else whichever frees first within
/// `wait`; `None` when none does.
async fn slot(slots: &Arc<Semaphore>, roster: &Roster, wait: Duration) -> Option<OwnedSemaphorePermit> {
    if let Ok(free) = slots.clone().try_acquire_owned() {
        return Some(free);
    }
    roster.evict_idlest();
    // The semaphore is never closed: an error is only the timeout.
    tokio::time::timeout(wait, slots.clone().acquire_owned()).await.ok()?.ok()
}

/// One accepted connection and what serving it needs.
struct Conn {
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    /// The door's slot and the address's, released when the connection ends.
    _slot: (OwnedSemaphorePermit, Held),
    /// Its place in the roster: busy or idle, and told to close when evicted.
    place: Place,
    stop: watch::Receiver<bool>,
}

impl Conn {
    /// Serves the connection until it ends or is evicted for a newcomer.
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let (entry, peer) = (self.place.entry.clone(), self.peer);
        tokio::select! {
            () = self.serve(tcp, tls) => {}
            () = entry.evicted() => tracing::debug!(%peer, "web door connection closed for a newcomer (idle longest)"),
        }
    }

    /// TLS (if any), then HTTP/1 until the client leaves, a deadline
    /// passes or the broker stops.
    async fn serve(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let _ = tcp.set_nodelay(true);
        let io = Timed::new(tcp, self.limits.lifetime, self.limits.write_stall);
        match tls {
            None => self.http(io).await,
            Some(tls) => match tokio::time::timeout(self.limits.head, tls.accept(io)).await {
                Ok(Ok(io)) => self.http(io).await,
                Ok(Err(e)) => tracing::debug!(peer = %self.peer, "web door TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(peer = %self.peer, "web door TLS handshake not done in time"),
            },
        }
    }

    async fn http<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut self, io: I) {
        let peer = self.peer;
        let app = TowerToHyperService::new(self.app.clone());
        // Handlers learn the caller's address (`ConnectInfo`) from the request.
        let (lane, entry) = (Lane::default(), self.place.entry.clone());
        let service = hyper::service::service_fn(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(lane.clone());
            let (answer, entry) = (app.call(req), entry.clone());
            // Busy from the head's arrival until the answer's head is ready.
            entry.busy();
            async move {
                let r = answer.await;
                entry.idle();
                r
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.head)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => if let Err(e) = r {
                tracing::debug!(%peer, "web door connection ended: {e}");
            },
            _ = self.stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(STOP_GRACE, conn).await;
            }
        }
    }
}

/// A connection's socket that fails every read and write once its
/// lifetime has passed, and every write once the client has taken none of
/// the answer for `stall` (hyper then closes it).
pub struct Timed {
    io: TcpStream,
    deadline: Pin<Box<Sleep>>,
    stall: Duration,
    /// Set while a write waits for the client to take bytes.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Timed {
    fn new(io: TcpStream, lifetime: Duration, stall: Duration) -> Timed {
        Timed { io, deadline: Box::pin(tokio::time::sleep(lifetime)), stall, stalled: None }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        // Polling a timer also registers the task to be woken when it fires.
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(io::ErrorKind::TimedOut, "web connection lifetime reached"));
        }
        None
    }

    /// After a write that made no progress: fails once it has waited `stall`.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let stall = self.stall;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "answer not taken in time"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Timed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Timed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.waiting(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
