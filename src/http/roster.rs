//! The web door's open connections and whether each is busy with a
//! request, so that when every slot is taken a new connection takes the
//! slot of the one idle longest (it is closed): a slot held by a socket
//! that sends nothing, or by a keep-alive between requests, is worth less
//! than one a scrape is about to use. The longest idle goes first, so a
//! connection just accepted (a scrape about to send its head) is the last
//! to go, and a request being answered is never cut for another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::core::hash::FastMap;

/// `Entry::idle_since` while a request runs.
const BUSY: u64 = u64::MAX;

/// The open connections.
pub struct Roster {
    conns: Mutex<FastMap<u64, Arc<Entry>>>,
    next: AtomicU64,
    started: Instant,
}

/// One open connection's state.
pub struct Entry {
    /// Microseconds since the roster started when it last became idle;
    /// `BUSY` while a request runs.
    idle_since: AtomicU64,
    started: Instant,
    /// Told when the connection must close to give its slot up.
    evicted: Notify,
}

impl Entry {
    fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// A request arrived (its head is read): not to be evicted until answered.
    pub fn busy(&self) {
        // Relaxed: a hint read by `evict_idlest`; a race costs at most the
        // choice of another idle connection.
        self.idle_since.store(BUSY, Ordering::Relaxed);
    }

    /// The request was answered: idle from now.
    pub fn idle(&self) {
        // Relaxed: as in `busy`.
        self.idle_since.store(self.now(), Ordering::Relaxed);
    }

    /// Resolves when the connection was chosen to give its slot up.
    pub async fn evicted(&self) {
        self.evicted.notified().await
    }
}

/// A connection's place in the roster; leaves it when dropped.
pub struct Place {
    roster: Arc<Roster>,
    id: u64,
    pub entry: Arc<Entry>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.roster.conns.lock().remove(&self.id);
    }
}

impl Roster {
    pub fn new() -> Roster {
        Roster { conns: Mutex::new(FastMap::default()), next: AtomicU64::new(0), started: Instant::now() }
    }

    /// A new connection, idle from now.
    pub fn join(self: &Arc<Self>) -> Place {
        // Relaxed: a unique counter.
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            idle_since: AtomicU64::new(self.started.elapsed().as_micros() as u64),
            started: self.started,
            evicted: Notify::new(),
        });
        self.conns.lock().insert(id, entry.clone());
        Place { roster: self.clone(), id, entry }
    }

    /// Tells the connection idle longest to close (and forgets it, so it is
    /// not chosen twice): false when every connection is busy.
    pub fn evict_idlest(&self) -> bool {
        let mut conns = self.conns.lock();
        // Relaxed: as in `Entry::busy`.
        let idlest = conns
            .iter()
            .map(|(id, e)| (e.idle_since.load(Ordering::Relaxed), *id))
            .filter(|(since, _)| *since != BUSY)
            .min();
        let Some((_, id)) = idlest else { return false };
        if let Some(e) = conns.remove(&id) {
            // notify_one keeps a permit if the connection is not waiting yet.
            e.evicted.notify_one();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_idle_goes_first_and_a_busy_one_never() {
        let r = Arc::new(Roster::new());
        let (old, busy, new) = (r.join(), r.join(), r.join());
        busy.entry.busy();
        std::thread::sleep(std::time::Duration::from_millis(2));
        new.entry.idle();
        assert!(r.evict_idlest());
        // The oldest idle one was told, and only it.
        tokio::time::timeout(std::time::Duration::from_secs(1), old.entry.evicted()).await.expect("evicted");
        assert!(r.evict_idlest(), "then the newer idle one");
        assert!(!r.evict_idlest(), "never the busy one");
        busy.entry.idle();
        assert!(r.evict_idlest());
    }
}
