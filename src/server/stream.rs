//! One task per request stream: splits bytes into frames, enforces the
//! Hello-first rule, hands each request to the handler, and writes the
//! responses of everything read in one go back in one write (pipelining).
//!
//! Hot requests are answered synchronously, without creating a future per
//! request; only requests that need the store are awaited.
//!
//! Bad input never ends the connection: an undecodable frame gets a
//! `BAD_FRAME` answer and the stream goes on; only a broken length prefix or
//! a wrong protocol version finishes the stream, since nothing after it can
//! be understood.

use std::sync::Arc;

use quinn::{RecvStream, SendStream};

use super::handler::{self, Call};
use super::latency;
use super::waiting;
use super::{ConnCtx, Shared};
use crate::core::{Broker, KeyHash, Principal, Result as CoreResult, Target, Ticket};
use crate::proto::{
    decode_client, encode, ClientDecoded, ClientFrame, DecodeError, ErrorCode, FrameBuf, FrameError, Hello, Outcome,
    Req, Request, Response, ServerFrame, Welcome, WireError, MAX_FRAME, MIN_VERSION, VERSION,
};

/// Most bytes taken from the stream per read (quinn hands over its own
/// buffer: no scratch buffer per stream).
const READ_CHUNK: usize = 32 * 1024;

/// Answers buffered before they are written: a client that pipelines faster
/// than it reads gets its answers in pieces of about this size, and the
/// stream decodes no more of its requests until the piece is written.
const OUT_HIGH_WATER: usize = 32 * 1024;

/// QUIC application close code for a connection that did not read its
/// answers within the write deadline.
pub const NOT_READING_CODE: u32 = 4;

/// The authenticated caller of a stream, re-resolved when the directory changes.
struct Caller {
    key: KeyHash,
    principal: Principal,
    /// Directory version the principal was resolved at.
    version: u64,
    /// The protocol version this stream speaks (its `Hello`'s).
    proto: u16,
}

/// What to do after a frame was handled synchronously.
enum Next {
    Continue,
    Finish,
    /// Needs the store: await it, then answer request `id`.
    Slow {
        id: u64,
        body: Req,
    },
    /// A cluster node's `Hello` it cannot welcome by itself: ask etcd
    /// where the key's org is served.
    Route(Hello),
}

/// Per-stream state.
struct StreamState {
    caller: Option<Caller>,
    tickets: Tickets,
    /// On a cluster node: the fences' version at which this node was last
    /// seen serving the caller's org (see `served_here`).
    served_at: Option<u64>,
}

