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

/// Binds the node's endpoint, once for its whole life: the redirector and
/// the broker take turns on it, so a node never lets go of its address
/// (a rebind would wait for the old endpoint's connections to drain).
/// Accepts nothing until a role sets its server configuration.
pub fn bind(listen: SocketAddr) -> Result<quinn::Endpoint, SetupError> {
    let bind_error = |source| SetupError::Bind { addr: listen, source };
    let socket = crate::server::bind_udp(listen).map_err(bind_error)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime).map_err(bind_error)
}

impl Redirector {
    /// Answers every `Hello` on `endpoint` with `Redirect` to `target`.
    pub fn start(endpoint: quinn::Endpoint, files: &TlsFiles, target: Target) -> Result<Redirector, SetupError> {
        endpoint.set_server_config(Some(tls::server_config(files, HELLO_DEADLINE, tls::Limits::STRANGER, None)?));
        let task = tokio::spawn(accept(endpoint.clone(), target));
        Ok(Redirector { endpoint, task })
    }

    /// Stops answering and hands the endpoint back (connections already
    /// answered close by themselves).
    pub async fn stop(self) -> quinn::Endpoint {
        self.task.abort();
        let _ = self.task.await;
        self.endpoint
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, ClientError};

    /// A `Hello` gets `Redirect` to the current target (empty while nobody
    /// serves); a stream that opens with junk gets nothing and is dropped,
    /// and the endpoint goes on answering the next client.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hellos_are_redirected_and_junk_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_data_dir(dir.path());
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        tls::ensure_self_signed(&files).unwrap();
        let target: Target = Arc::new(Mutex::new(String::new()));
        let endpoint = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let redirector = Redirector::start(endpoint, &files, target.clone()).unwrap();
        let client = crate::client::endpoint(Some(&files.cert), false).unwrap();
        let hello = || Client::connect_on(client.clone(), addr, "localhost", "lbk_any");

        match hello().await {
            Err(ClientError::Redirected { to }) => assert_eq!(to, "", "nobody serves yet"),
            other => panic!("expected a redirect, got {:?}", other.map(|_| ())),
        }
        *target.lock() = "10.1.2.3:4433".to_string();
        match hello().await {
            Err(ClientError::Redirected { to }) => assert_eq!(to, "10.1.2.3:4433"),
            other => panic!("expected a redirect, got {:?}", other.map(|_| ())),
        }

        // Junk instead of a Hello: no answer, the stream ends.
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        let read = tokio::time::timeout(HELLO_DEADLINE + Duration::from_secs(2), recv.read_to_end(1024)).await;
        assert!(!matches!(read, Ok(Ok(ref b)) if !b.is_empty()), "junk gets no answer: {read:?}");
        assert!(matches!(hello().await, Err(ClientError::Redirected { .. })), "and the next client is answered");
        redirector.stop().await;
    }
}
