//! The tests' one HTTP client for the broker's web door (`/metrics`,
//! `/healthz`, the API, the console): HTTP/1.0, one request per connection,
//! the answer read to its end, a 10 s read timeout; over TLS trusting the
//! broker's certificate (as `--ca` does), or plain for a door started with
//! `HttpTls::Plain`. Plain std I/O and rustls on purpose, so a test of the
//! HTTP server trusts no HTTP client crate; it panics on any I/O, TLS or
//! framing failure, which fails the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A web door to talk to: its address, and TLS unless it is plain.
#[derive(Clone)]
pub struct Web {
    pub addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Web {
    /// A door speaking TLS with a certificate `ca` (a PEM file) vouches for.
    pub fn tls(addr: impl ToSocketAddrs, ca: &Path) -> Web {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Web { addr: first(addr), tls: Some(Arc::new(config)) }
    }

    /// A door speaking plain HTTP.
    pub fn plain(addr: impl ToSocketAddrs) -> Web {
        Web { addr: first(addr), tls: None }
    }

    /// A GET, with `Authorization: Bearer KEY` when a key is given: (status code, body).
    pub fn get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        let (code, _, body) = self.exchange(&format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n"));
        (code, body)
    }

    /// `get` from an async test, on a blocking thread.
    pub async fn fetch(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let (web, path, key) = (self.clone(), path.to_string(), key.map(str::to_string));
        tokio::task::spawn_blocking(move || web.get(&path, key.as_deref())).await.unwrap()
    }

    /// Any request: `head` is the request line and its own headers, to which
    /// `Host: localhost` (unless `head` has one) and `Content-Length` are
    /// added: (status code, head, body).
    pub fn request(&self, head: &str, body: &str) -> (u16, String, String) {
        let host = if head.to_ascii_lowercase().contains("\r\nhost:") { "" } else { "\r\nHost: localhost" };
        self.exchange(&format!("{head}{host}\r\nContent-Length: {}\r\n\r\n{body}", body.len()))
    }

    /// `request` from an async test, on a blocking thread.
    pub async fn send(&self, head: &str, body: &str) -> (u16, String, String) {
        let (web, head, body) = (self.clone(), head.to_string(), body.to_string());
        tokio::task::spawn_blocking(move || web.request(&head, &body)).await.unwrap()
    }

    /// Sends `raw` on a new connection and reads the answer to its end:
    /// (status code, head, body).
    pub fn exchange(&self, raw: &str) -> (u16, String, String) {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let out = match &self.tls {
            None => roundtrip(tcp, raw),
            Some(config) => {
                let name = ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                roundtrip(rustls::StreamOwned::new(conn, tcp), raw)
            }
        };
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head.to_string(), body.to_string())
    }
}

fn first(addr: impl ToSocketAddrs) -> SocketAddr {
    addr.to_socket_addrs().unwrap().next().unwrap()
}

/// Writes `raw`, reads until the server closes.
fn roundtrip(mut s: impl Read + Write, raw: &str) -> String {
    s.write_all(raw.as_bytes()).unwrap();
    s.flush().unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}
