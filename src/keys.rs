//! API keys: 256 bits from the OS's secure random source, shown once,
//! stored only as their SHA-256.

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::value::KeyHash;

/// Every key starts with this, so a key is recognisable in configs and logs.
pub const PREFIX: &str = "lbk_";

/// The OS random source failed; no key was made.
#[derive(Debug)]
pub struct RandomUnavailable;

impl std::fmt::Display for RandomUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the system's secure random source failed")
    }
}

impl std::error::Error for RandomUnavailable {}

/// A fresh key (`lbk_` + 64 hex digits) and its hash.
pub fn generate() -> Result<(String, KeyHash), RandomUnavailable> {
    let mut secret = [0u8; 32];
    SystemRandom::new().fill(&mut secret).map_err(|_| RandomUnavailable)?;
    let key = format!("{PREFIX}{}", hex(&secret));
    let hash = hash(&key);
    Ok((key, hash))
}

/// The hash under which a key is stored and looked up.
pub fn hash(key: &str) -> KeyHash {
    let d = digest(&SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    KeyHash(out)
}

/// Whether `s` has the shape of a full key (as opposed to a key id).
pub fn looks_like_key(s: &str) -> bool {
    s.len() == PREFIX.len() + 64 && s.starts_with(PREFIX)
}

/// 128 random bits, e.g. a runner nonce.
pub fn random_u128() -> Result<u128, RandomUnavailable> {
    let mut b = [0u8; 16];
    SystemRandom::new().fill(&mut b).map_err(|_| RandomUnavailable)?;
    Ok(u128::from_le_bytes(b))
}

/// Lowercase hex of bytes.
pub use crate::core::id::hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_hash_stably() {
        let (a, ha) = generate().unwrap();
        let (b, hb) = generate().unwrap();
        assert_ne!(a, b);
        assert!(looks_like_key(&a));
        assert_eq!(hash(&a), ha);
        assert_ne!(ha, hb);
    }
}
