//! A TCP proxy a test can cut, for one broker node's etcd traffic: one
//! loopback listener per etcd member, all cut and healed together. Cut
//! `Refuse`, every connection (open or new) is reset, as a host whose
//! route is gone answers; cut `Swallow`, every byte is read and dropped
//! and nothing comes back, as a link that silently loses packets. A heal
//! closes what was swallowed (its bytes are lost) and forwards new
//! connections again. Loopback only; its own small tokio runtime.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the node's etcd traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Open,
    /// Resets every connection.
    Refuse,
    /// Reads and drops everything, answers nothing.
    Swallow,
}

/// A node's proxies to the etcd members.
pub struct Cut {
    mode: Arc<watch::Sender<Mode>>,
    /// The proxies' client URLs, one per member (`http://127.0.0.1:PORT`).
    pub urls: Vec<String>,
    /// Connections accepted so far, over every listener.
    accepted: Arc<AtomicUsize>,
    runtime: tokio::runtime::Runtime,
}

impl Cut {
    /// Proxies to each of `members` (`http://HOST:PORT`), open.
    pub fn start(members: &[String]) -> Cut {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mode = Arc::new(watch::channel(Mode::Open).0);
        let accepted = Arc::new(AtomicUsize::new(0));
        let urls = members
            .iter()
            .map(|m| {
                let upstream = m.trim_start_matches("http://").to_string();
                let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                runtime.spawn(listen(listener, upstream, mode.clone(), accepted.clone()));
                url
            })
            .collect();
        Cut { mode, urls, accepted, runtime }
    }

    /// Connections the node opened to etcd so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Cuts (or heals, with `Mode::Open`) the node's link to etcd.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn listen(listener: TcpListener, upstream: String, mode: Arc<watch::Sender<Mode>>, accepted: Arc<AtomicUsize>) {
    while let Ok((conn, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::Relaxed);
        let rx = mode.subscribe();
        match *rx.borrow() {
            Mode::Refuse => {
                reset(conn);
                continue;
            }
            Mode::Swallow => {
                tokio::spawn(swallow(conn, rx.clone()));
                continue;
            }
            Mode::Open => {}
        }
        tokio::spawn(forward(conn, upstream.clone(), rx));
    }
}

/// Closes with a reset (SO_LINGER 0), as a refused connection.
fn reset(conn: TcpStream) {
    let _ = conn.set_zero_linger();
    drop(conn);
}

/// Forwards until the link is cut, then resets or swallows.
async fn forward(mut conn: TcpStream, upstream: String, mut rx: watch::Receiver<Mode>) {
    let Ok(mut up) = TcpStream::connect(&upstream).await else { return reset(conn) };
    let _ = (conn.set_nodelay(true), up.set_nodelay(true));
    let cut = async {
        loop {
            if rx.changed().await.is_err() {
                return Mode::Open;
            }
            let now = *rx.borrow_and_update();
            if now != Mode::Open {
                return now;
            }
        }
    };
    let mode = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut conn, &mut up) => return,
        m = cut => m,
    };
    drop(up);
    match mode {
        Mode::Swallow => swallow(conn, rx).await,
        _ => reset(conn),
    }
}

/// Reads and drops until the link heals, then closes (what it swallowed is lost).
async fn swallow(mut conn: TcpStream, mut rx: watch::Receiver<Mode>) {
    let mut sink = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = conn.read(&mut sink) => if !matches!(n, Ok(n) if n > 0) { return },
            changed = rx.changed() => {
                if changed.is_err() || *rx.borrow_and_update() != Mode::Swallow {
                    return reset(conn);
                }
            }
        }
    }
}
