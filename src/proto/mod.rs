//! The wire protocol: length-delimited frames of postcard-encoded messages.
//! Pure bytes in, values out: no sockets here. docs/PROTOCOL.md is the
//! normative description; keep it in step with `message`.

pub mod decode;
pub mod frame;
pub mod message;

pub use decode::{decode, decode_client, ClientDecoded, DecodeError};
pub use frame::{encode, FrameBuf, FrameError, MAX_FRAME};
pub use message::*;

/// The protocol version this build speaks (first field of `Hello`).
pub const VERSION: u16 = 1;

/// The TLS ALPN protocol id.
pub const ALPN: &[u8] = b"lbroker/1";