pub(super) async fn serve(shared: Arc<Shared>, ctx: Arc<ConnCtx>, mut send: SendStream, mut recv: RecvStream) {
    let mut frames = FrameBuf::new();
    let mut out = Vec::with_capacity(4096);
    let mut state = StreamState { caller: None, tickets: Tickets::default(), served_at: None };
    // Answers to waiting `Checkout` requests come later, from their tasks.
    let (late_tx, mut late_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(waiting::LATE_QUEUE);
    // Whole frames already read but not yet handled (answers were flushed first).
    let mut backlog = false;
    // The requests answered since the last write, by kind, and when the
    // read that brought them returned (for the latency histogram).
    let mut tally = latency::Tally::default();
    let mut read_at = std::time::Instant::now();
    loop {
        if !backlog {
            // A frame that has started must finish within the frame deadline:
            // a stranger cannot hold a half-sent frame's buffer for ever.
            let deadline = match frames.pending() {
                0 => None,
                _ => Some(shared.options.frame_timeout),
            };
            // (quinn's `read_chunk` is cancel-safe: a late answer winning the race loses no bytes.)
            let read = tokio::select! {
                r = read_within(&mut recv, deadline) => r,
                Some(answer) = late_rx.recv() => {
                    if !write_within(&shared, &ctx, &mut send, &answer).await {
                        return;
                    }
                    continue;
                }
            };
            match read {
                Read::Bytes(chunk) => {
                    if shared.latencies.enabled() {
                        read_at = std::time::Instant::now();
                    }
                    frames.extend(&chunk.bytes);
                }
                Read::End => break,
                Read::Late => {
                    let err = WireError::new(ErrorCode::BadFrame, "frame not completed within the deadline");
                    encode(&ServerFrame::Error(err), &mut out);
                    let _ = write_within(&shared, &ctx, &mut send, &out).await;
                    let _ = recv.stop(quinn::VarInt::from_u32(0));
                    break;
                }
            }
        }
        // One clock reading per read: every request in it arrived together.
        let now = shared.clock.now();
        let mut finish = false;
        backlog = false;
        loop {
            if out.len() >= OUT_HIGH_WATER {
                backlog = true;
                break;
            }
            let decoded = match frames.next_frame() {
                Ok(Some(body)) => decode_client(body),
                Ok(None) => break,
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge(_) => ErrorCode::FrameTooLarge,
                        FrameError::Empty => ErrorCode::BadFrame,
                    };
                    encode(&ServerFrame::Error(WireError::new(code, e.to_string())), &mut out);
                    finish = true;
                    break;
                }
            };
            match on_frame(&shared, &ctx, &mut state, decoded, now, &mut out, &mut tally) {
                Next::Continue => {}
                Next::Finish => {
                    finish = true;
                    break;
                }
                Next::Route(hello) => {
                    if route_hello(&shared, &ctx, &mut state.caller, hello, &mut out).await {
                        finish = true;
                        break;
                    }
                }
                Next::Slow { id, body } => {
                    let key = state.caller.as_ref().map(|c| c.key);
                    let outcome = match authorised(&shared, &mut state.caller) {
                        Err(e) => Some(Outcome::Err(e)),
                        Ok((p, proto)) => {
                            let call = Call { shared: &shared, ctx: &ctx, p, now: shared.clock.now(), proto };
                            match (body, key) {
                                (Req::Checkout { org, pool, machine, nonce, wait_ms, labels }, Some(key)) => {
                                    let target = crate::core::Target { org, pool, machine };
                                    let wait = std::time::Duration::from_millis(wait_ms).min(waiting::MAX_WAIT);
                                    let req = waiting::WaitReq { id, target, nonce, wait, key, labels };
                                    waiting::start(&shared, &ctx, p, proto, req, &late_tx).await.map(into_outcome)
                                }
                                (body, _) => Some(into_outcome(handler::slow(&call, body).await)),
                            }
                        }
                    };
                    if let Some(outcome) = outcome {
                        respond(id, outcome, &mut out);
                    }
                }
            }
        }
        if !out.is_empty() {
            if !write_within(&shared, &ctx, &mut send, &out).await {
                return;
            }
            shared.latencies.record(&mut tally, read_at.elapsed());
            out.clear();
            if out.capacity() > 4 * OUT_HIGH_WATER {
                // A burst's worth of answers is not kept for the stream's life.
                out.shrink_to(4096);
            }
        }
        if finish {
            break;
        }
    }
    let _ = send.finish();
}

/// What a read brought.
enum Read {
    Bytes(quinn::Chunk),
    /// The stream ended (or failed).
    End,
    /// A frame that had started missed its deadline.
    Late,
}

/// Reads the next bytes, within `deadline` if one is given.
async fn read_within(recv: &mut RecvStream, deadline: Option<std::time::Duration>) -> Read {
    let read = async {
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => Read::Bytes(chunk),
            Ok(None) | Err(_) => Read::End,
        }
    };
    match deadline {
        None => read.await,
        Some(d) => tokio::time::timeout(d, read).await.unwrap_or(Read::Late),
    }
}

/// Writes answers, within the write deadline: a client that does not read
/// them (and so grants no flow-control credit) has its connection closed
/// once the deadline passes, instead of holding the broker's buffers. The
/// stream reads none of its requests meanwhile. False when the stream (or
/// the connection) is done.
pub(super) async fn write_within(shared: &Shared, ctx: &ConnCtx, send: &mut SendStream, bytes: &[u8]) -> bool {
    match tokio::time::timeout(shared.options.write_timeout, send.write_all(bytes)).await {
        Ok(written) => written.is_ok(),
        Err(_) => {
            if shared.auth_log.allow(shared.clock.now()) {
                tracing::warn!(remote = %ctx.conn.remote_address(), "answers not read in time: closing the connection");
            }
            ctx.conn.close(quinn::VarInt::from_u32(NOT_READING_CODE), b"answers not read within the deadline");
            shared.penalize(ctx);
            false
        }
    }
}

