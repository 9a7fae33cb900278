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
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
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
    let tls = state.tls.clone();
    let mut last_error_log: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, remote)) => {
                // Counted per address from here, so connections that never finish a
                // TLS or HTTP handshake cannot pile up; over the share: closed at once.
                let held = match state.shared.admission.accept(remote.ip()) {
                    Ok(held) => held,
                    Err(_) => {
                        tracing::debug!(%remote, "too many connections from this address; closed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (state, router) = (state.clone(), router.clone());
                match &tls {
                    None => {
                        tokio::spawn(async move {
                            serve_tcp(stream, remote, state, router).await;
                            drop(held);
                        });
                    }
                    Some(tls) => {
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            let _held = held;
                            let handshake = tls.acceptor().accept(stream);
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                                Ok(Ok(stream)) => {
                                    // Boxed: the WebSocket transport runs it as a
                                    // `BoxedStream`, as it runs a TcpStream.
                                    let io: engineio::BoxedStream = Box::new(stream);
                                    serve(TokioIo::new(io), remote, state, router).await;
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

/// Whether a request to the engine's path opens a session: a GET without a session id
/// (a polling handshake or a WebSocket upgrade).
fn is_handshake<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::GET
        && !req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .any(|pair| pair.starts_with("sid="))
}

fn admit<B>(
    state: &AppState,
    req: &http::Request<B>,
    remote: SocketAddr,
) -> Result<crate::admission::Ticket, crate::admission::Refused> {
    let admission = &state.shared.admission;
    // Every line of the header, in order, as bytes: an entry that is not text is junk
    // where it stands, and does not spoil the entries a proxy appended after it.
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(http::HeaderValue::as_bytes);
    let ip = admission.client_ip(remote, forwarded);
    let result = admission.admit(
        ip,
        state.io.engine().len(),
        state.shared.draining.load(Ordering::Acquire),
    );
    if let Err(refused) = &result {
        tracing::debug!(%ip, reason = refused.reason.code(), "handshake refused");
    }
    result
}

/// The answer to a refused handshake: the status, `Retry-After` in whole seconds when
/// waiting helps, and a JSON body with the code, as the Engine.IO errors have.
fn refusal_response(refused: crate::admission::Refused) -> engineio::engine::HttpResponse {
    let body = serde_json::json!({
        "code": refused.reason.code(),
        "message": refused.reason.message(),
    });
    let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(
        body.to_string(),
    )));
    *res.status_mut() =
        StatusCode::from_u16(refused.reason.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(after) = refused.retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    // A refused upgrade has no use for the connection.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Serves one plain TCP connection: a WebSocket opened directly on the engine's path
/// is answered without hyper (the 101 and the open packet in one write); anything
/// else goes to hyper, with the bytes read so far put back.
async fn serve_tcp(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    state: Arc<AppState>,
    router: Router,
) {
    use engineio::FirstRequest;
    match engineio::read_first_request(stream, engineio::serve::HEAD_READ_TIMEOUT).await {
        FirstRequest::WebSocket(upgrade) => {
            let engine = state.io.engine().clone();
            if !engine.matches(upgrade.request().uri().path()) {
                // Not the engine's: the router answers it, as any other request.
                let io = upgrade.into_stream();
                Box::pin(serve(TokioIo::new(io), remote, state, router)).await;
                return;
            }
            match admit_handshake(&state, upgrade.request(), remote) {
                Ok(guard) => engine.serve_direct(upgrade, remote, guard).await,
                Err(res) => upgrade.refuse(*res).await,
            }
        }
        // Boxed: hyper's connection state is large, and the WebSocket connections this
        // task mostly serves should not carry room for it.
        FirstRequest::Other(io) => Box::pin(serve(TokioIo::new(io), remote, state, router)).await,
        FirstRequest::Gone => {}
    }
}

/// Admission for a request to the engine's path: a handshake (no session id yet) needs
/// a ticket, held by the session; other requests belong to a session admitted before.
fn admit_handshake<B>(
    state: &AppState,
    req: &http::Request<B>,
    remote: SocketAddr,
) -> Result<Option<engineio::Guard>, Box<engineio::engine::HttpResponse>> {
    if !is_handshake(req) {
        return Ok(None);
    }
    match admit(state, req, remote) {
        Ok(ticket) => Ok(Some(Box::new(ticket) as engineio::Guard)),
        Err(refused) => {
            let mut res = refusal_response(refused);
            state.io.engine().add_cors_headers(req.headers(), &mut res);
            Err(Box::new(res))
        }
    }
}

/// Serves one connection (TCP, or TLS over TCP).
async fn serve<S>(io: TokioIo<S>, remote: SocketAddr, state: Arc<AppState>, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: http::Request<Incoming>| {
        let state = state.clone();
        let router = router.clone();
        async move {
            let engine = state.io.engine();
            if engine.matches(req.uri().path()) {
                let guard = match admit_handshake(&state, &req, remote) {
                    Ok(guard) => guard,
                    Err(res) => return Ok::<_, Infallible>((*res).map(Either::Left)),
                };
                let res = engine.handle_with(req, remote, guard).await;
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
    // The TokioIo<Rewind<TcpStream>> (or TokioIo<BoxedStream>) type matters: the WebSocket
    // transport downcasts the upgraded connection back to it to take the stream.
    let conn = engineio::serve::http1_builder().serve_connection(io, service);
    if let Err(e) = conn.with_upgrades().await {
        tracing::debug!(%remote, error = %e, "http connection ended with an error");
    }
}
