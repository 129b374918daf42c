//! TLS material and QUIC crypto configs. rustls with the ring provider only,
//! TLS 1.3 only, ALPN `lbroker/1`.
//!
//! By default the server generates a self-signed certificate once (valid for
//! `localhost`, `127.0.0.1` and `::1`) into `DATA_DIR/tls/`; clients trust it
//! by passing `--ca DATA_DIR/tls/cert.pem`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::SetupError;
use crate::proto::ALPN;

type Result<T, E = SetupError> = std::result::Result<T, E>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Paths of the certificate and key the server uses.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The default location inside a data dir.
    pub fn in_data_dir(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("tls/cert.pem"), key: dir.join("tls/key.pem") }
    }
}

/// Generates a self-signed certificate at `files` unless both files exist.
pub fn ensure_self_signed(files: &TlsFiles) -> Result<bool> {
    if files.cert.exists() && files.key.exists() {
        return Ok(false);
    }
    if let Some(parent) = files.cert.parent() {
        fs::create_dir_all(parent).map_err(SetupError::io(format!("creating {}", parent.display())))?;
    }
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| SetupError::tls("generating a certificate", e))?;
    write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())?;
    fs::write(&files.cert, certified.cert.pem())
        .map_err(SetupError::io(format!("writing {}", files.cert.display())))?;
    Ok(true)
}

/// Writes a secret file readable by its owner only (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(SetupError::io(format!("writing {}", path.display())))
}

/// Bytes a client may send on one stream before the broker has read them.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// Bytes in flight per connection, each way.
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// The streams and bytes in flight (each way) a connection may have.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Concurrent request streams.
    pub streams: u32,
    /// Bytes in flight per connection, each way.
    pub window: u32,
}

impl Limits {
    /// Before any of its streams authenticated: one stream at a time (a
    /// `Hello` needs no more) and 64 KiB in flight each way (a frame), so a
    /// stranger's connection holds a fraction of a member's buffers.
    pub const STRANGER: Limits = Limits { streams: 1, window: 64 * 1024 };

    /// A member's connection: `streams` request streams, `CONNECTION_WINDOW`.
    pub fn member(streams: u32) -> Limits {
        Limits { streams, window: CONNECTION_WINDOW }
    }

    /// Applies these limits to an open connection (raising a stranger's
    /// once one of its streams authenticated).
    pub fn apply(self, conn: &quinn::Connection) {
        conn.set_max_concurrent_bi_streams(self.streams.into());
        conn.set_receive_window(self.window.into());
        conn.set_send_window(self.window.into());
    }
}

/// The QUIC server config: TLS 1.3 with `files`, and the transport limits.
/// `tickets` issues the TLS session tickets (the broker's survive a restart).
pub fn server_config(
    files: &TlsFiles,
    idle_timeout: Duration,
    initial: Limits,
    tickets: Option<Arc<dyn rustls::server::ProducesTickets>>,
) -> Result<quinn::ServerConfig> {
    let mut tls = tls_server(files)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    if let Some(t) = tickets {
        // Stateless tickets: nothing kept per client, readable after a restart.
        tls.ticketer = t;
        tls.send_tls13_tickets = 2;
    }
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| SetupError::tls("QUIC crypto", e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = idle_timeout.try_into().map_err(|e| SetupError::tls("idle timeout", e))?;
    // Windows sized to the protocol, not to bulk transfer: a stream needs
    // room for a 64 KiB frame and some pipelining, a connection for a few
    // busy streams. They bound what a client that sends without reading (or
    // reads without acknowledging) can make the broker buffer: quinn's
    // defaults are ~1.2 MB per stream, unlimited per connection, 10 MB out.
    // Every connection starts with `initial` (the broker's: a stranger's).
    transport
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(initial.streams.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(initial.window.into())
        .send_window(initial.window.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The web door's TLS (`serve --http`): TLS 1.3 with `files`, HTTP/1.1.
/// Session tickets are rustls' default (in memory): a browser's resumption
/// across a restart saves little.
pub fn http_server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let mut tls = tls_server(files)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The certificate `files` present (the first of the chain), for what it
/// names (`webpki::EndEntityCert`).
pub fn leaf_certificate(files: &TlsFiles) -> Result<CertificateDer<'static>> {
    let mut certs = certificates(&files.cert)?;
    Ok(certs.swap_remove(0))
}

/// A TLS 1.3 server config presenting `files`' certificate chain.
fn tls_server(files: &TlsFiles) -> Result<rustls::ServerConfig> {
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| SetupError::tls(format!("reading {}", files.key.display()), e))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SetupError::tls("TLS 1.3", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SetupError::tls("certificate and key do not match", e))
}

/// The certificates of a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| SetupError::tls(format!("reading {shown}"), e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| SetupError::tls(format!("parsing {shown}"), e))?;
    if certs.is_empty() {
        return Err(SetupError::Tls(format!("{shown} holds no certificate")));
    }
    Ok(certs)
}

/// The QUIC client config trusting `ca` (a PEM file) or the system roots.
pub fn client_config(ca: Option<&Path>) -> Result<quinn::ClientConfig> {
    client_config_with(ca, true)
}

/// As `client_config`; with `resumption` false every connection makes a
/// full TLS handshake (load tests of handshake cost).
pub fn client_config_with(ca: Option<&Path>, resumption: bool) -> Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let what = || format!("reading CA {}", path.display());
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| SetupError::tls(what(), e))? {
                let cert = cert.map_err(|e| SetupError::tls(what(), e))?;
                roots.add(cert).map_err(|e| SetupError::tls(what(), e))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // Skip system certificates rustls cannot parse rather than fail.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(SetupError::Tls("no trusted certificate authority (pass --ca PEM)".into()));
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SetupError::tls("TLS 1.3", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    if !resumption {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| SetupError::tls("QUIC crypto", e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = Duration::from_secs(30).try_into().map_err(|e| SetupError::tls("idle timeout", e))?;
    transport.keep_alive_interval(Some(Duration::from_secs(5))).max_idle_timeout(Some(idle));
    // QUIC's default first RTT guess (333 ms) means a lost first packet (a
    // broker restarting this very moment) is resent only after about a
    // second; a runner reconnecting against its lease deadline cannot wait
    // that long. Resending an Initial early costs one small datagram.
    transport.initial_rtt(Duration::from_millis(100));
    config.transport_config(Arc::new(transport));
    Ok(config)
}
