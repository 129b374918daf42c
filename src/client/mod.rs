//! The client library: one QUIC connection, one pipelined request stream,
//! and the server's notice stream. The CLI, the tests and the load harness
//! all talk to the broker through this.
//!
//! - `connector`: finding a broker (one or several nodes, redirects) and
//!   the UDP endpoint connections share;
//! - `wire`: the `Hello`, and the tasks that read answers and notices;
//! - `error`: why a call failed, in words a person can act on;
//! - `api`, `admin`, `licenses`, `hooks`, `paging`: one typed method per
//!   request, by who asks it;
//! - `keeper`: one lease kept alive (heartbeat, re-attach, give back);
//!   `beat`: when its heartbeats fall (spread, so a fleet is not in step).

mod admin;
mod api;
mod backoff;
mod beat;
mod connector;
mod error;
mod hooks;
pub mod keeper;
mod licenses;
mod paging;
mod wire;

pub use api::{Admitted, Checkout};
pub use backoff::Backoff;
pub use beat::Beats;
pub use connector::{
    endpoint, endpoint_with, resolve, server_list, Connector, HOP_PATIENCE, MAX_REDIRECTS, MOVING_WAITS, STAGGER,
};
pub use error::{ClientError, ConnectFailure};
pub use keeper::Keeper;
pub use licenses::Activated;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::proto::{encode, ClientFrame, Notice, Req, Request, Resp, ServerFrame, Welcome};
use wire::{hello, read_notices, read_responses, Batch, Pending};

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `HOST:PORT` of the broker, or of several nodes of a cluster,
    /// comma-separated (tried in turn; see `Connector`).
    pub server: String,
    /// TLS name to verify; defaults to the host part of `server`.
    pub server_name: Option<String>,
    /// PEM of the CA (or self-signed cert) to trust; `None` trusts the system roots.
    pub ca: Option<PathBuf>,
    /// The API key to present.
    pub api_key: String,
    /// Give up on a connection attempt (handshake and `Hello`) after this long.
    pub connect_timeout: Duration,
}

