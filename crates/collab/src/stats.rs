//! [`CollabStats`]: the document service's counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// The document service's counters (read by the server's metrics).
#[derive(Debug, Default)]
pub struct CollabStats {
    /// Documents in memory now.
    pub loaded: AtomicU64,
    /// Documents loaded from the store.
    pub loads: AtomicU64,
    /// Documents unloaded.
    pub unloads: AtomicU64,
    /// Updates applied (from clients, the API, other nodes).
    pub updates_in: AtomicU64,
    /// Updates refused: malformed, or from a read-only socket.
    pub updates_refused: AtomicU64,
    /// `sync-update` frames sent (one per recipient per window).
    pub update_frames_out: AtomicU64,
    /// Awareness updates received.
    pub awareness_in: AtomicU64,
    /// `awareness-update` frames sent.
    pub awareness_frames_out: AtomicU64,
    /// Rows appended to the store (one per document per write).
    pub stored: AtomicU64,
    /// Writes or loads the store failed (retried).
    pub store_errors: AtomicU64,
    /// Compactions done.
    pub compactions: AtomicU64,
    /// Sockets disconnected for malformed input.
    pub abusers: AtomicU64,
    /// Connections closed for going over the documents' event rate.
    pub rate_limited: AtomicU64,
}

impl CollabStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
