//! The listener and the HTTP routing: each connection is served by the engine
//! (`engineio::serve_connection`: admission on every handshake, WebSockets opened
//! directly answered without hyper), and every other path goes to the router as the
//! engine's fallback: the API, health, metrics and the demo page.
//!
//! Endpoints besides the API (`api.rs`):
//!
//! - `GET /livez`: 200 while the process runs.
//! - `GET /readyz`: 200 while Herald takes new connections, 503 once it shuts down.
//! - `GET /metrics`: Prometheus text.
//! - `GET /`: the demo page (unless `demo.enabled = false`), and
//!   `GET /demo/socket.io.min.js`: the client copy it loads first (`demo.client_js`),
//!   `GET /demo/docs.js`: the Yjs and y-socket.io bundle its editor imports first
//!   (`demo.docs_js`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::state::AppState;

/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the router for every path but the Socket.IO one.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.socketio.engine.max_payload.max(64 * 1024);
    let mut router = crate::api::routes()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.config.demo.enabled {
        router = router
            .route("/", get(demo_page))
            .route("/demo/socket.io.min.js", get(demo_client))
            .route("/demo/docs.js", get(demo_docs));
    }
    for service in &state.services {
        router = router.merge(service.routes());
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let redis_down = state.cluster.as_ref().is_some_and(|c| !c.is_connected());
    let required = state
        .config
        .cluster
        .as_ref()
        .is_some_and(|c| c.ready_requires_redis);
    match (redis_down, required) {
        (false, _) => (StatusCode::OK, "ready\n").into_response(),
        (true, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: redis unreachable (this node serves its own clients only)\n",
        )
            .into_response(),
        (true, false) => (
            StatusCode::OK,
            "ready (redis unreachable: this node serves its own clients only)\n",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        crate::metrics::render(&state, state.tls.as_deref()),
    )
        .into_response()
}

async fn demo_page(State(state): State<Arc<AppState>>) -> Response {
    let parser = match state.config.socketio.parser {
        socketio::Parser::Default => "default",
        socketio::Parser::Msgpack => "msgpack",
    };
    // The path comes from validated config; it is written into a JS string literal,
    // so quote it as JSON.
    let path = serde_json::to_string(&state.config.socketio.engine.path)
        .unwrap_or_default()
        // Inside <script>, `</script>` in a string would end the element.
        .replace('<', "\\u003c");
    let page = include_str!("../assets/demo.html")
        .replace("\"__HERALD_PATH__\"", &path)
        .replace("__HERALD_PARSER__", parser);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        page,
    )
        .into_response()
}

async fn demo_client(State(state): State<Arc<AppState>>) -> Response {
    demo_script(
        state.config.demo.client_js.as_ref(),
        "no local client (demo.client_js); the page loads it from a CDN\n",
    )
}

async fn demo_docs(State(state): State<Arc<AppState>>) -> Response {
    demo_script(
        state.config.demo.docs_js.as_ref(),
        "no local Yjs bundle (demo.docs_js); the page loads yjs and y-socket.io from a CDN\n",
    )
}

/// A script the demo page loads, or 404 with `missing` when none was configured.
fn demo_script(
    script: Option<&(std::path::PathBuf, bytes::Bytes)>,
    missing: &'static str,
) -> Response {
    match script {
        Some((_, js)) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/javascript; charset=utf-8"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=3600"),
                ),
            ],
            js.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, missing).into_response(),
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// The router as the engine's fallback: every request that is not for the Socket.IO
/// path.
#[derive(Clone)]
struct RouterFallback(Router);

impl engineio::Fallback for RouterFallback {
    type Body = axum::body::Body;
    type Error = axum::Error;

    async fn call(&self, req: http::Request<Incoming>, _remote: SocketAddr) -> Response {
        match self.0.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }
}

/// Accepts connections until `shutdown` is cancelled, each served by the engine (the
/// Socket.IO path) and the router (everything else) on a task of `tracker`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let tls = state.tls.clone();
    let fallback = RouterFallback(router);
    let mut last_error_log: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, remote)) => {
                // Counted per address from here, so connections that never finish a
                // TLS or HTTP handshake cannot pile up; over the share: closed at once
                // (and logged, by admission).
                let Ok(held) = state.shared.admission.accept(remote.ip()) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let engine = state.io.engine().clone();
                let fallback = fallback.clone();
                match &tls {
                    None => {
                        tracker.spawn(async move {
                            engineio::serve_connection(engine, stream, remote, fallback).await;
                            drop(held);
                        });
                    }
                    Some(tls) => {
                        let tls = tls.clone();
                        tracker.spawn(async move {
                            let _held = held;
                            let handshake = tls.acceptor().accept(stream);
                            let shutdown = engine.shutdown_token().clone();
                            let handshake = async {
                                tokio::select! {
                                    done = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake) => Some(done),
                                    // Not waited for by a shutdown.
                                    () = shutdown.cancelled() => None,
                                }
                            };
                            let Some(done) = handshake.await else { return };
                            match done {
                                // The TLS stream as it is: the WebSocket transport runs
                                // on it as on a TcpStream.
                                Ok(Ok(stream)) => {
                                    engineio::serve_connection(engine, stream, remote, fallback)
                                        .await;
                                }
                                Ok(Err(e)) => {
                                    tls.handshake_failures.fetch_add(1, Ordering::Relaxed);
                                    tracing::debug!(%remote, error = %e, "tls handshake failed");
                                }
                                Err(_) => {
                                    tls.handshake_failures.fetch_add(1, Ordering::Relaxed);
                                    tracing::debug!(%remote, "tls handshake timed out");
                                }
                            }
                        });
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors (or a transient error): the listener stays;
                // back off so the loop does not spin, and say so at most once a second.
                let now = tokio::time::Instant::now();
                if last_error_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "accept failed");
                    last_error_log = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
