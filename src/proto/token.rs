//! The opaque values the broker issues and clients only echo: a lease's
//! `SessionToken` and a page's `Cursor`. Each is a byte string on the wire
//! (varint length, then the bytes), checked for length as it is decoded, so
//! no other length ever reaches the broker's code.

use serde::{Deserialize, Serialize};

/// A lease's proof, issued with every `Leased` and `Extended` answer and
/// echoed in `Reattach`: the broker's MAC over the org, pool, machine,
/// nonce, user, broker run and lease deadline. Opaque to clients; on the
/// wire a byte string (varint length 32, then the 32 bytes): one copy to
/// encode, where a fixed-size array would be 32 separate elements.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionToken(pub [u8; 32]);

impl Serialize for SessionToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SessionToken, D::Error> {
        struct Bytes32;
        impl<'de> serde::de::Visitor<'de> for Bytes32 {
            type Value = SessionToken;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SessionToken, E> {
                let bytes: [u8; 32] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(SessionToken(bytes))
            }
        }
        d.deserialize_bytes(Bytes32)
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionToken({})", crate::value::hex(&self.0))
    }
}

impl std::fmt::Display for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::value::hex(&self.0))
    }
}

/// Where a page ended: opaque to clients (at most `Cursor::MAX` bytes),
/// meaningful only to the broker and only for the list it came from. On the
/// wire a byte string (varint length, then the bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Cursor(pub Vec<u8>);

impl Cursor {
    /// The longest cursor the broker issues or accepts.
    pub const MAX: usize = 512;
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cursor, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Cursor;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "at most {} bytes", Cursor::MAX)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Cursor, E> {
                match v.len() <= Cursor::MAX {
                    true => Ok(Cursor(v.to_vec())),
                    false => Err(E::invalid_length(v.len(), &self)),
                }
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cursor({})", crate::value::hex(&self.0))
    }
}
