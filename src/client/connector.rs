//! Finding a broker: resolving `--server` (one node or several), the UDP
//! endpoint whose TLS tickets make a reconnect cheap, and following
//! redirects to the node that serves an org, each attempt bounded. Apart
//! from `Client` because a connection's calls never need any of this.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{Client, ClientError, ClientOptions, ConnectFailure};

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
