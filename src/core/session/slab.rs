//! A shard's slots, in chunks of fixed size: growing adds a chunk and
//! never moves what is there.
//!
//! A plain `Vec` of slots doubles as a shard fills, and each doubling of a
//! megabyte-sized block is a fresh allocation, first-touch page faults on
//! all of it, and a copy of the old one, under the shard's lock: filling a
//! million sessions spent about a fifth of its time there (perf, `license-load
//! die`). Chunks are allocated once, at their final size, and kept.

/// Slots per chunk (a few tens of KiB: small enough that an idle shard
/// holds little, large enough that the chunk list stays short).
const CHUNK_BITS: u32 = 9;
const CHUNK: usize = 1 << CHUNK_BITS;

pub(super) struct Slab<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Slab<T> {
        Slab { chunks: Vec::new(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends `value` at index `len()`.
    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i >> CHUNK_BITS)?.get(i & (CHUNK - 1))
    }

    /// Every slot, to change in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.chunks.iter_mut().flatten()
    }

    /// The slots from index `first` on, with their indexes, in order.
    pub fn iter_from(&self, first: usize) -> impl Iterator<Item = (usize, &T)> + '_ {
        let chunk = first >> CHUNK_BITS;
        let skip = first & (CHUNK - 1);
        self.chunks.get(chunk..).unwrap_or_default().iter().flatten().skip(skip).zip(first..).map(|(v, i)| (i, v))
    }
}

impl<T> std::ops::Index<usize> for Slab<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]
    }
}

impl<T> std::ops::IndexMut<usize> for Slab<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_survive_growth_across_chunks() {
        let mut s = Slab::new();
        for i in 0..3 * CHUNK + 5 {
            s.push(i);
        }
        assert_eq!(s.len(), 3 * CHUNK + 5);
        assert!((0..s.len()).all(|i| s[i] == i && s.get(i) == Some(&i)));
        assert_eq!(s.get(s.len()), None);
        s[CHUNK] = 7;
        assert_eq!((s[CHUNK], s[CHUNK + 1]), (7, CHUNK + 1));
    }

    #[test]
    fn iter_from_starts_anywhere_and_ends_at_len() {
        let mut s = Slab::new();
        for i in 0..2 * CHUNK + 3 {
            s.push(i);
        }
        for first in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 2, 2 * CHUNK + 3, 5 * CHUNK] {
            let got: Vec<(usize, usize)> = s.iter_from(first).map(|(i, v)| (i, *v)).collect();
            let want: Vec<(usize, usize)> = (first..s.len()).map(|i| (i, i)).collect();
            assert_eq!(got, want, "from {first}");
        }
    }
}
