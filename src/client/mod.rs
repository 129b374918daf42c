//! The client library: one QUIC connection, one pipelined request stream,
//! and the server's notice stream. The CLI, the tests and the load harness
//! all talk to the broker through this. `api` holds one typed method per request.

mod api;
mod backoff;
pub mod keeper;

pub use api::{Activated, Admitted, Checkout};
pub use backoff::Backoff;
pub use keeper::Keeper;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::proto::ErrorCode;
use crate::proto::{
    encode, ClientFrame, FrameBuf, Hello, Notice, Outcome, Req, Request, Resp, ServerFrame, Welcome, WireError, VERSION,
};

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

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// Bad local configuration (CA file, address).
    Config(String),
    /// The broker at `addr` could not be reached, or the handshake failed.
    Connect {
        /// The broker address tried.
        addr: SocketAddr,
        /// The underlying error.
        source: ConnectFailure,
    },
    /// The broker refused the request with a typed error.
    Rejected(WireError),
    /// The connection or stream closed.
    Closed(String),
    /// The broker sent something this client does not understand.
    Protocol(String),
    /// A node of a cluster that does not serve sent us to `to` (empty: no
    /// node serves at this moment).
    Redirected {
        /// `HOST:PORT` of the node that serves, or empty.
        to: String,
    },
    /// None of several servers could be reached: what each one said.
    Unreachable(Vec<String>),
}

impl ClientError {
    /// The broker's error code, if the broker refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rejected(e) => Some(e.code),
            _ => None,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Config(e) => write!(f, "configuration: {e}"),
            ClientError::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}{}", source.hint()),
            ClientError::Rejected(e) => write!(f, "{e}"),
            ClientError::Closed(e) => write!(f, "connection closed: {e}"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
            ClientError::Redirected { to } if to.is_empty() => f.write_str(
                "no node of the cluster serves this org at this moment (it is moving to another node); retry shortly",
            ),
            ClientError::Redirected { to } => write!(f, "redirected to {to} too many times in a row"),
            ClientError::Unreachable(tried) => write!(f, "no broker answered: {}", tried.join("; ")),
        }
    }
}

/// The message already renders every cause (with a hint where one helps),
/// so `source()` does not repeat it: `{:#}` prints each cause once. The
/// typed cause stays in the variant's fields.
impl std::error::Error for ClientError {}

/// Which step of connecting failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The connection could not even be started (bad address, endpoint closed).
    Start(quinn::ConnectError),
    /// The QUIC or TLS handshake failed, or the connection was lost during it.
    Handshake(quinn::ConnectionError),
    /// The `Hello` could not be sent.
    Hello(quinn::WriteError),
    /// No answer within the connect timeout.
    TimedOut(Duration),
}

impl ConnectFailure {
    /// What a person should check, for the failures that have a usual cause.
    fn hint(&self) -> &'static str {
        match self {
            ConnectFailure::TimedOut(_) => {
                " (is the broker running there? is --server / LB_SERVER right? is UDP to that port blocked?)"
            }
            ConnectFailure::Handshake(quinn::ConnectionError::TransportError(t)) if untrusted_certificate(t.code) => {
                " (the broker's certificate is not trusted: pass --ca with its certificate, \
                 e.g. --ca DATA_DIR/tls/cert.pem, or set LB_CA)"
            }
            _ => "",
        }
    }
}

/// Whether a handshake failed because the broker's certificate chain is not
/// trusted: TLS alerts unknown_ca (48), bad_certificate (42), and
/// decrypt_error (51, a different certificate under a trusted name).
fn untrusted_certificate(code: quinn::TransportErrorCode) -> bool {
    [48u8, 42, 51].into_iter().any(|alert| code == quinn::TransportErrorCode::crypto(alert))
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Start(e) => e.fmt(f),
            ConnectFailure::Handshake(e) => e.fmt(f),
            ConnectFailure::Hello(e) => e.fmt(f),
            ConnectFailure::TimedOut(t) => write!(f, "no answer within {:.1} s", t.as_secs_f64()),
        }
    }
}

impl std::error::Error for ConnectFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectFailure::Start(e) => Some(e),
            ConnectFailure::Handshake(e) => Some(e),
            ConnectFailure::Hello(e) => Some(e),
            ConnectFailure::TimedOut(_) => None,
        }
    }
}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> ClientError {
        ClientError::Rejected(e)
    }
}

/// One answer and when it was read.
type Answer = (Result<Resp, ClientError>, std::time::Instant);

