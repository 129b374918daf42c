//! TLS session tickets that outlive a broker restart, so that the runners
//! reconnecting after one resume their TLS sessions (no certificate
//! signature on the broker, no certificate check on the runner) instead of
//! all making full handshakes at once.
//!
//! rustls's own ticketer keeps its keys in memory, so a restarted broker
//! could not read the tickets it handed out before. This one derives its
//! keys from a secret kept in the data dir (`tls/ticket.key`, 0600, next to
//! the TLS private key, which it is no more sensitive than): one key per
//! UTC day, HKDF-SHA256 of the secret and the day number, AES-256-GCM with
//! a random nonce per ticket. A ticket is accepted on the day it was made
//! and the next, so tickets live at most two days and the key of a day
//! that has passed is never used again.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::SetupError;

/// Encrypts and decrypts session tickets with day keys derived from a
/// secret in the data dir.
pub(crate) struct Ticketer {
    secret: hkdf::Prk,
    rng: SystemRandom,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticketer")
    }
}

const DAY_S: u64 = 86_400;

impl Ticketer {
    /// Loads the secret from `path`, creating it (owner-only) on first start.
    pub fn load_or_generate(path: &Path) -> Result<Ticketer, SetupError> {
        let bytes = super::token::read_or_create_secret(path)?;
        Ok(Ticketer {
            secret: hkdf::Salt::new(hkdf::HKDF_SHA256, b"lbroker ticket keys").extract(&bytes),
            rng: SystemRandom::new(),
        })
    }

    fn day_key(&self, day: u64) -> Option<LessSafeKey> {
        let info = day.to_le_bytes();
        let info = [info.as_slice()];
        let okm = self.secret.expand(&info, &AES_256_GCM).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    fn today() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / DAY_S)
    }
}

impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        DAY_S as u32
    }

    /// `day (8 bytes LE) | nonce (12) | AES-256-GCM(plain)`.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let day = Self::today();
        let key = self.day_key(day)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(8 + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&day.to_le_bytes());
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&day.to_le_bytes()), &mut sealed)
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (day, rest) = cipher.split_at_checked(8)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let day = u64::from_le_bytes(day.try_into().ok()?);
        let today = Self::today();
        if day > today || today - day > 1 {
            return None;
        }
        let key = self.day_key(day)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(&day.to_le_bytes()), &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    #[test]
    fn a_ticket_opens_after_a_restart_and_nowhere_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ticket.key");
        let first = Ticketer::load_or_generate(&path).unwrap();
        let ticket = first.encrypt(b"resumption state").unwrap();
        // The same data dir after a restart reads it.
        let restarted = Ticketer::load_or_generate(&path).unwrap();
        assert_eq!(restarted.decrypt(&ticket).as_deref(), Some(&b"resumption state"[..]));
        // Another broker's secret, or any changed byte, does not.
        let other = Ticketer::load_or_generate(&dir.path().join("other.key")).unwrap();
        assert_eq!(other.decrypt(&ticket), None);
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 1;
            assert_eq!(restarted.decrypt(&bad), None, "byte {i}");
        }
        assert_eq!(restarted.decrypt(&ticket[..10]), None);
    }
}
