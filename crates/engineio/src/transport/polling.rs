//! HTTP long-polling (`PROTOCOL.md` §1.5): a GET receives everything queued, a POST
//! delivers a payload; at most one of each at a time per session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use engineio_proto::{payload, ErrorCode, Transport};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use ws::OpCode;

use crate::engine::{error_response, text_response, HttpResponse};
use crate::socket::{Guard, Opening};
use crate::{CloseReason, Engine, EngineHandler, EngineStats, Socket};

const PAYLOAD_TYPE: &str = "text/plain; charset=UTF-8";

/// Opens a polling session: the answer is the open packet.
pub(crate) fn handshake<H: EngineHandler, B>(
    engine: &Arc<Engine<H>>,
    req: Request<B>,
    remote: SocketAddr,
    guard: Option<Guard>,
) -> HttpResponse {
    let opening = Opening::new(req.uri(), req.headers(), remote);
    drop(req);
    let socket = engine.open(Transport::Polling, opening, guard);
    let open = engine.open_packet(&socket, true);
    engine.handler.on_open(&socket);
    EngineStats::add(&engine.stats.packets_out, 1);
    EngineStats::add(&engine.stats.bytes_out, open.len() as u64);
    payload_response(Bytes::from(open))
}

/// Clears a per-session request flag when the request ends, also when hyper drops the
/// request future because the client went away.
struct Active<'a, D> {
    socket: &'a Socket<D>,
    get: bool,
}

impl<D> Drop for Active<'_, D> {
    fn drop(&mut self) {
        let mut outbox = self.socket.outbox.lock();
        if self.get {
            outbox.get_active = false;
        } else {
            outbox.post_active = false;
        }
    }
}

/// A GET: answers at once with everything queued, or waits until something is.
pub(crate) async fn get<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    socket: Arc<Socket<H::Data>>,
) -> HttpResponse {
    {
        let mut outbox = socket.outbox.lock();
        if outbox.transport != Transport::Polling {
            return error_response(ErrorCode::BadRequest);
        }
        if outbox.get_active {
            drop(outbox);
            // A second concurrent GET breaks the protocol: the session ends, and the
            // pending GET is answered with a close packet (PROTOCOL.md §1.5).
            engine.close(&socket, CloseReason::TransportError);
            return error_response(ErrorCode::BadRequest);
        }
        outbox.get_active = true;
    }
    let _active = Active {
        socket: &*socket,
        get: true,
    };
    // Waits until there is something to answer with; the state is read and the waker
    // registered under one lock, so no wakeup is lost in between.
    let ready = std::future::poll_fn(|cx| {
        let mut outbox = socket.outbox.lock();
        if !outbox.is_empty()
            || outbox.closed.is_some()
            || outbox.upgrading
            || outbox.transport != Transport::Polling
        {
            let frames = outbox.take();
            return Poll::Ready((frames, outbox.closed, outbox.transport));
        }
        outbox.register(cx.waker());
        Poll::Pending
    });
    let (frames, closed, transport) = tokio::select! {
        ready = ready => ready,
        _ = engine.shutdown.cancelled() => {
            return payload_response(Bytes::from_static(b"1"));
        }
    };
    if transport != Transport::Polling {
        // Upgraded while this GET waited.
        return payload_response(Bytes::from_static(b"6"));
    }
    let mut body = BytesMut::new();
    let mut packets = 0u64;
    for frame in &frames {
        match frame.opcode() {
            OpCode::Text => payload::push_text(&mut body, &frame.payload()),
            OpCode::Binary => payload::push_binary(&mut body, &frame.payload()),
            _ => continue,
        }
        packets += 1;
    }
    if closed.is_some() && packets > 0 {
        // The last packets go alone; the close packet comes with the next GET. In one
        // payload, the socket.io client would act on the close before it handed the
        // packets to the application, losing them (the Node server answers the same
        // way: it drains its buffer before it closes).
    } else if let Some(reason) = closed {
        // The session's last answer. A client-side close gets a noop.
        let last: &[u8] = if reason == CloseReason::ClientClose {
            b"6"
        } else {
            b"1"
        };
        payload::push_text(&mut body, last);
        packets += 1;
        engine.forget(socket.sid());
    } else if body.is_empty() {
        // Upgrading and nothing queued: release the poll with a noop.
        payload::push_text(&mut body, b"6");
        packets += 1;
    }
    EngineStats::add(&engine.stats.packets_out, packets);
    EngineStats::add(&engine.stats.bytes_out, body.len() as u64);
    payload_response(body.freeze())
}

/// A POST: decodes the payload and applies its packets in order.
pub(crate) async fn post<H: EngineHandler, B>(
    engine: &Arc<Engine<H>>,
    socket: Arc<Socket<H::Data>>,
    req: Request<B>,
) -> HttpResponse
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    {
        let mut outbox = socket.outbox.lock();
        if outbox.closed.is_some() {
            // Lingering for its last GET only.
            return error_response(ErrorCode::UnknownSid);
        }
        if outbox.transport != Transport::Polling {
            return error_response(ErrorCode::BadRequest);
        }
        if outbox.post_active {
            drop(outbox);
            engine.close(&socket, CloseReason::TransportError);
            return error_response(ErrorCode::BadRequest);
        }
        outbox.post_active = true;
    }
    let _active = Active {
        socket: &*socket,
        get: false,
    };
    let max = socket.max_message(engine.config.max_payload);
    let (parts, body) = req.into_parts();
    // v4 payloads are text; octet-stream bodies belong to v3 binary payloads (§1.5).
    if parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"))
    {
        engine.close(&socket, CloseReason::ParseError);
        return error_response(ErrorCode::BadRequest);
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        engine.close(&socket, CloseReason::PayloadTooLarge);
        return too_large();
    }
    let body = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            engine.close(&socket, CloseReason::PayloadTooLarge);
            return too_large();
        }
        Err(_) => {
            engine.close(&socket, CloseReason::TransportError);
            return error_response(ErrorCode::BadRequest);
        }
    };
    for packet in payload::decode(&body) {
        let result = match packet {
            Ok(packet) => engine.on_packet(&socket, packet),
            Err(_) => Err(CloseReason::ParseError),
        };
        if let Err(reason) = result {
            engine.close(&socket, reason);
            if reason == CloseReason::ClientClose {
                break;
            }
            return error_response(ErrorCode::BadRequest);
        }
    }
    text_response(StatusCode::OK, "text/html", Bytes::from_static(b"ok"))
}

fn payload_response(body: Bytes) -> HttpResponse {
    let mut res = text_response(StatusCode::OK, PAYLOAD_TYPE, body);
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    res
}

fn too_large() -> HttpResponse {
    text_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "text/plain",
        Bytes::from_static(b"payload too large"),
    )
}
