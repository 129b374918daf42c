//! What travels on a connection once it is up: the `Hello` (with the
//! step down to an older broker's version), and the two tasks that read
//! the broker's answers (filed with the batch that asked) and its notices.
//! Apart from `Client` so the calls read as calls, not as framing.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::{ClientError, ConnectFailure};
use crate::proto::{encode, ClientFrame, ErrorCode, FrameBuf, Hello, Notice, Outcome, Resp, ServerFrame};

/// One answer and when it was read.
pub(super) type Answer = (Result<Resp, ClientError>, std::time::Instant);

/// Requests in flight, by batch: a batch's ids are consecutive, so one entry
/// and one wake-up serve all of its requests, however many.
pub(super) struct Batch {
    pub(super) answers: Vec<Option<Answer>>,
    pub(super) remaining: usize,
    pub(super) done: Option<oneshot::Sender<Vec<Option<Answer>>>>,
}

/// First id of each batch in flight → the batch.
pub(super) type Pending = Arc<Mutex<std::collections::BTreeMap<u64, Batch>>>;

fn client_name() -> String {
    format!("license-broker/{}", env!("CARGO_PKG_VERSION"))
}

/// Says `Hello` on a new stream of `conn` in protocol version `version`
/// (this build's, but for a test of an older client), or, if the broker
/// is older and refuses it
/// (`UNSUPPORTED_VERSION`), in each earlier one in turn: requests and
/// answers only ever gain variants at the end, so a newer client works with
/// an older broker for everything that broker knows (what it does not
/// know, it answers `BAD_FRAME`). Returns the stream and the broker's
/// first frame.
pub(super) async fn hello(
    conn: &quinn::Connection,
    addr: SocketAddr,
    api_key: &str,
    mut version: u16,
) -> Result<(quinn::SendStream, quinn::RecvStream, FrameBuf, ServerFrame), ClientError> {
    let failed = |source| ClientError::Connect { addr, source };
    loop {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| failed(ConnectFailure::Handshake(e)))?;
        let hello = ClientFrame::Hello(Hello { version, api_key: api_key.to_string(), client: client_name() });
        let mut buf = Vec::new();
        encode(&hello, &mut buf);
        send.write_all(&buf).await.map_err(|e| failed(ConnectFailure::Hello(e)))?;
        let mut frames = FrameBuf::new();
        let first = read_frame(&mut recv, &mut frames).await?;
        match first {
            ServerFrame::Error(e) if e.code == ErrorCode::UnsupportedVersion && version > 1 => version -= 1,
            first => return Ok((send, recv, frames, first)),
        }
    }
}

async fn read_frame(recv: &mut quinn::RecvStream, frames: &mut FrameBuf) -> Result<ServerFrame, ClientError> {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(frame) = frames.next_message().map_err(|e| ClientError::Protocol(e.to_string()))? {
            return Ok(frame);
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => frames.extend(&chunk[..n]),
            Ok(None) => return Err(ClientError::Closed("stream finished by the broker".into())),
            Err(e) => return Err(ClientError::Closed(e.to_string())),
        }
    }
}

pub(super) async fn read_responses(mut recv: quinn::RecvStream, mut frames: FrameBuf, pending: Pending) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut ready = Vec::new();
    let failure = 'read: loop {
        loop {
            match frames.next_message::<ServerFrame>() {
                Ok(Some(ServerFrame::Response(r))) => ready.push(r),
                Ok(Some(ServerFrame::Error(e))) => break 'read ClientError::Rejected(e),
                Ok(Some(other)) => break 'read ClientError::Protocol(format!("unexpected frame {other:?}")),
                Ok(None) => break,
                Err(e) => break 'read ClientError::Protocol(e.to_string()),
            }
        }
        if !ready.is_empty() {
            // One clock reading and one lock per read, however many answers it carried.
            let at = std::time::Instant::now();
            let mut waiting = pending.lock();
            for r in ready.drain(..) {
                let result = match r.outcome {
                    Outcome::Ok(resp) => Ok(resp),
                    Outcome::Err(e) => Err(ClientError::Rejected(e)),
                };
                deliver(&mut waiting, r.id, (result, at));
            }
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => frames.extend(&chunk[..n]),
            Ok(None) => break ClientError::Closed("stream finished by the broker".into()),
            Err(e) => break ClientError::Closed(e.to_string()),
        }
    };
    let msg = failure.to_string();
    let at = std::time::Instant::now();
    let mut waiting = pending.lock();
    for (_, mut batch) in std::mem::take(&mut *waiting) {
        for slot in batch.answers.iter_mut().filter(|a| a.is_none()) {
            *slot = Some((Err(ClientError::Closed(msg.clone())), at));
        }
        if let Some(tx) = batch.done.take() {
            let _ = tx.send(batch.answers);
        }
    }
}

/// Files one answer with its batch, waking the caller when the batch is complete.
fn deliver(waiting: &mut std::collections::BTreeMap<u64, Batch>, id: u64, answer: Answer) {
    let Some((&first, batch)) = waiting.range_mut(..=id).next_back() else {
        return;
    };
    let Some(slot) = batch.answers.get_mut((id - first) as usize).filter(|s| s.is_none()) else {
        return;
    };
    *slot = Some(answer);
    batch.remaining -= 1;
    if batch.remaining == 0 {
        if let Some(mut done) = waiting.remove(&first) {
            if let Some(tx) = done.done.take() {
                let _ = tx.send(done.answers);
            }
        }
    }
}

pub(super) async fn read_notices(conn: quinn::Connection, tx: mpsc::Sender<Notice>) {
    let Ok(mut recv) = conn.accept_uni().await else {
        return;
    };
    let mut frames = FrameBuf::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        loop {
            match frames.next_message::<Notice>() {
                Ok(Some(n)) => {
                    if tx.send(n).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => frames.extend(&chunk[..n]),
            _ => return,
        }
    }
}
