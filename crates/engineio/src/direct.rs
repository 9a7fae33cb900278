//! WebSocket handshakes read straight off a new TCP connection, without hyper.
//!
//! Most connections of a Socket.IO server are WebSockets opened directly
//! (`transport=websocket`). Through hyper each one costs a connection state with its
//! 8 KiB read buffer, the upgrade machinery, a write for the `101` response and another
//! for the open packet. Here the first request is read into a small buffer; a WebSocket
//! upgrade is answered by the engine with the `101` head and the open packet in one
//! write, and runs as any upgraded connection does. Anything else (polling, the API,
//! a head that does not arrive in one piece) goes to hyper with the bytes read so far
//! put back in front of the stream ([`Rewind`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::engine::HttpResponse;
use crate::socket::Guard;
use crate::{BoxedStream, Engine, EngineHandler};

/// The longest request head read here; a longer one goes to hyper.
const MAX_HEAD: usize = 8 * 1024;
/// Headers at most in a request read here; more go to hyper.
const MAX_HEADERS: usize = 48;

/// The first request on a new connection, as far as [`read_first_request`] read it.
// Made once per connection and moved once: boxing the large variant would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum FirstRequest {
    /// A WebSocket upgrade request (`GET` with `Upgrade: websocket`), read whole.
    WebSocket(DirectUpgrade),
    /// Anything else: the stream, with what was read put back in front, for hyper.
    Other(BoxedStream),
    /// The peer closed the connection, sent nothing in time, or the read failed.
    Gone,
}

/// A WebSocket upgrade request and its connection, for [`Engine::serve_direct`].
#[derive(Debug)]
pub struct DirectUpgrade {
    request: Request<Empty<Bytes>>,
    stream: TcpStream,
    /// The request's head as read, to put back if the request goes to hyper after all.
    head: Bytes,
    /// Bytes the client sent after its request (frames it did not wait to send).
    leftover: Bytes,
}

impl DirectUpgrade {
    /// The request (no body).
    pub fn request(&self) -> &Request<Empty<Bytes>> {
        &self.request
    }

    /// Answers the request with `res` (a refusal made by the caller) and closes.
    pub async fn refuse(mut self, res: HttpResponse) {
        write_response(&mut self.stream, res).await;
    }

    /// The connection with everything read from it put back, for hyper (a WebSocket
    /// request for a path that is not the engine's).
    pub fn into_stream(self) -> BoxedStream {
        let mut prefix = BytesMut::with_capacity(self.head.len() + self.leftover.len());
        prefix.extend_from_slice(&self.head);
        prefix.extend_from_slice(&self.leftover);
        Box::new(Rewind {
            prefix: prefix.freeze(),
            inner: self.stream,
        })
    }
}

/// The stream and the bytes after the request, handed to the WebSocket transport by
/// [`Engine::serve_direct`] through the request's extensions; left in place when the
/// request is refused.
#[derive(Clone)]
pub(crate) struct DirectSlot(Arc<Mutex<Option<(TcpStream, Bytes)>>>);

impl DirectSlot {
    pub(crate) fn take(&self) -> Option<(TcpStream, Bytes)> {
        self.0.lock().take()
    }
}

/// Reads the first request's head off `stream`, within `timeout`.
pub async fn read_first_request(mut stream: TcpStream, timeout: Duration) -> FirstRequest {
    let mut buf = BytesMut::with_capacity(2048);
    let read = tokio::time::timeout(timeout, async {
        loop {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            match parse(&buf) {
                Parsed::Partial if buf.len() < MAX_HEAD => {
                    if buf.capacity() == buf.len() {
                        buf.reserve(buf.len());
                    }
                }
                other => return Some(other),
            }
        }
    })
    .await;
    match read {
        Ok(Some(Parsed::WebSocket(request, head_len))) => {
            let leftover = buf.split_off(head_len).freeze();
            FirstRequest::WebSocket(DirectUpgrade {
                request,
                stream,
                head: buf.freeze(),
                leftover,
            })
        }
        Ok(Some(_)) => FirstRequest::Other(Box::new(Rewind {
            prefix: buf.freeze(),
            inner: stream,
        })),
        // Nothing usable in time: hyper would answer nothing either.
        Ok(None) | Err(_) => FirstRequest::Gone,
    }
}

#[allow(clippy::large_enum_variant)] // as FirstRequest
enum Parsed {
    /// A whole WebSocket upgrade request, and the length of its head.
    WebSocket(Request<Empty<Bytes>>, usize),
    /// Not (yet) a whole head.
    Partial,
    /// Something for hyper: another request, or one it should answer with an error.
    Other,
}

fn parse(buf: &[u8]) -> Parsed {
    // Only GET opens a WebSocket: anything else is known from the first bytes.
    if !b"GET ".starts_with(&buf[..buf.len().min(4)]) {
        return Parsed::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let is_websocket = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade") && h.value.eq_ignore_ascii_case(b"websocket")
    });
    if !is_websocket {
        return Parsed::Other;
    }
    let mut builder = Request::get(req.path.unwrap_or("/"));
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    match builder.body(Empty::new()) {
        Ok(request) => Parsed::WebSocket(request, head_len),
        // A path or header hyper would refuse too: let it answer.
        Err(_) => Parsed::Other,
    }
}

impl<H: EngineHandler> Engine<H> {
    /// Serves a WebSocket upgrade read by [`read_first_request`], with `guard` held by a
    /// new session (see [`Engine::handle_with`]): the `101` head and the open packet go
    /// out in one write, or the request's refusal is written and the connection closed.
    /// Returns once the connection runs in a task of its own, or is closed.
    pub async fn serve_direct(
        self: &Arc<Self>,
        upgrade: DirectUpgrade,
        remote: SocketAddr,
        guard: Option<Guard>,
    ) {
        let DirectUpgrade {
            mut request,
            stream,
            leftover,
            ..
        } = upgrade;
        let slot = DirectSlot(Arc::new(Mutex::new(Some((stream, leftover)))));
        request.extensions_mut().insert(slot.clone());
        let res = self.handle_with(request, remote, guard).await;
        if let Some((mut stream, _)) = slot.take() {
            // Not taken by the transport: refused.
            write_response(&mut stream, res).await;
        }
    }
}

/// The status line and headers of `res`, as written on the wire.
pub(crate) fn response_head<B>(res: &Response<B>) -> Vec<u8> {
    let status = res.status();
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in res.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes a whole response and closes the connection, briefly: a client that does not
/// read its refusal is not waited for.
pub async fn write_response(stream: &mut TcpStream, res: HttpResponse) {
    let (mut parts, body) = res.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    parts.headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    let mut out = response_head(&Response::from_parts(parts, ()));
    out.extend_from_slice(&body);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if stream.write_all(&out).await.is_err() || stream.shutdown().await.is_err() {
            return;
        }
        // Closing with unread bytes would send a reset, which can reach the client
        // before it reads the answer: read what it still sends (a little, briefly)
        // until it closes too.
        let mut sink = [0u8; 4096];
        let mut budget: usize = 64 * 1024;
        while budget > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    })
    .await;
}

/// A stream with bytes already read from it put back in front.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Let the buffer go: the connection may live long.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
