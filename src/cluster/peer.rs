//! Reads of another node's slice of an org's history. Each node keeps the
//! history of the time it served an org in its own `history.redb`; the
//! node serving an org now asks every other node of the cluster for its
//! slice over their web doors (`/peer/v1/...`, the console's listener, at
//! the address each announced under `nodes/NAME/console`), and the reports
//! merge what comes back (`operations::gathered`).
//!
//! A peer request is signed: `Authorization: LBPeer MS.MAC`, MS the
//! sender's wall clock in Unix ms and MAC the HMAC-SHA256 of the method,
//! the node it is sent to (`Host`), the path with its query and MS, under a
//! key every node derives from the session-token key the cluster shares
//! (`PeerKey::derive`, a label of its own so the key serves this one
//! purpose). The door refuses a MAC that does not check and one older or
//! newer than `MAX_SKEW` (401). Peer reads go over TLS only (a console
//! announced as `http://` is not asked, and a door without TLS refuses
//! them), so a request is seen by its two nodes alone; a peer read only
//! reads, and one replayed to its node within the skew reads again what
//! its sender already read (the `Host` under the MAC keeps it from being
//! replayed to another node).
//!
//! Every read is bounded: `DEADLINE` per node (a node that does not
//! answer in time is named, not waited for), `MAX_ANSWER` bytes per
//! answer, and `AT_ONCE` reads in flight from this node. Nothing here
//! decides what a report holds; it only moves signed bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use parking_lot::Mutex;
use ring::hmac;

use super::link::Member;

/// How far a peer request's time may be from the door's clock: the nodes'
/// wall clocks agree within the restart grace (docs/CLUSTER.md), and a
/// request takes at most `DEADLINE`.
pub const MAX_SKEW_MS: u64 = 30_000;

/// How long a node's slice may take to arrive, whole (and, before that,
/// how long a read may wait for one of the `AT_ONCE` turns).
pub const DEADLINE: Duration = Duration::from_secs(2);

/// Most bytes one peer answer may hold: a page of `report::MAX_SESSIONS`
/// ended sessions at about 200 bytes each, with room.
pub const MAX_ANSWER: usize = 32 << 20;

/// Peer reads in flight from this node at once (a report over three nodes
/// asks two; more reports wait their turn, within their deadline).
pub const AT_ONCE: usize = 4;

/// The scheme word of a peer request's `Authorization`.
pub const SCHEME: &str = "LBPeer ";

/// Separates the peer key from any other use of the session-token key.
const LABEL: &[u8] = b"lbroker peer read v1";

/// The key peer requests are signed with.
#[derive(Clone)]
pub struct PeerKey(hmac::Key);

/// Why a peer request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAuthError {
    /// No `Authorization: LBPeer ...`.
    Missing,
    /// It is not `MS.MAC` with MAC in hex.
    Malformed,
    /// Its time is further than `MAX_SKEW_MS` from the door's clock.
    Stale,
    /// The MAC does not check: not signed by a node of this cluster.
    Forged,
}

impl std::fmt::Display for PeerAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerAuthError::Missing => "a peer read needs Authorization: LBPeer MS.MAC",
            PeerAuthError::Malformed => "a peer read's authorization is not MS.MAC",
            PeerAuthError::Stale => "a peer read's time is too far from this node's clock",
            PeerAuthError::Forged => "a peer read's MAC does not check",
        })
    }
}

impl std::error::Error for PeerAuthError {}

