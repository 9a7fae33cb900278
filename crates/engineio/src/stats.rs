//! Counters kept by the engine, exported by the server's metrics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Atomic counters and gauges of one engine. Relaxed ordering: these are statistics.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Open sessions (gauge).
    pub sessions: AtomicI64,
    /// Open sessions on the WebSocket transport (gauge).
    pub websocket_sessions: AtomicI64,
    /// WebSocket connections still being served (gauge): a session's connection stays
    /// a while after the session closed, to write its last frames and the close frame.
    pub websocket_connections: AtomicI64,
    /// Sessions opened.
    pub handshakes: AtomicU64,
    /// Engine.IO packets received.
    pub packets_in: AtomicU64,
    /// Engine.IO packets sent (written to a socket or a poll response).
    pub packets_out: AtomicU64,
    /// Bytes received in messages.
    pub bytes_in: AtomicU64,
    /// Bytes written to sockets and poll responses.
    pub bytes_out: AtomicU64,
    /// Upgrades from polling to WebSocket completed.
    pub upgrades: AtomicU64,
    /// Sessions closed, by [`CloseReason::index`](crate::CloseReason::index).
    pub closes: [AtomicU64; crate::CloseReason::ALL.len()],
}

impl EngineStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