impl ClientOptions {
    /// Options for `server`, trusting `ca`, as the holder of `api_key`,
    /// with the default connect timeout.
    pub fn new(server: impl Into<String>, ca: Option<PathBuf>, api_key: impl Into<String>) -> ClientOptions {
        ClientOptions {
            server: server.into(),
            server_name: None,
            ca,
            api_key: api_key.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// How long a connection attempt may take by default: a broker on the
/// network answers a handshake in milliseconds; past this it is not there.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected, authenticated client.
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: tokio::sync::Mutex<quinn::SendStream>,
    pending: Pending,
    next_id: AtomicU64,
    welcome: Welcome,
    notices: tokio::sync::Mutex<mpsc::Receiver<Notice>>,
    /// Whether this client made its endpoint (and so waits for it on close).
    owns_endpoint: bool,
}

impl Client {
    /// Connects with its own endpoint and authenticates.
    pub async fn connect(opts: &ClientOptions) -> Result<Client, ClientError> {
        let mut client = Connector::new(opts.clone()).await?.connect().await?;
        client.owns_endpoint = true;
        Ok(client)
    }

    /// Connects over an existing endpoint (load generators share one).
    pub async fn connect_on(
        endpoint: quinn::Endpoint,
        addr: SocketAddr,
        name: &str,
        api_key: &str,
    ) -> Result<Client, ClientError> {
        Client::connect_speaking(endpoint, (addr, name), api_key, crate::proto::VERSION).await
    }

    /// `connect_on`, speaking protocol version `version` at most, as a
    /// client built from that version's document would (tests of what an
    /// older client meets; a broker older still steps it further down).
    pub async fn connect_speaking(
        endpoint: quinn::Endpoint,
        (addr, name): (SocketAddr, &str),
        api_key: &str,
        version: u16,
    ) -> Result<Client, ClientError> {
        let failed = |source| ClientError::Connect { addr, source };
        let connecting = endpoint.connect(addr, name).map_err(|e| failed(ConnectFailure::Start(e)))?;
        let conn = connecting.await.map_err(|e| failed(ConnectFailure::Handshake(e)))?;
        let (send, recv, frames, first) = hello(&conn, addr, api_key, version).await?;
        let welcome = match first {
            ServerFrame::Welcome(w) => w,
            ServerFrame::Error(e) => return Err(ClientError::Rejected(e)),
            ServerFrame::Redirect { server } => return Err(ClientError::Redirected { to: server }),
            other => return Err(ClientError::Protocol(format!("expected Welcome, got {other:?}"))),
        };
        let pending: Pending = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        tokio::spawn(read_responses(recv, frames, pending.clone()));
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(read_notices(conn.clone(), tx));
        Ok(Client {
            endpoint,
            conn,
            send: tokio::sync::Mutex::new(send),
            pending,
            next_id: AtomicU64::new(1),
            welcome,
            notices: tokio::sync::Mutex::new(rx),
            owns_endpoint: false,
        })
    }

    /// Who the broker says we are, and its lease TTL.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The broker's lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.welcome.lease_ttl_ms)
    }

    /// Sends one request and waits for its answer. Calls from many tasks at
    /// once are pipelined on the one stream.
    pub async fn call(&self, body: Req) -> Result<Resp, ClientError> {
        let mut answers = self.call_batch_timed(vec![body]).await;
        answers.pop().map_or_else(|| Err(ClientError::Closed("no answer".into())), |(r, _)| r)
    }

    /// Sends many requests in one write and waits for all their answers
    /// (results in request order). This is how a runner fleet or a load
    /// generator keeps many requests in flight cheaply.
    pub async fn call_batch(&self, bodies: Vec<Req>) -> Vec<Result<Resp, ClientError>> {
        self.call_batch_timed(bodies).await.into_iter().map(|(r, _)| r).collect()
    }

    /// As `call_batch`, with each answer's latency: from just before the
    /// write to the moment that answer was read.
    pub async fn call_batch_timed(&self, bodies: Vec<Req>) -> Vec<(Result<Resp, ClientError>, Duration)> {
        let n = bodies.len();
        if n == 0 {
            return Vec::new();
        }
        // Relaxed: ids only need to be unique.
        let first = self.next_id.fetch_add(n as u64, Ordering::Relaxed);
        let mut buf = Vec::with_capacity(n * 48);
        for (i, body) in bodies.into_iter().enumerate() {
            encode(&ClientFrame::Request(Request { id: first + i as u64, body }), &mut buf);
        }
        let (tx, rx) = oneshot::channel();
        let batch = Batch { answers: (0..n).map(|_| None).collect(), remaining: n, done: Some(tx) };
        self.pending.lock().insert(first, batch);
        let started = std::time::Instant::now();
        if let Err(e) = self.send.lock().await.write_all(&buf).await {
            self.pending.lock().remove(&first);
            return (0..n).map(|_| (Err(ClientError::Closed(e.to_string())), started.elapsed())).collect();
        }
        let answers = rx.await.unwrap_or_else(|_| (0..n).map(|_| None).collect());
        answers
            .into_iter()
            .map(|a| match a {
                Some((r, at)) => (r, at.saturating_duration_since(started)),
                None => (Err(ClientError::Closed("response stream ended".into())), started.elapsed()),
            })
            .collect()
    }

    /// The next notice the broker pushed (session ended, draining).
    pub async fn next_notice(&self) -> Option<Notice> {
        self.notices.lock().await.recv().await
    }

    /// Closes cleanly: the broker ends any session still held by this
    /// connection (reason: connection closed).
    pub async fn close(self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"bye");
        if self.owns_endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        }
    }

    /// Closes cleanly without waiting for the close to be acknowledged.
    pub fn close_nowait(self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"bye");
    }

    /// Gives up on this connection to reconnect: closes it with a non-zero
    /// code, so a broker that is still there keeps its sessions (their
    /// leases run on) for the new connection to re-attach to. The endpoint
    /// stays open for the reconnect (and its TLS resumption).
    pub fn disconnect(self) {
        self.conn.close(quinn::VarInt::from_u32(1), b"reconnecting");
    }

    /// Drops the connection as a crashed runner would, without releasing:
    /// it closes with a non-zero code, which the broker treats like silence
    /// (sessions stay until their leases expire, so a reconnect can re-attach).
    pub fn abandon(self) {
        self.endpoint.close(quinn::VarInt::from_u32(1), b"abandoned");
    }
}
