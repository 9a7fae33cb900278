//! The WebSocket transport (`PROTOCOL.md` §1.6, §1.7).
//!
//! A WebSocket opened directly arrives here without hyper (`direct`), its `101` written
//! with the open packet; one upgraded through hyper (a polling session's probe, or a
//! TLS connection) has its stream taken back and hyper's leftover read buffer dropped
//! at once. One task per connection then waits for readiness: reads go
//! into a scratch buffer per worker thread, and bytes are kept per connection only while
//! a frame is incomplete; writes drain the whole outbound queue in vectored writes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use engineio_proto::{ErrorCode, Packet, Transport};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, ReadBuf};
use ws::{CloseCode, Decoder, Frame, Message, OpCode, ProtocolError, Role};

use crate::direct::{response_head, DirectSlot};
use crate::engine::{error_response, HttpResponse};
use crate::socket::{Guard, Opening};
use crate::{CloseReason, Connection, Engine, EngineHandler, EngineStats, Socket, Stream};

/// Size of the per-thread read buffer.
const SCRATCH_LEN: usize = 64 * 1024;
/// Bytes read per wakeup before writes get a turn.
const READ_BUDGET: usize = 256 * 1024;
/// Frames per vectored write.
const MAX_IOV: usize = 128;
/// How long a closing connection waits for the peer's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// How long a closed session's last packets may take to go out before the connection
/// is dropped without them.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Validates an upgrade request, answers 101, and runs the connection once hyper hands
/// it over (as the `C` it serves) or at once when it came by the direct path: a new
/// session (`existing` is `None`) or the upgrade of a polling session.
pub(crate) fn upgrade<H: EngineHandler, B, C: Connection>(
    engine: &Arc<Engine<H>>,
    mut req: Request<B>,
    remote: SocketAddr,
    accept: String,
    existing: Option<Arc<Socket<H::Data>>>,
    guard: Option<Guard>,
) -> HttpResponse {
    // Copied now, so the task below holds no part of the request.
    let target = match existing {
        Some(socket) => {
            let mut outbox = socket.outbox.lock();
            if outbox.closed.is_some() {
                // Gone for the client's purposes, as a session the Node server forgot.
                return error_response(ErrorCode::UnknownSid);
            }
            if outbox.transport != Transport::Polling || outbox.probing {
                // One probe at a time, and only from polling (§1.7). As the Node server
                // does, the handshake is accepted and the WebSocket closed at once: the
                // session carries on over the transport it has.
                Target::Refuse
            } else {
                outbox.probing = true;
                drop(outbox);
                Target::Upgrade(socket)
            }
        }
        None => Target::New(Opening::new(req.uri(), req.headers(), remote), guard),
    };
    // Read without hyper (`direct`): the connection is at hand, and the 101 goes out
    // with the first frames.
    let direct = req
        .extensions_mut()
        .remove::<DirectSlot<C::Stream>>()
        .and_then(|slot| slot.take());
    if let Some((stream, leftover)) = direct {
        drop(req);
        let res = switching_protocols(&accept);
        let conn = Conn::new(engine, stream, &leftover);
        let head = response_head(&res);
        engine
            .tracker
            .spawn(run_upgraded(engine.clone(), target, conn, Some(head)));
        return res;
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    let engine = engine.clone();
    let tracker = engine.tracker.clone();
    tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "websocket upgrade failed");
                target.abandon();
                return;
            }
        };
        // The connection hyper served, back as its own type: its stream, the bytes put
        // back in front of it and not read yet (nothing, as a rule) and hyper's leftover
        // (bytes the client sent right after its request). Hyper's read buffer is
        // dropped at once: kept alive it costs 3.5 to 5 KiB per connection.
        match upgraded.downcast::<TokioIo<C>>() {
            Ok(parts) => {
                let (stream, unread) = parts.io.into_inner().into_stream();
                let conn = if unread.is_empty() {
                    Conn::new(&engine, stream, &parts.read_buf)
                } else {
                    Conn::new(&engine, stream, &[&parts.read_buf[..], &unread].concat())
                };
                run_upgraded(engine, target, conn, None).await;
            }
            Err(_) => {
                // Only when the caller served hyper something else than it named to
                // `Engine::handle`.
                tracing::error!(
                    %remote,
                    expected = std::any::type_name::<C>(),
                    "the upgraded connection is not of the type the engine was told"
                );
                target.abandon();
            }
        }
    });
    switching_protocols(&accept)
}

