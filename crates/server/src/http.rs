//! The listener and the HTTP routing: requests for the Socket.IO path go to the engine
//! (plain hyper, so a WebSocket upgrade can take the raw socket back); every other path
//! goes to the router: the API, health, metrics and the demo page.
//!
//! Endpoints besides the API (`api.rs`):
//!
//! - `GET /livez`: 200 while the process runs.
//! - `GET /readyz`: 200 while Herald takes new connections, 503 once it shuts down.
//! - `GET /metrics`: Prometheus text.
//! - `GET /`: the demo page (unless `demo.enabled = false`), and
//!   `GET /demo/socket.io.min.js`: the client copy it loads first (`demo.client_js`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::state::AppState;

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
            .route("/demo/socket.io.min.js", get(demo_client));
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
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        crate::metrics::render(&state),
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
    let path = serde_json::to_string(&state.config.socketio.engine.path).unwrap_or_default();
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
    match &state.config.demo.client_js {
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
        None => (
            StatusCode::NOT_FOUND,
            "no local client (demo.client_js); the page loads it from a CDN\n",
        )
            .into_response(),
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Accepts connections until `shutdown` is cancelled, each served by hyper on a task of
/// its own.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    router: Router,
    shutdown: CancellationToken,
) {
    let mut last_error_log: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, remote)) => {
                tokio::spawn(serve(stream, remote, state.clone(), router.clone()));
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

/// Serves one TCP connection.
async fn serve(stream: TcpStream, remote: SocketAddr, state: Arc<AppState>, router: Router) {
    let _ = stream.set_nodelay(true);
    let engine = state.io.engine().clone();
    let service = service_fn(move |req: http::Request<Incoming>| {
        let engine = engine.clone();
        let router = router.clone();
        async move {
            if engine.matches(req.uri().path()) {
                let res = engine.handle(req, remote).await;
                Ok::<_, Infallible>(res.map(Either::Left))
            } else {
                let res = match router.oneshot(req).await {
                    Ok(res) => res,
                    Err(never) => match never {},
                };
                Ok(res.map(Either::Right))
            }
        }
    });
    // The TokioIo<TcpStream> type matters: the WebSocket transport downcasts the upgraded
    // connection back to it to take the raw socket.
    let conn = engineio::serve::http1_builder().serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.with_upgrades().await {
        tracing::debug!(%remote, error = %e, "http connection ended with an error");
    }
}
