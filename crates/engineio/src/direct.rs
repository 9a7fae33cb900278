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
use crate::{Engine, EngineHandler, Stream};

/// The longest request head read here; a longer one goes to hyper.
const MAX_HEAD: usize = 8 * 1024;
/// Headers at most in a request read here; more go to hyper.
const MAX_HEADERS: usize = 48;

/// The first request on a new connection, as far as [`read_first_request`] read it.
// Made once per connection and moved once: boxing the large variant would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum FirstRequest<S> {
    /// A WebSocket upgrade request (`GET` with `Upgrade: websocket`), read whole.
    WebSocket(DirectUpgrade<S>),
    /// Anything else: the stream, with what was read put back in front, for hyper. Serve
    /// it as `TokioIo<Rewind<S>>` and have the engine handle its requests as
    /// `Engine::handle::<Rewind<S>, _>`: a WebSocket upgrade through hyper then takes the
    /// stream back.
    Other(Rewind<S>),
    /// The peer closed the connection, sent nothing in time, or the read failed.
    Gone,
}

/// A WebSocket upgrade request and its connection, for [`Engine::serve_direct`].
#[derive(Debug)]
pub struct DirectUpgrade<S> {
    request: Request<Empty<Bytes>>,
    stream: S,
    /// Everything read: the head, then what the client sent after it (frames it did
    /// not wait to send).
    read: Bytes,
    head_len: usize,
}

impl<S: Stream> DirectUpgrade<S> {
    /// The request (no body).
    pub fn request(&self) -> &Request<Empty<Bytes>> {
        &self.request
    }

    /// The connection with everything read from it put back, for hyper (a WebSocket
    /// request for a path that is not the engine's).
    pub fn into_stream(self) -> Rewind<S> {
        Rewind {
            prefix: self.read,
            inner: self.stream,
        }
    }
}

/// The stream and the bytes after the request, handed to the WebSocket transport by
/// [`Engine::serve_direct`] through the request's extensions; left in place when the
/// request is refused.
pub(crate) struct DirectSlot<S>(Arc<Mutex<Option<(S, Bytes)>>>);

impl<S> Clone for DirectSlot<S> {
    fn clone(&self) -> Self {
        DirectSlot(self.0.clone())
    }
}

impl<S> DirectSlot<S> {
    pub(crate) fn take(&self) -> Option<(S, Bytes)> {
        self.0.lock().take()
    }
}

