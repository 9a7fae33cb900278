//! The engine: the session table and the routing of HTTP requests.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use engineio_proto::{ErrorCode, Packet, Sid, Transport};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ws::{Frame, OpCode};

use crate::socket::{self, Closer, Guard, Opening};
use crate::{
    CloseReason, Config, Connection, EngineHandler, EngineStats, Handshake, Refusal, Socket,
};

/// The response type of the engine's HTTP handling.
pub type HttpResponse = Response<Full<Bytes>>;

/// An Engine.IO server: sessions, transports and heartbeat for one path.
///
/// Built with [`Engine::new`] inside a Tokio runtime (it starts the heartbeat sweeper).
/// Connections reach it through [`serve_connection`](crate::serve_connection), or
/// requests through [`Engine::handle`].
pub struct Engine<H: EngineHandler> {
    pub(crate) config: Config,
    pub(crate) handler: H,
    /// Sharded by dashmap: lookups on the per-request path never contend on one lock.
    sessions: DashMap<Sid, Arc<Socket<H::Data>>>,
    epoch: Instant,
    pub(crate) stats: Arc<EngineStats>,
    /// Closed polling sessions kept until their last GET or a deadline (ms).
    /// parking_lot mutex: touched only on such closes and by the sweeper.
    lingering: Mutex<Vec<(Sid, u64)>>,
    pub(crate) frames: Frames,
    pub(crate) shutdown: CancellationToken,
    /// Every task the engine spawns for a connection (upgrades, WebSocket connections):
    /// a shutdown waits on it, not on a gauge.
    pub(crate) tracker: TaskTracker,
}

/// Frames every session shares, encoded once.
pub(crate) struct Frames {
    pub(crate) ping: Frame,
    pub(crate) noop: Frame,
    pub(crate) pong_probe: Frame,
}