impl PeerKey {
    /// The peer key of a cluster whose session-token key is `token_key`.
    pub fn derive(token_key: &[u8]) -> PeerKey {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, token_key), LABEL);
        PeerKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The `Authorization` value of `method path_and_query` sent to
    /// `host` (the request's `Host`) at `now_ms`.
    pub fn sign(&self, method: &str, host: &str, path_and_query: &str, now_ms: u64) -> String {
        let tag = hmac::sign(&self.0, &message(method, host, path_and_query, now_ms));
        format!("{SCHEME}{now_ms}.{}", crate::value::hex(tag.as_ref()))
    }

    /// Checks `authorization` of `method path_and_query` received as
    /// `host` (its `Host`) at `now_ms`.
    pub fn check(
        &self,
        (method, host, path_and_query): (&str, &str, &str),
        authorization: Option<&str>,
        now_ms: u64,
    ) -> Result<(), PeerAuthError> {
        let given = authorization.and_then(|a| a.strip_prefix(SCHEME)).ok_or(PeerAuthError::Missing)?;
        let (ms, hex) = given.split_once('.').ok_or(PeerAuthError::Malformed)?;
        let sent: u64 = ms.parse().map_err(|_| PeerAuthError::Malformed)?;
        let tag = crate::value::unhex(hex).filter(|t| t.len() <= 64).ok_or(PeerAuthError::Malformed)?;
        if sent.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(PeerAuthError::Stale);
        }
        hmac::verify(&self.0, &message(method, host, path_and_query, sent), &tag).map_err(|_| PeerAuthError::Forged)
    }
}

/// The wall clock in Unix ms, as peer requests are signed and checked by
/// (not the broker's clock, which `--clock-ahead` may move).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn message(method: &str, host: &str, path_and_query: &str, ms: u64) -> Vec<u8> {
    format!("{method}\n{host}\n{path_and_query}\n{ms}").into_bytes()
}

/// A node asked for its slice: its name, and its console's URL if it is
/// live and said where its console is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node's name.
    pub node: String,
    /// `https://HOST:PORT/` (or `http://`), if known.
    pub console: Option<String>,
}

/// This node's client of the other nodes' web doors.
pub struct Peers {
    key: PeerKey,
    tls: tokio_rustls::TlsConnector,
    /// Kept-alive connections, by console URL.
    members: Mutex<HashMap<String, Arc<Member>>>,
    turns: Arc<tokio::sync::Semaphore>,
}

impl Peers {
    /// A client signing with `key`, trusting `trusted` (the certificate
    /// every node's door presents) and the system's roots.
    pub fn new(key: PeerKey, trusted: Option<rustls::pki_types::CertificateDer<'static>>) -> Result<Peers, String> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(cert) = trusted {
            roots.add(cert).map_err(|e| format!("trusting the door's certificate: {e}"))?;
        }
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
        let turns = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
        Ok(Peers { key, tls, members: Mutex::new(HashMap::new()), turns })
    }

    /// The key requests are signed with (and checked by).
    pub fn key(&self) -> &PeerKey {
        &self.key
    }

    /// GETs `path_and_query` of every target at once, each within
    /// `DEADLINE`: each node's answer body (status 200), or why not.
    pub async fn ask(
        &self,
        targets: &[Target],
        path_and_query: &str,
        now_ms: u64,
    ) -> Vec<(String, Result<Bytes, String>)> {
        // Connections to consoles no node announces any more (a node that
        // restarted on another port) are dropped, so they never pile up.
        self.members.lock().retain(|url, _| targets.iter().any(|t| t.console.as_deref() == Some(url.as_str())));
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in targets.iter().enumerate() {
            let Some(console) = &t.console else { continue };
            let Some(member) = self.member(console) else { continue };
            let authorization = self.key.sign("GET", &member.hostport, path_and_query, now_ms);
            let (tls, turns, path) = (self.tls.clone(), self.turns.clone(), path_and_query.to_string());
            set.spawn(async move {
                // The deadline starts with the read, not with the wait for
                // a turn, which has a deadline of its own: a node is not
                // named for the reads queued before it.
                let Ok(Ok(_turn)) = tokio::time::timeout(DEADLINE, turns.acquire_owned()).await else {
                    return (i, Ok(Err(format!("was not asked: {AT_ONCE} peer reads were under way"))));
                };
                let read = member.get(Some(&tls), &path, &authorization, MAX_ANSWER);
                (i, tokio::time::timeout(DEADLINE, read).await)
            });
        }
        let mut out: Vec<(String, Result<Bytes, String>)> =
            targets.iter().map(|t| (t.node.clone(), Err(unreachable(t)))).collect();
        while let Some(done) = set.join_next().await {
            let Ok((i, answer)) = done else { continue };
            out[i].1 = match answer {
                Err(_) => Err(format!("did not answer within {} s", DEADLINE.as_secs())),
                Ok(Err(e)) => Err(format!("did not answer ({e})")),
                Ok(Ok((200, body))) => Ok(body),
                Ok(Ok((status, body))) => Err(format!("answered {status}: {}", String::from_utf8_lossy(&body).trim())),
            };
        }
        out
    }

    /// The kept-alive connections to the door at `console` (`None` for a URL
    /// that is not `https://HOST:PORT/`: peer reads go over TLS only).
    fn member(&self, console: &str) -> Option<Arc<Member>> {
        let hostport = console.strip_prefix("https://")?.trim_end_matches('/').to_string();
        let mut members = self.members.lock();
        let m = members.entry(console.to_string()).or_insert_with(|| Arc::new(Member::new(hostport, true)));
        Some(m.clone())
    }
}