/// Appends the response to `out`, or, if it would not fit in one frame, a
/// `RESPONSE_TOO_LARGE` error in its place: the broker never sends a frame
/// its clients must refuse.
pub(super) fn respond(id: u64, outcome: Outcome, out: &mut Vec<u8>) {
    let start = out.len();
    encode(&ServerFrame::Response(Response { id, outcome }), out);
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        let err = super::paging::too_large(&format!("answer's {len} bytes"));
        encode(&ServerFrame::Response(Response { id, outcome: Outcome::Err(err) }), out);
    }
}

pub(super) fn into_outcome(r: Result<crate::proto::Resp, WireError>) -> Outcome {
    match r {
        Ok(resp) => Outcome::Ok(resp),
        Err(e) => Outcome::Err(e),
    }
}

fn on_frame(
    shared: &Shared,
    ctx: &ConnCtx,
    state: &mut StreamState,
    frame: ClientDecoded,
    now: crate::core::Millis,
    out: &mut Vec<u8>,
    tally: &mut latency::Tally,
) -> Next {
    match frame {
        ClientDecoded::Bad { id, error } => {
            let detail = match error {
                DecodeError::Body(e) => e.to_string(),
                other => other.to_string(),
            };
            let err = WireError::new(
                ErrorCode::BadFrame,
                format!("frame could not be decoded ({detail}); check field types and order against docs/PROTOCOL.md"),
            );
            match id {
                Some(id) => encode(&ServerFrame::Response(Response { id, outcome: Outcome::Err(err) }), out),
                None => encode(&ServerFrame::Error(err), out),
            }
            stranger_refused(shared, ctx)
        }
        ClientDecoded::Frame(ClientFrame::Hello(hello)) => on_hello(shared, ctx, &mut state.caller, hello, out),
        ClientDecoded::Frame(ClientFrame::Request(Request { id, body })) => {
            let (principal, proto) = match authorised(shared, &mut state.caller) {
                Ok(caller) => caller,
                Err(e) => {
                    encode(&ServerFrame::Response(Response { id, outcome: Outcome::Err(e) }), out);
                    return stranger_refused(shared, ctx);
                }
            };
            // A cluster node answers for the orgs it serves, and for the
            // operator's requests that name none; the rest are sent on.
            if let Err(e) = served_here(shared, &mut state.served_at, principal, body.org()) {
                encode(&ServerFrame::Response(Response { id, outcome: Outcome::Err(e) }), out);
                return Next::Continue;
            }
            let call = Call { shared, ctx, p: principal, now, proto };
            if shared.latencies.enabled() {
                tally.add(latency::op_of(&body));
            }
            match handler::fast(&call, &mut state.tickets, body) {
                Ok(result) => {
                    respond(id, into_outcome(result), out);
                    Next::Continue
                }
                Err(body) => Next::Slow { id, body },
            }
        }
    }
}

/// On a cluster node, refuses (`NOT_OWNER`) a request about an org this
/// node does not serve (the one it names, else the caller's). A member's
/// requests are about their own org: that this node serves it is cached
/// per stream until the fences change (an atomic load per request). Every
/// admission and renewal also checks the node's lease (`Shared::valid`).
fn served_here(
    shared: &Shared,
    served_at: &mut Option<u64>,
    principal: &Principal,
    named: Option<&crate::core::OrgName>,
) -> Result<(), WireError> {
    let Some(seat) = &shared.cluster else { return Ok(()) };
    let org = named.or(principal.org.as_ref());
    let own = org.is_some() && org == principal.org.as_ref();
    let version = seat.fences.version();
    if own && *served_at == Some(version) {
        return Ok(());
    }
    shared.owning(org)?;
    if own {
        *served_at = Some(version);
    }
    Ok(())
}

/// Frames a connection may have refused before any of its streams
/// authenticated: past this, the connection is closed, so a stranger
/// pipelining junk pays a handshake per few answers instead of making the
/// broker decode and answer all of it.
pub const MAX_STRANGER_REFUSALS: u32 = 16;

