//! The one place the core gets its concurrency primitives from.
//!
//! Normally these are std atomics and parking_lot locks; under
//! `--cfg broker_loom` they are loom's, so the loom models in `loom-tests/`
//! run the shipped algorithms with only the primitives swapped. Core code must
//! never import atomics or locks from anywhere else.

#[cfg(not(broker_loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(broker_loom))]
pub use std::sync::Arc;

#[cfg(broker_loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(broker_loom)]
pub use loom::sync::Arc;

/// A mutual-exclusion lock whose `lock` never fails (no poisoning), so core
/// code reads the same under both builds.
pub struct Mutex<T> {
    #[cfg(not(broker_loom))]
    inner: parking_lot::Mutex<T>,
    #[cfg(broker_loom)]
    inner: loom::sync::Mutex<T>,
}

/// A reader-writer lock for read-mostly state (the org directory).
pub struct RwLock<T> {
    #[cfg(not(broker_loom))]
    inner: parking_lot::RwLock<T>,
    #[cfg(broker_loom)]
    inner: loom::sync::RwLock<T>,
}

#[cfg(not(broker_loom))]
mod imp {
    use super::{Mutex, RwLock};

    /// Held while the lock is.
    pub type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
    /// A shared read of the lock.
    pub type ReadGuard<'a, T> = parking_lot::RwLockReadGuard<'a, T>;
    /// Exclusive write access.
    pub type WriteGuard<'a, T> = parking_lot::RwLockWriteGuard<'a, T>;

    impl<T> Mutex<T> {
        /// A lock around `value`.
        pub fn new(value: T) -> Self {
            Self { inner: parking_lot::Mutex::new(value) }
        }
        /// Waits for the lock.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.inner.lock()
        }
    }

    impl<T> RwLock<T> {
        /// A lock around `value`.
        pub fn new(value: T) -> Self {
            Self { inner: parking_lot::RwLock::new(value) }
        }
        /// Waits for shared access.
        pub fn read(&self) -> ReadGuard<'_, T> {
            self.inner.read()
        }
        /// Waits for exclusive access.
        pub fn write(&self) -> WriteGuard<'_, T> {
            self.inner.write()
        }
    }
}

#[cfg(broker_loom)]
mod imp {
    use super::{Mutex, RwLock};

    /// Held while the lock is.
    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
    /// A shared read of the lock.
    pub type ReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    /// Exclusive write access.
    pub type WriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;

    // Poisoning only follows a panic in another model thread, which already
    // fails the model; unwrapping here cannot hide a bug.
    impl<T> Mutex<T> {
        /// A lock around `value`.
        pub fn new(value: T) -> Self {
            Self { inner: loom::sync::Mutex::new(value) }
        }
        /// Waits for the lock.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.inner.lock().unwrap()
        }
    }

    impl<T> RwLock<T> {
        /// A lock around `value`.
        pub fn new(value: T) -> Self {
            Self { inner: loom::sync::RwLock::new(value) }
        }
        /// Waits for shared access.
        pub fn read(&self) -> ReadGuard<'_, T> {
            self.inner.read().unwrap()
        }
        /// Waits for exclusive access.
        pub fn write(&self) -> WriteGuard<'_, T> {
            self.inner.write().unwrap()
        }
    }
}

pub use imp::{MutexGuard, ReadGuard, WriteGuard};