/// The `Sec-WebSocket-Accept` value for a WebSocket upgrade request with `headers`;
/// `None` for a request that is not a valid one (RFC 6455 §4.2.1), answered with
/// `BadRequest`.
pub(crate) fn accept_key(headers: &http::HeaderMap, remote: SocketAddr) -> Option<String> {
    let check = ws::handshake::Request {
        upgrade: headers.get(header::UPGRADE).map(|v| v.as_bytes()),
        connection: headers.get(header::CONNECTION).map(|v| v.as_bytes()),
        version: headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes()),
        key: headers.get(header::SEC_WEBSOCKET_KEY).map(|v| v.as_bytes()),
    };
    check
        .accept()
        .map_err(|e| tracing::debug!(%remote, error = %e, "websocket handshake refused"))
        .ok()
}

/// The `101 Switching Protocols` answer with `Sec-WebSocket-Accept: accept`.
fn switching_protocols(accept: &str) -> HttpResponse {
    let mut res = Response::new(Full::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = http::HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// Runs an upgraded connection, whatever its stream: the probe of a polling session, or
/// a new session.
async fn run_upgraded<H: EngineHandler, S: Stream>(
    engine: Arc<Engine<H>>,
    target: Target<H::Data>,
    mut conn: Conn<S>,
    head: Option<Vec<u8>>,
) {
    match target {
        Target::Refuse => {
            let mut close = head.unwrap_or_default();
            // No status, as `ws` sends for a bare `close()`.
            close.extend_from_slice(Frame::server(OpCode::Close, b"").as_bytes());
            conn.finish_with(&close).await;
        }
        Target::Upgrade(socket) => {
            // The client waits for the 101 before it probes.
            if let Some(head) = head {
                if conn.send(&head).await.is_err() {
                    socket.outbox.lock().probing = false;
                    return;
                }
            }
            // Boxed: the probe's state is needed once, not for the life of the task.
            if Box::pin(upgrade_from_polling(&engine, &socket, &mut conn)).await {
                serve(engine, socket, conn);
            }
        }
        Target::New(opening, guard) => {
            let socket = engine.open(Transport::Websocket, opening, guard);
            let open = Frame::server(OpCode::Text, &engine.open_packet(&socket, false));
            let open_len = open.len() as u64;
            // The open packet goes first, whatever the handler queues when it hears of
            // the session.
            let first = match head {
                Some(mut first) => {
                    first.extend_from_slice(open.as_bytes());
                    Some(first)
                }
                None => {
                    socket.push_control(open);
                    None
                }
            };
            engine.handler.on_open(&socket);
            if let Some(first) = first {
                // The 101 and the open packet in one write, ahead of anything queued
                // (the connection's task sends that); written here, so that task holds
                // nothing of them.
                if let Err(e) = conn.send(&first).await {
                    tracing::debug!(sid = %socket.sid(), error = %e, "websocket write failed");
                    engine.close(&socket, CloseReason::TransportError);
                    return;
                }
                EngineStats::add(&engine.stats.bytes_out, open_len);
                EngineStats::add(&engine.stats.packets_out, 1);
            }
            serve(engine, socket, conn);
        }
    }
}

/// What an upgraded connection is for.
enum Target<D> {
    /// A new session, opened by this request, with the caller's guard.
    New(Opening, Option<Guard>),
    /// The upgrade of this polling session.
    Upgrade(Arc<Socket<D>>),
    /// A second WebSocket for a session already upgraded or probing: closed at once.
    Refuse,
}

impl<D> Target<D> {
    /// The connection never became usable: let the session accept another probe.
    fn abandon(self) {
        if let Target::Upgrade(socket) = self {
            socket.outbox.lock().probing = false;
        }
    }
}

/// One WebSocket connection's I/O state. While idle it holds the socket, the decoder
/// (no buffer) and no read buffer.
struct Conn<S> {
    stream: S,
    decoder: Decoder,
    /// Bytes of an incomplete frame; `None` between frames.
    inbuf: Option<BytesMut>,
}

/// What reading produced.
enum Read {
    /// The socket has no more bytes for now.
    Drained,
    /// The read budget is spent; more may be waiting.
    Budget,
    /// The peer closed the TCP connection.
    Eof,
}

impl<S: Stream> Conn<S> {
    fn new<H: EngineHandler>(engine: &Engine<H>, stream: S, leftover: &[u8]) -> Conn<S> {
        Conn {
            stream,
            decoder: Decoder::new(Role::Server, engine.config.max_payload),
            inbuf: (!leftover.is_empty()).then(|| BytesMut::from(leftover)),
        }
    }

    /// Reads what the socket has, up to the budget, into the incomplete-frame buffer.
    /// `Drained` means the socket has nothing more now, and `cx` will be woken when it
    /// has. Reads go into the per-thread scratch buffer: an idle connection holds none.
    fn fill(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> io::Result<Read> {
        loop {
            if *budget == 0 {
                return Ok(Read::Budget);
            }
            let polled = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch);
                match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        if n > 0 {
                            self.inbuf
                                .get_or_insert_with(|| BytesMut::with_capacity(n))
                                .extend_from_slice(buf.filled());
                        }
                        Poll::Ready(Ok(n))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match polled {
                Poll::Ready(Ok(0)) => return Ok(Read::Eof),
                Poll::Ready(Ok(n)) => {
                    *budget = budget.saturating_sub(n);
                    if self.inbuf.as_ref().is_some_and(|b| b.len() >= SCRATCH_LEN) {
                        return Ok(Read::Budget);
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Read::Drained)
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(Read::Drained),
            }
        }
    }

    /// Waits until some bytes arrived (or the stream ended).
    async fn read_some(&mut self) -> io::Result<Read> {
        std::future::poll_fn(|cx| {
            let before = self.inbuf.as_ref().map_or(0, BytesMut::len);
            let mut budget = READ_BUDGET;
            match self.fill(cx, &mut budget) {
                Ok(Read::Drained) if self.inbuf.as_ref().map_or(0, BytesMut::len) == before => {
                    Poll::Pending
                }
                other => Poll::Ready(other),
            }
        })
        .await
    }

    /// Writes `bytes` whole, and flushes (TLS keeps records until then).
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next complete message in the buffer, if any.
    fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        let Some(buf) = self.inbuf.as_mut() else {
            return Ok(None);
        };
        let result = self.decoder.decode(buf);
        if buf.is_empty() {
            // Between frames: hold no buffer.
            self.inbuf = None;
        }
        result
    }

    /// Writes what is left of a batch, waiting for the socket as needed.
    async fn flush<H: EngineHandler>(
        &mut self,
        batch: &mut Batch,
        engine: &Engine<H>,
    ) -> io::Result<()> {
        std::future::poll_fn(|cx| match batch.write_to(cx, &mut self.stream, engine) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        })
        .await
    }

    /// Writes a close frame, then waits briefly for the peer's close frame or EOF.
    async fn finish(&mut self, frame: Frame) {
        self.finish_with(frame.as_bytes()).await;
    }

    /// Writes `last` (ending with a close frame), then waits briefly for the peer's
    /// close frame or EOF.
    async fn finish_with(&mut self, last: &[u8]) {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            if self.send(last).await.is_err() {
                return;
            }
            loop {
                match self.read_some().await {
                    Ok(Read::Eof) | Err(_) => return,
                    Ok(_) => {}
                }
                loop {
                    // Messages are dropped; an incomplete frame stays in the buffer
                    // for the next read to finish (`next_message` frees it once empty).
                    match self.next_message() {
                        Ok(Some(Message::Close(_))) | Err(_) => return,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                    }
                }
            }
        })
        .await;
    }
}

