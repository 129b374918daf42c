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
use std::time::{Duration, Instant};

use quinn::{RecvStream, SendStream};

use super::handler::{self, Call, Later};
use super::hello::{self, SignedIn};
use super::waiting::{self, Late};
use super::{ConnCtx, Shared};
use crate::core::{Millis, OrgName, Principal};
use crate::latency;
use crate::operations::TicketCache;
use crate::proto::{
    decode_client, encode, hot, ClientDecoded, ClientFrame, DecodeError, ErrorCode, FrameBuf, FrameError, Hello,
    Outcome, Request, Response, ServerFrame, Version, WireError, MAX_FRAME,
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

/// Frames a connection may have refused before any of its streams
/// authenticated: past this, the connection is closed, so a stranger
/// pipelining junk pays a handshake per few answers instead of making the
/// broker decode and answer all of it.
pub const MAX_STRANGER_REFUSALS: u32 = 16;

/// QUIC application close code for a connection closed after
/// `MAX_STRANGER_REFUSALS`.
pub const STRANGER_REFUSALS_CODE: u32 = 5;

/// What to do after a frame was handled synchronously.
enum Next {
    Continue,
    Finish,
    /// Needs the store: await it, then answer request `id`.
    Slow {
        id: u64,
        later: Later,
    },
    /// A `Hello`: signing in may ask etcd (a cluster node).
    Hello(Hello),
}

/// One request stream.
struct Stream {
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    caller: Option<SignedIn>,
    tickets: TicketCache,
    /// On a cluster node: the fences' version at which this node was last
    /// seen serving the caller's org (see `served_here`).
    served_at: Option<u64>,
    /// Where waiting `Checkout`s send their answers when they come.
    late: Late,
    /// Answers not yet written.
    out: Vec<u8>,
    /// The requests answered since the last write, by kind (for the latency histogram).
    tally: latency::Tally,
    /// The names the last hot request carried, shared with the next.
    recent: hot::Recent,
    /// The fixed claims of the last token issued here (see `Tokens::issue_after`).
    fixed: parking_lot::Mutex<super::token::Fixed>,
}

pub(super) async fn serve(shared: Arc<Shared>, ctx: Arc<ConnCtx>, mut send: SendStream, mut recv: RecvStream) {
    // Answers to waiting `Checkout` requests come later, from their tasks.
    let (late, mut late_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(waiting::LATE_QUEUE);
    let out = Vec::with_capacity(4096);
    let mut s = Stream {
        shared,
        ctx,
        caller: None,
        tickets: TicketCache::default(),
        served_at: None,
        late,
        out,
        tally: <_>::default(),
        recent: <_>::default(),
        fixed: <_>::default(),
    };
    let mut frames = FrameBuf::new();
    // Whole frames already read but not yet handled (answers were flushed first).
    let mut backlog = false;
    // When the read that brought the requests returned (for the latency histogram).
    let mut read_at = Instant::now();
    loop {
        if !backlog {
            let deadline = (frames.pending() > 0).then_some(s.shared.options.frame_timeout);
            // (quinn's `read_chunk` is cancel-safe: a late answer winning the race loses no bytes.)
            let read = tokio::select! {
                r = read_within(&mut recv, deadline) => r,
                Some(answer) = late_rx.recv() => match s.write(&mut send, &answer).await {
                    true => continue,
                    false => return,
                },
            };
            match read {
                Read::Bytes(chunk) => {
                    if s.shared.load.latencies.enabled() {
                        read_at = Instant::now();
                    }
                    frames.extend(&chunk.bytes);
                }
                Read::End => break,
                Read::Late => {
                    s.late_frame(&mut send, &mut recv).await;
                    break;
                }
            }
        }
        let finish;
        (finish, backlog) = s.handle(&mut frames).await;
        if !s.flush(&mut send, read_at).await {
            return;
        }
        if finish {
            break;
        }
    }
    let _ = send.finish();
}

impl Stream {
    /// Handles the whole frames read so far, answering into `out`; returns
    /// (finish the stream, frames are left for after a flush).
    async fn handle(&mut self, frames: &mut FrameBuf) -> (bool, bool) {
        // One clock reading per read: every request in it arrived together.
        let now = self.shared.ops.clock().now();
        loop {
            if self.out.len() >= OUT_HIGH_WATER {
                return (false, true);
            }
            let decoded = match frames.next_frame() {
                // The hot requests by hand, everything else (and every error) the generic way.
                Ok(Some(body)) => match hot::request(body, &mut self.recent) {
                    Some(frame) => ClientDecoded::Frame(frame),
                    None => decode_client(body),
                },
                Ok(None) => return (false, false),
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge(_) => ErrorCode::FrameTooLarge,
                        FrameError::Empty => ErrorCode::BadFrame,
                    };
                    encode(&ServerFrame::Error(WireError::new(code, e.to_string())), &mut self.out);
                    return (true, false);
                }
            };
            let finish = match self.on_frame(decoded, now) {
                Next::Continue => false,
                Next::Finish => true,
                Next::Hello(h) => hello::hello(&self.shared, &self.ctx, &mut self.caller, h, &mut self.out).await,
                Next::Slow { id, later } => {
                    self.slow(id, later).await;
                    false
                }
            };
            if finish {
                return (true, false);
            }
        }
    }

    /// Awaits what needs the store, for the caller `on_frame` authorised,
    /// at an instant of its own (the requests before it in the batch may
    /// have waited for the store).
    async fn slow(&mut self, id: u64, later: Later) {
        let Some(caller) = self.caller.as_ref() else {
            // Unreachable: `on_frame` hands over work only for an authorised caller.
            let err = WireError::new(ErrorCode::OutOfOrder, "send Hello before any request");
            return respond(id, Outcome::Err(err), Version::CURRENT, &mut self.out);
        };
        let (key, proto, p) = (caller.key, caller.proto, caller.principal());
        let now = self.shared.ops.clock().now();
        let call = Call { shared: &self.shared, ctx: &self.ctx, p, key, now, proto, fixed: &self.fixed };
        if let Some(reply) = handler::slow(&call, later, id, &self.late).await {
            respond(id, into_outcome(reply), proto, &mut self.out);
        }
    }

    fn on_frame(&mut self, frame: ClientDecoded, now: Millis) -> Next {
        let Request { id, body } = match frame {
            ClientDecoded::Bad { id, error } => return self.undecodable(id, error),
            ClientDecoded::Frame(ClientFrame::Hello(hello)) => return Next::Hello(hello),
            ClientDecoded::Frame(ClientFrame::Request(request)) => request,
        };
        let (shared, ctx) = (&self.shared, &self.ctx);
        let Some(caller) = self.caller.as_mut() else {
            let err = WireError::new(ErrorCode::OutOfOrder, "send Hello before any request");
            return refused(shared, ctx, id, err, &mut self.out);
        };
        let (key, proto) = (caller.key, caller.proto);
        if !proto.lists(&body) {
            // A request of a later version than the stream's: unknown to its document.
            let err =
                WireError::new(ErrorCode::BadFrame, format!("no such request in protocol version {}", proto.get()));
            respond(id, Outcome::Err(err), proto, &mut self.out);
            return Next::Continue;
        }
        let principal = match caller.authorised(shared.ops.core()) {
            Ok(p) => p,
            Err(e) => return refused(shared, ctx, id, e, &mut self.out),
        };
        // A cluster node answers for the orgs it serves, and for the
        // operator's requests that name none; the rest are sent on.
        if let Err(e) = served_here(shared, &mut self.served_at, principal, body.org()) {
            respond(id, Outcome::Err(e), proto, &mut self.out);
            return Next::Continue;
        }
        if shared.load.latencies.enabled() {
            self.tally.add(latency::op_of(&body));
        }
        let call = Call { shared, ctx, p: principal, key, now, proto, fixed: &self.fixed };
        match handler::fast(&call, &mut self.tickets, body) {
            Ok(result) => {
                respond(id, into_outcome(result), proto, &mut self.out);
                Next::Continue
            }
            Err(later) => Next::Slow { id, later },
        }
    }

    /// Answers a frame that could not be decoded.
    fn undecodable(&mut self, id: Option<u64>, error: DecodeError) -> Next {
        let detail = match error {
            DecodeError::Body(e) => e.to_string(),
            other => other.to_string(),
        };
        let err = WireError::new(
            ErrorCode::BadFrame,
            format!("frame could not be decoded ({detail}); check field types and order against docs/PROTOCOL.md"),
        );
        match id {
            Some(id) => encode(&ServerFrame::Response(Response { id, outcome: Outcome::Err(err) }), &mut self.out),
            None => encode(&ServerFrame::Error(err), &mut self.out),
        }
        stranger_refused(&self.shared, &self.ctx)
    }

    /// Writes the answers so far, recording their latencies; false when
    /// the stream is done.
    async fn flush(&mut self, send: &mut SendStream, read_at: Instant) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let out = std::mem::take(&mut self.out);
        let written = self.write(send, &out).await;
        self.out = out;
        if !written {
            return false;
        }
        self.shared.load.latencies.record(&mut self.tally, read_at.elapsed());
        self.out.clear();
        if self.out.capacity() > 4 * OUT_HIGH_WATER {
            // A burst's worth of answers is not kept for the stream's life.
            self.out.shrink_to(4096);
        }
        true
    }

    /// A frame that had started missed its deadline: a stranger cannot hold
    /// a half-sent frame's buffer for ever.
    async fn late_frame(&mut self, send: &mut SendStream, recv: &mut RecvStream) {
        let err = WireError::new(ErrorCode::BadFrame, "frame not completed within the deadline");
        encode(&ServerFrame::Error(err), &mut self.out);
        let out = std::mem::take(&mut self.out);
        let _ = self.write(send, &out).await;
        let _ = recv.stop(quinn::VarInt::from_u32(0));
    }

    async fn write(&self, send: &mut SendStream, bytes: &[u8]) -> bool {
        write_within(&self.shared, &self.ctx, send, bytes).await
    }
}

