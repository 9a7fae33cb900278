//! One Engine.IO session and its outbound queue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Weak;

use engineio_proto::{Sid, Transport};
use std::task::Waker;

use parking_lot::Mutex;
use ws::{Frame, OpCode};

use crate::CloseReason;

/// Why a packet could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session has ended.
    #[error("session closed")]
    Closed,
    /// The session's outbound queue is over its byte budget: the client does not read
    /// fast enough. The caller decides: drop the packet (volatile) or close the session.
    #[error("outbound queue full")]
    QueueFull,
}

/// A value the caller ties to a session when it opens (an admission ticket, say): the
/// session holds it until it closes, then drops it.
pub type Guard = Box<dyn std::any::Any + Send + Sync>;

/// What the engine calls to close a session on behalf of [`Socket::close`].
pub(crate) trait Closer<D>: Send + Sync {
    fn close_sid(&self, sid: Sid, reason: CloseReason);
    /// The engine's clock, in milliseconds.
    fn now_ms(&self) -> u64;
}

/// The HTTP request that opened the session, copied compactly.
///
/// hyper's header values and URI are slices of its 8 KiB read buffer: keeping them
/// would keep that whole buffer alive for the life of the session. One owned string
/// holds the path and query, then one `name:value` line per header (names lower case).
#[derive(Debug)]
pub(crate) struct Opening {
    head: Box<str>,
    pub(crate) remote: SocketAddr,
}

impl Opening {
    pub(crate) fn new(uri: &http::Uri, headers: &http::HeaderMap, remote: SocketAddr) -> Opening {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = String::with_capacity(
            path.len()
                + headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len() + 2)
                    .sum::<usize>(),
        );
        head.push_str(path);
        for (name, value) in headers {
            // Values that are not UTF-8 are kept lossily; none of ours needs them.
            head.push('\n');
            head.push_str(name.as_str());
            head.push(':');
            head.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        Opening {
            head: head.into_boxed_str(),
            remote,
        }
    }

    fn uri(&self) -> &str {
        self.head.split('\n').next().unwrap_or("/")
    }

    fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.head
            .split('\n')
            .skip(1)
            .filter_map(|line| line.split_once(':'))
    }
}

/// One Engine.IO session, shared by its transport tasks, the heartbeat sweeper and the
/// layer above.
// In declaration order: what every send touches (the outbox's lock and state, the
// budget) comes first, in the allocation's first cache lines.
#[repr(C)]
pub struct Socket<D> {
    /// parking_lot mutex: held for a few instructions at a time, never across `.await`.
    pub(crate) outbox: Mutex<Outbox>,
    /// Bytes queued at most (see [`Socket::send_all`]), up to 4 GiB; raised by
    /// [`Socket::raise_limits`].
    max_buffered: AtomicU32,
    /// The largest message accepted from the peer when raised above the engine's
    /// `max_payload` ([`Socket::raise_limits`]); 0 for the engine's. With `max_buffered`,
    /// in the room one `usize` took: the session is no larger for it.
    max_message: AtomicU32,
    sid: Sid,
    /// This session's ping interval in milliseconds; 0 for the engine's.
    ping_interval_ms: AtomicU32,
    /// Heartbeat, in milliseconds since the engine started: when the next ping is due,
    /// and when an unanswered ping times out (0 while no ping is outstanding).
    pub(crate) next_ping: AtomicU64,
    pub(crate) pong_deadline: AtomicU64,
    opening: Box<Opening>,
    closer: Weak<dyn Closer<D>>,
    data: D,
}

