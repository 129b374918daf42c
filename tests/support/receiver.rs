//! A webhook receiver on loopback for the tests: it answers every request
//! with a fixed status and verifies signatures as docs/EVENTS.md's
//! "Verifying a webhook request" says (written from the document, with
//! `ring`, nothing of the broker's).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The document's steps 1 to 4, literally: whether the request is genuine.
pub fn doc_verify(secret: &str, timestamp: &str, signature: &str, body: &[u8], now_secs: u64) -> bool {
    // 1. A whole number of seconds, at most 300 s from our clock.
    let Ok(ts) = timestamp.parse::<u64>() else { return false };
    if ts.abs_diff(now_secs) > 300 {
        return false;
    }
    // 2. The timestamp as received, a full stop, the body byte for byte.
    let mut message = timestamp.as_bytes().to_vec();
    message.push(b'.');
    message.extend_from_slice(body);
    // 3. HMAC-SHA256 keyed with the secret's UTF-8 bytes, lower-case hex.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, &message);
    let mine: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    // 4. Any `v1=` of the space-separated signatures equal to ours, in constant time.
    signature.split(' ').filter_map(|s| s.strip_prefix("v1=")).any(|theirs| same(theirs.as_bytes(), mine.as_bytes()))
}

/// Equal, in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One request as the receiver got it.
#[derive(Clone, Debug)]
pub struct Got {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> String {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn verified(&self, secret: &str) -> bool {
        doc_verify(secret, &self.header("webhook-timestamp"), &self.header("webhook-signature"), &self.body, now_secs())
    }
}

/// A receiver on `port` answering `status` to every request, until dropped.
pub struct Receiver {
    got: mpsc::Receiver<Got>,
    stop: Arc<AtomicBool>,
    pub port: u16,
}

impl Receiver {
    /// On `port` (0: one the OS picks).
    pub fn start(port: u16, status: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (tx, got) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(g) = read_request(stream, status) {
                            let _ = tx.send(g);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver { got, stop, port }
    }

    /// The next request, if one comes within `limit`.
    pub fn next(&self, limit: Duration) -> Option<Got> {
        self.got.recv_timeout(limit).ok()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Until the thread sees it, the port stays bound: wait for it to free.
        let started = Instant::now();
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() && started.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn read_request(mut stream: TcpStream, status: u16) -> Option<Got> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let length: usize = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length"))?.1.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(Got { headers, body })
}
