//! Errors of setting a broker up: files, TLS material, keys, the store, the
//! socket. Each names what it was doing, so the CLI can print it as is.

use std::fmt;
use std::net::SocketAddr;

use crate::store::StoreError;

/// Why a broker (or a client's TLS configuration) could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// A file or directory could not be read or written.
    Io {
        /// What kind of thing (`"org"`, `"user"`, `"pool"`...).
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// TLS material is missing, malformed or inconsistent.
    Tls(String),
    /// The offline-license signing key could not be made or read.
    SigningKey(String),
    /// The store could not be opened, loaded or initialised.
    Store {
        /// What kind of thing (`"org"`, `"user"`, `"pool"`...).
        what: &'static str,
        /// The underlying error.
        source: StoreError,
    },
    /// The listen address could not be bound.
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The system's secure random source failed (no keys could be made).
    Random,
    /// The clock reads earlier than the latest time a previous run recorded.
    ClockBehind {
        /// The clock now.
        now: crate::value::Millis,
        /// The latest time recorded.
        high_water: crate::value::Millis,
    },
    /// The clock reads further ahead of the latest time a previous run
    /// recorded than a broker can plausibly have been down.
    ClockAhead {
        /// The clock now.
        now: crate::value::Millis,
        /// The latest time recorded.
        high_water: crate::value::Millis,
        /// The most it may read ahead (`--max-clock-leap`).
        max: std::time::Duration,
    },
    /// The cluster (etcd) could not be reached or configured.
    Cluster(String),
}

impl SetupError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
        let what = what.into();
        move |source| SetupError::Io { what, source }
    }

    /// A TLS error with its context.
    pub fn tls(what: impl fmt::Display, e: impl fmt::Display) -> SetupError {
        SetupError::Tls(format!("{what}: {e}"))
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Io { what, source } => write!(f, "{what}: {source}"),
            SetupError::Tls(why) => write!(f, "TLS: {why}"),
            SetupError::SigningKey(why) => write!(f, "offline signing key: {why}"),
            SetupError::Store { what, source } => write!(f, "{what}: {source}"),
            SetupError::Bind { addr, source } => write!(f, "binding {addr}: {source}"),
            SetupError::Random => f.write_str("the system's secure random source failed"),
            SetupError::ClockBehind { now, high_water } => write!(
                f,
                "the clock reads {}, earlier than {} recorded by a previous run: leases and offline licenses \
                 would be judged on the wrong time. Fix the clock, or start with --allow-clock-rollback if \
                 you are sure it is right now",
                crate::value::format_utc(*now),
                crate::value::format_utc(*high_water)
            ),
            SetupError::ClockAhead { now, high_water, max } => write!(
                f,
                "the clock reads {}, more than {} (--max-clock-leap) after {} recorded by a previous run: \
                 offline licenses and activations would be freed before their time. Fix the clock, or, if \
                 the broker really was down that long, start with --allow-clock-leap",
                crate::value::format_utc(*now),
                humantime::format_duration(*max),
                crate::value::format_utc(*high_water)
            ),
            SetupError::Cluster(why) => write!(f, "cluster: {why}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Io { source, .. } | SetupError::Bind { source, .. } => Some(source),
            SetupError::Store { source, .. } => Some(source),
            _ => None,
        }
    }
}
