//! `abuse`'s attackers on the web door (HTTPS), and what a legitimate
//! ops user sees meanwhile. The kinds, each reconnecting after a short
//! pause whenever the broker closes it:
//! - **idle**: opens a TCP connection and sends nothing;
//! - **slow head**: finishes the TLS handshake, then sends a request head
//!   one byte a second, never its end;
//! - **unread report**: asks for a report (`/api/v1/usage` over six days
//!   by minute, with a member's key) and never reads the answer;
//! - **failed keys**: asks with wrong bearer keys as fast as answered, on
//!   one keep-alive connection.
//!
//! The watchers, from 127.0.0.1: a scrape of `/metrics` every second with
//! Prometheus's 10 s timeout (latency, and scrapes missed), and a
//! signed-in org page every half second (latency, failures).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::report::Lat;
use crate::web::Web;

/// How long an unread-report attacker holds its connection without reading.
const UNREAD_FOR: Duration = Duration::from_secs(15);

/// What the web attackers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebKind {
    Idle,
    SlowHead,
    UnreadReport,
    FailedKeys,
}

/// Where the attackers go, and the report they ask for.
pub struct Door {
    pub addr: SocketAddr,
    tls: TlsConnector,
    /// A member's key and org, for the unread reports.
    key: String,
    org: String,
}

impl Door {
    pub fn new(web: &Web, key: &str, org: &str) -> Door {
        Door { addr: web.addr, tls: TlsConnector::from(web.tls_config()), key: key.into(), org: org.into() }
    }

    /// A TCP connection from `ip`.
    async fn tcp(&self, ip: IpAddr) -> std::io::Result<TcpStream> {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(ip, 0))?;
        s.connect(self.addr).await
    }

    /// A TLS session from `ip`, handshake done (within 10 s).
    async fn tls(&self, ip: IpAddr) -> Result<TlsStream<TcpStream>> {
        let tcp = self.tcp(ip).await?;
        let name = ServerName::try_from("localhost")?.to_owned();
        Ok(tokio::time::timeout(Duration::from_secs(10), self.tls.connect(name, tcp)).await??)
    }
}

/// One attack of `kind` from `ip`, until the broker ends it: whether the
/// broker let it get as far as the kind needs (false: refused).
pub async fn once(kind: WebKind, door: &Door, ip: IpAddr) -> bool {
    match kind {
        WebKind::Idle => match door.tcp(ip).await {
            Ok(mut s) => until_closed(&mut s).await,
            Err(_) => false,
        },
        WebKind::SlowHead => match door.tls(ip).await {
            Ok(mut s) => {
                for b in b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".iter().cycle() {
                    if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                true
            }
            Err(_) => false,
        },
        WebKind::UnreadReport => match door.tls(ip).await {
            Ok(mut s) => {
                let ask = format!(
                    "GET /api/v1/usage?org={}&from=6d&step=1m HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
                    door.org, door.key
                );
                let _ = s.write_all(ask.as_bytes()).await;
                // Never reads, for longer than the broker's write deadline.
                tokio::time::sleep(UNREAD_FOR).await;
                true
            }
            Err(_) => false,
        },
        WebKind::FailedKeys => match door.tls(ip).await {
            Ok(mut s) => {
                let ask = "GET /api/v1/usage?org=default HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer lbk_guess\r\n\r\n";
                let mut buf = vec![0u8; 4096];
                while s.write_all(ask.as_bytes()).await.is_ok() {
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
                true
            }
            Err(_) => false,
        },
    }
}

/// Waits (reading) until the broker closes the connection: whether it was
/// held open a while (false: closed at once, a refusal).
async fn until_closed(s: &mut TcpStream) -> bool {
    let opened = Instant::now();
    let _ = s.read(&mut [0u8; 1]).await;
    opened.elapsed() > Duration::from_millis(100)
}

/// What the ops user saw during the attack.
pub struct Watched {
    pub scrape: Lat,
    pub scrapes_missed: u64,
    pub page: Lat,
    pub pages_failed: u64,
}

/// Scrapes every second and fetches the org page (signed in with `key`)
/// every half second, from 127.0.0.1, until `ends`.
pub fn watch(web: Web, key: &str, org: &str, ends: Instant) -> Result<Watched> {
    let cookie = sign_in(&web, key)?;
    let mut w = Watched { scrape: Lat::new(), scrapes_missed: 0, page: Lat::new(), pages_failed: 0 };
    let timeout = Duration::from_secs(10);
    let mut next_scrape = Instant::now();
    while Instant::now() < ends {
        let tick = Instant::now();
        if tick >= next_scrape {
            next_scrape = tick + Duration::from_secs(1);
            match web.get("/metrics", "", timeout) {
                Ok(_) => w.scrape.record(tick.elapsed()),
                Err(_) => w.scrapes_missed += 1,
            }
        }
        let t = Instant::now();
        match web.get(&format!("/org/{org}?range=day"), &format!("Cookie: {cookie}\r\n"), timeout) {
            Ok(_) => w.page.record(t.elapsed()),
            Err(_) => w.pages_failed += 1,
        }
        std::thread::sleep(Duration::from_millis(500).saturating_sub(tick.elapsed()));
    }
    Ok(w)
}

/// Signs in with `key`: the cookie (`name=value`).
fn sign_in(web: &Web, key: &str) -> Result<String> {
    let body = format!("key={key}");
    let (head, _) = web.request(
        &format!(
            "POST /signin HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        Duration::from_secs(10),
    )?;
    let line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).context("no cookie set")?;
    Ok(line.split_once(':').context("a header")?.1.trim().split(';').next().unwrap_or_default().to_string())
}
