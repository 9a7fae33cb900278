//! Counters of a store, for the server's metrics. Relaxed atomics: statistics.
//!
//! Reads and writes are also counted per **operation**: the caller names what it is doing
//! ([`counted`], [`sync_counted`]: `send`, `history`, ...), and every store call made
//! inside is counted under that name, on whichever thread the store runs it. So the
//! metrics show, say, that a `send` to a conversation in use reads nothing.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

tokio::task_local! {
    /// The operation of the task's store calls.
    static OPERATION: &'static str;
}

thread_local! {
    /// The operation of the job the writer thread runs now.
    static JOB: Cell<&'static str> = const { Cell::new(UNNAMED) };
}

/// The operation of store calls made outside a named one.
pub const UNNAMED: &str = "other";

/// Runs `f` with its store calls counted as operation `op`.
pub async fn counted<F: Future>(op: &'static str, f: F) -> F::Output {
    OPERATION.scope(op, f).await
}

/// Runs `f` (synchronous) with its store calls counted as operation `op`.
pub fn sync_counted<R>(op: &'static str, f: impl FnOnce() -> R) -> R {
    OPERATION.sync_scope(op, f)
}

/// The operation store calls are counted as here and now.
pub fn operation() -> &'static str {
    OPERATION
        .try_with(|op| *op)
        .unwrap_or_else(|_| JOB.with(Cell::get))
}

/// Runs `f` on the writer with its counts going to `op`.
pub(crate) fn in_job<R>(op: &'static str, f: impl FnOnce() -> R) -> R {
    JOB.with(|j| j.set(op));
    let r = f();
    JOB.with(|j| j.set(UNNAMED));
    r
}

/// Reads and writes of one operation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpCounts {
    /// Requests of the operation (counted by the caller, [`StoreStats::request`]).
    pub requests: u64,
    /// Read queries.
    pub reads: u64,
    /// Rows written.
    pub writes: u64,
}

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
    /// Write transactions run again after PostgreSQL aborted them (a deadlock with
    /// another node's writer, a serialization failure).
    pub retried_commits: AtomicU64,
    /// Jobs refused because the writer's queue was full.
    pub refused: AtomicU64,
    /// Per operation. parking_lot mutex: held for one addition or a copy.
    by_op: Mutex<BTreeMap<&'static str, OpCounts>>,
}

impl StoreStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of `counter` now.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts `n` read queries of operation `op`.
    pub(crate) fn read_by(&self, op: &'static str, n: u64) {
        StoreStats::add(&self.reads, n);
        self.by_op.lock().entry(op).or_default().reads += n;
    }

    /// Counts `n` read queries of the current operation.
    pub(crate) fn read(&self, n: u64) {
        self.read_by(operation(), n);
    }

    /// Counts `n` rows written by the current operation.
    pub(crate) fn wrote(&self, n: u64) {
        StoreStats::add(&self.writes, n);
        self.by_op.lock().entry(operation()).or_default().writes += n;
    }

    /// Counts one request of operation `op` (whether or not it reaches the store).
    pub fn request(&self, op: &'static str) {
        self.by_op.lock().entry(op).or_default().requests += 1;
    }

    /// Every operation's counts so far, by name.
    pub fn by_operation(&self) -> Vec<(&'static str, OpCounts)> {
        self.by_op.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts go to the operation named around them, on a task or on the writer.
    #[tokio::test]
    async fn counted_by_operation() {
        let stats = StoreStats::default();
        counted("send", async { stats.wrote(2) }).await;
        sync_counted("send", || stats.read(1));
        in_job("history", || stats.read(3));
        stats.wrote(1);
        stats.request("send");
        let by: BTreeMap<_, _> = stats.by_operation().into_iter().collect();
        assert_eq!(
            by["send"],
            OpCounts {
                requests: 1,
                reads: 1,
                writes: 2
            }
        );
        assert_eq!(by["history"].reads, 3);
        assert_eq!(by[UNNAMED].writes, 1);
        assert_eq!(StoreStats::get(&stats.reads), 4);
    }
}