/// Requests in flight, by batch: a batch's ids are consecutive, so one entry
/// and one wake-up serve all of its requests, however many.
struct Batch {
    answers: Vec<Option<Answer>>,
    remaining: usize,
    done: Option<oneshot::Sender<Vec<Option<Answer>>>>,
}

/// First id of each batch in flight → the batch.
type Pending = Arc<Mutex<std::collections::BTreeMap<u64, Batch>>>;

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

/// Resolves `HOST:PORT` and the TLS name to verify.
pub async fn resolve(server: &str, server_name: Option<&str>) -> Result<(SocketAddr, String), ClientError> {
    let addr = tokio::net::lookup_host(server)
        .await
        .map_err(|e| ClientError::Config(format!("resolving {server}: {e}")))?
        .next()
        .ok_or_else(|| ClientError::Config(format!("{server} resolves to no address")))?;
    let name = match server_name {
        Some(n) => n.to_string(),
        None => {
            let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
            host.trim_start_matches('[').trim_end_matches(']').to_string()
        }
    };
    Ok((addr, name))
}

/// A client endpoint (one UDP socket) usable for many connections.
pub fn endpoint(ca: Option<&std::path::Path>, ipv6: bool) -> Result<quinn::Endpoint, ClientError> {
    endpoint_with(ca, ipv6, true)
}

/// As `endpoint`; `resumption` false forces a full TLS handshake per connection.
pub fn endpoint_with(
    ca: Option<&std::path::Path>,
    ipv6: bool,
    resumption: bool,
) -> Result<quinn::Endpoint, ClientError> {
    let bind: SocketAddr =
        if ipv6 { "[::]:0" } else { "0.0.0.0:0" }.parse().map_err(|_| ClientError::Config("bind".into()))?;
    let mut ep = quinn::Endpoint::client(bind).map_err(|e| ClientError::Config(format!("binding UDP socket: {e}")))?;
    let config = crate::tls::client_config_with(ca, resumption).map_err(|e| ClientError::Config(format!("{e:#}")))?;
    ep.set_default_client_config(config);
    Ok(ep)
}

/// Connects, again and again, to a broker over one UDP endpoint: the
/// endpoint keeps the TLS session tickets the broker hands out, so a
/// reconnect resumes its session instead of paying for a full handshake.
///
/// `server` may name several nodes of a cluster (`a:4433,b:4433`): a
/// connection is tried on the node that answered last, then on each other
/// once round, following a node's `Redirect` to the node that serves (at
/// most `MAX_REDIRECTS` in a row). It never loops: callers retry with a
/// backoff (the runner does), and the error names every node tried.
pub struct Connector {
    opts: ClientOptions,
    /// Each server given: (as written, address, TLS name).
    servers: Vec<(String, SocketAddr, String)>,
    /// The server that answered last (an index into `servers`).
    preferred: AtomicUsize,
    endpoint: quinn::Endpoint,
}

/// How long a connection attempt to one of several nodes has before the
/// next node is tried beside it: a handshake on a network takes
/// milliseconds, and a node that has not answered in this is likely gone.
pub const STAGGER: Duration = Duration::from_millis(250);

/// One attempt at `addr`, then at each node it redirects to, all within
/// `limit`. A node sent to that does not answer within `HOP_PATIENCE`
/// (cut off, paused, gone) is given up and the node first asked is asked
/// again where to go (it may know better by then); an org that is moving
/// is asked about again after a pause (`MOVING_WAITS`, the last one
/// repeated) until the attempt's time is up.
async fn follow(
    endpoint: quinn::Endpoint,
    opts: ClientOptions,
    addr: SocketAddr,
    name: String,
    limit: Duration,
) -> Result<Client, ClientError> {
    let deadline = tokio::time::Instant::now() + limit;
    let origin = (addr, name);
    let (mut at, mut hops, mut waits) = (origin.clone(), 0, 0);
    loop {
        let hop = hops > 0;
        let started = tokio::time::Instant::now();
        let patience = if hop { deadline.min(started + HOP_PATIENCE) } else { deadline };
        let attempt = Client::connect_on(endpoint.clone(), at.0, &at.1, &opts.api_key);
        let result = match tokio::time::timeout_at(patience, attempt).await {
            Ok(result) => result,
            // How long this node was given, not the whole attempt's limit.
            Err(_) => Err(ClientError::Connect { addr: at.0, source: ConnectFailure::TimedOut(patience - started) }),
        };
        let pause = MOVING_WAITS[waits.min(MOVING_WAITS.len() - 1)];
        let last = match result {
            Err(ClientError::Redirected { to }) if !to.is_empty() && hops < MAX_REDIRECTS => {
                hops += 1;
                at = resolve(&to, opts.server_name.as_deref()).await?;
                continue;
            }
            // The node sent to did not answer: ask the first one again.
            Err(e @ (ClientError::Connect { .. } | ClientError::Closed(_))) if hop => e,
            // The org is moving between nodes (or being taken over).
            Err(ClientError::Redirected { to }) if to.is_empty() => ClientError::Redirected { to },
            other => return other,
        };
        if tokio::time::Instant::now() + pause >= deadline {
            // The last thing that went wrong: a node sent to that did not
            // answer is named, rather than an empty redirect.
            return Err(last);
        }
        waits += 1;
        (at, hops) = (origin.clone(), 0);
        tokio::time::sleep(pause).await;
    }
}

