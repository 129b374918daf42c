//! A small etcd v3 client: the key-value, transaction and lease calls the
//! cluster needs, spoken to etcd's JSON gateway (`POST /v3/...`, keys and
//! values base64) over HTTP/1 with the hyper the ops endpoint already
//! brings, instead of a second RPC stack (tonic, prost) for a handful of
//! calls. etcd 3.4 and later serve the gateway on every client URL.
//! `https://` URLs speak TLS 1.3 (rustls with the ring provider, as the
//! QUIC side), presenting a client certificate when given one. Connections
//! are kept alive between calls (`link`): a call costs a round trip, not a
//! TCP (and TLS) handshake.
//!
//! Several endpoints (the members' client URLs): a call goes to the
//! member that answered last, and on a connection failure or timeout to
//! the next, once round; it never loops. Whoever calls decides whether and
//! when to try again (with a bounded backoff), and every error names what
//! it tried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::body::Bytes;
use serde_json::{json, Value};

use super::link::Member;

/// Why an etcd call failed.
#[derive(Debug)]
pub enum EtcdError {
    /// No endpoint answered (each tried once, in turn).
    Unreachable {
        /// The call (`/v3/kv/range`...).
        call: &'static str,
        /// Each endpoint tried, with why it failed.
        tried: Vec<String>,
    },
    /// An endpoint answered with an error (its status and body).
    Refused {
        /// The call.
        call: &'static str,
        /// The HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// The answer was not what the gateway documents.
    Malformed {
        /// The call.
        call: &'static str,
        /// What was wrong.
        why: String,
    },
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unreachable { call, tried } => {
                write!(f, "etcd {call}: no endpoint answered ({})", tried.join("; "))
            }
            EtcdError::Refused { call, status, message } => write!(f, "etcd {call}: refused ({status}): {message}"),
            EtcdError::Malformed { call, why } => write!(f, "etcd {call}: unexpected answer: {why}"),
        }
    }
}

impl std::error::Error for EtcdError {}

/// A key and its value, with etcd's bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key (its first put since it last did not exist).
    pub create_revision: i64,
    /// The revision of its last put.
    pub mod_revision: i64,
    /// Puts since it was created.
    pub version: i64,
    /// The lease it is bound to (0: none).
    pub lease: i64,
}

/// One condition of a transaction.
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key's create revision equals this (0: the key does not exist).
    CreateRevision(Vec<u8>, i64),
    /// The key's last modification is at this revision.
    ModRevision(Vec<u8>, i64),
}

/// One operation of a transaction.
#[derive(Clone, Debug)]
pub enum Op {
    /// Write `value` at `key`, bound to a lease if given.
    Put(Vec<u8>, Vec<u8>, Option<i64>),
    /// Delete `key`.
    Delete(Vec<u8>),
    /// Read `key`.
    Get(Vec<u8>),
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Every compare held: the success branch ran (else the failure branch).
    pub succeeded: bool,
    /// The store's revision after it.
    pub revision: i64,
    /// What each `Op::Get` of the branch that ran read, in order.
    pub reads: Vec<Vec<Kv>>,
}

/// A client of one etcd cluster.
pub struct Etcd {
    /// Each member (its client URL's `host:port`, whether it speaks TLS)
    /// and its kept-alive connections.
    endpoints: Vec<Member>,
    /// The endpoint that answered last.
    preferred: AtomicUsize,
    /// Each attempt's bound (connect, send, read).
    timeout: Duration,
    /// For `https://` endpoints.
    tls: Option<tokio_rustls::TlsConnector>,
}

