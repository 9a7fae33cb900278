//! State shared by the Socket.IO handlers and the HTTP endpoints, and the server's own
//! counters.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use governor::DefaultKeyedRateLimiter;
use tokio::time::Instant;

use crate::admission::Admission;
use crate::auth::{AuthError, Identity, Verifier};
use crate::config::{Config, Limits, TiersConfig};
use crate::tiers::{Slot, Tiers};

/// What the client-event handlers need.
pub struct Shared {
    /// Token verification.
    pub verifier: Verifier,
    /// Bounds on what a client may hold.
    pub limits: Limits,
    /// Counters.
    pub stats: Arc<ServerStats>,
    /// Admission control (handshakes).
    pub admission: Arc<Admission>,
    /// Connection tiers (CONNECT).
    pub tiers: Tiers,
    /// Publishes per user, across the user's sockets.
    pub user_publishes: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    /// The server is draining: no new sockets.
    pub draining: AtomicBool,
    /// The message store's counters (the IM service's store).
    pub store_stats: Arc<store::StoreStats>,
    /// The IM service's counters.
    pub im_stats: Arc<im::ImStats>,
    /// The document service's counters.
    pub collab_stats: Arc<collab::CollabStats>,
    /// The stores the services opened, by URL: services naming the same URL share one
    /// (one writer per SQLite file).
    pub stores: parking_lot::Mutex<Vec<(String, store::Store)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The store at `config.url`, opened on first use and shared after (the first
    /// opener's batching settings hold).
    ///
    /// # Errors
    ///
    /// The store's, when it cannot be opened.
    pub fn store(&self, config: &store::Config) -> Result<store::Store, store::StoreError> {
        let mut stores = self.stores.lock();
        if let Some((_, s)) = stores.iter().find(|(url, _)| *url == config.url) {
            return Ok(s.clone());
        }
        let opened = store::Store::open(config, self.store_stats.clone())?;
        stores.push((config.url.clone(), opened.clone()));
        Ok(opened)
    }

    /// The tiers' settings.
    pub fn tiers_config(&self) -> &TiersConfig {
        self.tiers.config()
    }
}

/// What Herald keeps per socket (in the socket's data): who it is and its place in
/// its tier.
#[derive(Debug)]
pub struct Client {
    /// The verified identity.
    pub identity: Arc<Identity>,
    /// The socket's place in its tier, given back when the socket goes.
    pub slot: Slot,
    /// Publishes refused in a row by the per-user rate.
    pub publish_violations: AtomicU32,
}

/// Reasons a socket is disconnected by the server, each told first with
/// `forced_disconnect`.
pub const FORCED_REASONS: [&str; 4] = ["evicted", "rate_limited", "token_expired", "auth_failures"];

/// Reasons a CONNECT is refused other than auth.
pub const CONNECT_REFUSALS: [&str; 3] = ["server_shutting_down", "server_full", "tier_full"];

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
    /// Sockets disconnected by the server, by [`FORCED_REASONS`] index.
    pub forced: [AtomicU64; FORCED_REASONS.len()],
    /// CONNECTs refused other than by auth, by [`CONNECT_REFUSALS`] index.
    pub connect_refusals: [AtomicU64; CONNECT_REFUSALS.len()],
    /// Client events refused by a rate (per socket or per user).
    pub rate_limited: AtomicU64,
    /// Runtime scheduling lag: how late a 100 ms timer fires.
    pub lag: socketio::Histogram,
    /// The last lag measured, in microseconds.
    pub lag_last_us: AtomicU64,
}

/// The codes of refused client requests, in the order of [`ServerStats::event_refusals`].
pub const EVENT_REFUSAL_CODES: [&str; 5] = [
    "bad_request",
    "forbidden",
    "too_many_rooms",
    "rate_limited",
    "token_expired",
];

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

    /// Counts a forced disconnect.
    pub fn forced(&self, reason: &str) {
        if let Some(i) = FORCED_REASONS.iter().position(|c| *c == reason) {
            self.add(&self.forced[i]);
        }
    }

    /// Counts a refused CONNECT.
    pub fn connect_refused(&self, code: &str) {
        if let Some(i) = CONNECT_REFUSALS.iter().position(|c| *c == code) {
            self.add(&self.connect_refusals[i]);
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
    /// The listener's TLS, if it speaks TLS.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// The validated configuration.
    pub config: Config,
    /// The Socket.IO server.
    pub io: socketio::Server,
    /// Namespace `/`, where Herald's clients live.
    pub root: Arc<socketio::Namespace>,
    /// The services the server runs.
    pub services: Vec<Arc<dyn crate::service::Service>>,
    /// Shared with the client-event handlers.
    pub shared: Arc<Shared>,
    /// When the server started.
    pub started: Instant,
    /// Whether `/readyz` answers 200 (false once shutting down).
    pub ready: AtomicBool,
    /// The node's membership of the cluster, when clustered.
    pub cluster: Option<cluster::RedisCluster>,
    /// Cancelled by `POST /api/shutdown`: the process drains and exits.
    pub shutdown_requested: tokio_util::sync::CancellationToken,
    /// The open-file limit in effect.
    pub fd_limit: u64,
    /// Connections the server holds at most (resolved from the open-file limit when
    /// not configured).
    pub max_connections: usize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}