/// How long a node a client was redirected to has to answer before the
/// client asks again where to go: a handshake and a `Hello` take a few
/// round trips; a node that has not answered in this is cut off or gone.
pub const HOP_PATIENCE: Duration = Duration::from_millis(1000);

/// Redirects a connection attempt follows in a row before giving up: two
/// nodes that disagree about the owner cannot bounce a client for ever.
pub const MAX_REDIRECTS: usize = 3;

/// The pauses of a connection attempt told that no node serves its org
/// this instant (an empty `Redirect`: the org is moving), or whose
/// redirect led nowhere, before it asks again; the last is repeated until
/// the attempt's time is up, then the caller gets the error.
pub const MOVING_WAITS: [Duration; 4] =
    [Duration::from_millis(100), Duration::from_millis(250), Duration::from_millis(500), Duration::from_secs(1)];

/// The servers of a `--server` list (`HOST:PORT[,HOST:PORT...]`).
pub fn server_list(server: &str) -> Vec<&str> {
    server.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

impl Connector {
    /// Resolves the brokers' addresses and opens the endpoint (no traffic yet).
    pub async fn new(opts: ClientOptions) -> Result<Connector, ClientError> {
        let mut servers = Vec::new();
        for server in server_list(&opts.server) {
            let (addr, name) = resolve(server, opts.server_name.as_deref()).await?;
            servers.push((server.to_string(), addr, name));
        }
        let Some((_, first, _)) = servers.first() else {
            return Err(ClientError::Config("no server given".into()));
        };
        let endpoint = endpoint(opts.ca.as_deref(), first.is_ipv6())?;
        Ok(Connector { opts, servers, preferred: AtomicUsize::new(0), endpoint })
    }

    /// Connects and authenticates within the connect timeout. With several
    /// nodes, attempts are staggered (`STAGGER`) rather than sequential: a
    /// node that does not answer (dead, paused) delays the next one by a
    /// quarter second, not by its share of the timeout. Redirects are
    /// followed; the first node to welcome us wins and is tried first next
    /// time.
    pub async fn connect(&self) -> Result<Client, ClientError> {
        let limit = self.opts.connect_timeout;
        if let [(_, addr, name)] = self.servers.as_slice() {
            return follow(self.endpoint.clone(), self.opts.clone(), *addr, name.clone(), limit).await;
        }
        let deadline = tokio::time::Instant::now() + limit;
        // Relaxed: a hint of where to start.
        let first = self.preferred.load(Ordering::Relaxed);
        let n = self.servers.len();
        let mut attempts = tokio::task::JoinSet::new();
        let (mut started, mut failures) = (0, Vec::new());
        loop {
            if started < n {
                let at = (first + started) % n;
                let (_, addr, name) = self.servers[at].clone();
                let (endpoint, opts) = (self.endpoint.clone(), self.opts.clone());
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                attempts.spawn(async move { (at, follow(endpoint, opts, addr, name, left).await) });
                started += 1;
            }
            let stagger = async {
                match started < n {
                    true => tokio::time::sleep(STAGGER).await,
                    false => std::future::pending().await,
                }
            };
            tokio::select! {
                done = attempts.join_next() => match done {
                    Some(Ok((at, Ok(client)))) => {
                        self.preferred.store(at, Ordering::Relaxed);
                        // The slower attempts are dropped; a connection one
                        // of them made closes with it.
                        attempts.abort_all();
                        return Ok(client);
                    }
                    // A refusal (wrong key...) is the same on every node.
                    Some(Ok((_, Err(e @ ClientError::Rejected(_))))) => return Err(e),
                    Some(Ok((at, Err(e)))) => failures.push(format!("{}: {e}", self.servers[at].0)),
                    Some(Err(e)) => failures.push(format!("connection attempt: {e}")),
                    None if started >= n => return Err(ClientError::Unreachable(failures)),
                    None => {}
                },
                _ = stagger => {}
            }
        }
    }

    /// Waits (up to a second) until the endpoint's connections have closed,
    /// so a clean close reaches the broker before the process exits.
    pub async fn wait_idle(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
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
        let failed = |source| ClientError::Connect { addr, source };
        let connecting = endpoint.connect(addr, name).map_err(|e| failed(ConnectFailure::Start(e)))?;
        let conn = connecting.await.map_err(|e| failed(ConnectFailure::Handshake(e)))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| failed(ConnectFailure::Handshake(e)))?;
        let hello = ClientFrame::Hello(Hello { version: VERSION, api_key: api_key.to_string(), client: client_name() });
        let mut buf = Vec::new();
        encode(&hello, &mut buf);
        send.write_all(&buf).await.map_err(|e| failed(ConnectFailure::Hello(e)))?;
        let mut frames = FrameBuf::new();
        let first = read_frame(&mut recv, &mut frames).await?;
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

fn client_name() -> String {
    format!("license-broker/{}", env!("CARGO_PKG_VERSION"))
}

async fn read_frame(recv: &mut quinn::RecvStream, frames: &mut FrameBuf) -> Result<ServerFrame, ClientError> {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(frame) = frames.next_message().map_err(|e| ClientError::Protocol(e.to_string()))? {
            return Ok(frame);
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => frames.extend(&chunk[..n]),
            Ok(None) => return Err(ClientError::Closed("stream finished by the broker".into())),
            Err(e) => return Err(ClientError::Closed(e.to_string())),
        }
    }
}

async fn read_responses(mut recv: quinn::RecvStream, mut frames: FrameBuf, pending: Pending) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut ready = Vec::new();
    let failure = 'read: loop {
        loop {
            match frames.next_message::<ServerFrame>() {
                Ok(Some(ServerFrame::Response(r))) => ready.push(r),
                Ok(Some(ServerFrame::Error(e))) => break 'read ClientError::Rejected(e),
                Ok(Some(other)) => break 'read ClientError::Protocol(format!("unexpected frame {other:?}")),
                Ok(None) => break,
                Err(e) => break 'read ClientError::Protocol(e.to_string()),
            }
        }
        if !ready.is_empty() {
            // One clock reading and one lock per read, however many answers it carried.
            let at = std::time::Instant::now();
            let mut waiting = pending.lock();
            for r in ready.drain(..) {
                let result = match r.outcome {
                    Outcome::Ok(resp) => Ok(resp),
                    Outcome::Err(e) => Err(ClientError::Rejected(e)),
                };
                deliver(&mut waiting, r.id, (result, at));
            }
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => frames.extend(&chunk[..n]),
            Ok(None) => break ClientError::Closed("stream finished by the broker".into()),
            Err(e) => break ClientError::Closed(e.to_string()),
        }
    };
    let msg = failure.to_string();
    let at = std::time::Instant::now();
    let mut waiting = pending.lock();
    for (_, mut batch) in std::mem::take(&mut *waiting) {
        for slot in batch.answers.iter_mut().filter(|a| a.is_none()) {
            *slot = Some((Err(ClientError::Closed(msg.clone())), at));
        }
        if let Some(tx) = batch.done.take() {
            let _ = tx.send(batch.answers);
        }
    }
}

/// Files one answer with its batch, waking the caller when the batch is complete.
fn deliver(waiting: &mut std::collections::BTreeMap<u64, Batch>, id: u64, answer: Answer) {
    let Some((&first, batch)) = waiting.range_mut(..=id).next_back() else {
        return;
    };
    let Some(slot) = batch.answers.get_mut((id - first) as usize).filter(|s| s.is_none()) else {
        return;
    };
    *slot = Some(answer);
    batch.remaining -= 1;
    if batch.remaining == 0 {
        if let Some(mut done) = waiting.remove(&first) {
            if let Some(tx) = done.done.take() {
                let _ = tx.send(done.answers);
            }
        }
    }
}

async fn read_notices(conn: quinn::Connection, tx: mpsc::Sender<Notice>) {
    let Ok(mut recv) = conn.accept_uni().await else {
        return;
    };
    let mut frames = FrameBuf::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        loop {
            match frames.next_message::<Notice>() {
                Ok(Some(n)) => {
                    if tx.send(n).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => frames.extend(&chunk[..n]),
            _ => return,
        }
    }
}
