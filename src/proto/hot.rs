//! The few messages a busy broker handles by the million (`Acquire`,
//! `Renew` and `Release` in; `Leased`, `Admitted`, `Extended`, `Renewed`
//! and `Released` out), read and written by hand, byte for byte what
//! postcard reads and writes for them (see docs/PROTOCOL.md).
//!
//! Why: the generic path costs a serde visitor per field, a `String` and
//! then an `Arc` per name, and a bounds-checked push per byte; together
//! about a tenth of the broker's CPU per acquire and release. The decoder
//! here also shares the org and machine names of a stream's previous
//! request (`Recent`): a runner names the same ones every time.
//!
//! This is only a shortcut, never a second definition: the decoder takes
//! a body only when it is a canonical encoding of one of the three
//! requests with valid names and nothing left over, and answers `None`
//! otherwise, so the generic decoder decides everything else (including
//! every error and its message). The tests check both ways agree.

use super::request::{ClientFrame, Req, Request};
use super::response::{Outcome, Resp};
use crate::value::{Kind, MachineId, Nonce, OrgName, PoolId, Product, SessionId, Term};

/// Variant indices on the wire (the enums' declaration order).
const REQUEST: u8 = 1;
const ACQUIRE: u8 = 1;
const RENEW: u8 = 2;
const RELEASE: u8 = 3;
const RESPONSE: u8 = 1;
const OK: u8 = 0;
const ADMITTED: u8 = 1;
const RENEWED: u8 = 2;
const RELEASED: u8 = 3;
const LEASED: u8 = 20;
const EXTENDED: u8 = 21;

/// The org and machine a stream's last hot request named, shared with the
/// next one that names them again (a reference count, not a copy).
#[derive(Default)]
pub struct Recent {
    org: Option<OrgName>,
    machine: Option<MachineId>,
}

/// `body` as a `Request` for `Acquire`, `Renew` or `Release`, when it is
/// exactly one of those in canonical form; `None` for anything else
/// (the generic decoder then reads it).
pub fn request(body: &[u8], recent: &mut Recent) -> Option<ClientFrame> {
    let mut r = Reader { rest: body };
    if r.byte()? != REQUEST {
        return None;
    }
    let id = r.varint()?;
    let body = match r.byte()? {
        ACQUIRE => {
            let org = r.name(&mut recent.org, |s| OrgName::new(s))?;
            let pool = r.pool()?;
            let machine = r.name(&mut recent.machine, |s| MachineId::new(s))?;
            Req::Acquire { org, pool, machine, nonce: Nonce(r.varint128()?) }
        }
        RENEW => Req::Renew { session: SessionId(r.varint()?) },
        RELEASE => Req::Release { session: SessionId(r.varint()?) },
        _ => return None,
    };
    r.rest.is_empty().then_some(ClientFrame::Request(Request { id, body }))
}

/// Appends the frame of `Response { id, outcome }` when it is one of the
/// hot answers; false (nothing appended) for any other.
pub fn response(id: u64, outcome: &Outcome, out: &mut Vec<u8>) -> bool {
    let Outcome::Ok(resp) = outcome else { return false };
    let mut w = Writer { buf: [0; 96], len: 4 };
    w.bytes(&[RESPONSE]);
    w.varint(id);
    match resp {
        Resp::Leased { session, deadline_ms, ttl_ms, reattached, token } => {
            w.lease(LEASED, *session, *deadline_ms, *ttl_ms, *reattached);
            w.bytes(&[token.0.len() as u8]);
            w.bytes(&token.0);
        }
        Resp::Admitted { session, deadline_ms, ttl_ms, reattached } => {
            w.lease(ADMITTED, *session, *deadline_ms, *ttl_ms, *reattached)
        }
        Resp::Extended { deadline_ms, token } => {
            w.bytes(&[OK, EXTENDED]);
            w.varint(*deadline_ms);
            w.bytes(&[token.0.len() as u8]);
            w.bytes(&token.0);
        }
        Resp::Renewed { deadline_ms } => {
            w.bytes(&[OK, RENEWED]);
            w.varint(*deadline_ms);
        }
        Resp::Released => w.bytes(&[OK, RELEASED]),
        _ => return false,
    }
    let body = (w.len - 4) as u32;
    w.buf[..4].copy_from_slice(&body.to_be_bytes());
    out.extend_from_slice(&w.buf[..w.len]);
    true
}

