//! A socket: one client in one namespace.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engineio::{SendError, Sid};
use parking_lot::Mutex;
use socketio_proto::{json, Data, Packet, PacketType, Str};
use tokio::sync::oneshot;
use ws::Frame;

use crate::args::{encode, Body};
use crate::{
    AckError, AckResponse, Args, BroadcastOperator, DisconnectReason, Error, Event, Namespace,
    Parser,
};

/// The phases of a socket's life ([`Socket::connected`] is the first).
const CONNECTED: u8 = 0;
const DISCONNECTING: u8 = 1;
const LEFT: u8 = 2;

/// A shared handle to a socket.
pub type SocketRef = Arc<Socket>;

/// The Engine.IO connection a socket rides on.
pub type Conn = engineio::Socket<ConnState>;

/// What the Socket.IO layer keeps per Engine.IO connection: its sockets (one per joined
/// namespace) and the decoder of its packets.
#[derive(Default)]
pub struct ConnState {
    /// parking_lot mutexes: held for a few instructions, never across `.await`, never
    /// while a user handler runs.
    pub(crate) sockets: Mutex<Vec<SocketRef>>,
    pub(crate) decoder: Mutex<Option<json::Decoder>>,
    /// A namespace was joined at least once (the connect timeout no longer applies).
    pub(crate) joined: AtomicBool,
}

impl ConnState {
    /// Raises, for this connection, the bytes one packet's binary attachments may add
    /// up to (the default parser's, whose decoder read the CONNECT; msgpack packets are
    /// bounded by the message size only).
    pub fn raise_attachment_bytes(&self, max: usize) {
        if let Some(decoder) = self.decoder.lock().as_mut() {
            decoder.raise_attachment_bytes(max);
        }
    }

    pub(crate) fn socket(&self, nsp: &Str) -> Option<SocketRef> {
        self.sockets
            .lock()
            .iter()
            .find(|s| s.nsp.name == *nsp)
            .cloned()
    }
}

pub(crate) type EventHandler = Arc<dyn Fn(&SocketRef, Event) + Send + Sync>;

/// Typed values attached to a socket (or to a connect request), at most one per type.
/// A short list: sockets carry a few such values, and a scan beats hashing here.
#[derive(Default)]
pub(crate) struct Extensions(Vec<Box<dyn Any + Send + Sync>>);

impl Extensions {
    pub(crate) fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        if let Some(slot) = self.0.iter_mut().find(|v| v.is::<T>()) {
            *slot = Box::new(value);
        } else {
            self.0.push(Box::new(value));
        }
    }

    pub(crate) fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.iter().find_map(|v| v.downcast_ref::<T>())
    }

    pub(crate) fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.0.iter_mut().find_map(|v| v.downcast_mut::<T>())
    }

    pub(crate) fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        let at = self.0.iter().position(|v| v.is::<T>())?;
        self.0.swap_remove(at).downcast::<T>().ok().map(|b| *b)
    }
}
type DisconnectHandler = Arc<dyn Fn(&SocketRef, DisconnectReason) + Send + Sync>;

/// What a socket keeps of its handshake when its adapter asks for it (other nodes
/// fetch it): the auth payload and when it connected.
pub(crate) struct KeptHandshake {
    auth: serde_json::Value,
    issued_ms: u64,
}

