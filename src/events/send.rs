//! One webhook request: a POST of an event's JSON to the address the
//! target resolved to (`target::resolve`), over the same hyper HTTP/1 and
//! tokio-rustls pieces as the cluster's etcd client (`cluster::link`), on
//! a connection of its own that is closed after the answer's head: the
//! receiver's body is never read, and a redirect (3xx) is an answer like
//! any other, not followed. Whoever calls bounds the call.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::Bytes;

use super::target::Target;

/// A signed request, ready to send.
pub struct Post<'a> {
    /// Where.
    pub target: &'a Target,
    /// The address checked for it.
    pub addr: SocketAddr,
    /// The signature, id, type and idempotency headers.
    pub headers: Vec<(&'static str, String)>,
    /// The event's JSON.
    pub body: Bytes,
}

/// Sends `post`; the answer's status.
pub async fn send(post: Post<'_>) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(post.addr).await.map_err(|e| format!("connect: {e}"))?;
    let tls = match post.target.secure {
        true => Some(connector()?),
        false => None,
    };
    let mut sender = crate::cluster::link::open(stream, &post.target.host, tls).await?;
    let mut request = hyper::Request::post(post.target.path.as_str())
        .header(hyper::header::HOST, post.target.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("license-broker/", env!("CARGO_PKG_VERSION")));
    for (name, value) in post.headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(post.body)).map_err(|e| format!("request: {e}"))?;
    let answer = sender.send_request(request).await.map_err(|e| format!("send: {e}"))?;
    Ok(answer.status().as_u16())
}

/// The TLS client for `https://` receivers: the system's roots, TLS 1.2
/// or 1.3, ring (the house's one crypto stack). Built once.
fn connector() -> Result<&'static tokio_rustls::TlsConnector, String> {
    static CONNECTOR: OnceLock<Result<tokio_rustls::TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // Skip system certificates rustls cannot parse rather than fail.
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .as_ref()
        .map_err(Clone::clone)
}