/// Refuses request `id` of a caller not (or no longer) authenticated.
fn refused(shared: &Shared, ctx: &ConnCtx, id: u64, err: WireError, out: &mut Vec<u8>) -> Next {
    encode(&ServerFrame::Response(Response { id, outcome: Outcome::Err(err) }), out);
    stranger_refused(shared, ctx)
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
async fn read_within(recv: &mut RecvStream, deadline: Option<Duration>) -> Read {
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
            if shared.auth_log.allow(shared.ops.clock().now()) {
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
/// its clients must refuse. A refusal goes with a code the stream's
/// version lists (`Version::code`).
pub(super) fn respond(id: u64, outcome: Outcome, proto: Version, out: &mut Vec<u8>) {
    // A hot answer is written by hand (and always fits).
    if hot::response(id, &outcome, out) {
        return;
    }
    let outcome = match outcome {
        Outcome::Err(e) => Outcome::Err(WireError { code: proto.code(e.code), ..e }),
        ok => ok,
    };
    let start = out.len();
    encode(&ServerFrame::Response(Response { id, outcome }), out);
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        let err = super::paging::too_large(&format!("answer's {len} bytes"));
        let err = WireError { code: proto.code(err.code), ..err };
        encode(&ServerFrame::Response(Response { id, outcome: Outcome::Err(err) }), out);
    }
}

pub(super) fn into_outcome(r: Result<crate::proto::Resp, WireError>) -> Outcome {
    match r {
        Ok(resp) => Outcome::Ok(resp),
        Err(e) => Outcome::Err(e),
    }
}

/// On a cluster node, refuses (`NOT_OWNER`) a request about an org this
/// node does not serve (the one it names, else the caller's). A member's
/// requests are about their own org: that this node serves it is cached
/// per stream until the fences change (an atomic load per request). Every
/// admission and renewal also checks the node's lease (`Operations::valid`).
fn served_here(
    shared: &Shared,
    served_at: &mut Option<u64>,
    principal: &Principal,
    named: Option<&OrgName>,
) -> Result<(), WireError> {
    let Some(seat) = shared.ops.cluster() else { return Ok(()) };
    let org = named.or(principal.org.as_ref());
    let own = org.is_some() && org == principal.org.as_ref();
    let version = seat.fences_version();
    if own && *served_at == Some(version) {
        return Ok(());
    }
    shared.ops.owning(org)?;
    if own {
        *served_at = Some(version);
    }
    Ok(())
}

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