impl KeptHandshake {
    pub(crate) fn new(request: &crate::ConnectRequest) -> KeptHandshake {
        KeptHandshake {
            auth: request.auth_json(),
            issued_ms: unix_ms(),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A time as JavaScript's `Date.prototype.toString` writes it in UTC
/// (`Wed Dec 02 2026 17:55:00 GMT+0000 (Coordinated Universal Time)`), the Node
/// server's `handshake.time`.
fn js_date(ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:02} {} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `a=1&b=%20` as a JSON object of strings (the last of repeated keys wins).
fn query_object(query: &str) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(
            percent_decode(k),
            serde_json::Value::String(percent_decode(v)),
        );
    }
    serde_json::Value::Object(out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One client connected to one namespace.
// In declaration order: what a broadcast reads of each recipient (its phase and its
// connection) shares the allocation's first cache line with the reference counts, so a
// delivery costs one cache miss here, not two.
#[repr(C)]
pub struct Socket {
    /// [`CONNECTED`], then [`DISCONNECTING`] while it leaves, then [`LEFT`].
    phase: AtomicU8,
    parser: Parser,
    id: Sid,
    conn: Arc<Conn>,
    pub(crate) nsp: Arc<Namespace>,
    next_ack: AtomicU64,
    /// Everything else behind one lock: one lock word per socket instead of seven.
    /// parking_lot mutex: held for a few instructions, never across `.await`, never
    /// while a user handler runs.
    state: Mutex<State>,
    /// Rate limit (GCRA): when the socket's next event is due at the sustained rate, in
    /// nanoseconds on the namespace's clock; and events refused since the socket was
    /// last within its rate with a full burst.
    tat: AtomicU64,
    violations: AtomicU32,
}

/// An event refused by the per-socket rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// How long until the socket may send again.
    pub retry_after: Duration,
    /// Events refused since the socket last had its whole burst (reset once it kept to
    /// its rate long enough to earn it back, not by one accepted event).
    pub violations: u32,
}

/// A socket's mutable parts. Short lists, scanned: each allocates nothing until used.
#[derive(Default)]
struct State {
    /// Handlers of this socket only (the namespace's shared ones are looked up after).
    handlers: Vec<(Box<str>, EventHandler)>,
    fallback: Option<EventHandler>,
    on_disconnecting: Vec<DisconnectHandler>,
    on_disconnect: Vec<DisconnectHandler>,
    rooms: Vec<Str>,
    acks: Vec<(u64, oneshot::Sender<AckResponse>)>,
    data: Extensions,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.nsp.name)
            .finish_non_exhaustive()
    }
}

impl Socket {
    pub(crate) fn new(
        nsp: Arc<Namespace>,
        conn: Arc<Conn>,
        parser: Parser,
        data: Extensions,
    ) -> Socket {
        Socket {
            id: Sid::from_random(rand::random()),
            nsp,
            conn,
            parser,
            state: Mutex::new(State {
                data,
                ..State::default()
            }),
            next_ack: AtomicU64::new(0),
            phase: AtomicU8::new(CONNECTED),
            tat: AtomicU64::new(0),
            violations: AtomicU32::new(0),
        }
    }

    /// Attaches a typed value to the socket, replacing one of the same type.
    pub fn set_data<T: Any + Send + Sync>(&self, value: T) {
        self.state.lock().data.insert(value);
    }

    /// A copy of the socket's value of type `T` (set here or by a connect middleware).
    pub fn data<T: Any + Clone + Send + Sync>(&self) -> Option<T> {
        self.state.lock().data.get::<T>().cloned()
    }

    /// Runs `f` on the socket's value of type `T`, if any, under the socket's data lock
    /// (keep `f` short; it must not call back into this socket's data).
    pub fn with_data<T: Any + Send + Sync, R>(&self, f: impl FnOnce(Option<&mut T>) -> R) -> R {
        f(self.state.lock().data.get_mut::<T>())
    }

    /// Takes the socket's value of type `T` off it.
    pub fn take_data<T: Any + Send + Sync>(&self) -> Option<T> {
        self.state.lock().data.remove::<T>()
    }