/// Frames taken from the outbound queue and not yet fully written.
#[derive(Default)]
struct Batch {
    frames: VecDeque<Frame>,
    /// Bytes of the first frame already written (a `u32`: a frame is at most
    /// `max_payload` long; with `alone` it fits in the room of one `usize`, which keeps
    /// every connection's task in a smaller allocation).
    offset: u32,
    /// Written on its own (a write boundary follows it).
    alone: bool,
}

impl Batch {
    /// Writes as much as the socket takes, many frames per system call. Returns true
    /// when everything was written.
    /// `Ok(false)` means the socket takes no more now; `cx` is woken when it does.
    fn write_to<H: EngineHandler, S: Stream>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
        engine: &Engine<H>,
    ) -> io::Result<bool> {
        let mut bytes = 0u64;
        let mut packets = 0u64;
        let result = loop {
            if self.frames.is_empty() {
                // Everything handed over; a TLS stream still holds records to flush.
                break match Pin::new(&mut *stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Ok(true),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Ok(false),
                };
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            let per_call = if engine.config.coalesce_writes {
                MAX_IOV
            } else {
                1
            };
            for (i, frame) in self.frames.iter().take(per_call).enumerate() {
                let from = if i == 0 { self.offset as usize } else { 0 };
                slices[i] = IoSlice::new(&frame.as_bytes()[from..]);
                n += 1;
            }
            // One frame (the common case while a connection keeps up): a plain write,
            // which costs the kernel less than a vectored one.
            let polled = if n == 1 {
                Pin::new(&mut *stream).poll_write(cx, &slices[0])
            } else {
                Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n])
            };
            match polled {
                Poll::Ready(Ok(0)) => break Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(mut written)) => {
                    bytes += written as u64;
                    while let Some(front) = self.frames.front() {
                        let left = front.len() - self.offset as usize;
                        if written >= left {
                            written -= left;
                            self.offset = 0;
                            self.frames.pop_front();
                            packets += 1;
                        } else {
                            self.offset += written as u32;
                            break;
                        }
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending => break Ok(false),
            }
        };
        EngineStats::add(&engine.stats.bytes_out, bytes);
        EngineStats::add(&engine.stats.packets_out, packets);
        result
    }
}