/// Reads canonical postcard values off the front of a body.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// A u64 varint in its shortest form; `None` for anything else.
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // Shortest form only (no trailing zero group), and within 64 bits.
                return ((i == 0 || b != 0) && (i < 9 || b <= 1)).then_some(v);
            }
        }
        None
    }

    /// A u128 varint in its shortest form (a nonce), by the same rules.
    fn varint128(&mut self) -> Option<u128> {
        let mut v: u128 = 0;
        for i in 0..19 {
            let b = self.byte()?;
            v |= u128::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return ((i == 0 || b != 0) && (i < 18 || b <= 3)).then_some(v);
            }
        }
        None
    }

    /// A string that `make` accepts; the recent one again when equal.
    fn name<T, E>(&mut self, recent: &mut Option<T>, make: fn(&str) -> Result<T, E>) -> Option<T>
    where
        T: Clone + AsText,
    {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (text, rest) = self.rest.split_at(len);
        self.rest = rest;
        if let Some(r) = recent.as_ref().filter(|r| r.text().as_bytes() == text) {
            return Some(r.clone());
        }
        let made = make(std::str::from_utf8(text).ok()?).ok()?;
        *recent = Some(made.clone());
        Some(made)
    }

    fn pool(&mut self) -> Option<PoolId> {
        let product = [Product::Kre, Product::Kse].get(usize::from(self.byte()?)).copied()?;
        let kind = [Kind::Floating, Kind::NodeLocked].get(usize::from(self.byte()?)).copied()?;
        let term = [Term::Annual, Term::Monthly].get(usize::from(self.byte()?)).copied()?;
        Some(PoolId { product, kind, term })
    }
}

/// The text of a validated name.
trait AsText {
    fn text(&self) -> &str;
}

impl AsText for OrgName {
    fn text(&self) -> &str {
        self.as_str()
    }
}

impl AsText for MachineId {
    fn text(&self) -> &str {
        self.as_str()
    }
}