    /// The handshake as the Node server shapes it (`socket.handshake`): `headers`,
    /// `time`, `address`, `xdomain`, `secure`, `issued`, `url`, `query`, `auth`. The
    /// auth payload and the time are kept only when the adapter asks for them
    /// ([`Adapter::keeps_handshake`](crate::Adapter::keeps_handshake)); otherwise `auth`
    /// is `{}` and the time is now.
    pub fn handshake(&self) -> serde_json::Value {
        let (auth, issued) = {
            let state = self.state.lock();
            match state.data.get::<KeptHandshake>() {
                Some(h) => (h.auth.clone(), h.issued_ms),
                None => (serde_json::json!({}), unix_ms()),
            }
        };
        let headers: serde_json::Map<String, serde_json::Value> = self
            .conn
            .headers()
            .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::from(v)))
            .collect();
        serde_json::json!({
            "headers": headers,
            "time": js_date(issued),
            "address": self.conn.remote_addr().ip().to_string(),
            "xdomain": self.conn.header("origin").is_some(),
            "secure": false,
            "issued": issued,
            "url": self.conn.uri(),
            "query": query_object(self.conn.query()),
            "auth": auth,
        })
    }

    /// What the socket shows to other nodes ([`SharedData`](crate::adapter::SharedData),
    /// `{}` when none was set).
    pub fn shared_data(&self) -> serde_json::Value {
        self.state
            .lock()
            .data
            .get::<crate::adapter::SharedData>()
            .map_or_else(|| serde_json::json!({}), |d| d.0.clone())
    }

    /// The socket id (not the Engine.IO session id).
    pub fn id(&self) -> Sid {
        self.id
    }

    /// The namespace's name.
    pub fn nsp(&self) -> &str {
        self.nsp.name.as_str()
    }

    /// The namespace.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.nsp
    }

    /// The Engine.IO connection: peer address, opening request, transport.
    pub fn connection(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Whether the socket is still in its namespace.
    pub fn connected(&self) -> bool {
        self.phase.load(Ordering::Acquire) == CONNECTED
    }

    pub(crate) fn parser(&self) -> Parser {
        self.parser
    }

    /// Calls `handler` for each event named `event` on this socket, before the
    /// namespace's handler for it ([`Builder::on`](crate::Builder::on) costs nothing per
    /// socket; prefer it for handlers every socket shares).
    pub fn on(&self, event: &str, handler: impl Fn(&SocketRef, Event) + Send + Sync + 'static) {
        let handlers = &mut self.state.lock().handlers;
        handlers.retain(|(name, _)| &**name != event);
        handlers.push((event.into(), Arc::new(handler)));
    }

    /// Calls `handler` for events no [`Socket::on`] handler takes.
    pub fn on_any(&self, handler: impl Fn(&SocketRef, Event) + Send + Sync + 'static) {
        self.state.lock().fallback = Some(Arc::new(handler));
    }

    /// Calls `handler` when the socket is about to leave, its rooms still known.
    pub fn on_disconnecting(
        &self,
        handler: impl Fn(&SocketRef, DisconnectReason) + Send + Sync + 'static,
    ) {
        self.state.lock().on_disconnecting.push(Arc::new(handler));
    }

    /// Calls `handler` once the socket has left.
    pub fn on_disconnect(
        &self,
        handler: impl Fn(&SocketRef, DisconnectReason) + Send + Sync + 'static,
    ) {
        self.state.lock().on_disconnect.push(Arc::new(handler));
    }

    /// Emits `event` with `args` to this socket.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`], [`Error::Disconnected`], [`Error::QueueFull`].
    pub fn emit<A: Args>(&self, event: &str, args: A) -> Result<(), Error> {
        let frames = encode(
            self.parser,
            PacketType::Event,
            self.nsp(),
            None,
            Body::Event(event, &args),
        )?;
        self.send_frames(frames)
    }

    /// Sends an event encoded by [`Namespace::encode`] of this socket's namespace.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`], [`Error::QueueFull`] (the connection is then closed, as
    /// for [`Socket::emit`]).
    pub fn send_encoded(&self, packet: &crate::args::Encoded) -> Result<(), Error> {
        self.send_frames(packet.frames.clone())
    }

    /// Emits `event` with `args` and waits up to `timeout` for the client's answer.
    pub fn emit_with_ack<A: Args>(
        self: &Arc<Self>,
        event: &str,
        args: A,
        timeout: Duration,
    ) -> impl Future<Output = Result<AckResponse, AckError>> + Send + 'static {
        self.emit_with_ack_dyn(event, &args, timeout)
    }

    /// As [`Socket::emit_with_ack`], for arguments behind a reference (what adapters
    /// hold). The packet is queued before this returns; the future only waits.
    pub fn emit_with_ack_dyn(
        self: &Arc<Self>,
        event: &str,
        args: &dyn Args,
        timeout: Duration,
    ) -> impl Future<Output = Result<AckResponse, AckError>> + Send + 'static {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let sent = encode(
            self.parser,
            PacketType::Event,
            self.nsp(),
            Some(id),
            Body::Event(event, args),
        )
        .and_then(|frames| {
            self.state.lock().acks.push((id, tx));
            self.send_frames(frames)
        });
        let socket = self.clone();
        let started = tokio::time::Instant::now();
        async move {
            sent?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(response)) => {
                    socket.nsp.stats.ack_rtt.observe(started.elapsed());
                    Ok(response)
                }
                Ok(Err(_)) => Err(AckError::Disconnected),
                Err(_) => {
                    socket
                        .state
                        .lock()
                        .acks
                        .retain(|(waiting, _)| *waiting != id);
                    Err(AckError::Timeout)
                }
            }
        }
    }

    /// Joins `room`. The socket is always in the room of its own id (see
    /// [`Socket::rooms`]); joining it does nothing.
    pub fn join(self: &Arc<Self>, room: impl Into<Str>) {
        let room = room.into();
        if !self.connected() || room.as_str() == self.id.as_str() {
            return;
        }
        {
            let rooms = &mut self.state.lock().rooms;
            if rooms.contains(&room) {
                return;
            }
            rooms.push(room.clone());
        }
        self.nsp.add_to_room(room.clone(), self);
        // A disconnect racing with this join may have emptied the rooms before the
        // line above: check again, so no room keeps a socket that has left.
        if !self.connected() {
            self.nsp.remove_from_room(&room, self.id);
        }
    }

    /// Leaves `room`. The room of the socket's own id is left only with the namespace.
    pub fn leave(&self, room: &Str) {
        let removed = {
            let rooms = &mut self.state.lock().rooms;
            let before = rooms.len();
            rooms.retain(|r| r != room);
            rooms.len() != before
        };
        if removed {
            self.nsp.remove_from_room(room, self.id);
        }
    }

    /// Leaves every room.
    pub fn leave_all(&self) {
        let rooms: Vec<Str> = std::mem::take(&mut self.state.lock().rooms);
        for room in rooms {
            self.nsp.remove_from_room(&room, self.id);
        }
    }

    /// The rooms the socket is in: first the room of its own id (until it has left the
    /// namespace: `disconnecting` handlers still see it, as in the Node server), then
    /// those it joined.
    pub fn rooms(&self) -> Vec<Str> {
        let state = self.state.lock();
        let mut rooms = Vec::with_capacity(state.rooms.len() + 1);
        if self.phase.load(Ordering::Acquire) != LEFT {
            rooms.push(Str::from(self.id.as_str().to_owned()));
        }
        rooms.extend(state.rooms.iter().cloned());
        rooms
    }

    /// The rooms the socket joined, without the room of its own id.
    pub fn joined_rooms(&self) -> Vec<Str> {
        self.state.lock().rooms.clone()
    }

    /// A broadcast to `room`, without this socket.
    pub fn to(self: &Arc<Self>, room: impl Into<Str>) -> BroadcastOperator {
        BroadcastOperator::new(self.nsp.clone())
            .to(room)
            .except_socket(self.id)
    }

    /// A broadcast to the whole namespace, without this socket.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.nsp.clone()).except_socket(self.id)
    }

    /// Disconnects the socket from its namespace (the client is told), keeping the
    /// connection for its other namespaces.
    pub fn disconnect(self: &Arc<Self>) {
        if let Ok(frames) = encode(
            self.parser,
            PacketType::Disconnect,
            self.nsp(),
            None,
            Body::None,
        ) {
            let _ = self.send_frames(frames);
        }
        self.leave_namespace(DisconnectReason::ServerNamespaceDisconnect);
    }

    /// Closes the whole connection.
    pub fn close(&self) {
        self.conn.close();
    }

    /// Queues frames that may not be lost: when they do not fit in the connection's
    /// outbound budget, the client cannot keep up and its connection is closed (reason
    /// "slow consumer"); the sender is never blocked.
    pub(crate) fn send_frames(&self, frames: Vec<Frame>) -> Result<(), Error> {
        let result = self.send_volatile(frames);
        if result == Err(Error::QueueFull) {
            crate::Stats::add(&self.nsp.stats.dropped_slow_consumer, 1);
            self.conn.close_with(engineio::CloseReason::SlowConsumer);
        }
        result
    }

    /// Queues frames that may be dropped when the connection's budget is full.
    pub(crate) fn send_volatile(
        &self,
        frames: impl IntoIterator<Item = Frame>,
    ) -> Result<(), Error> {
        if !self.connected() {
            return Err(Error::Disconnected);
        }
        self.conn.send_all(frames).map_err(|e| match e {
            SendError::Closed => Error::Disconnected,
            SendError::QueueFull => Error::QueueFull,
        })
    }

    /// Runs the handler for an event from the client.
    pub(crate) fn dispatch(self: &Arc<Self>, packet: Packet) {
        crate::Stats::add(&self.nsp.stats.events_in, 1);
        if let Some(limit) = self.nsp.event_rate {
            if let Err(retry_after) = self.take_token(&limit) {
                crate::Stats::add(&self.nsp.stats.events_rate_limited, 1);
                let violations = self.violations.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(h) = self.nsp.on_rate_limited.clone() {
                    let event = Event {
                        packet,
                        socket: self.clone(),
                    };
                    h(
                        self,
                        event,
                        RateLimited {
                            retry_after,
                            violations,
                        },
                    );
                }
                return;
            }
        }
        let name = packet.event_name();
        let handler = name
            .as_ref()
            .and_then(|n| {
                let state = self.state.lock();
                state
                    .handlers
                    .iter()
                    .find(|(event, _)| &**event == n.as_str())
                    .map(|(_, h)| h.clone())
                    .or_else(|| self.nsp.handlers.get(n.as_str()).cloned())
            })
            .or_else(|| self.state.lock().fallback.clone());
        if let Some(handler) = handler {
            handler(
                self,
                Event {
                    packet,
                    socket: self.clone(),
                },
            );
        }
    }

    /// Takes one event's worth of the socket's rate (GCRA), or says how long until one
    /// is available. Events of one socket are dispatched in order on its connection's
    /// task, so plain loads and stores suffice.
    fn take_token(&self, limit: &crate::RateLimit) -> Result<(), Duration> {
        let now = self.nsp.epoch.elapsed().as_nanos() as u64;
        let interval = limit.interval_ns();
        let tolerance = interval.saturating_mul(u64::from(limit.burst.max(1) - 1));
        let tat = self.tat.load(Ordering::Relaxed);
        if tat <= now {
            // A full burst again: the socket kept to its rate.
            self.violations.store(0, Ordering::Relaxed);
        }
        let tat = tat.max(now);
        let allowed_from = tat.saturating_sub(tolerance);
        if now < allowed_from {
            return Err(Duration::from_nanos(allowed_from - now));
        }
        self.tat.store(tat + interval, Ordering::Relaxed);
        Ok(())
    }

    /// Hands an ack from the client to the emit waiting for it.
    pub(crate) fn on_ack(self: &Arc<Self>, packet: Packet) {
        let Some(id) = packet.id else { return };
        let waiting = {
            let acks = &mut self.state.lock().acks;
            acks.iter()
                .position(|(waiting, _)| *waiting == id)
                .map(|at| acks.swap_remove(at).1)
        };
        let data = match packet.data {
            Data::None => Data::Json(bytes::Bytes::from_static(b"[]")),
            other => other,
        };
        match waiting {
            Some(tx) => {
                let _ = tx.send(AckResponse { data });
            }
            None => {
                if let Some(h) = &self.nsp.on_ack {
                    h(self, id, AckResponse { data });
                }
            }
        }
    }

    /// Leaves the namespace: `disconnecting` handlers (rooms still known), rooms left,
    /// pending acks failed, `disconnect` handlers. Runs once.
    pub(crate) fn leave_namespace(self: &Arc<Self>, reason: DisconnectReason) {
        if self
            .phase
            .compare_exchange(
                CONNECTED,
                DISCONNECTING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        let disconnecting: Vec<DisconnectHandler> = self.state.lock().on_disconnecting.clone();
        for h in disconnecting {
            h(self, reason);
        }
        self.leave_all();
        self.nsp.remove(self.id);
        self.conn.data().sockets.lock().retain(|s| s.id != self.id);
        self.phase.store(LEFT, Ordering::Release);
        // Dropping the senders fails the waiting emits with `Disconnected`.
        self.state.lock().acks.clear();
        let disconnect: Vec<DisconnectHandler> =
            std::mem::take(&mut self.state.lock().on_disconnect);
        for h in disconnect {
            h(self, reason);
        }
        if let Some(h) = &self.nsp.on_disconnect {
            h(self, reason);
        }
        // Handlers may hold the socket: drop them so nothing keeps it alive.
        let dropped = {
            let mut state = self.state.lock();
            (
                std::mem::take(&mut state.handlers),
                state.fallback.take(),
                std::mem::take(&mut state.on_disconnecting),
            )
        };
        // Dropped after the lock is released: a handler's destructor may touch the socket.
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::{js_date, query_object};

    #[test]
    fn dates_as_javascript_writes_them() {
        let utc = "GMT+0000 (Coordinated Universal Time)";
        assert_eq!(js_date(0), format!("Thu Jan 01 1970 00:00:00 {utc}"));
        assert_eq!(
            js_date(1_796_234_100_000),
            format!("Wed Dec 02 2026 17:55:00 {utc}")
        );
        assert_eq!(
            js_date(951_868_799_000),
            format!("Tue Feb 29 2000 23:59:59 {utc}")
        );
    }

    #[test]
    fn queries_as_objects() {
        assert_eq!(
            query_object("EIO=4&transport=websocket&name=a%20b+c&bad=%zz&flag&x=1&x=2"),
            serde_json::json!({
                "EIO": "4", "transport": "websocket", "name": "a b c", "bad": "%zz",
                "flag": "", "x": "2"
            })
        );
        assert_eq!(query_object(""), serde_json::json!({}));
        // A truncated escape at the end is kept as it came.
        assert_eq!(query_object("a=%4"), serde_json::json!({"a": "%4"}));
    }
}