/// What to do after a message.
enum Flow {
    Continue,
    /// End the session with this reason; send this close frame (or one derived from
    /// the reason).
    Close(CloseReason, Option<Frame>),
}

fn on_message<H: EngineHandler>(
    engine: &Engine<H>,
    socket: &Arc<Socket<H::Data>>,
    message: Message,
) -> Flow {
    let packet = match message {
        Message::Text(text) => match Packet::decode_text(text) {
            Ok(packet) => packet,
            Err(_) => return Flow::Close(CloseReason::ParseError, None),
        },
        Message::Binary(data) => Packet::Binary(data),
        Message::Ping(payload) => {
            socket.push_control(Frame::server(OpCode::Pong, &payload));
            return Flow::Continue;
        }
        Message::Pong(_) => return Flow::Continue,
        Message::Close(frame) => {
            let code = frame.map_or(CloseCode::NORMAL, |f| f.code);
            return Flow::Close(CloseReason::TransportClose, Some(Frame::close(code, "")));
        }
    };
    match engine.on_packet(socket, packet) {
        Ok(()) => Flow::Continue,
        Err(reason) => Flow::Close(reason, None),
    }
}

fn close_frame_for(reason: CloseReason) -> Frame {
    match reason {
        CloseReason::PayloadTooLarge => Frame::close(CloseCode::TOO_BIG, "payload too large"),
        // 1013 (try again later): the client should reconnect, it lost packets.
        CloseReason::SlowConsumer => Frame::close(CloseCode::TRY_AGAIN_LATER, "slow consumer"),
        CloseReason::ServerShutdown => Frame::close(CloseCode::GOING_AWAY, "server shutting down"),
        CloseReason::ParseError => Frame::close(CloseCode::NORMAL, "parse error"),
        CloseReason::PingTimeout => Frame::close(CloseCode::NORMAL, "ping timeout"),
        _ => Frame::close(CloseCode::NORMAL, ""),
    }
}

fn reason_for(error: &ProtocolError) -> CloseReason {
    match error {
        ProtocolError::MessageTooBig { .. } => CloseReason::PayloadTooLarge,
        _ => CloseReason::TransportError,
    }
}

/// Serves a session on its WebSocket in a task of its own. The task that did the
/// upgrade ends here: its state (the pending upgrade, the request copy, hyper's stream
/// wrapper) is freed, and the long-lived task holds only what the connection loop needs.
fn serve<H: EngineHandler, S: Stream>(
    engine: Arc<Engine<H>>,
    socket: Arc<Socket<H::Data>>,
    conn: Conn<S>,
) {
    let live = &engine.stats.websocket_connections;
    live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tracker = engine.tracker.clone();
    tracker.spawn(async move {
        run(&engine, &socket, conn).await;
        engine
            .stats
            .websocket_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    });
}