/// QUIC application close code for a connection closed after
/// `MAX_STRANGER_REFUSALS`.
pub const STRANGER_REFUSALS_CODE: u32 = 5;

/// Counts a refused frame; closes a connection that never authenticated
/// once it has had `MAX_STRANGER_REFUSALS` of them.
fn stranger_refused(shared: &Shared, ctx: &ConnCtx) -> Next {
    use std::sync::atomic::Ordering::Relaxed;
    // Relaxed: per-connection counts; exactness across streams does not matter.
    if ctx.authenticated.load(Relaxed) {
        return Next::Continue;
    }
    if ctx.stranger_refusals.fetch_add(1, Relaxed) + 1 < MAX_STRANGER_REFUSALS {
        return Next::Continue;
    }
    ctx.conn.close(quinn::VarInt::from_u32(STRANGER_REFUSALS_CODE), b"too many refused frames before authenticating");
    shared.penalize(ctx);
    Next::Finish
}

/// Answers a Hello (or, on a cluster node, hands it to `route_hello`).
fn on_hello(shared: &Shared, ctx: &ConnCtx, caller: &mut Option<Caller>, hello: Hello, out: &mut Vec<u8>) -> Next {
    if caller.is_some() {
        let err = WireError::new(ErrorCode::OutOfOrder, "Hello may only be the first frame of a stream");
        encode(&ServerFrame::Error(err), out);
        return Next::Continue;
    }
    if !(MIN_VERSION..=VERSION).contains(&hello.version) {
        let err = WireError::new(
            ErrorCode::UnsupportedVersion,
            format!("this broker speaks protocol versions {MIN_VERSION} to {VERSION}, not {}", hello.version),
        );
        encode(&ServerFrame::Error(err), out);
        return Next::Finish;
    }
    if let Some(seat) = &shared.cluster {
        // Welcomed here only as a member of an org this node serves; an
        // operator's key is re-read from etcd (another node may have
        // revoked it), any other key is routed.
        let key = crate::keys::hash(&hello.api_key);
        let here = shared.core.authenticate(&key).is_ok_and(|p| p.org.as_ref().is_some_and(|o| seat.serves(o)));
        if !here {
            return Next::Route(hello);
        }
    }
    match welcome(shared, ctx, caller, &hello, out) {
        true => Next::Finish,
        false => Next::Continue,
    }
}

/// Welcomes the `Hello`'s key if this broker knows it; returns true when
/// the stream must be finished.
fn welcome(shared: &Shared, ctx: &ConnCtx, caller: &mut Option<Caller>, hello: &Hello, out: &mut Vec<u8>) -> bool {
    let key = crate::keys::hash(&hello.api_key);
    let version = shared.core.version();
    match shared.core.authenticate(&key) {
        Ok(principal) => {
            let welcome = Welcome {
                version: hello.version,
                lease_ttl_ms: shared.core.lease_ttl().as_millis() as u64,
                org: principal.org.clone(),
                email: principal.email.to_string(),
                role: principal.role,
            };
            encode(&ServerFrame::Welcome(welcome), out);
            if let (Some(_), Some(org)) = (&shared.cluster, &principal.org) {
                shared.members.insert(ctx.id, (org.clone(), ctx.conn.clone()));
            }
            *caller = Some(Caller { key, principal, version, proto: hello.version });
            // Relaxed: read only by this connection's streams, as a hint.
            ctx.authenticated.store(true, std::sync::atomic::Ordering::Relaxed);
            // notify_one keeps a permit if the connection task is not waiting yet.
            ctx.welcomed.notify_one();
            false
        }
        Err(e) => {
            encode(&ServerFrame::Error(e.into()), out);
            failed_hello(shared, ctx)
        }
    }
}

