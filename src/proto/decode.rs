//! Bytes → messages: the one decoder every reader of the protocol uses
//! (broker streams, the client, the load harness, the tests), and the
//! request-id salvage that lets the broker answer an undecodable request
//! on the request's own id.

use std::fmt;

use serde::de::DeserializeOwned;

use super::frame::{FrameBuf, FrameError};
use super::request::ClientFrame;

/// Why bytes could not be read as a message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The stream's framing is broken; nothing after it can be read.
    Frame(FrameError),
    /// A whole frame arrived but its body is not the expected message.
    Body(postcard::Error),
    /// The body decoded, with this many bytes left over: refused rather than
    /// ignored, so a sender that disagrees about a message's shape finds out.
    Trailing(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Frame(e) => e.fmt(f),
            DecodeError::Body(e) => write!(f, "undecodable frame: {e}"),
            DecodeError::Trailing(n) => write!(f, "undecodable frame: {n} bytes after the end of the message"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Frame(e) => Some(e),
            DecodeError::Body(e) => Some(e),
            DecodeError::Trailing(_) => None,
        }
    }
}

impl From<FrameError> for DecodeError {
    fn from(e: FrameError) -> DecodeError {
        DecodeError::Frame(e)
    }
}

/// Decodes one frame body as a `T`: all of it, nothing left over.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes(body).map_err(DecodeError::Body)? {
        (value, []) => Ok(value),
        (_, rest) => Err(DecodeError::Trailing(rest.len())),
    }
}

/// A client frame, or an undecodable one with its request id when the id
/// could still be read (so the error can answer that request).
pub enum ClientDecoded {
    /// A well-formed frame.
    Frame(ClientFrame),
    /// Undecodable; `id` is the request's id if the frame began as a request.
    Bad {
        /// The request's id, when the frame began as a request.
        id: Option<u64>,
        /// Why it could not be decoded.
        error: DecodeError,
    },
}

/// Decodes a client frame, salvaging the request id of a bad request.
pub fn decode_client(body: &[u8]) -> ClientDecoded {
    match decode::<ClientFrame>(body) {
        Ok(frame) => ClientDecoded::Frame(frame),
        Err(error) => ClientDecoded::Bad { id: request_id(body), error },
    }
}

/// The id of a frame that starts like a `ClientFrame::Request`: its variant
/// index, then the id (both varints), whatever follows.
fn request_id(body: &[u8]) -> Option<u64> {
    let (variant, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
    if variant != ClientFrame::REQUEST_VARIANT {
        return None;
    }
    postcard::take_from_bytes::<u64>(rest).ok().map(|(id, _)| id)
}

impl FrameBuf {
    /// The next whole frame decoded as a `T`, if one has fully arrived.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, DecodeError> {
        match self.next_frame()? {
            Some(body) => decode(body).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{encode, Req, Request};

    #[test]
    fn salvages_the_id_of_a_bad_request() {
        let mut wire = Vec::new();
        encode(&ClientFrame::Request(Request { id: 300, body: Req::OfflinePublicKey }), &mut wire);
        let body = &mut wire[4..];
        assert_eq!(u32::from(body[0]), ClientFrame::REQUEST_VARIANT);
        assert!(matches!(decode_client(body), ClientDecoded::Frame(_)));
        // An unknown request variant after a valid id.
        let last = body.len() - 1;
        body[last] = 0x7f;
        match decode_client(body) {
            ClientDecoded::Bad { id, .. } => assert_eq!(id, Some(300)),
            ClientDecoded::Frame(f) => panic!("decoded {f:?}"),
        }
        assert!(matches!(decode_client(&[0x7f]), ClientDecoded::Bad { id: None, .. }));
    }

    #[test]
    fn a_byte_after_a_valid_body_is_refused_with_the_request_id() {
        let mut wire = Vec::new();
        encode(&ClientFrame::Request(Request { id: 9, body: Req::Status { org: None } }), &mut wire);
        let mut body = wire[4..].to_vec();
        body.push(0);
        match decode_client(&body) {
            ClientDecoded::Bad { id, error } => assert_eq!((id, error), (Some(9), DecodeError::Trailing(1))),
            ClientDecoded::Frame(f) => panic!("decoded {f:?}"),
        }
    }
}
