//! Serving whole connections: WebSockets opened directly without hyper, the rest by
//! hyper's HTTP/1.1 with upgrades; paths that are not the engine's go to a fallback.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::direct::Rewind;
use crate::{Engine, EngineHandler, FirstRequest, Stream};

/// Serves one accepted connection (TCP, TLS, any [`Stream`]): requests for the engine's
/// path go to the engine, anything else to `fallback`. Returns when the connection
/// closes or has been upgraded to a WebSocket (which then lives on in a task of the
/// engine's [`tracker`](Engine::tracker)), or once the engine shuts down: at once
/// while no request has arrived yet, after answering the request under way otherwise.
///
/// Every new session goes through the handler's [`admit`](EngineHandler::admit) first,
/// whichever way it came: a WebSocket opened directly (answered without hyper: the
/// `101` and the open packet in one write), a polling handshake, or a WebSocket through
/// hyper.
///
/// Set `TCP_NODELAY` on a TCP stream before handing it over: the engine writes each
/// batch of packets as soon as it has it, and Nagle's algorithm would hold small writes
/// back for up to a delayed-ACK timeout.
pub async fn serve_connection<H, S, F>(
    engine: Arc<Engine<H>>,
    stream: S,
    remote: SocketAddr,
    fallback: F,
) where
    H: EngineHandler,
    S: Stream,
    F: Fallback,
{
    let first = tokio::select! {
        first = crate::direct::read_first_request(stream, HEAD_READ_TIMEOUT) => first,
        // A connection that sent nothing yet does not hold up a shutdown.
        () = engine.shutdown.cancelled() => return,
    };
    let io = match first {
        FirstRequest::WebSocket(upgrade) if engine.matches(upgrade.request().uri().path()) => {
            engine.serve_direct(upgrade, remote).await;
            return;
        }
        // Another path: hyper answers it, as any other request.
        FirstRequest::WebSocket(upgrade) => upgrade.into_stream(),
        FirstRequest::Other(io) => io,
        FirstRequest::Gone => return,
    };
    // Boxed: hyper's connection state is large, and the WebSocket connections the
    // tasks running this mostly serve should not carry room for it.
    Box::pin(serve_http(engine, io, remote, fallback)).await;
}

/// Serves a connection with hyper until it closes, is upgraded, or the engine shuts
/// down (then gracefully: the request under way is answered, the connection closed).
async fn serve_http<H, S, F>(engine: Arc<Engine<H>>, io: Rewind<S>, remote: SocketAddr, fallback: F)
where
    H: EngineHandler,
    S: Stream,
    F: Fallback,
{
    let shutdown = engine.shutdown.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let engine = engine.clone();
        let fallback = fallback.clone();
        async move {
            if engine.matches(req.uri().path()) {
                // The type named here is the one hyper is given below: a WebSocket
                // upgrade through hyper takes its stream back as that type.
                let res = engine.handle::<Rewind<S>, _>(req, remote).await;
                Ok::<_, Infallible>(res.map(Either::Left))
            } else {
                Ok(fallback.call(req, remote).await.map(Either::Right))
            }
        }
    });
    let conn = http1_builder()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%remote, error = %e, "http connection ended with an error");
    }
}

/// What answers the requests of a connection that are not for the engine's path: the
/// rest of an application (its API, health, pages).
pub trait Fallback: Clone + Send + Sync + 'static {
    /// The body of its answers.
    type Body: Body<Data = Bytes, Error = Self::Error> + Send + 'static;
    /// The body's error.
    type Error: Into<Box<dyn std::error::Error + Send + Sync>>;

    /// Answers `req`, which came from `remote`.
    fn call(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// The fallback of an engine that serves nothing else: `404 Not Found`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotFound;

impl Fallback for NotFound {
    type Body = Full<Bytes>;
    type Error = Infallible;

    async fn call(&self, _req: Request<Incoming>, _remote: SocketAddr) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(Bytes::from_static(b"Not Found")));
        *res.status_mut() = StatusCode::NOT_FOUND;
        res
    }
}

/// Time a client has to send a request's head, read here or by hyper.
pub const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/1.1 settings every Engine.IO connection uses.
pub fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_READ_TIMEOUT)
        .keep_alive(true);
    builder
}
