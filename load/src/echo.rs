//! The transport ceiling: a bare quinn server that speaks the broker's
//! framing and codec but has no admission logic. Every `Hello` gets a
//! `Welcome`, every `Acquire` a fixed `Admitted`, anything else `Released`.
//! Same TLS, transport settings and socket buffers as the broker, so the
//! difference between the two is the cost of the broker's own work.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use license_broker::proto::{
    encode, ClientFrame, FrameBuf, Outcome, Req, Resp, Response, ServerFrame, SessionToken, Welcome, VERSION,
};
use license_broker::tls::{self, TlsFiles};
use license_broker::value::{Role, SessionId};

/// Serves until the process is killed; prints `listening on ADDR` first.
pub async fn serve(listen: SocketAddr, dir: &Path) -> Result<()> {
    let files = TlsFiles::in_data_dir(dir);
    tls::ensure_self_signed(&files)?;
    let config = tls::server_config(&files, Duration::from_secs(30), tls::Limits::member(16), None)?;
    let socket = license_broker::server::bind_udp(listen)?;
    let endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, Arc::new(quinn::TokioRuntime))?;
    println!("listening on {}", endpoint.local_addr()?);
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(stream(send, recv));
            }
        });
    }
    Ok(())
}

async fn stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut frames = FrameBuf::new();
    let mut chunk = vec![0u8; 32 * 1024];
    let mut out = Vec::with_capacity(4096);
    while let Ok(Some(n)) = recv.read(&mut chunk).await {
        frames.extend(&chunk[..n]);
        while let Some(frame) = frames.next_message::<ClientFrame>().transpose() {
            let reply = match frame {
                Ok(ClientFrame::Hello(_)) => ServerFrame::Welcome(Welcome {
                    version: VERSION,
                    lease_ttl_ms: 30_000,
                    org: None,
                    email: "echo@localhost".into(),
                    role: Role::User,
                }),
                Ok(ClientFrame::Request(r)) => {
                    let resp = match r.body {
                        // The broker's answer, byte for byte the same size
                        // (a real deadline, a 32-byte token), so the ceiling
                        // measures the same framing and codec work.
                        Req::Acquire { .. } => Resp::Leased {
                            session: SessionId(r.id),
                            deadline_ms: 1_795_823_839_671,
                            ttl_ms: 30_000,
                            reattached: false,
                            token: SessionToken([0x5a; 32]),
                        },
                        _ => Resp::Released,
                    };
                    ServerFrame::Response(Response { id: r.id, outcome: Outcome::Ok(resp) })
                }
                Err(_) => return,
            };
            encode(&reply, &mut out);
        }
        if send.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}
