//! A webhook receiver on loopback for `webhooks`: HTTP/1 on a plain TCP
//! socket, one request per connection (the broker opens one per
//! delivery), answered 200 at once or after a delay (a slow receiver).
//! It tells the harness when each request's body arrived; it verifies
//! nothing (the tests do that), it only times.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Largest request head and body taken (an event is a few hundred bytes).
const MAX_REQUEST: usize = 64 * 1024;

/// A running receiver: its port, and each request's body with when it came.
pub struct Receiver {
    pub port: u16,
    pub got: mpsc::UnboundedReceiver<(Instant, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free loopback port; answers after `delay`.
    pub async fn start(delay: Duration) -> Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, got) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(Some(body)) = one(stream, delay).await {
                        let _ = tx.send(body);
                    }
                });
            }
        });
        Ok(Receiver { port, got, task })
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head, then `Content-Length` bytes), notes when it
/// was whole, answers 200 after `delay`.
async fn one(mut s: TcpStream, delay: Duration) -> Result<Option<(Instant, String)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse());
            break (end + 4, length.unwrap_or(Ok(0))?);
        }
    };
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let at = Instant::now();
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    tokio::time::sleep(delay).await;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
    Ok(Some((at, body)))
}
