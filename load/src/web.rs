//! The harness's client for the broker's web door: HTTP/1.0, one request
//! per connection, over TLS trusting the broker's certificate (its CA file,
//! as Prometheus's `tls_config.ca_file` does). Blocking std I/O, for
//! measuring loops on their own threads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A web door: its address and the TLS that trusts it.
#[derive(Clone)]
pub struct Web {
    pub addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Web {
    /// The door at `addr`, whose certificate `ca` (PEM) vouches for.
    pub fn new(addr: SocketAddr, ca: &Path) -> Result<Web> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Web { addr, tls: Arc::new(tls) })
    }

    /// The TLS client config trusting the door.
    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    /// A TLS session on a new connection, handshake done.
    pub fn connect(&self, timeout: Duration) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let tcp = TcpStream::connect(self.addr)?;
        // As Prometheus's and browsers' clients do: with Nagle on, the
        // request written after the handshake's last flight waited for its
        // ACK, which Linux delays 40 ms; a tenth of the scrapes paid it.
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), ServerName::try_from("localhost")?.to_owned())?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(s)
    }

    /// Sends `raw` (a whole request) and reads the answer to its end: (head, body).
    pub fn request(&self, raw: &str, timeout: Duration) -> Result<(String, String)> {
        let mut s = self.connect(timeout)?;
        s.write_all(raw.as_bytes())?;
        s.flush()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let out = String::from_utf8_lossy(&out);
        let (head, body) = out.split_once("\r\n\r\n").context("an HTTP answer")?;
        Ok((head.to_string(), body.to_string()))
    }

    /// A GET with extra header lines (each ending in CRLF): the body of a 200.
    pub fn get(&self, path: &str, headers: &str, timeout: Duration) -> Result<String> {
        let (head, body) =
            self.request(&format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n"), timeout)?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {head}");
        }
        Ok(body)
    }
}