/// How to speak TLS to etcd (`https://` endpoints): whom to trust, and the
/// client certificate to present if etcd asks for one (`--client-cert-auth`).
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    /// PEM of the CA that signed etcd's certificates (system roots if absent).
    pub ca: Option<std::path::PathBuf>,
    /// PEM certificate chain and private key of this client, if any.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl EtcdTls {
    /// The rustls configuration (TLS 1.3, the ring provider).
    fn connector(&self) -> Result<tokio_rustls::TlsConnector, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                let what = |e: &dyn std::fmt::Display| format!("reading the etcd CA {}: {e}", path.display());
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| what(&e))? {
                    roots.add(cert.map_err(|e| what(&e))?).map_err(|e| what(&e))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        if roots.is_empty() {
            return Err("no trusted certificate authority for etcd (pass --etcd-ca PEM)".into());
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3: {e}"))?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("reading the etcd client certificate {}: {e}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("reading the etcd client key {}: {e}", key.display()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| format!("the etcd client certificate: {e}"))?
            }
        };
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The end of the range of keys starting with `prefix` (etcd's convention).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// An int64 of the gateway's JSON (a string, or absent for 0).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn bytes(call: &'static str, v: &Value) -> Result<Vec<u8>, EtcdError> {
    match v.as_str() {
        None => Ok(Vec::new()),
        Some(s) => B64.decode(s).map_err(|e| EtcdError::Malformed { call, why: format!("base64: {e}") }),
    }
}

fn kvs(call: &'static str, v: &Value) -> Result<Vec<Kv>, EtcdError> {
    let Some(list) = v.get("kvs").and_then(Value::as_array) else { return Ok(Vec::new()) };
    list.iter()
        .map(|kv| {
            Ok(Kv {
                key: bytes(call, &kv["key"])?,
                value: bytes(call, &kv["value"])?,
                create_revision: int(&kv["create_revision"]),
                mod_revision: int(&kv["mod_revision"]),
                version: int(&kv["version"]),
                lease: int(&kv["lease"]),
            })
        })
        .collect()
}

fn revision(v: &Value) -> i64 {
    int(&v["header"]["revision"])
}

impl Etcd {
    /// A client of the members at `endpoints` (`http://HOST:PORT`, or
    /// `HOST:PORT`); each attempt is bounded by `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Etcd, String> {
        Etcd::with_tls(endpoints, timeout, None)
    }

    /// As `new`; `https://` endpoints speak TLS with `tls`.
    pub fn with_tls(endpoints: &[String], timeout: Duration, tls: Option<&EtcdTls>) -> Result<Etcd, String> {
        let endpoints: Vec<(String, bool)> = endpoints
            .iter()
            .map(|e| {
                let e = e.trim();
                let (rest, secure) = match (e.strip_prefix("https://"), e.strip_prefix("http://")) {
                    (Some(rest), _) => (rest, true),
                    (None, Some(rest)) => (rest, false),
                    (None, None) => (e, false),
                };
                let hostport = rest.trim_end_matches('/');
                if hostport.is_empty() || hostport.contains('/') {
                    return Err(format!("`{e}` is not an etcd client URL of the form http(s)://HOST:PORT"));
                }
                Ok((hostport.to_string(), secure))
            })
            .collect::<Result<_, _>>()?;
        if endpoints.is_empty() {
            return Err("no etcd endpoint given".into());
        }
        let tls = match (endpoints.iter().any(|(_, secure)| *secure), tls) {
            (true, Some(t)) => Some(t.connector()?),
            (true, None) => Some(EtcdTls::default().connector()?),
            (false, _) => None,
        };
        let endpoints = endpoints.into_iter().map(|(hostport, secure)| Member::new(hostport, secure)).collect();
        Ok(Etcd { endpoints, preferred: AtomicUsize::new(0), timeout, tls })
    }

    /// POSTs `body` to `call` on the preferred member, then on each other once.
    async fn post(&self, call: &'static str, body: &Value) -> Result<Value, EtcdError> {
        let body = Bytes::from(body.to_string());
        // Relaxed: a hint; any member answers every call.
        let first = self.preferred.load(Ordering::Relaxed);
        let mut tried = Vec::new();
        for i in 0..self.endpoints.len() {
            let at = (first + i) % self.endpoints.len();
            let member = &self.endpoints[at];
            let endpoint = &member.hostport;
            match tokio::time::timeout(self.timeout, member.post(self.tls.as_ref(), call, body.clone())).await {
                Ok(Ok((200, answer))) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return serde_json::from_slice(&answer)
                        .map_err(|e| EtcdError::Malformed { call, why: e.to_string() });
                }
                Ok(Ok((status, answer))) => {
                    let message = serde_json::from_slice::<Value>(&answer)
                        .ok()
                        .and_then(|v| {
                            v.get("error").or_else(|| v.get("message")).and_then(Value::as_str).map(str::to_string)
                        })
                        .unwrap_or_else(|| String::from_utf8_lossy(&answer).chars().take(200).collect());
                    // A member without a leader (or cut off) says so with a
                    // 5xx: another member may do better.
                    if status >= 500 {
                        tried.push(format!("{endpoint}: {status} {message}"));
                        continue;
                    }
                    return Err(EtcdError::Refused { call, status, message });
                }
                Ok(Err(e)) => tried.push(format!("{endpoint}: {e}")),
                Err(_) => tried.push(format!("{endpoint}: no answer within {:?}", self.timeout)),
            }
        }
        Err(EtcdError::Unreachable { call, tried })
    }

    /// The key, or with `prefix` every key starting with it; and the revision read at.
    pub async fn range(&self, key: &[u8], prefix: bool) -> Result<(Vec<Kv>, i64), EtcdError> {
        let mut body = json!({ "key": b64(key) });
        if prefix {
            body["range_end"] = json!(b64(&prefix_end(key)));
        }
        let v = self.post("/v3/kv/range", &body).await?;
        Ok((kvs("/v3/kv/range", &v)?, revision(&v)))
    }

    /// Up to `limit` keys in `[start, end)` in key order (`descending`:
    /// from the end), and whether more keys are in the range.
    pub async fn range_in(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        descending: bool,
    ) -> Result<(Vec<Kv>, bool), EtcdError> {
        let mut body = json!({ "key": b64(start), "range_end": b64(end), "limit": limit.to_string() });
        if descending {
            body["sort_order"] = json!("DESCEND");
            body["sort_target"] = json!("KEY");
        }
        let v = self.post("/v3/kv/range", &body).await?;
        Ok((kvs("/v3/kv/range", &v)?, v["more"].as_bool().unwrap_or(false)))
    }

    /// How many keys are in `[start, end)` (read without their values).
    pub async fn count(&self, start: &[u8], end: &[u8]) -> Result<u64, EtcdError> {
        let body = json!({ "key": b64(start), "range_end": b64(end), "count_only": true });
        let v = self.post("/v3/kv/range", &body).await?;
        Ok(int(&v["count"]).max(0) as u64)
    }

    /// Writes `value` at `key` (bound to `lease` if given); the new revision.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: Option<i64>) -> Result<i64, EtcdError> {
        let mut body = json!({ "key": b64(key), "value": b64(value) });
        if let Some(l) = lease {
            body["lease"] = json!(l.to_string());
        }
        Ok(revision(&self.post("/v3/kv/put", &body).await?))
    }

    /// Runs `success` if every compare holds, else `failure`, atomically.
    pub async fn txn(&self, compares: &[Compare], success: &[Op], failure: &[Op]) -> Result<TxnResult, EtcdError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|c| match c {
                Compare::CreateRevision(k, r) => {
                    json!({ "target": "CREATE", "result": "EQUAL", "key": b64(k), "create_revision": r.to_string() })
                }
                Compare::ModRevision(k, r) => {
                    json!({ "target": "MOD", "result": "EQUAL", "key": b64(k), "mod_revision": r.to_string() })
                }
            })
            .collect();
        let ops = |ops: &[Op]| -> Vec<Value> {
            ops.iter()
                .map(|o| match o {
                    Op::Put(k, v, lease) => {
                        let mut put = json!({ "key": b64(k), "value": b64(v) });
                        if let Some(l) = lease {
                            put["lease"] = json!(l.to_string());
                        }
                        json!({ "request_put": put })
                    }
                    Op::Delete(k) => json!({ "request_delete_range": { "key": b64(k) } }),
                    Op::Get(k) => json!({ "request_range": { "key": b64(k) } }),
                })
                .collect()
        };
        let body = json!({ "compare": compare, "success": ops(success), "failure": ops(failure) });
        let v = self.post("/v3/kv/txn", &body).await?;
        let mut reads = Vec::new();
        for r in v.get("responses").and_then(Value::as_array).into_iter().flatten() {
            if let Some(range) = r.get("response_range") {
                reads.push(kvs("/v3/kv/txn", range)?);
            }
        }
        Ok(TxnResult { succeeded: v["succeeded"].as_bool().unwrap_or(false), revision: revision(&v), reads })
    }

    /// A new lease of `ttl` (whole seconds, at least 1): its id and the TTL etcd granted.
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), EtcdError> {
        let v = self.post("/v3/lease/grant", &json!({ "TTL": ttl.as_secs().max(1).to_string() })).await?;
        let id = int(&v["ID"]);
        if id == 0 {
            return Err(EtcdError::Malformed { call: "/v3/lease/grant", why: format!("no lease id in {v}") });
        }
        Ok((id, Duration::from_secs(int(&v["TTL"]).max(0) as u64)))
    }

    /// Renews lease `id`: the TTL it has again, or `None` if it is gone
    /// (expired or revoked: whatever was bound to it is deleted).
    pub async fn keep_alive(&self, id: i64) -> Result<Option<Duration>, EtcdError> {
        let v = self.post("/v3/lease/keepalive", &json!({ "ID": id.to_string() })).await?;
        let ttl = int(&v["result"]["TTL"]);
        Ok((ttl > 0).then(|| Duration::from_secs(ttl as u64)))
    }

    /// How long lease `id` has left, in whole seconds as etcd counts them
    /// (rounded down), and the TTL it was granted; `None` if it is gone.
    pub async fn time_to_live(&self, id: i64) -> Result<Option<(i64, i64)>, EtcdError> {
        match self.post("/v3/lease/timetolive", &json!({ "ID": id.to_string() })).await {
            Ok(v) => {
                let left = int(&v["TTL"]);
                Ok((left >= 0).then(|| (left, int(&v["grantedTTL"]))))
            }
            Err(EtcdError::Refused { message, .. }) if message.contains("not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Ends lease `id` now (its keys are deleted).
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        match self.post("/v3/lease/revoke", &json!({ "ID": id.to_string() })).await {
            Ok(_) => Ok(()),
            // Already gone: what revoking wanted.
            Err(EtcdError::Refused { message, .. }) if message.contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_follow_etcds_convention() {
        assert_eq!(prefix_end(b"org/"), b"org0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), vec![b'b']);
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn endpoints_are_http_host_port() {
        assert!(Etcd::new(&["http://127.0.0.1:2379".into(), "127.0.0.1:2380".into()], Duration::from_secs(1)).is_ok());
        assert!(Etcd::new(&["ftp://x:1/y".into()], Duration::from_secs(1)).is_err(), "not a client URL");
        assert!(Etcd::new(&[], Duration::from_secs(1)).is_err());
    }
}
