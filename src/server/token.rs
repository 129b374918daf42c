//! Session tokens: the broker's signature on a lease, so that a runner can
//! prove to a restarted broker (which kept no sessions) that it held a
//! seat, without the broker writing anything durable per lease.
//!
//! A token is `run (8 bytes LE) | deadline_ms (8 bytes LE) | mac (16 bytes)`,
//! where the MAC is SipHash-2-4 with 128-bit output under a 128-bit key kept
//! in the data dir, over a domain tag and the lease's org, pool, machine,
//! nonce, user, the run that issued it and its deadline. SipHash is a keyed
//! pseudorandom function designed for short inputs, which is what a MAC
//! over a few dozen bytes needs; a forger needs about 2^128 guesses (2^64
//! to hit any one of many live tokens), each costing a request. It runs in
//! well under 100 ns: HMAC-SHA256 (three SHA-256 blocks per token) cost the
//! acquire hot path 10–20 % of its throughput, measured.
//!
//! The core decides what a valid token may take (see
//! `Broker::reattach`); this module only issues and checks MACs, because
//! they need a key, which the core does not have.

use std::hash::Hasher;
use std::path::Path;

use parking_lot::Mutex;
use siphasher::sip128::{Hasher128, SipHasher24};

use crate::core::{Email, MachineId, Millis, Nonce, OrgName, PoolId};
use crate::error::SetupError;
use crate::proto::SessionToken;

/// Separates these MACs from any other use of the key.
const DOMAIN: &[u8] = b"lbroker session token v1";

/// Issues and checks this broker's session tokens.
pub(crate) struct Tokens {
    /// Keyed, ready to clone per token.
    key: SipHasher24,
    /// This run of the broker: random per start, so a token says whether
    /// the broker that issued it still has its session in memory.
    run: u64,
}

/// What a token is about.
pub(crate) struct Claims<'a> {
    pub org: &'a OrgName,
    pub pool: PoolId,
    pub machine: &'a MachineId,
    pub nonce: Nonce,
    pub user: &'a Email,
}

/// A token that checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Issued by this run (the session, if live, is in memory).
    pub this_run: bool,
    /// The lease deadline it was issued with.
    pub deadline: Millis,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not signed by this broker for these claims.
    Forged,
}

impl Tokens {
    /// Loads the key from `path`, generating it (owner-only) on first start.
    pub fn load_or_generate(path: &Path, run: u64) -> Result<Tokens, SetupError> {
        let bytes = read_or_create_secret(path)?;
        let mut key = [0u8; 16];
        key.copy_from_slice(&bytes[..16]);
        Ok(Tokens { key: SipHasher24::new_with_key(&key), run })
    }

    /// The token for a lease with `deadline`, from nothing cached: the
    /// reference `issue_after` is tested against.
    #[cfg(test)]
    pub fn issue(&self, c: &Claims<'_>, deadline: Millis) -> SessionToken {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&self.run.to_le_bytes());
        out[8..16].copy_from_slice(&deadline.0.to_le_bytes());
        out[16..].copy_from_slice(&self.mac(c, self.run, deadline));
        SessionToken(out)
    }

    /// Checks that `token` was issued by this broker (any run) for `c`.
    pub fn check(&self, c: &Claims<'_>, token: &SessionToken) -> Result<Checked, TokenError> {
        let t = &token.0;
        // Invariant: fixed-size slices of a 32-byte array.
        let run = u64::from_le_bytes(t[..8].try_into().expect("8 bytes"));
        let deadline = Millis(u64::from_le_bytes(t[8..16].try_into().expect("8 bytes")));
        let expected = self.mac(c, run, deadline);
        // Constant time: how many leading bytes matched must not leak.
        let diff = expected.iter().zip(&t[16..]).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        match diff {
            0 => Ok(Checked { this_run: run == self.run, deadline }),
            _ => Err(TokenError::Forged),
        }
    }

