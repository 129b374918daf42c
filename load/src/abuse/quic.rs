//! `abuse`'s attackers on the QUIC door: silent connections, never-read
//! streams, slowloris frames and failed-`Hello` floods, each reconnecting
//! after a pause when the broker closes it. Apart from the scenario as the
//! web door's are (`web`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use license_broker::proto::{encode, ClientFrame, Hello, VERSION};

use super::{AttackStats, Kind, KINDS, RECONNECT_PAUSE};

/// A QUIC client endpoint on `ip` (any loopback address) trusting `ca`,
/// without session resumption (every attacker pays a full handshake).
pub(super) fn attack_endpoint(ip: IpAddr, ca: &std::path::Path) -> Result<quinn::Endpoint> {
    let mut ep = quinn::Endpoint::client(SocketAddr::new(ip, 0)).with_context(|| format!("binding {ip}"))?;
    let mut config = license_broker::tls::client_config_with(Some(ca), false)?;
    let mut transport = quinn::TransportConfig::default();
    // The attacker keeps its connections alive with PINGs (the broker must
    // close silent ones itself).
    transport.keep_alive_interval(Some(Duration::from_secs(1)));
    config.transport_config(Arc::new(transport));
    ep.set_default_client_config(config);
    Ok(ep)
}

/// One attacker: connects, misbehaves as `kind` until the broker closes
/// it, pauses, and again, until `stop`.
pub(super) async fn attack(
    kind: Kind,
    endpoint: quinn::Endpoint,
    server: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<AttackStats>,
) {
    let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        let conn = match endpoint.connect(server, "localhost") {
            Ok(connecting) => connecting.await,
            Err(_) => {
                stats.refused[k].fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        let conn = match conn {
            Ok(c) => c,
            Err(_) => {
                stats.refused[k].fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        stats.connected[k].fetch_add(1, Ordering::Relaxed);
        match kind {
            // The web door's kinds run in `attack_web`.
            Kind::Silent | Kind::Web(_) => {}
            Kind::NeverRead => never_read(&conn).await,
            Kind::Slowloris => slowloris(&conn).await,
            Kind::FailedHellos => failed_hellos(&conn).await,
        }
        let _ = conn.closed().await;
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// Every stream the broker allows, each pipelining junk frames (a valid
/// length, an undecodable body) until flow control stops it; never reads.
async fn never_read(conn: &quinn::Connection) {
    let mut junk = Vec::new();
    for _ in 0..1024 {
        junk.extend_from_slice(&8u32.to_be_bytes());
        junk.extend_from_slice(&[0xff; 8]);
    }
    let mut writers = Vec::new();
    while let Ok(Ok((mut send, recv))) = tokio::time::timeout(Duration::from_millis(200), conn.open_bi()).await {
        let junk = junk.clone();
        writers.push(tokio::spawn(async move {
            let _keep = recv;
            while send.write_all(&junk).await.is_ok() {}
        }));
        if writers.len() >= 64 {
            break;
        }
    }
    let _ = conn.closed().await;
    for w in writers {
        w.abort();
    }
}

/// Every stream the broker allows, each holding most of a 64 KiB frame.
async fn slowloris(conn: &quinn::Connection) {
    let mut partial = (64u32 * 1024).to_be_bytes().to_vec();
    partial.extend(std::iter::repeat_n(0x01, 60 * 1024));
    let mut held = Vec::new();
    while let Ok(Ok((mut send, recv))) = tokio::time::timeout(Duration::from_millis(200), conn.open_bi()).await {
        if tokio::time::timeout(Duration::from_secs(2), send.write_all(&partial)).await.is_err() {
            break;
        }
        held.push((send, recv));
        if held.len() >= 64 {
            break;
        }
    }
    let _ = conn.closed().await;
}

/// `Hello`s with wrong keys, one stream, as fast as the broker answers.
async fn failed_hellos(conn: &quinn::Connection) {
    let Ok((mut send, mut recv)) = conn.open_bi().await else { return };
    let mut hello = Vec::new();
    let frame = ClientFrame::Hello(Hello { version: VERSION, api_key: "lbk_guess".into(), client: "abuse".into() });
    encode(&frame, &mut hello);
    let mut buf = vec![0u8; 4096];
    loop {
        if send.write_all(&hello).await.is_err() {
            return;
        }
        match recv.read(&mut buf).await {
            Ok(Some(_)) => {}
            _ => return,
        }
    }
}