/// The session's mutable state, behind one lock.
// In declaration order: the small fields packed together, then what a send reads and
// writes (the byte count, the waker, the queue) in the lines right after the lock, then
// what only the close path uses.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Outbox {
    pub(crate) closed: Option<CloseReason>,
    pub(crate) transport: Transport,
    /// A WebSocket is attached for an upgrade (polling sessions only).
    pub(crate) probing: bool,
    /// The probe was answered (`3probe` sent): polls are released at once.
    pub(crate) upgrading: bool,
    /// A polling GET is pending.
    pub(crate) get_active: bool,
    /// A polling POST is being read.
    pub(crate) post_active: bool,
    /// The frames after a boundary wait until the write before it is done and the
    /// runtime had a turn ([`Socket::release`]).
    pub(crate) held: bool,
    /// Frames at the front of `queue` that a WebSocket writes on their own, before the
    /// rest (0: none); see [`Socket::write_boundary`].
    boundary: u8,
    /// Bytes in `queue`.
    bytes: usize,
    /// The task that drains the queue (the WebSocket connection or the pending polling
    /// GET; never both), registered while it waits. A waker slot instead of a `Notify`
    /// keeps the connection task small: it is set under the lock senders take anyway.
    pub(crate) waker: Option<Waker>,
    /// Frames not yet handed to a transport. `VecDeque::new` does not allocate, and a
    /// drained queue is swapped for a new one, so an idle session holds no buffer.
    queue: VecDeque<Frame>,
    /// Held until the session closes.
    pub(crate) guard: Option<Guard>,
}

impl Outbox {
    /// Takes every queued frame.
    pub(crate) fn take(&mut self) -> VecDeque<Frame> {
        self.bytes = 0;
        self.boundary = 0;
        self.held = false;
        std::mem::take(&mut self.queue)
    }

    /// Takes the frames a WebSocket writes next: nothing while they are held; up to the
    /// write boundary, if one is set and frames follow it (then `true`: write them on
    /// their own; the rest is held until [`Socket::release`]); else all of them.
    pub(crate) fn take_batch(&mut self) -> (VecDeque<Frame>, bool) {
        if self.held {
            return (VecDeque::new(), false);
        }
        let boundary = usize::from(std::mem::take(&mut self.boundary));
        if boundary == 0 || boundary >= self.queue.len() {
            // Nothing queued behind the boundary: nothing to hold.
            return (self.take(), false);
        }
        self.held = true;
        let rest = self.queue.split_off(boundary);
        let front = std::mem::replace(&mut self.queue, rest);
        self.bytes -= front.iter().map(Frame::len).sum::<usize>();
        (front, true)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Registers the task that waits for the queue.
    pub(crate) fn register(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }
}

impl<D> std::fmt::Debug for Socket<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("sid", &self.sid)
            .field("remote", &self.opening.remote)
            .finish_non_exhaustive()
    }
}

impl<D> Socket<D> {
    pub(crate) fn new(
        sid: Sid,
        transport: Transport,
        opening: Opening,
        max_buffered: usize,
        next_ping: u64,
        closer: Weak<dyn Closer<D>>,
        data: D,
    ) -> Socket<D> {
        Socket {
            sid,
            opening: Box::new(opening),
            next_ping: AtomicU64::new(next_ping),
            pong_deadline: AtomicU64::new(0),
            ping_interval_ms: AtomicU32::new(0),
            outbox: Mutex::new(Outbox {
                queue: VecDeque::new(),
                bytes: 0,
                closed: None,
                transport,
                probing: false,
                upgrading: false,
                get_active: false,
                post_active: false,
                boundary: 0,
                held: false,
                waker: None,
                guard: None,
            }),
            max_buffered: AtomicU32::new(u32::try_from(max_buffered).unwrap_or(u32::MAX)),
            max_message: AtomicU32::new(0),
            closer,
            data,
        }
    }

    /// Raises, for this session only, the largest message it takes from the peer (to
    /// `max_message` bytes, up to 4 GiB) and the bytes it may have queued for the peer
    /// (to `max_buffered`); never lowers either. For a layer above that learns late what
    /// a connection is for (a namespace of large documents).
    pub fn raise_limits(&self, max_message: usize, max_buffered: usize) {
        let message = u32::try_from(max_message).unwrap_or(u32::MAX);
        self.max_message.fetch_max(message, Ordering::Relaxed);
        let buffered = u32::try_from(max_buffered).unwrap_or(u32::MAX);
        self.max_buffered.fetch_max(buffered, Ordering::Relaxed);
    }

    /// The largest message taken from the peer: `engine_max`, or more when raised.
    pub(crate) fn max_message(&self, engine_max: usize) -> usize {
        engine_max.max(self.max_message.load(Ordering::Relaxed) as usize)
    }

    /// The session id.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// The peer's address, as accepted.
    pub fn remote_addr(&self) -> SocketAddr {
        self.opening.remote
    }

