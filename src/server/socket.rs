//! The UDP socket under the endpoint, with large kernel buffers: with the
//! kernel default, bursts of concurrent handshakes drop datagrams and stall
//! for a retransmission timeout.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size asked of the kernel (it may grant less, capped by
/// net.core.rmem_max / wmem_max).
pub const BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Binds a UDP socket at `addr` with raised send and receive buffers.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept only what was asked for; dual-stack surprises nobody wants.
        let _ = socket.set_only_v6(true);
    }
    for (what, result) in
        [("receive", socket.set_recv_buffer_size(BUFFER_BYTES)), ("send", socket.set_send_buffer_size(BUFFER_BYTES))]
    {
        if let Err(e) = result {
            tracing::warn!("could not raise the UDP {what} buffer: {e}");
        }
    }
    let granted = socket.recv_buffer_size().unwrap_or(0);
    if granted < BUFFER_BYTES {
        tracing::warn!(
            granted,
            wanted = BUFFER_BYTES,
            "the kernel capped the UDP receive buffer; raise net.core.rmem_max for bursts of handshakes"
        );
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
