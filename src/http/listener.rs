//! The ops endpoint's connections, bounded: at most so many at once (the
//! next waits in the kernel's accept backlog until one closes) and each
//! closed a fixed time after it opened. A client that opens connections and
//! never finishes a request (or keeps one alive for ever) cannot hold the
//! endpoint; a scraper simply reconnects.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Connections the ops endpoint serves at once (`Options::http_connections`).
pub const MAX_CONNECTIONS: usize = 32;

/// How long one connection may stay open (`Options::http_lifetime`).
pub const LIFETIME: Duration = Duration::from_secs(30);

/// A TCP listener that hands out at most `slots` connections at a time,
/// each ending `lifetime` after it was accepted.
pub struct Bounded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    lifetime: Duration,
}

impl Bounded {
    pub fn new(inner: TcpListener, connections: usize, lifetime: Duration) -> Bounded {
        Bounded { inner, slots: Arc::new(Semaphore::new(connections.max(1))), lifetime }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = BoundedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (BoundedIo, SocketAddr) {
        // The semaphore is never closed, so this always yields a permit;
        // without one the connection is still served (never refused on a bug).
        let permit = self.slots.clone().acquire_owned().await.ok();
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (BoundedIo { io, _slot: permit, deadline: Box::pin(tokio::time::sleep(self.lifetime)) }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One accepted connection: holds its slot until dropped, and fails every
/// read and write once its deadline passes (hyper then closes it).
pub struct BoundedIo {
    io: TcpStream,
    _slot: Option<OwnedSemaphorePermit>,
    deadline: Pin<Box<Sleep>>,
}

impl BoundedIo {
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        // Polling the timer also registers the task to be woken when it fires.
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Some(io::Error::new(io::ErrorKind::TimedOut, "ops connection lifetime reached")),
            Poll::Pending => None,
        }
    }
}

impl AsyncRead for BoundedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedIo {
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
