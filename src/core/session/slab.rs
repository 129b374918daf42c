//! A shard's slots, in chunks that double: growing adds a chunk twice the
//! size of the last and never moves what is there.
//!
//! A plain `Vec` of slots doubles as a shard fills, and each doubling of a
//! megabyte-sized block is a fresh allocation and a copy of the old one,
//! under the shard's lock: filling a million sessions spent about a fifth
//! of its time there (perf, `license-load die`). Chunks of a fixed few tens
//! of KiB cost more still: each came from the allocator's small pages, a
//! page fault per 4 KiB where a large block takes huge pages. Doubling
//! chunks keep a small shard small and give a large one large blocks.

/// Slots in the first chunk (chunk `k` holds `FIRST << k`).
const FIRST_BITS: u32 = 6;
const FIRST: usize = 1 << FIRST_BITS;

/// Chunk and offset of slot `i`: chunk `k` starts at `FIRST * (2^k - 1)`.
fn locate(i: usize) -> (usize, usize) {
    let j = (i >> FIRST_BITS) + 1;
    let k = (usize::BITS - 1 - j.leading_zeros()) as usize;
    (k, i - ((FIRST << k) - FIRST))
}

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
        let size = |k: usize| FIRST << k;
        let chunks = self.chunks.len();
        match self.chunks.last_mut() {
            Some(last) if last.len() < size(chunks - 1) => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(size(chunks));
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        let (k, o) = locate(i);
        self.chunks.get(k)?.get(o)
    }

    /// Every slot, to change in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.chunks.iter_mut().flatten()
    }

    /// The slots from index `first` on, with their indexes, in order.
    pub fn iter_from(&self, first: usize) -> impl Iterator<Item = (usize, &T)> + '_ {
        let (k, skip) = locate(first);
        self.chunks.get(k..).unwrap_or_default().iter().flatten().skip(skip).zip(first..).map(|(v, i)| (i, v))
    }
}

impl<T> std::ops::Index<usize> for Slab<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        let (k, o) = locate(i);
        &self.chunks[k][o]
    }
}

impl<T> std::ops::IndexMut<usize> for Slab<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let (k, o) = locate(i);
        &mut self.chunks[k][o]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_survive_growth_across_chunks() {
        let mut s = Slab::new();
        let n = 20 * FIRST + 5;
        for i in 0..n {
            s.push(i);
        }
        assert_eq!(s.len(), n);
        assert!((0..s.len()).all(|i| s[i] == i && s.get(i) == Some(&i)));
        assert_eq!(s.get(s.len()), None);
        assert_eq!(s.chunks.len(), 5, "chunks of 1, 2, 4, 8 and 16 times the first");
        s[FIRST] = 7;
        assert_eq!((s[FIRST], s[FIRST + 1]), (7, FIRST + 1));
    }

    #[test]
    fn iter_from_starts_anywhere_and_ends_at_len() {
        let mut s = Slab::new();
        let n = 7 * FIRST + 3;
        for i in 0..n {
            s.push(i);
        }
        for first in [0, 1, FIRST - 1, FIRST, FIRST + 1, 3 * FIRST - 1, 3 * FIRST, 7 * FIRST, n, 50 * FIRST] {
            let got: Vec<(usize, usize)> = s.iter_from(first).map(|(i, v)| (i, *v)).collect();
            let want: Vec<(usize, usize)> = (first..s.len()).map(|i| (i, i)).collect();
            assert_eq!(got, want, "from {first}");
        }
    }
}
