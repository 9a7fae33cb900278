//! The `herald` server: a Socket.IO server that runs with no code. Clients connect with
//! a JWT, subscribe to and publish in rooms their token allows; backends publish and
//! disconnect over an HTTP API; operators get health endpoints, metrics and logs.
//!
//! # Layout
//!
//! - [`config`]: defaults, TOML file, environment, flags; validated into [`Config`]
//!   before anything binds.
//! - [`auth`]: JWT verification, claims, anonymous access, the cache of verified tokens.
//! - [`rooms`]: the client events (`subscribe`, `unsubscribe`, `publish`) and user rooms.
//! - `api`: the HTTP API for backends (emit, disconnect, rooms, stats).
//! - `http`: the listener and routing (engine path to the engine, the rest to the
//!   router), health endpoints, demo page.
//! - [`metrics`]: Prometheus text, read from the layers' counters.
//! - [`state`]: state shared by handlers and endpoints, and the server's counters.
//! - [`telemetry`]: the logs, text or JSON.
//!
//! [`start`] binds and returns an [`App`] that reports the address it bound, so tests
//! can start a server on port 0.

pub mod auth;
pub mod config;
pub mod metrics;
pub mod rooms;
pub mod state;
pub mod telemetry;

mod api;
mod http;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::auth::Verifier;
use crate::state::{AppState, ServerStats, Shared};

/// A running server.
#[derive(Debug)]
pub struct App {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    accept: JoinHandle<()>,
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
}

/// Binds `config.listen` and starts serving. `fd_limit` is the open-file limit in effect
/// (reported by metrics).
///
/// # Errors
///
/// [`StartError`] when the address cannot be bound or the keys do not load.
///
/// # Panics
///
/// Outside a Tokio runtime.
pub async fn start(config: Config, fd_limit: u64) -> Result<App, StartError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let shared = Arc::new(Shared {
        verifier: Verifier::new(&config.auth).map_err(StartError::Auth)?,
        limits: config.limits,
        stats: Arc::new(ServerStats::default()),
    });
    let io =
        rooms::install(socketio::Server::builder(), shared.clone()).build(config.socketio.clone());
    let root = io
        .of("/")
        .ok_or_else(|| StartError::Auth("namespace / missing".to_owned()))?;
    let state = Arc::new(AppState {
        config,
        io,
        root,
        shared,
        started: tokio::time::Instant::now(),
        ready: AtomicBool::new(true),
        fd_limit,
    });
    let shutdown = CancellationToken::new();
    let router = http::router(state.clone());
    let accept = tokio::spawn(http::accept_loop(
        listener,
        state.clone(),
        router,
        shutdown.clone(),
    ));
    Ok(App {
        addr,
        state,
        shutdown,
        accept,
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

    /// Stops taking connections, closes every connection, and returns once the
    /// listener is closed and queued packets had `grace` to go out.
    pub async fn shutdown(self, grace: Duration) {
        self.state.ready.store(false, Ordering::Release);
        self.shutdown.cancel();
        let _ = self.accept.await;
        self.state.io.close();
        tokio::time::sleep(grace).await;
    }
}
