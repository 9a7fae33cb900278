//! State shared by the Socket.IO handlers and the HTTP endpoints, and the server's own
//! counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use crate::auth::{AuthError, Verifier};
use crate::config::{Config, Limits};

/// What the client-event handlers need.
#[derive(Debug)]
pub struct Shared {
    /// Token verification.
    pub verifier: Verifier,
    /// Bounds on what a client may hold.
    pub limits: Limits,
    /// Counters.
    pub stats: Arc<ServerStats>,
}

/// Counters of the server layer (the engine keeps its own). Relaxed atomics: statistics.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections refused by auth, by [`AuthError::CODES`] index.
    pub auth_refusals: [AtomicU64; AuthError::CODES.len()],
    /// Client requests refused: bad_request, forbidden, too_many_rooms.
    pub event_refusals: [AtomicU64; EVENT_REFUSAL_CODES.len()],
    /// Rooms subscribed to by clients.
    pub subscribes: AtomicU64,
    /// Publishes by clients.
    pub publishes: AtomicU64,
    /// Packets delivered by publishes and API emits (one per recipient socket).
    pub deliveries: AtomicU64,
    /// API emits.
    pub api_emits: AtomicU64,
    /// API calls refused for a missing or wrong key.
    pub api_unauthorized: AtomicU64,
}

/// The codes of refused client requests, in the order of [`ServerStats::event_refusals`].
pub const EVENT_REFUSAL_CODES: [&str; 3] = ["bad_request", "forbidden", "too_many_rooms"];

impl ServerStats {
    /// Adds one.
    pub fn add(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add_n(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a connection refused by auth.
    pub fn auth_refused(&self, code: &str) {
        if let Some(i) = AuthError::CODES.iter().position(|c| *c == code) {
            self.add(&self.auth_refusals[i]);
        }
    }

    /// Counts a refused client request.
    pub fn refused_event(&self, code: &str) {
        if let Some(i) = EVENT_REFUSAL_CODES.iter().position(|c| *c == code) {
            self.add(&self.event_refusals[i]);
        }
    }
}

/// What the HTTP endpoints need.
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// The Socket.IO server.
    pub io: socketio::Server,
    /// Namespace `/`, where Herald's clients live.
    pub root: Arc<socketio::Namespace>,
    /// Shared with the client-event handlers.
    pub shared: Arc<Shared>,
    /// When the server started.
    pub started: Instant,
    /// Whether `/readyz` answers 200 (false once shutting down).
    pub ready: AtomicBool,
    /// The open-file limit in effect.
    pub fd_limit: u64,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}
