//! The HTTP/1 connections to one etcd member (or, for `peer`, to another
//! node's web door), kept alive between calls:
//! a call takes an idle connection if one is open (else opens one: TCP,
//! and under `https://` a TLS handshake), and gives it back once its
//! answer was read whole. A call cut short (its bound passed) drops its
//! connection, which closes it: a connection is never reused mid-answer.
//! At most `MAX_IDLE` idle connections are kept per member; a member that
//! closed one is noticed when it is taken (`ready` fails) and another is
//! opened. Whoever calls bounds the call; nothing here retries.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;

/// Idle connections kept per member: as many as the calls a node usually
/// has in flight at once (a placement pass, a checkpoint, a few Hello
/// look-ups); a burst beyond opens more, which close after it.
pub const MAX_IDLE: usize = 8;

/// One etcd member and its idle connections.
pub(crate) struct Member {
    /// `HOST:PORT`.
    pub hostport: String,
    /// Whether it speaks TLS (`https://`).
    pub secure: bool,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Member {
    /// A member at `hostport`, no connection open yet.
    pub fn new(hostport: String, secure: bool) -> Member {
        Member { hostport, secure, idle: Mutex::new(Vec::new()) }
    }

    /// POSTs `body` to `path`: (status, body).
    pub async fn post(
        &self,
        tls: Option<&tokio_rustls::TlsConnector>,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.hostport)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        self.send(tls, request, usize::MAX).await
    }

    /// GETs `path` with `authorization`, reading at most `limit` bytes of
    /// the answer (a longer one fails, and its connection is dropped).
    pub async fn get(
        &self,
        tls: Option<&tokio_rustls::TlsConnector>,
        path: &str,
        authorization: &str,
        limit: usize,
    ) -> Result<(u16, Bytes), String> {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.hostport)
            .header(hyper::header::AUTHORIZATION, authorization)
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("request: {e}"))?;
        self.send(tls, request, limit).await
    }

    /// Sends `request` on an idle connection (or a new one), reads at most
    /// `limit` bytes of the answer: (status, body).
    async fn send(
        &self,
        tls: Option<&tokio_rustls::TlsConnector>,
        request: hyper::Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<(u16, Bytes), String> {
        let mut send = match self.reuse().await {
            Some(send) => send,
            None => self.connect(tls).await?,
        };
        let answer = send.send_request(request).await.map_err(|e| format!("send: {e}"))?;
        let status = answer.status().as_u16();
        let body = http_body_util::Limited::new(answer.into_body(), limit);
        let body = body.collect().await.map_err(|e| format!("read: {e}"))?.to_bytes();
        self.keep(send);
        Ok((status, body))
    }

    /// An idle connection that is still open and ready for a request.
    async fn reuse(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut send = self.idle.lock().pop()?;
            if !send.is_closed() && send.ready().await.is_ok() {
                return Some(send);
            }
        }
    }

    /// Gives a connection back after a whole answer (unless enough are idle).
    fn keep(&self, send: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock();
        if !send.is_closed() && idle.len() < MAX_IDLE {
            idle.push(send);
        }
    }

    /// A new connection (TLS with `tls`), its driver on a task of its own
    /// that ends when the connection closes.
    async fn connect(&self, tls: Option<&tokio_rustls::TlsConnector>) -> Result<SendRequest<Full<Bytes>>, String> {
        let endpoint = self.hostport.as_str();
        let stream = tokio::net::TcpStream::connect(endpoint).await.map_err(|e| format!("connect: {e}"))?;
        let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        open(stream, host, tls.filter(|_| self.secure)).await
    }
}

/// An HTTP/1 connection over `stream` (TLS with `tls`, checking the
/// certificate is `host`'s), driven on a task of its own until it closes.
/// Shared by the etcd client and the webhooks' deliveries (`events::send`).
pub(crate) async fn open(
    stream: tokio::net::TcpStream,
    host: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let _ = stream.set_nodelay(true);
    match tls {
        None => handshake(hyper_util::rt::TokioIo::new(stream)).await,
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("TLS name {host}: {e}"))?;
            let stream = connector.connect(name, stream).await.map_err(|e| format!("TLS handshake: {e}"))?;
            handshake(hyper_util::rt::TokioIo::new(stream)).await
        }
    }
}

/// The HTTP/1 handshake over an established stream; the connection is
/// driven on its own task until it closes (both ends idle and dropped).
async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}
