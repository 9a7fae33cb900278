//! The `herald` server: a Socket.IO server that runs with no code. Clients connect with
//! a JWT, subscribe to and publish in rooms their token allows; backends publish and
//! disconnect over an HTTP API; operators get health endpoints, metrics and logs.
//!
//! # Layout
//!
//! - [`config`]: defaults, TOML file, environment, flags; each section validated into
//!   [`Config`] before anything binds.
//! - [`auth`]: JWT verification, claims, the verified [`auth::Identity`], anonymous
//!   access, the cache of verified tokens.
//! - [`admission`]: who may open a connection: caps, per-address limits, access lists,
//!   loopback trust; the engine's admission hook; refusals logged.
//! - [`tiers`]: connection tiers, their caps and eviction.
//! - [`service`]: what the server runs: [`service::Service`] (namespaces, routes, drain
//!   steps) and the [`service::Context`] every service gets (authentication included).
//! - [`rooms`]: the rooms app, the first service: the client events (`subscribe`,
//!   `unsubscribe`, `publish`) on `/`, user rooms, the connect middleware (auth, drain,
//!   tiers) and the rate-limited handler.
//! - `drain`: graceful shutdown in six bounded, logged phases.
//! - [`tls`]: rustls on the listener, reloaded on SIGHUP.
//! - `api`: the HTTP API for backends (emit, disconnect, rooms, stats).
//! - `http`: the accept loop (each connection served by the engine, with the router as
//!   its fallback for other paths), health endpoints, demo page.
//! - [`metrics`]: Prometheus text, read from the layers' counters.
//! - [`state`]: state shared by handlers and endpoints, and the server's counters.
//! - [`telemetry`]: the logs, text or JSON.
//!
//! [`start`] binds, runs [`default_services`] and returns an [`App`] that reports the
//! address it bound, so tests can start a server on port 0; [`start_with`] runs the
//! services it is given.

pub mod admission;
pub mod auth;
pub mod config;
pub mod docs;
pub mod im;
pub mod metrics;
pub mod rooms;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod tiers;
pub mod tls;

mod api;
mod drain;
mod http;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::admission::Admission;
use crate::auth::Verifier;
use crate::state::{AppState, ServerStats, Shared};

/// A running server.
#[derive(Debug)]
pub struct App {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    accept: JoinHandle<()>,
    /// The tasks serving accepted connections (until they are upgraded or close).
    connections: TaskTracker,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The auth keys did not load.
    #[error("auth: {0}")]
    Auth(String),
    /// The TLS files did not load.
    #[error("tls: {0}")]
    Tls(String),
    /// A service could not start (its store did not open, say).
    #[error("{0}")]
    Service(String),
    /// The cluster's settings were refused.
    #[error("cluster: {0}")]
    Cluster(String),
    /// No service serves namespace `/`.
    #[error("no service serves namespace / (the HTTP API emits there)")]
    NoRoot,
}