    fn mac(&self, c: &Claims<'_>, run: u64, deadline: Millis) -> [u8; 16] {
        // One contiguous input, hashed in one call: SipHash's streaming
        // `write` costs more per call than the hashing of a short field.
        // Room for usual names; longer ones (the validators allow 63 + 128 +
        // 254 bytes) take the streaming way. Small, so zeroing it is cheap.
        let mut buf = [0u8; 256];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = buf.get_mut(len..len + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            len += bytes.len();
        };
        put(DOMAIN);
        for field in [c.org.as_str().as_bytes(), c.machine.as_str().as_bytes(), c.user.as_str().as_bytes()] {
            // Length-prefixed, so no two different claims share an input.
            put(&(field.len() as u32).to_le_bytes());
            put(field);
        }
        put(&[c.pool.product as u8, c.pool.kind as u8, c.pool.term as u8]);
        put(&c.nonce.0.to_le_bytes());
        put(&run.to_le_bytes());
        put(&deadline.0.to_le_bytes());
        let hash = match buf.get(..len) {
            Some(input) => self.key.hash(input),
            // Longer than the buffer: the streaming way (same result).
            None => self.streamed(c, run, deadline),
        };
        u128::from(hash).to_le_bytes()
    }

    fn streamed(&self, c: &Claims<'_>, run: u64, deadline: Millis) -> siphasher::sip128::Hash128 {
        Self::finish(self.fixed(c), c.nonce, run, deadline)
    }

    /// The MAC's state after the claims a runner's leases share (the
    /// domain, org, machine, user and pool): the first part of `streamed`.
    fn fixed(&self, c: &Claims<'_>) -> SipHasher24 {
        let mut h = self.key;
        h.write(DOMAIN);
        for field in [c.org.as_str().as_bytes(), c.machine.as_str().as_bytes(), c.user.as_str().as_bytes()] {
            h.write(&(field.len() as u32).to_le_bytes());
            h.write(field);
        }
        h.write(&[c.pool.product as u8, c.pool.kind as u8, c.pool.term as u8]);
        h
    }

    /// The rest of `streamed`, from the state after the fixed claims.
    fn finish(mut h: SipHasher24, nonce: Nonce, run: u64, deadline: Millis) -> siphasher::sip128::Hash128 {
        // One write: each costs more than hashing a short field.
        let mut tail = [0u8; 32];
        tail[..16].copy_from_slice(&nonce.0.to_le_bytes());
        tail[16..24].copy_from_slice(&run.to_le_bytes());
        tail[24..].copy_from_slice(&deadline.0.to_le_bytes());
        h.write(&tail);
        h.finish128()
    }

    /// `issue`, hashing the fixed claims only when they differ from the
    /// last ones `last` saw (a stream keeps one: a runner's leases share
    /// them, and they are most of the MAC's input). The same token.
    ///
    /// A stream carrying many runners (a fleet on one connection) changes
    /// claims at every lease: a first sight only remembers the claims and
    /// takes the one-shot way, and the state is kept from the second on,
    /// so such a stream pays a few reference counts, not a slower hash.
    pub fn issue_after(&self, last: &Mutex<Fixed>, c: &Claims<'_>, deadline: Millis) -> SessionToken {
        let mut fixed = last.lock();
        let mac = match &mut fixed.0 {
            Some(f) if f.is_for(c) => {
                let state = *f.state.get_or_insert_with(|| self.fixed(c));
                drop(fixed);
                u128::from(Self::finish(state, c.nonce, self.run, deadline)).to_le_bytes()
            }
            _ => {
                let (org, machine, user) = (c.org.clone(), c.machine.clone(), c.user.clone());
                fixed.0 = Some(FixedClaims { org, pool: c.pool, machine, user, state: None });
                drop(fixed);
                self.mac(c, self.run, deadline)
            }
        };
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&self.run.to_le_bytes());
        out[8..16].copy_from_slice(&deadline.0.to_le_bytes());
        out[16..].copy_from_slice(&mac);
        SessionToken(out)
    }
}

/// The last fixed claims a stream's tokens were issued for, with the MAC's
/// state after them (see `Tokens::issue_after`). Behind an (uncontended)
/// lock only because a stream's requests may await the store holding it.
#[derive(Default)]
pub(crate) struct Fixed(Option<FixedClaims>);

struct FixedClaims {
    org: OrgName,
    pool: PoolId,
    machine: MachineId,
    user: Email,
    /// The MAC's state after them, once they were seen twice in a row.
    state: Option<SipHasher24>,
}

impl FixedClaims {
    fn is_for(&self, c: &Claims<'_>) -> bool {
        self.pool == c.pool && &self.org == c.org && &self.machine == c.machine && &self.user == c.user
    }
}

