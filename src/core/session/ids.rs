//! Session ids as the world sees them: a keyed permutation of the table's
//! own ids, so an id carries 64 unpredictable bits.
//!
//! Inside, an id says where a session lives (generation, slot, shard),
//! which makes ids of neighbouring sessions easy to guess. Outside, every id
//! is that value run through a 64-bit block cipher keyed per broker run: a
//! four-round Feistel network whose round function is SipHash-1-3, a keyed
//! PRF made for short inputs (the `siphasher` crate; about 35 ns per id
//! here, against 90 ns with AES-128 as the round function). A guessed id
//! names a live session with probability (live sessions) / 2^64. A session
//! id still grants nothing by itself (only its holder renews or releases
//! it); this keeps one from being enumerated or correlated.
//!
//! The bound the construction gives, and no more: four rounds of a
//! pseudorandom round function on 32-bit halves are a strong pseudorandom
//! permutation (Luby–Rackoff), but only up to the birthday bound of the
//! halves: an observer of q ids (and of q of its own sessions' ids opened,
//! if it could ask) tells the permutation from a random one with
//! advantage at most about q^2 / 2^32 (plus SipHash's own). That says
//! something only while q is well below 2^16 (65,536) ids per key, and a
//! busy broker issues that many in minutes; past it, that ids seen reveal
//! nothing about ids not seen rests on SipHash-1-3 and four rounds
//! resisting the known generic attacks on Feistel networks, not on a
//! proof. The key changes every run. Six rounds would prove up to about
//! 2^32 ids (Patarin) at 1.5 times the cost per id (a seal per admission,
//! an open per renewal and release); not taken, as the id authorises
//! nothing.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// Feistel rounds.
const ROUNDS: u8 = 4;

/// The keyed permutation between the table's ids and the world's.
#[derive(Clone, Copy)]
pub struct IdCipher {
    keys: (u64, u64),
}

impl IdCipher {
    /// A permutation keyed by `key` (the shell draws one per run).
    pub fn new(key: u128) -> IdCipher {
        IdCipher { keys: (key as u64, (key >> 64) as u64) }
    }

    fn round(&self, round: u8, half: u32) -> u32 {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write_u64((u64::from(round) << 32) | u64::from(half));
        h.finish() as u32
    }

    /// The world's id for the table's `inner`.
    pub fn seal(&self, inner: u64) -> u64 {
        let (mut left, mut right) = ((inner >> 32) as u32, inner as u32);
        for r in 0..ROUNDS {
            (left, right) = (right, left ^ self.round(r, right));
        }
        (u64::from(left) << 32) | u64::from(right)
    }

    /// The table's id for the world's `outer` (the inverse of `seal`).
    pub fn open(&self, outer: u64) -> u64 {
        let (mut left, mut right) = ((outer >> 32) as u32, outer as u32);
        for r in (0..ROUNDS).rev() {
            (left, right) = (right ^ self.round(r, left), left);
        }
        (u64::from(left) << 32) | u64::from(right)
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;

    #[test]
    fn sealing_is_a_keyed_permutation() {
        let c = IdCipher::new(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let other = IdCipher::new(1);
        let mut seen = std::collections::HashSet::new();
        for inner in (0..2000u64).map(|i| (i << 32) | (i << 8) | (i & 0xff)).chain([u64::MAX]) {
            let outer = c.seal(inner);
            assert_eq!(c.open(outer), inner);
            assert!(seen.insert(outer), "two ids sealed to one");
            assert_ne!(other.seal(inner), outer, "the key matters");
        }
        // Neighbouring inner ids land far apart (about half the bits differ).
        let differing = (c.seal(1 << 8) ^ c.seal(2 << 8)).count_ones();
        assert!((16..=48).contains(&differing), "{differing} bits differ");
    }
}