impl<H: EngineHandler> std::fmt::Debug for Engine<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.config.path)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl<H: EngineHandler> Engine<H> {
    /// Builds an engine and starts its heartbeat sweeper on the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn new(config: Config, handler: H) -> Arc<Self> {
        Self::with_stats(config, handler, Arc::default())
    }

    /// As [`Engine::new`], counting into `stats` (owned by the caller's metrics).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn with_stats(config: Config, handler: H, stats: Arc<EngineStats>) -> Arc<Self> {
        let engine = Arc::new(Engine {
            config,
            handler,
            sessions: DashMap::new(),
            epoch: Instant::now(),
            stats,
            lingering: Mutex::new(Vec::new()),
            frames: Frames {
                ping: Frame::server(OpCode::Text, b"2"),
                noop: Frame::server(OpCode::Text, b"6"),
                pong_probe: Frame::server(OpCode::Text, b"3probe"),
            },
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        tokio::spawn(crate::heartbeat::sweep(Arc::downgrade(&engine)));
        engine
    }

    /// The engine's options.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The engine's counters.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// The tasks the engine spawned for connections. Once [`Engine::close_all`] ran (or
    /// the caller closed the tracker), `tracker().wait()` resolves when the last of them
    /// has written its last frames and ended.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Cancelled when the engine shuts down ([`Engine::close_all`]): connections served
    /// by [`serve_connection`](crate::serve_connection) stop taking requests then.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The open session with id `sid`.
    pub fn get(&self, sid: Sid) -> Option<Arc<Socket<H::Data>>> {
        // Clone the Arc out and drop the shard guard at once.
        self.sessions.get(&sid).map(|s| s.value().clone())
    }

    /// The number of sessions in the table.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Bytes queued on every session and not yet sent (walks the table).
    pub fn queued_bytes(&self) -> usize {
        let mut total = 0;
        self.for_each(|s| total += s.queued_bytes());
        total
    }

    /// Calls `f` on every session. The table stays readable meanwhile.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Socket<H::Data>>)) {
        for entry in self.sessions.iter() {
            f(entry.value());
        }
    }

    /// Closes every session with `reason`, stops the sweeper, tells connections to stop
    /// taking requests, and closes the tracker (no new connection tasks are expected).
    pub fn close_all(&self, reason: CloseReason) {
        let mut all = Vec::with_capacity(self.sessions.len());
        self.for_each(|s| all.push(s.clone()));
        for s in all {
            self.close(&s, reason);
        }
        self.shutdown.cancel();
        self.tracker.close();
    }

    /// Whether `path` is served by this engine (prefix match, as the Node server does).
    pub fn matches(&self, path: &str) -> bool {
        let prefix = self.config.path.trim_end_matches('/');
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Milliseconds since the engine started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Answers one HTTP request for the engine's path: a polling GET or POST, a
    /// WebSocket upgrade, a CORS preflight, or an error. A request that opens a session
    /// is first put to the handler's [`admit`](EngineHandler::admit).
    ///
    /// `C` is the connection hyper serves the request on (`TokioIo<C>`): a WebSocket
    /// upgrade takes its stream back from it. [`serve_connection`](crate::serve_connection)
    /// serves `Rewind<S>`; a caller running hyper on a `TcpStream` names `TcpStream`.
    pub async fn handle<C, B>(self: &Arc<Self>, req: Request<B>, remote: SocketAddr) -> HttpResponse
    where
        C: Connection,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let allow_origin = self.allowed_origin(req.headers());
        let upgrade = is_upgrade(&req);
        let mut res = self.route::<C, B>(req, remote).await;
        if upgrade && res.status() != StatusCode::SWITCHING_PROTOCOLS {
            // A refused upgrade ends the connection, as the Node server does: the client
            // has no use for an HTTP connection it meant to turn into a WebSocket.
            res.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        if let (Some(origin), Some(cors)) = (allow_origin, self.config.cors.as_ref()) {
            if res.status() != StatusCode::SWITCHING_PROTOCOLS {
                add_cors(&mut res, &origin, cors.credentials);
            }
        }
        res
    }

    fn allowed_origin(&self, headers: &http::HeaderMap) -> Option<String> {
        self.config.cors.as_ref().and_then(|c| {
            let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
            c.allow_origin(origin)
        })
    }

    async fn route<C, B>(self: &Arc<Self>, req: Request<B>, remote: SocketAddr) -> HttpResponse
    where
        C: Connection,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.method() == Method::OPTIONS && self.config.cors.is_some() {
            return preflight(&req);
        }
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let transport = match query.transport.and_then(Transport::parse) {
            Some(Transport::Polling) if self.config.polling => Transport::Polling,
            Some(Transport::Websocket) if self.config.websocket => Transport::Websocket,
            _ => return error_response(ErrorCode::UnknownTransport),
        };
        if query.eio != Some("4") {
            return error_response(ErrorCode::UnsupportedProtocolVersion);
        }
        let upgrade = is_upgrade(&req);
        let Some(sid) = query.sid else {
            if req.method() != Method::GET {
                return error_response(ErrorCode::BadHandshakeMethod);
            }
            // A WebSocket handshake is checked whole before admission: a malformed one
            // takes nothing from the client's budget.
            let accept = match transport {
                Transport::Websocket if !upgrade => return error_response(ErrorCode::BadRequest),
                Transport::Websocket => {
                    match crate::transport::websocket::accept_key(req.headers(), remote) {
                        Some(accept) => Some(accept),
                        None => return error_response(ErrorCode::BadRequest),
                    }
                }
                Transport::Polling => None,
            };
            let handshake = Handshake {
                remote,
                transport,
                uri: req.uri(),
                headers: req.headers(),
            };
            let guard = match self.handler.admit(&handshake) {
                Ok(guard) => guard,
                Err(refusal) => return refusal_response(&refusal),
            };
            return match accept {
                None => crate::transport::polling::handshake(self, req, remote, guard),
                Some(accept) => crate::transport::websocket::upgrade::<H, B, C>(
                    self, req, remote, accept, None, guard,
                ),
            };
        };
        let Some(socket) = Sid::parse(sid).and_then(|sid| self.live(sid)) else {
            return error_response(ErrorCode::UnknownSid);
        };
        match transport {
            Transport::Websocket if upgrade => {
                match crate::transport::websocket::accept_key(req.headers(), remote) {
                    Some(accept) => crate::transport::websocket::upgrade::<H, B, C>(
                        self,
                        req,
                        remote,
                        accept,
                        Some(socket),
                        None,
                    ),
                    None => error_response(ErrorCode::BadRequest),
                }
            }
            Transport::Websocket => error_response(ErrorCode::BadRequest),
            // Boxed: their state (a long-poll, a body being read) is large, and the
            // futures of every other request, WebSocket handshakes above all, would
            // otherwise carry room for it.
            Transport::Polling if req.method() == Method::GET => {
                Box::pin(crate::transport::polling::get(self, socket)).await
            }
            Transport::Polling if req.method() == Method::POST => {
                Box::pin(crate::transport::polling::post(self, socket, req)).await
            }
            Transport::Polling => error_response(ErrorCode::BadRequest),
        }
    }

    /// The session `sid` if it is alive. A session whose pong is overdue is closed here
    /// rather than at the sweeper's next tick, so its timeout is exact.
    ///
    /// A closed polling session that lingers for its last GET is returned as it is.
    fn live(&self, sid: Sid) -> Option<Arc<Socket<H::Data>>> {
        let socket = self.get(sid)?;
        if !socket.is_closed() && self.pong_overdue(&socket, self.now_ms()) {
            self.close(&socket, CloseReason::PingTimeout);
            return None;
        }
        Some(socket)
    }

    /// Whether the ping due (or sent) has gone unanswered past the ping timeout. The
    /// deadline counts from when the ping was due, so a late sweeper tick does not
    /// lengthen it.
    pub(crate) fn pong_overdue(&self, socket: &Socket<H::Data>, now: u64) -> bool {
        let deadline = socket::load(&socket.pong_deadline);
        let deadline = if deadline == 0 {
            socket::load(&socket.next_ping) + self.config.ping_timeout.as_millis() as u64
        } else {
            deadline
        };
        now >= deadline
    }

    /// Creates a session and puts it in the table.
    pub(crate) fn open(
        self: &Arc<Self>,
        transport: Transport,
        opening: Opening,
        guard: Option<Guard>,
    ) -> Arc<Socket<H::Data>> {
        let sid = loop {
            let sid = Sid::from_random(rand::random());
            if !self.sessions.contains_key(&sid) {
                break sid;
            }
        };
        let closer: std::sync::Weak<dyn Closer<H::Data>> = Arc::downgrade(self) as _;
        let socket = Arc::new(Socket::new(
            sid,
            transport,
            opening,
            self.config.max_buffered_bytes,
            self.now_ms() + self.config.ping_interval.as_millis() as u64,
            closer,
            H::Data::default(),
        ));
        socket.outbox.lock().guard = guard;
        self.sessions.insert(sid, socket.clone());
        EngineStats::add(&self.stats.handshakes, 1);
        self.stats
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if transport == Transport::Websocket {
            self.stats
                .websocket_sessions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        socket
    }

    /// The open packet for `socket`.
    pub(crate) fn open_packet(&self, socket: &Socket<H::Data>, upgrades: bool) -> Vec<u8> {
        let handshake = engineio_proto::Handshake {
            sid: socket.sid(),
            upgrades: if upgrades && self.config.websocket {
                vec![Transport::Websocket]
            } else {
                Vec::new()
            },
            ping_interval: self.config.ping_interval.as_millis() as u64,
            ping_timeout: self.config.ping_timeout.as_millis() as u64,
            max_payload: self.config.max_payload as u64,
        };
        let mut out = b"0".to_vec();
        out.extend_from_slice(handshake.to_json().as_bytes());
        out
    }

    /// Ends a session once: marks it closed, takes it out of the table (a polling
    /// session closed by the server lingers until its last GET), tells the handler, and
    /// wakes its transport task.
    pub(crate) fn close(&self, socket: &Arc<Socket<H::Data>>, reason: CloseReason) {
        let linger;
        let websocket;
        let guard;
        let discarded;
        {
            let mut outbox = socket.outbox.lock();
            if outbox.closed.is_some() {
                return;
            }
            outbox.closed = Some(reason);
            guard = outbox.guard.take();
            // A slow consumer's queue is over its budget and would take long to send:
            // it goes (the close code tells the client it lost packets).
            discarded = (reason == CloseReason::SlowConsumer).then(|| outbox.take());
            websocket = outbox.transport == Transport::Websocket;
            // Packets queued by the server (its last words, then `1`) wait for a GET:
            // the pending one, or the next.
            linger = !websocket
                && matches!(
                    reason,
                    CloseReason::ServerClose | CloseReason::ServerShutdown
                );
        }
        if linger {
            let deadline = self.now_ms() + self.config.close_grace.as_millis() as u64;
            self.lingering.lock().push((socket.sid(), deadline));
        } else {
            self.sessions.remove(&socket.sid());
        }
        self.stats
            .sessions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if websocket {
            self.stats
                .websocket_sessions
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        EngineStats::add(&self.stats.closes[reason.index()], 1);
        tracing::debug!(sid = %socket.sid(), %reason, "session closed");
        self.handler.on_close(socket, reason);
        socket.wake();
        // Dropped last, outside the lock: a guard's destructor may do anything.
        drop(discarded);
        drop(guard);
    }

    /// Takes a closed session out of the table (after its last GET, or at its deadline).
    pub(crate) fn forget(&self, sid: Sid) {
        self.sessions.remove(&sid);
    }

    /// Drops lingering sessions whose deadline passed.
    pub(crate) fn reap_lingering(&self, now: u64) {
        let expired: Vec<Sid> = {
            let mut list = self.lingering.lock();
            let mut expired = Vec::new();
            list.retain(|&(sid, deadline)| {
                if now >= deadline {
                    expired.push(sid);
                    false
                } else {
                    true
                }
            });
            expired
        };
        for sid in expired {
            self.forget(sid);
        }
    }

    /// Applies one packet received from the client, whatever its transport.
    ///
    /// # Errors
    ///
    /// The reason to close the session with, when the packet ends it.
    pub(crate) fn on_packet(
        &self,
        socket: &Arc<Socket<H::Data>>,
        packet: Packet,
    ) -> Result<(), CloseReason> {
        EngineStats::add(&self.stats.packets_in, 1);
        if socket.is_closed() {
            // The handler saw on_close: nothing may follow it. The packet is dropped,
            // not taken for a lost connection: the transport still delivers what the
            // server queued before it closed (its last words).
            return Ok(());
        }
        match packet {
            Packet::Message(text) => {
                EngineStats::add(&self.stats.bytes_in, text.len() as u64);
                self.handler.on_message(socket, text);
            }
            Packet::Binary(data) => {
                EngineStats::add(&self.stats.bytes_in, data.len() as u64);
                self.handler.on_binary(socket, data);
            }
            Packet::Pong(_) => {
                let interval = socket
                    .ping_interval_ms()
                    .unwrap_or(self.config.ping_interval.as_millis() as u64);
                socket::store(&socket.pong_deadline, 0);
                socket::store(&socket.next_ping, self.now_ms() + interval);
            }
            Packet::Close => return Err(CloseReason::ClientClose),
            Packet::Noop => {}
            // v4: pings go from server to client; `2probe` belongs to an upgrade only
            // (PROTOCOL.md §1.4). Open and upgrade never come from a client here.
            Packet::Ping(_) | Packet::Open(_) | Packet::Upgrade => {
                return Err(CloseReason::ParseError)
            }
        }
        Ok(())
    }
}

impl<H: EngineHandler> Closer<H::Data> for Engine<H> {
    fn close_sid(&self, sid: Sid, reason: CloseReason) {
        if let Some(socket) = self.get(sid) {
            self.close(&socket, reason);
        }
    }

    fn now_ms(&self) -> u64 {
        Engine::now_ms(self)
    }
}

/// The query parameters the transport reads.
struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
}

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Query<'a> {
        let mut q = Query {
            eio: None,
            transport: None,
            sid: None,
        };
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "EIO" => q.eio = Some(v),
                "transport" => q.transport = Some(v),
                "sid" => q.sid = Some(v),
                _ => {}
            }
        }
        q
    }
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The JSON error answer of `PROTOCOL.md` §1.9.
pub(crate) fn error_response(code: ErrorCode) -> HttpResponse {
    let mut res = Response::new(Full::new(Bytes::from(code.json())));
    *res.status_mut() = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

/// The answer to a handshake the handler refused: the status, `Retry-After` in whole
/// seconds when waiting helps, and a JSON body with the code.
fn refusal_response(refusal: &Refusal) -> HttpResponse {
    let mut body = String::with_capacity(32 + refusal.code.len() + refusal.message.len());
    body.push_str("{\"code\":");
    json_string(&mut body, &refusal.code);
    body.push_str(",\"message\":");
    json_string(&mut body, &refusal.message);
    body.push('}');
    let mut res = text_response(refusal.status, "application/json", Bytes::from(body));
    let h = res.headers_mut();
    if let Some(after) = refusal.retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, http::HeaderValue::from(secs.max(1)));
    }
    // A refused client has no use for the connection (and one being limited should not
    // keep it).
    h.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    res
}

/// Appends `s` to `out` as a JSON string.
fn json_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A plain answer with a status and a short text body.
pub(crate) fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> HttpResponse {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    res
}

fn preflight<B>(req: &Request<B>) -> HttpResponse {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        http::HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
    );
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        h.insert(
            header::VARY,
            http::HeaderValue::from_static("Access-Control-Request-Headers"),
        );
    }
    res
}

fn add_cors(res: &mut HttpResponse, origin: &str, credentials: bool) {
    let h = res.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if origin != "*" {
        h.append(header::VARY, http::HeaderValue::from_static("Origin"));
    }
    if credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            http::HeaderValue::from_static("true"),
        );
    }
}
