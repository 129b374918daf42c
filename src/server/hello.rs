//! A stream's `Hello`: the version it speaks and the key it signs in
//! with. Who the key is comes from `Operations::hello` (on a cluster node:
//! welcomed here, redirected to the node that serves the key's org, or
//! told to retry while it moves; the web door's sign-in routes the same way).
//! Failed keys are budgeted: logged at a bounded rate, and a connection
//! (or an address) that keeps failing is closed.

use std::sync::atomic::Ordering;

use super::{ConnCtx, Shared};
use crate::core::{Broker, KeyHash, Principal};
use crate::operations::SignIn;
use crate::proto::{encode, ErrorCode, Hello, ServerFrame, Version, Welcome, WireError, MIN_VERSION, VERSION};

/// Failed `Hello`s a connection may make before it is closed.
pub const MAX_FAILED_HELLOS: u32 = 3;

/// QUIC application close code for a connection closed after failed `Hello`s.
pub const AUTH_FAILED_CODE: u32 = 3;

/// The authenticated caller of a stream, re-resolved when the directory changes.
pub(super) struct SignedIn {
    pub key: KeyHash,
    principal: Principal,
    /// Directory version the principal was resolved at.
    version: u64,
    /// The protocol version this stream speaks (its `Hello`'s).
    pub proto: Version,
}

impl SignedIn {
    /// The stream's principal, re-resolved if the directory changed since
    /// (so a revoked key or a removed user loses access on their next request).
    pub fn authorised(&mut self, core: &Broker) -> Result<&Principal, WireError> {
        let version = core.version();
        if version != self.version {
            self.principal = core.authenticate(&self.key)?;
            self.version = version;
        }
        Ok(&self.principal)
    }

    /// The principal as last authorised (within this request's handling).
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

/// Answers a `Hello`; true when the stream must be finished.
pub(super) async fn hello(
    shared: &Shared,
    ctx: &ConnCtx,
    caller: &mut Option<SignedIn>,
    hello: Hello,
    out: &mut Vec<u8>,
) -> bool {
    if caller.is_some() {
        let err = WireError::new(ErrorCode::OutOfOrder, "Hello may only be the first frame of a stream");
        encode(&ServerFrame::Error(err), out);
        return false;
    }
    let Some(proto) = Version::new(hello.version) else {
        let err = WireError::new(
            ErrorCode::UnsupportedVersion,
            format!("this broker speaks protocol versions {MIN_VERSION} to {VERSION}, not {}", hello.version),
        );
        encode(&ServerFrame::Error(err), out);
        return true;
    };
    let key = crate::keys::hash(&hello.api_key);
    let version = shared.ops.core().version();
    match shared.ops.hello(&key).await {
        SignIn::Here(principal) => {
            welcome(shared, ctx, out, &principal, proto);
            *caller = Some(SignedIn { key, principal, version, proto });
            false
        }
        SignIn::Elsewhere(server) => {
            encode(&redirect(server, proto), out);
            true
        }
        // The client tries again shortly.
        SignIn::Moving => {
            encode(&redirect(String::new(), proto), out);
            true
        }
        SignIn::Unknown => {
            encode(&ServerFrame::Error(crate::core::Error::Unauthorized.into()), out);
            failed_hello(shared, ctx)
        }
    }
}

/// Sends a `Hello` on to `server` (empty: nobody serves the org this
/// instant), in a frame the stream's version lists: `Redirect` from
/// version 4 on; before, an `Error` with `DRAINING` (reconnect) naming it.
fn redirect(server: String, proto: Version) -> ServerFrame {
    if proto.redirects() {
        return ServerFrame::Redirect { server };
    }
    let message = match server.is_empty() {
        true => "no node of the cluster serves this org at the moment; retry shortly".to_string(),
        false => format!("this node of the cluster does not serve this org; connect to {server}"),
    };
    ServerFrame::Error(WireError::new(ErrorCode::Draining, message))
}

/// Welcomes `principal` on this stream.
fn welcome(shared: &Shared, ctx: &ConnCtx, out: &mut Vec<u8>, principal: &Principal, proto: Version) {
    let welcome = Welcome {
        version: proto.get(),
        lease_ttl_ms: shared.ops.core().lease_ttl().as_millis() as u64,
        org: principal.org.clone(),
        email: principal.email.to_string(),
        role: principal.role,
    };
    encode(&ServerFrame::Welcome(welcome), out);
    if let (Some(_), Some(org)) = (shared.ops.cluster(), &principal.org) {
        shared.members.insert(ctx.id, (org.clone(), ctx.conn.clone()));
    }
    // Relaxed: read only by this connection's streams, as a hint.
    ctx.authenticated.store(true, Ordering::Relaxed);
    // notify_one keeps a permit if the connection task is not waiting yet.
    ctx.welcomed.notify_one();
}

/// Counts a failed authentication against its connection and address:
/// logged (source address, never the key; at most a few lines a second),
/// and the connection is closed after `MAX_FAILED_HELLOS`, so guessing
/// keys costs a handshake per few guesses. True when it was closed.
fn failed_hello(shared: &Shared, ctx: &ConnCtx) -> bool {
    // Relaxed: a per-connection count; exactness across streams does not matter.
    let failures = ctx.failed_hellos.fetch_add(1, Ordering::Relaxed) + 1;
    let now = shared.ops.clock().now();
    if shared.auth_log.allow(now) {
        tracing::warn!(remote = %ctx.conn.remote_address(), failures, "authentication failed");
    }
    let why: &[u8] = if shared.gate.failed(ctx.conn.remote_address().ip(), now.0 / 1000) {
        b"too many failed Hellos from this address"
    } else if failures >= MAX_FAILED_HELLOS {
        b"too many failed Hellos"
    } else {
        return false;
    };
    ctx.conn.close(quinn::VarInt::from_u32(AUTH_FAILED_CODE), why);
    shared.penalize(ctx);
    true
}
