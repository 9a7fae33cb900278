//! Services: what the server runs on its Socket.IO server. Each owns its namespaces
//! (the rooms app on `/`; IM on `/im` and documents on `/yjs|*` next), its part of the
//! configuration, its HTTP routes, and its steps of the drain. The server installs the
//! services it is given ([`crate::start_with`]); [`crate::default_services`] lists
//! Herald's, one line each.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use serde_json::json;
use socketio::{ConnectError, ConnectRequest};

use crate::admission::Ticket;
use crate::auth::{AuthError, Identity};
use crate::config::Config;
use crate::state::{AppState, Shared};

/// CONNECTs refused by auth on one connection before further ones close it.
const MAX_AUTH_FAILURES: u32 = 3;

/// A boxed future, as the drain steps of a service return.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What the server shares with the services it installs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The validated configuration (each service reads its own section).
    pub config: Arc<Config>,
    /// Token verification, limits, counters, tiers and the drain flag.
    pub shared: Arc<Shared>,
}

impl Context {
    /// Who the client behind a CONNECT is, for a service's connect middleware: refused
    /// while the server drains (`server_shutting_down`), else the identity of the token
    /// in the auth payload (`{ token }`), or the anonymous identity when the
    /// configuration lets clients without one in. Refusals carry `{ code, message }`
    /// (`token_missing`, `token_expired`, ...; see [`AuthError`]) and are counted; a
    /// connection that keeps sending bad tokens is closed.
    ///
    /// # Errors
    ///
    /// The [`ConnectError`] the client gets.
    pub fn authenticate(&self, req: &ConnectRequest) -> Result<Arc<Identity>, ConnectError> {
        let shared = &self.shared;
        if shared.draining.load(Ordering::Acquire) {
            shared.stats.connect_refused("server_shutting_down");
            return Err(connect_refusal(
                "server_shutting_down",
                "the server is shutting down; connect to another one",
                Some(Duration::from_secs(5)),
            ));
        }
        let auth = req.auth_json();
        let token = match auth.get("token") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(t)) => Ok(Some(t.as_str())),
            Some(_) => Err(AuthError::Malformed("`token` must be a string".to_owned())),
        };
        token
            .and_then(|t| shared.verifier.authenticate(t))
            .map_err(|e| {
                shared.stats.auth_refused(e.code());
                tracing::debug!(code = e.code(), error = %e, "connection refused");
                let failures = req
                    .connection()
                    .with_guard::<Ticket, _>(|t| t.map_or(0, Ticket::auth_failed));
                if failures > MAX_AUTH_FAILURES {
                    // Honest clients do not retry bad tokens on one connection: stop
                    // paying for signature checks.
                    shared.stats.forced("auth_failures");
                    req.connection().close();
                }
                connect_refusal(e.code(), &e.to_string(), None)
            })
    }
}

/// A refused CONNECT as Herald's services word it: the message, and the data `{ code,
/// message, retryAfterMs? }` the client reads from `connect_error`.
pub fn connect_refusal(code: &str, message: &str, retry_after: Option<Duration>) -> ConnectError {
    let mut data = json!({ "code": code, "message": message });
    if let Some(after) = retry_after {
        data["retryAfterMs"] = json!(after.as_millis() as u64);
    }
    ConnectError::new(message).with_data(data)
}

/// Makes a service once the server's shared state exists: `None` when its section
/// turns it off.
///
/// # Errors
///
/// What stops it from starting (a store that does not open), in words.
pub type Factory = Box<dyn FnOnce(&Context) -> Result<Option<Arc<dyn Service>>, String> + Send>;

/// A service of the server.
pub trait Service: Send + Sync + 'static {
    /// A short name, for logs.
    fn name(&self) -> &'static str;

    /// Adds the service's namespaces (connect middleware, handlers) to the Socket.IO
    /// server being built.
    fn install(&self, builder: socketio::Builder) -> socketio::Builder;

    /// The Socket.IO server is built and about to take connections.
    fn started(&self, io: &socketio::Server) {
        let _ = io;
    }

    /// On many nodes: the cluster's bus went down (`false`), or is up (`true`), for the
    /// first time or again after an outage (what the other nodes said meanwhile was
    /// lost).
    fn cluster_bus(&self, up: bool) {
        let _ = up;
    }

    /// The service's HTTP routes, merged into the server's router. Routes under `/api/`
    /// take the `crate::api::ApiKey` extractor like the server's own.
    fn routes(&self) -> Router<Arc<AppState>> {
        Router::new()
    }

    /// Drain step "flush": everything the service accepted is written to its stores.
    /// Bounded by the drain (`drain.grace_ms`).
    fn flush(&self) -> BoxFuture {
        Box::pin(async {})
    }

    /// Drain step "leave": the service leaves the cluster (after `flush`).
    fn leave(&self) -> BoxFuture {
        Box::pin(async {})
    }
}
