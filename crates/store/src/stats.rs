//! Counters of a store, for the server's metrics. Relaxed atomics: statistics.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a store has done.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Read queries run.
    pub reads: AtomicU64,
    /// Rows written (inserted or updated).
    pub writes: AtomicU64,
    /// Write transactions committed.
    pub commits: AtomicU64,
    /// Jobs committed (summed over transactions: jobs per commit is this over `commits`).
    pub jobs: AtomicU64,
    /// Write transactions that failed (every job in them was answered `unavailable`).
    pub failed_commits: AtomicU64,
    /// Jobs refused because the writer's queue was full.
    pub refused: AtomicU64,
}

impl StoreStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of `counter` now.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