    /// The path and query of the request that opened the session.
    pub fn uri(&self) -> &str {
        self.opening.uri()
    }

    /// The query string of the request that opened the session, without `?`.
    pub fn query(&self) -> &str {
        self.uri().split_once('?').map_or("", |(_, q)| q)
    }

    /// The headers of the request that opened the session: lower-case names and values,
    /// in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.opening.headers()
    }

    /// The first value of header `name` (lower case) in the opening request.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The transport in use now.
    pub fn transport(&self) -> Transport {
        self.outbox.lock().transport
    }

    /// Sets how often this session is pinged, from its next pong on (at most the
    /// interval announced in the handshake: clients take a longer silence as a dead
    /// server).
    pub fn set_ping_interval(&self, interval: std::time::Duration) {
        let ms = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX);
        self.ping_interval_ms.store(ms, Ordering::Relaxed);
        // A shorter interval applies to the ping already scheduled too.
        if let Some(engine) = self.closer.upgrade() {
            let sooner = engine.now_ms() + u64::from(ms);
            self.next_ping.fetch_min(sooner, Ordering::Relaxed);
        }
    }

    /// This session's ping interval, if it has one of its own.
    pub(crate) fn ping_interval_ms(&self) -> Option<u64> {
        match self.ping_interval_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(u64::from(ms)),
        }
    }

    /// Runs `f` on the session's guard if it is a `T` (and the session is open).
    pub fn with_guard<T: std::any::Any, R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        let outbox = self.outbox.lock();
        f(outbox.guard.as_ref().and_then(|g| g.downcast_ref::<T>()))
    }

    /// Bytes queued for sending and not yet handed to the transport.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.lock().bytes
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.outbox.lock().closed.is_some()
    }

    /// The handler's per-session state.
    pub fn data(&self) -> &D {
        &self.data
    }

    /// Queues a text message (an Engine.IO `4` packet).
    ///
    /// # Errors
    ///
    /// As [`Socket::send`].
    pub fn send_text(&self, text: &[u8]) -> Result<(), SendError> {
        self.send(message_frame(text))
    }

    /// Queues a binary message.
    ///
    /// # Errors
    ///
    /// As [`Socket::send`].
    pub fn send_binary(&self, data: &[u8]) -> Result<(), SendError> {
        self.send(Frame::server(OpCode::Binary, data))
    }

    /// Queues a pre-encoded frame: a text frame holding an Engine.IO text packet
    /// (`4...`), or a binary frame holding a binary message. The same frame may be queued
    /// on any number of sessions: this is how a broadcast is encoded once.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the session ended; [`SendError::QueueFull`] when the
    /// frame would take the queue over its byte budget (nothing is queued then).
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.send_all(std::iter::once(frame))
    }

    /// Queues several frames at once, with nothing from another sender between them
    /// (a Socket.IO packet with binary attachments). All or none are queued.
    ///
    /// # Errors
    ///
    /// As [`Socket::send`].
    pub fn send_all(&self, frames: impl IntoIterator<Item = Frame>) -> Result<(), SendError> {
        let waker;
        {
            let mut outbox = self.outbox.lock();
            if outbox.closed.is_some() {
                return Err(SendError::Closed);
            }
            let was_empty = outbox.queue.is_empty();
            let before = outbox.queue.len();
            let mut added = 0;
            let mut too_long = false;
            for frame in frames {
                added += frame.len();
                // The WebSocket writer counts a frame's bytes in a u32.
                too_long |= frame.len() > u32::MAX as usize;
                outbox.queue.push_back(frame);
            }
            // An empty queue takes anything, so one large packet can always go out (up to
            // 4 GiB a frame).
            if too_long
                || (outbox.bytes > 0
                    && outbox.bytes + added > self.max_buffered.load(Ordering::Relaxed) as usize)
            {
                outbox.queue.truncate(before);
                return Err(SendError::QueueFull);
            }
            outbox.bytes += added;
            // Only the first packet of a batch wakes the drainer; it takes them all.
            waker = if was_empty { outbox.waker.take() } else { None };
        }
        // Wake after the lock is released, so the drainer does not wake into it.
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Marks what is queued so far to go out on a WebSocket in a write of its own, and
    /// what is queued after it to follow 1 ms later. The Node server writes a packet
    /// sent while a write is under way in a later write; a client that takes the
    /// messages of one read all at once while it waits for them one by one (the
    /// official protocol suite's, after a CONNECT reply) misses the second otherwise.
    /// For rare packets only (a CONNECT reply): it costs a write and a timer.
    pub fn write_boundary(&self) {
        let mut outbox = self.outbox.lock();
        outbox.boundary = u8::try_from(outbox.queue.len()).unwrap_or(u8::MAX);
    }

    /// Whether a polling GET is waiting for packets: what is sent now goes out in its
    /// answer at once.
    pub fn is_polled(&self) -> bool {
        self.outbox.lock().get_active
    }

    /// Lets the frames held after a write boundary go (see [`Outbox::take_batch`]).
    pub(crate) fn release(&self) {
        self.outbox.lock().held = false;
        self.wake();
    }

    /// Queues a control frame (ping, pong, noop) regardless of the byte budget.
    pub(crate) fn push_control(&self, frame: Frame) -> bool {
        let waker;
        {
            let mut outbox = self.outbox.lock();
            if outbox.closed.is_some() {
                return false;
            }
            waker = if outbox.queue.is_empty() {
                outbox.waker.take()
            } else {
                None
            };
            outbox.bytes += frame.len();
            outbox.queue.push_back(frame);
        }
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Wakes the task waiting on the session, if any (state changed: closed, upgraded).
    pub(crate) fn wake(&self) {
        let waker = self.outbox.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the session from the server side. Packets already queued are still
    /// delivered; then the client is told the session is closed.
    pub fn close(&self) {
        self.close_with(CloseReason::ServerClose);
    }

    /// Ends the session with `reason`.
    pub fn close_with(&self, reason: CloseReason) {
        if let Some(closer) = self.closer.upgrade() {
            closer.close_sid(self.sid, reason);
        }
    }
}

/// An Engine.IO message packet (`4` + text) in a WebSocket text frame.
pub fn message_frame(text: &[u8]) -> Frame {
    Frame::server_parts(OpCode::Text, &[b"4", text])
}

/// Milliseconds on the engine's clock.
pub(crate) fn load(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

pub(crate) fn store(v: &AtomicU64, x: u64) {
    v.store(x, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct NoEngine;

    impl Closer<()> for NoEngine {
        fn close_sid(&self, _sid: Sid, _reason: CloseReason) {}
        fn now_ms(&self) -> u64 {
            0
        }
    }

    fn socket(max_buffered: usize) -> Socket<()> {
        let closer: Weak<dyn Closer<()>> = Weak::<NoEngine>::new();
        let opening = Opening::new(
            &"/engine.io/?EIO=4&transport=websocket&x=1".parse().unwrap(),
            &http::HeaderMap::new(),
            "127.0.0.1:9".parse().unwrap(),
        );
        Socket::new(
            Sid::from_random([1; 15]),
            Transport::Websocket,
            opening,
            max_buffered,
            0,
            closer,
            (),
        )
    }

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// An idle socket's queue holds no allocation, and a drained one gives it back.
    #[test]
    fn idle_queue_holds_no_buffer() {
        let s = socket(1000);
        assert_eq!(s.outbox.lock().queue.capacity(), 0);
        s.send_text(b"hi").unwrap();
        let taken = s.outbox.lock().take();
        assert_eq!(taken.len(), 1);
        assert_eq!(s.outbox.lock().queue.capacity(), 0);
        assert_eq!(s.outbox.lock().bytes, 0);
    }

    /// A write boundary: the frames before it are taken alone and the rest held (not
    /// taken, counted in the budget) until released; then taken whole. A boundary with
    /// nothing after it holds nothing; polling's `take` ignores it.
    #[test]
    fn write_boundary_holds_what_follows() {
        let s = socket(1000);
        s.send_text(b"reply").unwrap();
        s.write_boundary();
        s.send_text(b"first event").unwrap();
        s.send_text(b"second event").unwrap();
        let (front, alone) = s.outbox.lock().take_batch();
        assert!(alone);
        assert_eq!(front.len(), 1);
        assert_eq!(
            s.outbox.lock().bytes,
            message_frame(b"first event").len() * 2 + 1
        );
        s.send_text(b"third event").unwrap();
        let (held, alone) = s.outbox.lock().take_batch();
        assert!(held.is_empty() && !alone, "held until released");
        s.release();
        let (rest, alone) = s.outbox.lock().take_batch();
        assert_eq!(rest.len(), 3);
        assert!(!alone);
        assert_eq!(s.outbox.lock().bytes, 0);

        s.send_text(b"reply").unwrap();
        s.write_boundary();
        let (front, alone) = s.outbox.lock().take_batch();
        assert_eq!((front.len(), alone), (1, false), "nothing to hold");
        s.send_text(b"later").unwrap();
        assert_eq!(s.outbox.lock().take_batch().0.len(), 1);

        s.send_text(b"reply").unwrap();
        s.write_boundary();
        s.send_text(b"event").unwrap();
        assert_eq!(s.outbox.lock().take().len(), 2);
        assert_eq!(s.outbox.lock().take_batch().0.len(), 0);
        s.send_text(b"next").unwrap();
        assert_eq!(
            s.outbox.lock().take_batch().0.len(),
            1,
            "take resets the boundary"
        );
    }

    /// The byte budget refuses a packet that would exceed it, but an empty queue takes
    /// any one packet.
    #[test]
    fn byte_budget() {
        let s = socket(100);
        let big = vec![b'x'; 500];
        s.send_text(&big).unwrap();
        assert_eq!(s.send_text(b"more"), Err(SendError::QueueFull));
        s.outbox.lock().take();
        for _ in 0..10 {
            s.send_text(b"12345").unwrap();
        }
        assert_eq!(s.send_text(&[b'y'; 40]), Err(SendError::QueueFull));
        assert_eq!(s.outbox.lock().queue.len(), 10);
    }

    /// A batch is queued whole or not at all.
    #[test]
    fn batches_are_atomic() {
        let s = socket(50);
        s.send_text(b"first").unwrap();
        let frames = (0..5).map(|_| message_frame(b"0123456789"));
        assert_eq!(s.send_all(frames), Err(SendError::QueueFull));
        assert_eq!(s.outbox.lock().queue.len(), 1);
        let frames = (0..3).map(|_| message_frame(b"ab"));
        s.send_all(frames).unwrap();
        assert_eq!(s.outbox.lock().queue.len(), 4);
    }

    /// The registered waker is woken once for the first packet of a batch, not for every
    /// packet, and again after the queue was drained.
    #[test]
    fn wakes_once_per_batch() {
        let s = socket(1 << 20);
        let counter = Arc::new(CountWakes::default());
        let waker = Waker::from(counter.clone());
        s.outbox.lock().register(&waker);
        for _ in 0..5 {
            s.send_text(b"x").unwrap();
        }
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        s.outbox.lock().take();
        s.outbox.lock().register(&waker);
        s.send_text(b"y").unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
    }

    /// A closed session refuses everything.
    #[test]
    fn closed_refuses() {
        let s = socket(1000);
        s.outbox.lock().closed = Some(CloseReason::ServerClose);
        assert_eq!(s.send_text(b"x"), Err(SendError::Closed));
        assert!(!s.push_control(message_frame(b"2")));
        assert!(s.is_closed());
    }

    /// The opening request is kept as path, query and headers.
    #[test]
    fn opening_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert("origin", "http://example.test".parse().unwrap());
        headers.insert("x-token", "a:b".parse().unwrap());
        let closer: Weak<dyn Closer<()>> = Weak::<NoEngine>::new();
        let s = Socket::new(
            Sid::from_random([2; 15]),
            Transport::Polling,
            Opening::new(
                &"/engine.io/?EIO=4&t=1".parse().unwrap(),
                &headers,
                "127.0.0.1:9".parse().unwrap(),
            ),
            100,
            0,
            closer,
            (),
        );
        assert_eq!(s.uri(), "/engine.io/?EIO=4&t=1");
        assert_eq!(s.query(), "EIO=4&t=1");
        assert_eq!(s.header("origin"), Some("http://example.test"));
        assert_eq!(s.header("x-token"), Some("a:b"));
        assert_eq!(s.header("cookie"), None);
        assert_eq!(s.headers().count(), 2);
    }
}
