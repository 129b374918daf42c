//! Framing: each frame is a 4-byte big-endian length followed by that many
//! bytes of postcard. The decoder accumulates stream bytes and yields whole
//! frames; it never allocates beyond one frame plus one read.

use std::fmt;

use serde::Serialize;

/// Largest frame body accepted, in bytes. Bigger frames are refused with
/// `FRAME_TOO_LARGE` and the stream is closed (its framing can no longer be trusted).
pub const MAX_FRAME: usize = 64 * 1024;

/// Why the byte stream can no longer be split into frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix above `MAX_FRAME`.
    TooLarge(u32),
    /// A zero length prefix (no message is empty).
    Empty,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
            }
            FrameError::Empty => f.write_str("empty frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends one frame carrying `msg` to `out`.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Serialising our own message types into a Vec cannot fail: they hold
    // only strings, integers, enums, options and sequences.
    let mut buf = std::mem::take(out);
    buf = postcard::to_extend(msg, buf).unwrap_or_else(|_| unreachable!("postcard into Vec is infallible"));
    *out = buf;
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Accumulates bytes from a stream and splits them into frames.
#[derive(Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
    /// Offset of the first unconsumed byte.
    start: usize,
}

impl FrameBuf {
    /// An empty buffer.
    pub fn new() -> FrameBuf {
        FrameBuf::default()
    }

    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        // What was consumed goes first (what moves is at most the start of
        // one frame), so a stream read in chunks keeps one buffer of about
        // a chunk instead of growing it past the chunks and giving it back
        // over and over (each time fresh pages: a tenth of a million-lease
        // fill's time went there).
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.is_empty() && self.buf.capacity() > MAX_FRAME {
            // A large frame's room is not kept for the stream's life (a
            // stream is idle most of it).
            self.buf.shrink_to(4096);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's body, if one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.start..];
        let Some(prefix) = avail.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len as usize > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let end = 4 + len as usize;
        if avail.len() < end {
            return Ok(None);
        }
        let body_start = self.start + 4;
        self.start += end;
        Ok(Some(&self.buf[body_start..body_start + len as usize]))
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_frames_room_is_given_back_once_consumed() {
        let mut wire = Vec::new();
        encode(&vec![7u8; 60_000], &mut wire);
        encode(&vec![7u8; 60_000], &mut wire);
        let mut b = FrameBuf::new();
        b.extend(&wire);
        while b.next_frame().unwrap().is_some() {}
        assert!(b.buf.capacity() > MAX_FRAME);
        b.extend(&[0, 0, 0, 1]);
        assert!(b.buf.capacity() <= 4096, "kept {} bytes for an idle stream", b.buf.capacity());
    }

    #[test]
    fn a_stream_read_in_chunks_keeps_one_buffer() {
        let mut wire = Vec::new();
        while wire.len() < 1 << 20 {
            encode(&(wire.len() as u64, "runner-nonce-and-org"), &mut wire);
        }
        let mut b = FrameBuf::new();
        let mut first_room = None;
        for (n, chunk) in wire.chunks(32 * 1024).enumerate() {
            b.extend(chunk);
            while b.next_frame().unwrap().is_some() {}
            if n == 2 {
                first_room = Some((b.buf.as_ptr(), b.buf.capacity()));
            }
            if n > 2 {
                assert_eq!(Some((b.buf.as_ptr(), b.buf.capacity())), first_room, "chunk {n} moved the buffer");
            }
        }
        assert!(b.buf.capacity() <= MAX_FRAME, "{} bytes kept", b.buf.capacity());
    }

    #[test]
    fn splits_frames_across_arbitrary_reads() {
        let mut wire = Vec::new();
        for i in 0..50u32 {
            encode(&(i, "x".repeat(i as usize)), &mut wire);
        }
        for chunk in [1, 3, 7, 64, 4096] {
            let mut fb = FrameBuf::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                fb.extend(piece);
                while let Some(f) = fb.next_frame().unwrap() {
                    got.push(postcard::from_bytes::<(u32, String)>(f).unwrap());
                }
            }
            assert_eq!(got.len(), 50);
            assert_eq!(got[49], (49, "x".repeat(49)));
            assert_eq!(fb.pending(), 0);
        }
    }

    #[test]
    fn refuses_oversized_and_empty_frames() {
        let mut fb = FrameBuf::new();
        fb.extend(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert_eq!(fb.next_frame(), Err(FrameError::TooLarge(MAX_FRAME as u32 + 1)));
        let mut fb = FrameBuf::new();
        fb.extend(&[0, 0, 0, 0]);
        assert_eq!(fb.next_frame(), Err(FrameError::Empty));
    }
}