/// Writes one frame into a buffer big enough for any hot answer (the
/// largest, `Leased` with every varint at its longest, takes 81 bytes
/// with its prefix).
struct Writer {
    buf: [u8; 96],
    len: usize,
}

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.bytes(&[(v as u8) | 0x80]);
            v >>= 7;
        }
        self.bytes(&[v as u8]);
    }

    fn lease(&mut self, variant: u8, session: SessionId, deadline_ms: u64, ttl_ms: u64, reattached: bool) {
        self.bytes(&[OK, variant]);
        self.varint(session.0);
        self.varint(deadline_ms);
        self.varint(ttl_ms);
        self.bytes(&[u8::from(reattached)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode, encode, Response, ServerFrame, SessionToken};

    fn generic(id: u64, outcome: &Outcome) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&ServerFrame::Response(Response { id, outcome: outcome.clone() }), &mut out);
        out
    }

    const EDGES: [u64; 7] = [0, 1, 127, 128, 300, 1 << 63, u64::MAX];

    #[test]
    fn hot_answers_are_the_generic_encoding_byte_for_byte() {
        let token = SessionToken(std::array::from_fn(|i| i as u8 * 7));
        for (i, &a) in EDGES.iter().enumerate() {
            let b = EDGES[(i + 3) % EDGES.len()];
            let answers = [
                Resp::Leased { session: SessionId(a), deadline_ms: b, ttl_ms: 30_000, reattached: i % 2 == 0, token },
                Resp::Admitted { session: SessionId(b), deadline_ms: a, ttl_ms: a, reattached: i % 2 == 1 },
                Resp::Extended { deadline_ms: a, token },
                Resp::Renewed { deadline_ms: b },
                Resp::Released,
            ];
            for resp in answers {
                let outcome = Outcome::Ok(resp);
                let mut out = vec![9];
                assert!(response(a, &outcome, &mut out), "{outcome:?}");
                assert_eq!(out[1..], generic(a, &outcome)[..], "{outcome:?}");
            }
        }
        // The longest possible: every varint at ten bytes.
        let max = Resp::Leased {
            session: SessionId(u64::MAX),
            deadline_ms: u64::MAX,
            ttl_ms: u64::MAX,
            reattached: true,
            token,
        };
        let mut out = Vec::new();
        assert!(response(u64::MAX, &Outcome::Ok(max.clone()), &mut out));
        assert_eq!(out, generic(u64::MAX, &Outcome::Ok(max)));
        assert_eq!(out.len(), 81);
        // Anything else is left to the generic encoder.
        let mut out = Vec::new();
        assert!(!response(1, &Outcome::Ok(Resp::Done), &mut out));
        let refused = Outcome::Err(crate::proto::WireError::new(crate::proto::ErrorCode::QuotaExceeded, "full"));
        assert!(!response(1, &refused, &mut out));
        assert!(out.is_empty());
    }

    fn body(req: Req, id: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&ClientFrame::Request(Request { id, body: req }), &mut out);
        out.split_off(4)
    }

    fn hot_requests() -> Vec<Vec<u8>> {
        let (org, machine) = (OrgName::new("acme-1").unwrap(), MachineId::new("ci.runner:7").unwrap());
        let mut bodies = Vec::new();
        for (i, &a) in EDGES.iter().enumerate() {
            let pool = PoolId { product: Product::Kse, kind: Kind::NodeLocked, term: Term::Monthly };
            let pool = [PoolId::KRE_DEFAULT, pool][i % 2];
            let nonce = Nonce(u128::from(a) << (i * 9) | u128::from(a));
            bodies.push(body(Req::Acquire { org: org.clone(), pool, machine: machine.clone(), nonce }, a));
            bodies.push(body(Req::Renew { session: SessionId(a) }, a));
            bodies.push(body(Req::Release { session: SessionId(a) }, u64::MAX - a));
        }
        bodies.push(body(Req::Acquire { org, pool: PoolId::KRE_DEFAULT, machine, nonce: Nonce(u128::MAX) }, 5));
        bodies
    }

    #[test]
    fn hot_requests_decode_as_the_generic_decoder_reads_them() {
        let mut recent = Recent::default();
        for b in hot_requests() {
            let generic: ClientFrame = decode(&b).unwrap();
            // Twice: a miss of the recent names, then a hit.
            assert_eq!(request(&b, &mut recent).as_ref(), Some(&generic));
            assert_eq!(request(&b, &mut recent).as_ref(), Some(&generic));
        }
        let other = body(Req::Status { org: None }, 1);
        assert!(request(&other, &mut recent).is_none());
    }

    #[test]
    fn any_damaged_hot_request_is_left_to_the_generic_decoder_or_read_as_it_does() {
        let mut recent = Recent::default();
        let mut taken = 0;
        for b in hot_requests() {
            let mut variants = vec![b[..b.len() - 1].to_vec(), [&b[..], &[0]].concat()];
            for i in 0..b.len() {
                for flip in [0x01, 0x40, 0x80, 0xff] {
                    let mut m = b.clone();
                    m[i] ^= flip;
                    variants.push(m);
                }
            }
            for m in variants {
                if let Some(hot) = request(&m, &mut recent) {
                    taken += 1;
                    assert_eq!(decode::<ClientFrame>(&m).ok(), Some(hot), "{m:02x?}");
                }
            }
        }
        // Many damaged bodies are still valid requests (another id, nonce, session).
        assert!(taken > 100, "{taken}");
        // Names the generic decoder refuses are refused here too.
        let bad = body(Req::Renew { session: SessionId(1) }, 1);
        let upper = [&[REQUEST, 1, ACQUIRE, 1, b'A', 0, 0, 0, 1, b'm', 1][..]].concat();
        assert!(request(&upper, &mut recent).is_none() && decode::<ClientFrame>(&upper).is_err());
        assert!(request(&bad[..bad.len() - 1], &mut recent).is_none());
    }
}
