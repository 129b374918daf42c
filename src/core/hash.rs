//! The hash maps of the core: std's `HashMap` with foldhash, seeded per map.
//!
//! SipHash showed up at several percent of the broker's CPU under churn;
//! foldhash is several times cheaper and, seeded randomly per map, still
//! keeps client-chosen keys (runner nonces, machine IDs) from being aimed at
//! one bucket.

/// A `HashMap` with a fast, randomly seeded hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with a fast, randomly seeded hasher.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