fn unreachable(t: &Target) -> String {
    match &t.console {
        None => "is not live, or did not say where its console is".into(),
        Some(url) if url.starts_with("http://") => {
            format!("speaks plain HTTP ({url}): peer reads go over TLS only")
        }
        Some(url) => format!("has no usable console address ({url})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;
    const PATH: &str = "/peer/v1/sessions?org=acme&from=0&to=9";
    const HOST: &str = "node-a.example:8443";

    #[test]
    fn a_signed_request_checks_within_the_skew_and_not_past_it() {
        let key = PeerKey::derive(b"the cluster's session-token key");
        let auth = key.sign("GET", HOST, PATH, NOW);
        assert_eq!(key.check(("GET", HOST, PATH), Some(&auth), NOW + MAX_SKEW_MS), Ok(()));
        assert_eq!(key.check(("GET", HOST, PATH), Some(&auth), NOW - MAX_SKEW_MS), Ok(()));
        assert_eq!(key.check(("GET", HOST, PATH), Some(&auth), NOW + MAX_SKEW_MS + 1), Err(PeerAuthError::Stale));
        assert_eq!(key.check(("GET", HOST, PATH), Some(&auth), NOW - MAX_SKEW_MS - 1), Err(PeerAuthError::Stale));
    }

    #[test]
    fn a_forged_or_altered_request_is_refused() {
        let key = PeerKey::derive(b"the cluster's session-token key");
        let auth = key.sign("GET", HOST, PATH, NOW);
        let other = PeerKey::derive(b"another cluster's key").sign("GET", HOST, PATH, NOW);
        assert_eq!(key.check(("GET", HOST, PATH), Some(&other), NOW), Err(PeerAuthError::Forged));
        let widened = "/peer/v1/sessions?org=other&from=0&to=9";
        assert_eq!(key.check(("GET", HOST, widened), Some(&auth), NOW), Err(PeerAuthError::Forged));
        assert_eq!(key.check(("POST", HOST, PATH), Some(&auth), NOW), Err(PeerAuthError::Forged));
        // Signed for one node: replayed to another, it does not check.
        assert_eq!(key.check(("GET", "node-b.example:8443", PATH), Some(&auth), NOW), Err(PeerAuthError::Forged));
        // The time is under the MAC: moving it forward does not refresh a request.
        let (_, mac) = auth.split_once('.').unwrap();
        let moved = format!("{SCHEME}{}.{mac}", NOW + 1);
        assert_eq!(key.check(("GET", HOST, PATH), Some(&moved), NOW), Err(PeerAuthError::Forged));
        assert_eq!(key.check(("GET", HOST, PATH), None, NOW), Err(PeerAuthError::Missing));
        assert_eq!(key.check(("GET", HOST, PATH), Some("Bearer k"), NOW), Err(PeerAuthError::Missing));
        assert_eq!(key.check(("GET", HOST, PATH), Some("LBPeer 12.zz"), NOW), Err(PeerAuthError::Malformed));
        // The session-token key itself does not sign peer reads.
        let raw = hmac::Key::new(hmac::HMAC_SHA256, b"the cluster's session-token key");
        let tag = hmac::sign(&raw, &message("GET", HOST, PATH, NOW));
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            key.check(("GET", HOST, PATH), Some(&format!("{SCHEME}{NOW}.{hex}")), NOW),
            Err(PeerAuthError::Forged)
        );
    }
}
