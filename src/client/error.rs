//! Why a client call failed: typed for callers that branch on it (a
//! refusal's code, a redirect), and worded with a hint where a failure has
//! a usual cause (an untrusted certificate, a blocked port). Apart from the
//! connection code so both the connector and the calls name failures alike.

use std::net::SocketAddr;
use std::time::Duration;

use crate::proto::{ErrorCode, WireError};

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
