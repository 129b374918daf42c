//! The web door's connections: accepted, wrapped in TLS (unless the door
//! is plain), and served by hyper's HTTP/1, each inside its budgets. At most
//! so many are served at once (the next waits in the kernel's accept
//! backlog until one closes) and each is closed a fixed time after it
//! opened. The TLS handshake runs on the connection's own task, so a
//! client that never finishes one holds its slot, never the accept loop.

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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

/// Connections the web door serves at once (`Options::http_connections`).
pub const MAX_CONNECTIONS: usize = 32;

/// How long one connection may stay open (`Options::http_lifetime`).
pub const LIFETIME: Duration = Duration::from_secs(30);

/// How many connections the web door serves at once, and for how long each.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// How long one connection may stay open.
    pub lifetime: Duration,
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
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.connections.max(1)));
    loop {
        let accepted = tokio::select! {
            // The semaphore is never closed, so this always yields a permit.
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => accept(&listener, permit).await,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let Some((tcp, peer, slot)) = accepted else { continue };
        let conn = Conn { peer, app: app.clone(), limits, _slot: slot, stop: stop.clone() };
        tokio::spawn(conn.run(tcp, tls.clone()));
    }
}

/// The next connection, holding `slot`; `None` after a failed accept
/// (out of file descriptors: the loop tries again a little later).
async fn accept(
    listener: &TcpListener,
    slot: OwnedSemaphorePermit,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    match listener.accept().await {
        Ok((tcp, peer)) => Some((tcp, peer, slot)),
        Err(e) => {
            tracing::debug!("web door accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    /// Released when the connection ends.
    _slot: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
}

impl Conn {
    /// TLS (if any), then HTTP/1 until the client leaves, a deadline
    /// passes or the broker stops.
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let _ = tcp.set_nodelay(true);
        let io = Timed::new(tcp, self.limits.lifetime);
        match tls {
            None => self.http(io).await,
            Some(tls) => match tls.accept(io).await {
                Ok(io) => self.http(io).await,
                Err(e) => tracing::debug!(peer = %self.peer, "web door TLS handshake failed: {e}"),
            },
        }
    }

    async fn http<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut self, io: I) {
        let peer = self.peer;
        let app = TowerToHyperService::new(self.app.clone());
        // Handlers learn the caller's address (`ConnectInfo`) from the request.
        let service = hyper::service::service_fn(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.call(req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
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
/// lifetime has passed (hyper then closes it).
pub struct Timed {
    io: TcpStream,
    deadline: Pin<Box<Sleep>>,
}

impl Timed {
    fn new(io: TcpStream, lifetime: Duration) -> Timed {
        Timed { io, deadline: Box::pin(tokio::time::sleep(lifetime)) }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        // Polling the timer also registers the task to be woken when it fires.
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Some(io::Error::new(io::ErrorKind::TimedOut, "web connection lifetime reached")),
            Poll::Pending => None,
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
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