/// A cluster node's `Hello` for a key it does not serve: welcomed if it is
/// an operator's key (refreshed from etcd), redirected to the node serving
/// the key's org (an empty redirect while the org is moving: the client
/// tries again shortly), refused if etcd has no such key. Returns true when
/// the stream must be finished.
async fn route_hello(
    shared: &Shared,
    ctx: &ConnCtx,
    caller: &mut Option<Caller>,
    hello: Hello,
    out: &mut Vec<u8>,
) -> bool {
    let Some(seat) = &shared.cluster else { return welcome(shared, ctx, caller, &hello, out) };
    match seat.route(crate::keys::hash(&hello.api_key)).await {
        crate::cluster::Route::Operator(record) => {
            shared.core.apply(&[crate::core::Change::Put(record)], shared.clock.now());
            welcome(shared, ctx, caller, &hello, out)
        }
        crate::cluster::Route::Elsewhere(server) => {
            encode(&ServerFrame::Redirect { server }, out);
            true
        }
        crate::cluster::Route::Busy => {
            encode(&ServerFrame::Redirect { server: String::new() }, out);
            true
        }
        crate::cluster::Route::Unknown => {
            encode(&ServerFrame::Error(crate::core::Error::Unauthorized.into()), out);
            failed_hello(shared, ctx)
        }
    }
}

/// Counts a failed authentication: logged (source address, never the key;
/// at most a few lines a second), and the connection is closed after
/// `MAX_FAILED_HELLOS`, so guessing keys costs a handshake per few guesses.
fn failed_hello(shared: &Shared, ctx: &ConnCtx) -> bool {
    // Relaxed: a per-connection count; exactness across streams does not matter.
    let failures = ctx.failed_hellos.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    shared.core.note_auth_failure();
    if shared.auth_log.allow(shared.clock.now()) {
        tracing::warn!(remote = %ctx.conn.remote_address(), failures, "authentication failed");
    }
    let second = shared.clock.now().0 / 1000;
    if shared.gate.failed(ctx.conn.remote_address().ip(), second) {
        ctx.conn.close(quinn::VarInt::from_u32(AUTH_FAILED_CODE), b"too many failed Hellos from this address");
        shared.penalize(ctx);
        return true;
    }
    if failures >= MAX_FAILED_HELLOS {
        ctx.conn.close(quinn::VarInt::from_u32(AUTH_FAILED_CODE), b"too many failed Hellos");
        shared.penalize(ctx);
        return true;
    }
    false
}

/// Failed `Hello`s a connection may make before it is closed.
pub const MAX_FAILED_HELLOS: u32 = 3;

/// QUIC application close code for a connection closed after failed `Hello`s.
pub const AUTH_FAILED_CODE: u32 = 3;

/// The stream's principal, re-resolved if the directory changed since (so
/// a revoked key or a removed user loses access on their next request),
/// and the protocol version the stream speaks.
fn authorised<'a>(shared: &Shared, caller: &'a mut Option<Caller>) -> Result<(&'a Principal, u16), WireError> {
    let Some(c) = caller.as_mut() else {
        return Err(WireError::new(ErrorCode::OutOfOrder, "send Hello before any request"));
    };
    let version = shared.core.version();
    if version != c.version {
        c.principal = shared.core.authenticate(&c.key)?;
        c.version = version;
    }
    Ok((&c.principal, c.proto))
}

/// Admission tickets a stream has resolved, valid while the directory
/// version is unchanged: saves the directory lock and the machine lookup on
/// every acquire. The core decides what a ticket allows; this only caches.
#[derive(Default)]
pub(super) struct Tickets {
    version: u64,
    entries: Vec<Ticket>,
}

/// Most tickets (pool × machine pairs) a stream remembers.
const TICKETS: usize = 64;

impl Tickets {
    /// The cached ticket for `target`, resolving (and caching) it on a miss.
    pub fn get(&mut self, core: &Broker, p: &Principal, target: &Target) -> CoreResult<&Ticket> {
        let version = core.version();
        if version != self.version {
            self.entries.clear();
            self.version = version;
        }
        let found = self.entries.iter().position(|t| t.is_for(&target.org, target.pool, &target.machine));
        let index = match found {
            Some(i) => i,
            None => {
                let ticket = core.resolve(p, target)?;
                if self.entries.len() >= TICKETS {
                    self.entries.remove(0);
                }
                self.entries.push(ticket);
                self.entries.len() - 1
            }
        };
        Ok(&self.entries[index])
    }
}