/// Serves a session on its WebSocket until it ends.
///
/// One hand-written poll loop rather than `select!` over readiness futures: the socket's
/// own read and write wakers (`poll_read_ready`, `poll_write_ready`) and the outbox's
/// waker slot need no waiter nodes inside the task, so an idle connection's task stays
/// a few hundred bytes.
async fn run<H: EngineHandler, S: Stream>(
    engine: &Arc<Engine<H>>,
    socket: &Arc<Socket<H::Data>>,
    mut conn: Conn<S>,
) {
    let mut batch: Option<Batch> = None;
    let mut close_frame: Option<Frame> = None;
    let mut closing = false;
    let end = std::future::poll_fn(|cx| {
        let mut read_blocked = false;
        loop {
            // 1. Once closed, leave the loop with what is left to send: it gets a bounded
            // time (a client that stopped reading must not hold the connection). Else
            // take what is queued, or wait for the next packet.
            {
                let mut outbox = socket.outbox.lock();
                if let Some(reason) = outbox.closed {
                    let rest = outbox.take();
                    drop(outbox);
                    let mut left = batch.take().unwrap_or_default();
                    if reason == CloseReason::SlowConsumer {
                        // Only the frame under way is finished, so the close frame that
                        // follows is read as one.
                        left.frames.truncate(usize::from(left.offset > 0));
                    }
                    left.frames.extend(rest);
                    let frame = close_frame
                        .take()
                        .unwrap_or_else(|| close_frame_for(reason));
                    return Poll::Ready(Some((left, frame)));
                }
                if batch.is_none() {
                    let (frames, alone) = outbox.take_batch();
                    if !frames.is_empty() {
                        batch = Some(Batch {
                            frames,
                            offset: 0,
                            alone,
                        });
                    }
                }
                // Registered also while a batch waits on the socket, so a close from
                // elsewhere wakes this task.
                outbox.register(cx.waker());
            }
            // 2. Write it, as far as the socket takes it.
            if let Some(b) = batch.as_mut() {
                match b.write_to(cx, &mut conn.stream, engine) {
                    Ok(true) if b.alone => {
                        // A write of its own: what is held after it goes out 1 ms later
                        // (see `Socket::write_boundary`; the runtime's timers have no
                        // finer grain). Rare (once per CONNECT followed by packets): a
                        // task of its own, so the connection's task carries nothing.
                        batch = None;
                        let socket = socket.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            socket.release();
                        });
                        continue;
                    }
                    Ok(true) => {
                        batch = None;
                        continue;
                    }
                    // The socket takes no more now; its waker is registered.
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(sid = %socket.sid(), error = %e, "websocket write failed");
                        engine.close(socket, CloseReason::TransportError);
                        return Poll::Ready(None);
                    }
                }
            }
            // 3. Read and handle what arrived (nothing more once closing). Bytes hyper
            // read past the upgrade request are handled first, without waiting.
            // Bytes hyper read past the upgrade request sit in the buffer already and
            // are handled on the first pass. Once the socket said it has nothing more
            // (its waker is registered), it is not read again in this poll.
            if !closing && !read_blocked {
                {
                    match read_and_dispatch(cx, engine, socket, &mut conn) {
                        Ok(false) => {
                            // Messages handled may have queued answers: back to writing.
                            read_blocked = true;
                            continue;
                        }
                        Ok(true) => {
                            // Read budget spent: let other tasks run, then come back.
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Err((reason, frame)) => {
                            closing = true;
                            conn.inbuf = None;
                            close_frame = frame;
                            engine.close(socket, reason);
                            if reason == CloseReason::TransportClose && close_frame.is_none() {
                                // TCP is gone: nothing more can be written.
                                return Poll::Ready(None);
                            }
                            continue;
                        }
                    }
                }
            }
            return Poll::Pending;
        }
    })
    .await;
    if let Some((mut left, frame)) = end {
        // Boxed: the flush and linger state would otherwise sit in every idle task.
        Box::pin(async move {
            let flushed = tokio::time::timeout(CLOSE_FLUSH, conn.flush(&mut left, engine)).await;
            if matches!(flushed, Ok(Ok(()))) {
                conn.finish(frame).await;
            }
        })
        .await;
    }
}