/// Reads the first request's head off `stream`, within `timeout`.
pub async fn read_first_request<S: Stream>(mut stream: S, timeout: Duration) -> FirstRequest<S> {
    let mut buf = BytesMut::with_capacity(2048);
    let read = tokio::time::timeout(timeout, async {
        loop {
            match stream.read_buf(&mut buf).await {
                // Closed mid-head: hyper gets what was sent and answers as it does.
                Ok(0) if !buf.is_empty() => return Some(Parsed::Other),
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
        Ok(Some(Parsed::WebSocket(request, head_len))) => FirstRequest::WebSocket(DirectUpgrade {
            request,
            stream,
            read: buf.freeze(),
            head_len,
        }),
        Ok(Some(_)) => FirstRequest::Other(Rewind {
            prefix: buf.freeze(),
            inner: stream,
        }),
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
    /// Serves a WebSocket upgrade read by [`read_first_request`]: the `101` head and the
    /// open packet go out in one write, or the request's refusal (by the engine, or by
    /// the handler's [`admit`](EngineHandler::admit)) is written and the connection
    /// closed. Returns once the connection runs in a task of its own, or is closed.
    pub async fn serve_direct<S: Stream>(
        self: &Arc<Self>,
        upgrade: DirectUpgrade<S>,
        remote: SocketAddr,
    ) {
        let DirectUpgrade {
            mut request,
            stream,
            read,
            head_len,
        } = upgrade;
        let leftover = read.slice(head_len..);
        let slot = DirectSlot(Arc::new(Mutex::new(Some((stream, leftover)))));
        request.extensions_mut().insert(slot.clone());
        let res = self.handle::<Rewind<S>, _>(request, remote).await;
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
async fn write_response<S: Stream>(stream: &mut S, res: HttpResponse) {
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
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, with `prefix` to be read first.
    pub fn new(inner: S, prefix: Bytes) -> Rewind<S> {
        Rewind { prefix, inner }
    }

    /// The stream, and the bytes put back that were not read yet.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.prefix)
    }
}

/// A stream hyper serves, whose WebSocket upgrades take the stream back: hyper hands an
/// upgraded connection over as the I/O it was given, `TokioIo<C>`, and the engine reads
/// the stream and any bytes not yet read out of it. The engine's own
/// [`serve_connection`](crate::serve_connection) serves `Rewind<S>`; a caller that runs
/// hyper on a `TcpStream` itself has the engine handle its requests as
/// `Engine::handle::<TcpStream, _>`.
pub trait Connection: Stream {
    /// The stream the WebSocket transport runs on.
    type Stream: Stream;

    /// The stream, and bytes read from it but not consumed yet.
    fn into_stream(self) -> (Self::Stream, Bytes);
}

impl Connection for TcpStream {
    type Stream = TcpStream;

    fn into_stream(self) -> (TcpStream, Bytes) {
        (self, Bytes::new())
    }
}

impl<S: Stream> Connection for Rewind<S> {
    type Stream = S;

    fn into_stream(self) -> (S, Bytes) {
        self.into_parts()
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap what they set up

    use super::*;
    use proptest::prelude::*;
    use tokio::net::TcpListener;

    const HEAD: &[u8] = b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    /// Sends `chunks` over a fresh TCP connection (a pause between them), then closes;
    /// returns what `read_first_request` made of it and everything the stream then
    /// yields, the bytes put back first.
    fn through_tcp(chunks: Vec<Vec<u8>>) -> (&'static str, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                for chunk in chunks {
                    s.write_all(&chunk).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                s.shutdown().await.unwrap();
                // Kept open for reading until the server is done.
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
            let (stream, _) = listener.accept().await.unwrap();
            let (kind, mut rest): (&'static str, Rewind<TcpStream>) =
                match read_first_request(stream, Duration::from_secs(5)).await {
                    FirstRequest::WebSocket(u) => ("websocket", u.into_stream()),
                    FirstRequest::Other(io) => ("other", io),
                    FirstRequest::Gone => return ("gone", Vec::new()),
                };
            let mut all = Vec::new();
            rest.read_to_end(&mut all).await.unwrap();
            drop(rest);
            client.await.unwrap();
            (kind, all)
        })
    }

    fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut chunks = Vec::new();
        let mut from = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            if p > from {
                chunks.push(bytes[from..p].to_vec());
                from = p;
            }
        }
        chunks
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever arrives, in whatever pieces, nothing read is lost: the stream handed
        /// on yields exactly the bytes sent. A whole upgrade head is recognised however
        /// it was split, and whatever follows it is kept.
        #[test]
        fn nothing_read_is_lost(
            upgrade in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let sent = match (upgrade, tail.first()) {
                (true, _) => [HEAD, &tail].concat(),
                // Half the time a head cut short, then the connection closed.
                (false, Some(&b)) if b % 2 == 0 => {
                    let head = b"GET /engine.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n";
                    head[..1 + usize::from(b) % head.len()].to_vec()
                }
                (false, _) => tail.clone(),
            };
            let (kind, got) = through_tcp(split(&sent, &cuts));
            if sent.is_empty() {
                prop_assert_eq!(kind, "gone");
            } else {
                prop_assert_eq!(&got, &sent);
                if upgrade {
                    prop_assert_eq!(kind, "websocket");
                }
            }
        }

        /// The parser never panics, and a head it accepts lies within the input and ends
        /// the way a head does.
        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut input = b"GET ".to_vec();
            input.extend_from_slice(&bytes);
            for candidate in [&bytes[..], &input[..]] {
                if let Parsed::WebSocket(_, n) = parse(candidate) {
                    prop_assert!(n <= candidate.len());
                    prop_assert!(candidate[..n].ends_with(b"\r\n\r\n"));
                }
            }
        }
    }

    /// A head longer than what is read here goes to hyper, whole.
    #[test]
    fn long_heads_go_to_hyper() {
        let mut sent = b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\n".to_vec();
        for i in 0..400 {
            sent.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(20)).as_bytes());
        }
        sent.extend_from_slice(b"Upgrade: websocket\r\n\r\n");
        let (kind, got) = through_tcp(vec![sent.clone()]);
        assert_eq!(kind, "other");
        assert_eq!(got, sent);
    }
}
