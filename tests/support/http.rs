//! The tests' one HTTP client for the broker's web door (`/metrics`,
//! `/healthz`, the API, the console): HTTP/1.0, one request per connection,
//! the answer read to its end, a 10 s read timeout. Plain std I/O on
//! purpose, so a test of the HTTP server trusts no HTTP client crate; it
//! panics on any I/O or framing failure, which fails the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A GET, with `Authorization: Bearer KEY` when a key is given: (status code, body).
pub fn get(addr: impl ToSocketAddrs, path: &str, key: Option<&str>) -> (u16, String) {
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let (code, _, body) = exchange(addr, &format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n"));
    (code, body)
}

/// `get` from an async test, on a blocking thread.
pub async fn fetch(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
    let (path, key) = (path.to_string(), key.map(str::to_string));
    tokio::task::spawn_blocking(move || get(addr, &path, key.as_deref())).await.unwrap()
}

/// Any request: `head` is the request line and its own headers, to which
/// `Host` and `Content-Length` are added: (status code, head, body).
pub fn request(addr: impl ToSocketAddrs, head: &str, body: &str) -> (u16, String, String) {
    exchange(addr, &format!("{head}\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}", body.len()))
}

/// Sends `raw` on a new connection and reads the answer to its end:
/// (status code, head, body).
fn exchange(addr: impl ToSocketAddrs, raw: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head.to_string(), body.to_string())
}