/// Reads and handles what is available. `Ok(true)` when the budget ran out with more
/// bytes possibly waiting; `Err` when the session must end.
fn read_and_dispatch<H: EngineHandler, S: Stream>(
    cx: &mut Context<'_>,
    engine: &Engine<H>,
    socket: &Arc<Socket<H::Data>>,
    conn: &mut Conn<S>,
) -> Result<bool, (CloseReason, Option<Frame>)> {
    let mut budget = READ_BUDGET;
    conn.decoder
        .set_max_message(socket.max_message(engine.config.max_payload));
    let read = match conn.fill(cx, &mut budget) {
        Ok(read) => read,
        Err(_) => return Err((CloseReason::TransportError, None)),
    };
    loop {
        match conn.next_message() {
            Ok(Some(message)) => match on_message(engine, socket, message) {
                Flow::Continue => {}
                Flow::Close(reason, frame) => return Err((reason, frame)),
            },
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(sid = %socket.sid(), error = %e, "websocket protocol error");
                let frame = Frame::close(e.close_code(), "");
                return Err((reason_for(&e), Some(frame)));
            }
        }
    }
    match read {
        Read::Drained => Ok(false),
        Read::Budget => Ok(true),
        Read::Eof => Err((CloseReason::TransportClose, None)),
    }
}

/// The probe of §1.7 on a new WebSocket for a polling session. Returns true when the
/// session moved to this WebSocket (the caller then runs it); otherwise the probing
/// socket has been closed.
async fn upgrade_from_polling<H: EngineHandler, S: Stream>(
    engine: &Arc<Engine<H>>,
    socket: &Arc<Socket<H::Data>>,
    conn: &mut Conn<S>,
) -> bool {
    let outcome =
        tokio::time::timeout(engine.config.upgrade_timeout, probe(engine, socket, conn)).await;
    match outcome {
        Ok(Ok(())) => {
            EngineStats::add(&engine.stats.upgrades, 1);
            engine
                .stats
                .websocket_sessions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A GET still pending must answer now (with a noop) and stop waiting, so
            // that only the WebSocket connection waits on the session from here on.
            socket.wake();
            true
        }
        Ok(Err(frame)) => {
            reset_probe(socket);
            conn.finish(frame).await;
            false
        }
        Err(_elapsed) => {
            reset_probe(socket);
            conn.finish(Frame::close(CloseCode::NORMAL, "upgrade timeout"))
                .await;
            false
        }
    }
}

fn reset_probe<D>(socket: &Socket<D>) {
    let mut outbox = socket.outbox.lock();
    outbox.probing = false;
    outbox.upgrading = false;
}

/// Runs the probe. `Err` carries the close frame for the probing socket.
async fn probe<H: EngineHandler, S: Stream>(
    engine: &Arc<Engine<H>>,
    socket: &Arc<Socket<H::Data>>,
    conn: &mut Conn<S>,
) -> Result<(), Frame> {
    let aborted = || Frame::close(CloseCode::NORMAL, "upgrade aborted");
    loop {
        while let Some(message) = conn
            .next_message()
            .map_err(|e| Frame::close(e.close_code(), ""))?
        {
            match message {
                Message::Text(text) if &text[..] == b"2probe" => {
                    conn.send(engine.frames.pong_probe.as_bytes())
                        .await
                        .map_err(|_| aborted())?;
                    socket.outbox.lock().upgrading = true;
                    // The noop releases a pending poll; if no poll takes it, it goes
                    // out on this WebSocket after the switch (what the suites expect).
                    socket.push_control(engine.frames.noop.clone());
                }
                Message::Text(text) if &text[..] == b"5" => {
                    let mut outbox = socket.outbox.lock();
                    if !outbox.upgrading || outbox.closed.is_some() {
                        return Err(aborted());
                    }
                    outbox.transport = Transport::Websocket;
                    outbox.upgrading = false;
                    outbox.probing = false;
                    return Ok(());
                }
                Message::Ping(payload) => {
                    let pong = Frame::server(OpCode::Pong, &payload);
                    conn.send(pong.as_bytes()).await.map_err(|_| aborted())?;
                }
                Message::Pong(_) => {}
                _ => return Err(aborted()),
            }
        }
        if socket.is_closed() {
            return Err(aborted());
        }
        match conn.read_some().await {
            Ok(Read::Eof) | Err(_) => return Err(aborted()),
            Ok(_) => {}
        }
    }
}
