//! Serving whole TCP connections: HTTP/1.1 by hyper, with upgrades.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::{Engine, EngineHandler};

/// Serves one accepted TCP connection: requests for the engine's path go to the
/// engine, anything else gets 404. Returns when the connection closes or has been
/// upgraded to a WebSocket (which then lives on in its own task).
pub async fn serve_connection<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    stream: TcpStream,
    remote: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    // A WebSocket opened directly is answered without hyper (`direct`).
    let io = match crate::direct::read_first_request(stream, HEAD_READ_TIMEOUT).await {
        crate::FirstRequest::WebSocket(upgrade)
            if engine.matches(upgrade.request().uri().path()) =>
        {
            engine.serve_direct(upgrade, remote, None).await;
            return;
        }
        // Another path: hyper answers it, as any other request.
        crate::FirstRequest::WebSocket(upgrade) => upgrade.into_stream(),
        crate::FirstRequest::Other(io) => io,
        crate::FirstRequest::Gone => return,
    };
    let service = service_fn(move |req| {
        let engine = engine.clone();
        async move {
            if engine.matches(req.uri().path()) {
                Ok::<_, Infallible>(engine.handle(req, remote).await)
            } else {
                Ok(not_found())
            }
        }
    });
    // The TokioIo<Rewind<TcpStream>> type matters: the WebSocket transport downcasts
    // the upgraded connection back to it to take the TcpStream.
    let conn = http1_builder().serve_connection(TokioIo::new(io), service);
    if let Err(e) = conn.with_upgrades().await {
        tracing::debug!(%remote, error = %e, "http connection ended with an error");
    }
}

/// Time a client has to send a request's head, read here or by hyper.
pub const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn not_found() -> crate::engine::HttpResponse {
    let mut res = Response::new(Full::new(Bytes::from_static(b"Not Found")));
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

/// The HTTP/1.1 settings every Engine.IO connection uses.
pub fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_READ_TIMEOUT)
        .keep_alive(true);
    builder
}