/// Connections the kernel may hold for the listener before they are accepted (it caps
/// this at `net.core.somaxconn`). Reconnect storms arrive all at once: a short queue
/// drops SYNs, and each dropped SYN costs its client a second.
pub const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` with address reuse and a long accept queue.
///
/// # Errors
///
/// The bind or listen error.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Herald's services, one line each: the rooms app on `/`, IM on `/im` (unless `[im]`
/// turns it off).
pub fn default_services() -> Vec<service::Factory> {
    vec![
        rooms::Rooms::factory(),
        im::ImService::factory(),
        docs::DocsService::factory(),
    ]
}

/// Binds `config.listen` and starts serving Herald's services ([`default_services`]).
/// `fd_limit` is the open-file limit in effect (reported by metrics).
///
/// # Errors
///
/// [`StartError`] when the address cannot be bound or the keys do not load.
///
/// # Panics
///
/// Outside a Tokio runtime.
pub async fn start(config: Config, fd_limit: u64) -> Result<App, StartError> {
    start_with(config, fd_limit, default_services()).await
}

/// As [`start`], running `services` (one of them must serve namespace `/`, where the
/// HTTP API emits).
///
/// # Errors
///
/// [`StartError`] when the address cannot be bound, the keys do not load, or no service
/// serves `/`.
///
/// # Panics
///
/// Outside a Tokio runtime.
pub async fn start_with(
    config: Config,
    fd_limit: u64,
    services: Vec<service::Factory>,
) -> Result<App, StartError> {
    let listener = listen(config.listen).map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let max_connections = match config.admission.max_connections {
        0 => usize::try_from(fd_limit.saturating_sub(256))
            .unwrap_or(usize::MAX)
            .max(1),
        n => n,
    };
    let admission = Arc::new(Admission::new(admission::Settings {
        max_connections,
        ..config.admission.clone()
    }));
    let user_publishes = config
        .limits
        .user_publish_rate
        .and_then(|(per_second, burst)| {
            let period = Duration::from_secs_f64(1.0 / per_second);
            let burst = std::num::NonZeroU32::new(burst)?;
            Some(governor::DefaultKeyedRateLimiter::keyed(
                governor::Quota::with_period(period)?.allow_burst(burst),
            ))
        });
    let shared = Arc::new(Shared {
        verifier: Verifier::new(&config.auth).map_err(StartError::Auth)?,
        limits: config.limits,
        stats: Arc::new(ServerStats::default()),
        admission,
        tiers: tiers::Tiers::new(config.tiers.clone(), max_connections),
        user_publishes,
        draining: AtomicBool::new(false),
        store_stats: Arc::default(),
        im_stats: Arc::default(),
        collab_stats: Arc::default(),
        stores: parking_lot::Mutex::new(Vec::new()),
    });
    let ctx = service::Context {
        config: Arc::new(config.clone()),
        shared: shared.clone(),
    };
    let mut made = Vec::with_capacity(services.len());
    for factory in services {
        if let Some(service) = factory(&ctx).map_err(StartError::Service)? {
            made.push(service);
        }
    }
    let services: Vec<Arc<dyn service::Service>> = made;
    // Every handshake, whichever way it comes, is admitted here first.
    let engine_stats = Arc::new(engineio::EngineStats::default());
    let admit = {
        let (shared, stats) = (shared.clone(), engine_stats.clone());
        move |handshake: &engineio::Handshake<'_>| {
            let open = stats.sessions.load(Ordering::Relaxed).max(0) as usize;
            let draining = shared.draining.load(Ordering::Acquire);
            shared.admission.admit_handshake(handshake, open, draining)
        }
    };
    let cluster = match &config.cluster {
        Some(c) => {
            let joined = cluster::RedisCluster::new(c.options.clone())
                .map_err(|e| StartError::Cluster(e.to_string()))?;
            let adapter = match c.options.sharded {
                Some(mode) => format!("sharded adapter, {mode:?} subscriptions"),
                None => "classic adapter".to_owned(),
            };
            tracing::info!(
                prefix = %c.options.key_prefix,
                "cluster: joining over redis ({adapter}); until redis answers, this node serves its own clients only"
            );
            Some(joined)
        }
        None => None,
    };
    let mut builder = socketio::Server::builder()
        .engine_stats(engine_stats.clone())
        .admission(admit);
    if let Some(c) = &cluster {
        builder = builder.adapter(Arc::new(c.clone()));
    }
    for s in &services {
        builder = s.install(builder);
    }
    let io = builder.build(config.socketio.clone());
    let root = io.of("/").ok_or(StartError::NoRoot)?;
    for s in &services {
        s.started(&io);
    }
    let tls = match &config.tls {
        Some((cert, key)) => Some(Arc::new(
            tls::Tls::new(cert.clone(), key.clone()).map_err(StartError::Tls)?,
        )),
        None => None,
    };
    let state = Arc::new(AppState {
        tls: tls.clone(),
        config,
        io,
        root,
        services,
        shared,
        started: tokio::time::Instant::now(),
        ready: AtomicBool::new(true),
        cluster: cluster.clone(),
        shutdown_requested: CancellationToken::new(),
        fd_limit,
        max_connections,
    });
    if let Some(c) = &cluster {
        announce(c, &state, engine_stats);
        tokio::spawn(watch_bus(c.clone(), Arc::downgrade(&state)));
    }
    let shutdown = CancellationToken::new();
    let connections = TaskTracker::new();
    let router = http::router(state.clone());
    let accept = tokio::spawn(http::accept_loop(
        listener,
        state.clone(),
        router,
        shutdown.clone(),
        connections.clone(),
    ));
    tokio::spawn(housekeeping(Arc::downgrade(&state), shutdown.clone()));
    tokio::spawn(lag_probe(Arc::downgrade(&state), shutdown.clone()));
    Ok(App {
        addr,
        state,
        shutdown,
        accept,
        connections,
    })
}

impl App {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Socket.IO server (to add behaviour when Herald is used as a library).
    pub fn io(&self) -> &socketio::Server {
        &self.state.io
    }

    /// The listener's TLS, to reload (on SIGHUP); `None` for plain HTTP.
    pub fn tls(&self) -> Option<Arc<tls::Tls>> {
        self.state.tls.clone()
    }

    /// Resolves when `POST /api/shutdown` asks the server to stop.
    pub async fn shutdown_requested(&self) {
        self.state.shutdown_requested.cancelled().await;
    }

    /// Drains, in phases, each bounded and logged (see `drain`): new connections
    /// refused, every socket told `server_shutdown`, connections closed in paced
    /// batches over `drain.window_ms`, the listener closed and the last connections
    /// waited for, then the services' stores flushed and the cluster left. Returns when
    /// done.
    pub async fn drain(self) {
        drain::run(&self.state, || self.close_listener(), &self.connections).await;
    }

    /// Closes the listener and every connection at once.
    pub async fn stop(self) {
        self.state.ready.store(false, Ordering::Release);
        self.close_listener();
        let _ = self.accept.await;
        self.state.io.close();
    }

    fn close_listener(&self) {
        self.shutdown.cancel();
        self.connections.close();
    }
}

/// Tells the services each time the cluster's bus goes down or comes up (the first
/// time, and after each outage), until the server is gone.
async fn watch_bus(cluster: cluster::RedisCluster, state: std::sync::Weak<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = (false, 0);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let stats = cluster.stats();
        // Up once the channels are subscribed again: what the services ask the others
        // then is answered to a node that hears.
        let now = (
            cluster.is_connected() && cluster.is_subscribed(),
            stats.reconnects.load(Ordering::Relaxed),
        );
        // Down, or up after being down (or reconnected since: an outage shorter than a
        // tick).
        let down = seen.0 && !now.0;
        let up = now.0 && (!seen.0 || now.1 != seen.1);
        if down || up {
            for s in &state.services {
                s.cluster_bus(up);
            }
        }
        seen = now;
    }
}

/// How often a node tells the others how it is.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Announces the node to the other Herald nodes (seed 004 §5.2): its connections and
/// load, every [`HEARTBEAT`].
fn announce(
    cluster: &cluster::RedisCluster,
    state: &Arc<AppState>,
    engine: Arc<engineio::EngineStats>,
) {
    let id = format!("{:016x}", rand::random::<u64>());
    let weak = Arc::downgrade(state);
    cluster.announce(id, HEARTBEAT, move || {
        let Some(state) = weak.upgrade() else {
            return serde_json::Value::Null;
        };
        let connections = engine.sessions.load(Ordering::Relaxed).max(0);
        serde_json::json!({
            "listen": state.config.listen.to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "connections": connections,
            "sockets": state.root.len(),
            "max_connections": state.max_connections,
            "load": connections as f64 / state.max_connections.max(1) as f64,
            "uptime_s": state.started.elapsed().as_secs(),
            "ready": state.ready.load(Ordering::Acquire),
        })
    });
}

/// Bounds the memory of the rate limiters: forgets addresses and users gone quiet.
async fn housekeeping(state: std::sync::Weak<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let Some(state) = state.upgrade() else { return };
        state.shared.admission.tidy();
        if let Some(limiter) = &state.shared.user_publishes {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Measures how late the runtime runs a 100 ms timer: the scheduling lag, the tokio
/// counterpart of Node's event-loop lag.
async fn lag_probe(state: std::sync::Weak<AppState>, shutdown: CancellationToken) {
    const PERIOD: Duration = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            () = shutdown.cancelled() => return,
        }
        let lag = started.elapsed().saturating_sub(PERIOD);
        let Some(state) = state.upgrade() else { return };
        let stats = &state.shared.stats;
        stats.lag.observe(lag);
        stats
            .lag_last_us
            .store(lag.as_micros() as u64, Ordering::Relaxed);
    }
}