/// A 32-byte secret kept in `path`, created (random, owner-only, synced)
/// if it does not exist yet.
pub(crate) fn read_or_create_secret(path: &Path) -> Result<Vec<u8>, SetupError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let random = || crate::keys::random_u128().map(u128::to_le_bytes).map_err(|_| SetupError::Random);
            let bytes = [random()?, random()?].concat();
            write_new(path, &bytes)?;
            bytes
        }
        Err(e) => return Err(SetupError::Io { what: format!("reading {}", path.display()), source: e }),
    };
    if bytes.len() != 32 {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidData, "expected 32 bytes");
        return Err(SetupError::Io { what: format!("reading {}", path.display()), source });
    }
    Ok(bytes)
}

/// Writes a new secret file, owner-only from its creation.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let what = || format!("writing {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(SetupError::io(what()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(SetupError::io(what()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(SetupError::io(what()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims<'a>(org: &'a OrgName, machine: &'a MachineId, user: &'a Email, nonce: u128) -> Claims<'a> {
        Claims { org, pool: PoolId::KRE_DEFAULT, machine, nonce: Nonce(nonce), user }
    }

    #[test]
    fn a_token_checks_only_for_its_own_claims_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session-token.key");
        let tokens = Tokens::load_or_generate(&path, 7).unwrap();
        let (org, m, u) = (OrgName::new("acme").unwrap(), MachineId::new("m1").unwrap(), Email::new("a@b").unwrap());
        let t = tokens.issue(&claims(&org, &m, &u, 1), Millis(99));
        assert_eq!(tokens.check(&claims(&org, &m, &u, 1), &t), Ok(Checked { this_run: true, deadline: Millis(99) }));
        // The next run of the same broker (same key file) accepts it as an earlier run's.
        let next = Tokens::load_or_generate(&path, 8).unwrap();
        assert!(!next.check(&claims(&org, &m, &u, 1), &t).unwrap().this_run);
        // Any other nonce, machine, user or org, or any changed byte, is refused.
        let other_m = MachineId::new("m2").unwrap();
        let other_u = Email::new("c@d").unwrap();
        assert_eq!(next.check(&claims(&org, &m, &u, 2), &t), Err(TokenError::Forged));
        assert_eq!(next.check(&claims(&org, &other_m, &u, 1), &t), Err(TokenError::Forged));
        assert_eq!(next.check(&claims(&org, &m, &other_u, 1), &t), Err(TokenError::Forged));
        for i in 0..32 {
            let mut bad = t;
            bad.0[i] ^= 1;
            assert_eq!(next.check(&claims(&org, &m, &u, 1), &bad), Err(TokenError::Forged), "byte {i}");
        }
        // The longest names allowed take the streaming way; both ways agree.
        let long_org = OrgName::new("o".repeat(63)).unwrap();
        let long = MachineId::new("x".repeat(128)).unwrap();
        let long_user = Email::new(format!("{}@example.com", "u".repeat(241))).unwrap();
        let c = claims(&long_org, &long, &long_user, 3);
        assert_eq!(tokens.check(&c, &tokens.issue(&c, Millis(5))).unwrap().deadline, Millis(5));
        assert_eq!(tokens.mac(&c, 7, Millis(99)), u128::from(tokens.streamed(&c, 7, Millis(99))).to_le_bytes());
        let short = claims(&org, &m, &u, 1);
        assert_eq!(tokens.mac(&short, 7, Millis(99)), u128::from(tokens.streamed(&short, 7, Millis(99))).to_le_bytes());
        // Issued after the fixed claims of a previous lease: the same token,
        // whether those claims match or not.
        let last = Mutex::new(Fixed::default());
        for (c, d) in [(&short, 9), (&short, 10), (&c, 11), (&claims(&org, &m, &u, 4), 12), (&short, 13)] {
            assert_eq!(tokens.issue_after(&last, c, Millis(d)), tokens.issue(c, Millis(d)));
        }
        // Another broker's key refuses it.
        let other = Tokens::load_or_generate(&dir.path().join("other.key"), 7).unwrap();
        assert_eq!(other.check(&claims(&org, &m, &u, 1), &t), Err(TokenError::Forged));
    }
}
