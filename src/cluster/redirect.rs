//! What a node that does not serve runs on its address: a QUIC endpoint
//! that answers every stream's `Hello` with `Redirect` to the node that
//! serves (or an empty one while none does), and nothing else. It never
//! authenticates, so it holds strangers to the stranger budget: a bounded
//! number of connections, one stream each, a deadline for the `Hello`,
//! and the connection closed once answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::SetupError;
use crate::proto::{decode, encode, ClientFrame, FrameBuf, ServerFrame};

use crate::tls::{self, TlsFiles};

/// Connections the redirector holds at once; more are refused.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long a client has to send its `Hello` (and read the answer).
pub const HELLO_DEADLINE: Duration = Duration::from_secs(5);

/// A running redirector.
pub struct Redirector {
    endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
}

/// Where clients are sent; updated as the claim changes hands.
pub type Target = Arc<Mutex<String>>;

impl Redirector {
    /// Binds `listen` and answers every `Hello` with `Redirect` to `target`.
    pub fn start(listen: SocketAddr, files: &TlsFiles, target: Target) -> Result<Redirector, SetupError> {
        let bind_error = |source| SetupError::Bind { addr: listen, source };
        let socket = crate::server::bind_udp(listen).map_err(bind_error)?;
        let config = tls::server_config(files, HELLO_DEADLINE, tls::Limits::STRANGER, None)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, runtime)
            .map_err(bind_error)?;
        let task = tokio::spawn(accept(endpoint.clone(), target));
        Ok(Redirector { endpoint, task })
    }

    /// Stops answering, closes every connection, and releases the address.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        self.endpoint.close(quinn::VarInt::from_u32(0), b"node now serves");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

async fn accept(endpoint: quinn::Endpoint, target: Target) {
    let open = Arc::new(AtomicUsize::new(0));
    while let Some(incoming) = endpoint.accept().await {
        // Relaxed: an approximate cap.
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            incoming.refuse();
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (open, target) = (open.clone(), target.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(HELLO_DEADLINE, answer(incoming, &target)).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Reads one `Hello` on the first stream and answers it with `Redirect`.
async fn answer(incoming: quinn::Incoming, target: &Target) -> Option<()> {
    let conn = incoming.await.ok()?;
    let (mut send, mut recv) = conn.accept_bi().await.ok()?;
    let mut frames = FrameBuf::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(body) = frames.next_frame().ok()? {
            let reply = match decode::<ClientFrame>(body) {
                Ok(ClientFrame::Hello(_)) => ServerFrame::Redirect { server: target.lock().clone() },
                _ => return None,
            };
            let mut out = Vec::new();
            encode(&reply, &mut out);
            send.write_all(&out).await.ok()?;
            send.finish().ok()?;
            // Let the answer reach the client before the connection goes.
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            conn.close(quinn::VarInt::from_u32(0), b"redirected");
            return Some(());
        }
        let n = recv.read(&mut chunk).await.ok()??;
        frames.extend(&chunk[..n]);
    }
}
