//! The server: namespaces, the connect flow, and the dispatch of packets.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use engineio::{CloseReason, Engine, EngineHandler, Guard, Handshake, Refusal};
use parking_lot::Mutex;
use socketio_proto::{json, msgpack, DecodeError, Packet, PacketType, Str};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::adapter::{AdapterFactory, LocalAdapter, ServerEvent};
use crate::args::{encode, Body};
use crate::namespace::{Common, Hooks};
use crate::socket::{Conn, ConnState, Extensions};
use crate::{Config, ConnectError, ConnectRequest, Namespace, Parser, Socket, SocketRef};

struct NsSpec {
    matcher: Matcher,
    hooks: Hooks,
}

enum Matcher {
    Name(String),
    Dynamic(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

/// Decides on each handshake that would open a connection (see [`Builder::admission`]).
pub(crate) type Admission =
    Arc<dyn Fn(&Handshake<'_>) -> Result<Option<Guard>, Refusal> + Send + Sync>;

/// Sets up a [`Server`]: its namespaces and their handlers.
#[derive(Default)]
pub struct Builder {
    specs: Vec<NsSpec>,
    adapters: Option<Arc<dyn AdapterFactory>>,
    admission: Option<Admission>,
    engine_stats: Option<Arc<engineio::EngineStats>>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("namespaces", &self.specs.len())
            .finish()
    }
}

impl Builder {
    /// Adds the namespace `name`; `on_connect` runs for each socket that joins it, before
    /// any of its packets is handled (install event handlers there).
    pub fn ns(
        mut self,
        name: &str,
        on_connect: impl Fn(&SocketRef, &ConnectRequest) + Send + Sync + 'static,
    ) -> Self {
        let name = if name.starts_with('/') {
            name.to_owned()
        } else {
            format!("/{name}")
        };
        self.specs.push(NsSpec {
            matcher: Matcher::Name(name),
            hooks: Hooks::new(Arc::new(on_connect)),
        });
        self
    }

    /// Adds the namespaces whose names `matcher` accepts, each created on its first
    /// connect.
    pub fn dynamic_ns(
        mut self,
        matcher: impl Fn(&str) -> bool + Send + Sync + 'static,
        on_connect: impl Fn(&SocketRef, &ConnectRequest) + Send + Sync + 'static,
    ) -> Self {
        self.specs.push(NsSpec {
            matcher: Matcher::Dynamic(Arc::new(matcher)),
            hooks: Hooks::new(Arc::new(on_connect)),
        });
        self
    }

    /// Adds a connect middleware to the namespace added last: it sees the client's auth
    /// payload and connection, and may refuse with a [`ConnectError`].
    ///
    /// # Panics
    ///
    /// When no namespace was added yet.
    pub fn middleware(
        mut self,
        f: impl Fn(&ConnectRequest) -> Result<(), ConnectError> + Send + Sync + 'static,
    ) -> Self {
        self.specs
            .last_mut()
            .expect("add a namespace before its middleware")
            .hooks
            .middlewares
            .push(Arc::new(f));
        self
    }

    /// Adds a handler for `event` to the namespace added last, shared by all its sockets:
    /// it costs nothing per socket (a [`Socket::on`] handler of the same name, if any,
    /// takes precedence).
    ///
    /// # Panics
    ///
    /// When no namespace was added yet.
    pub fn on(
        mut self,
        event: &str,
        handler: impl Fn(&SocketRef, crate::Event) + Send + Sync + 'static,
    ) -> Self {
        self.specs
            .last_mut()
            .expect("add a namespace before its handlers")
            .hooks
            .handlers
            .insert(event.into(), Arc::new(handler));
        self
    }

    /// Calls `handler` when any socket of the namespace added last has left it (after
    /// the socket's own `disconnect` handlers); shared, nothing stored per socket.
    ///
    /// # Panics
    ///
    /// When no namespace was added yet.
    pub fn on_disconnect(
        mut self,
        handler: impl Fn(&SocketRef, crate::DisconnectReason) + Send + Sync + 'static,
    ) -> Self {
        self.specs
            .last_mut()
            .expect("add a namespace before its handlers")
            .hooks
            .on_disconnect = Some(Arc::new(handler));
        self
    }

    /// Calls `handler` with each event of the namespace added last that went over the
    /// per-socket rate ([`Config::event_rate`]), instead of the event's own handler. It
    /// may acknowledge the event with an error, or disconnect the socket. Without it,
    /// such events are dropped.
    ///
    /// # Panics
    ///
    /// When no namespace was added yet.
    pub fn on_rate_limited(
        mut self,
        handler: impl Fn(&SocketRef, crate::Event, crate::RateLimited) + Send + Sync + 'static,
    ) -> Self {
        self.specs
            .last_mut()
            .expect("add a namespace before its handlers")
            .hooks
            .on_rate_limited = Some(Arc::new(handler));
        self
    }

    /// Sets the per-socket event rate of the namespace added last, in place of the
    /// server's [`Config::event_rate`] (`None`: no limit).
    ///
    /// # Panics
    ///
    /// When no namespace was added yet.
    pub fn event_rate(mut self, rate: Option<crate::RateLimit>) -> Self {
        self.specs
            .last_mut()
            .expect("add a namespace before its rate")
            .hooks
            .event_rate = Some(rate);
        self
    }

    /// Decides on every request that would open a connection (an Engine.IO handshake,
    /// over either transport), before anything is made for it: `f` may refuse it with a
    /// status and a code, or admit it with a [`Guard`] the connection holds until it
    /// closes. Admits everyone by default.
    pub fn admission(
        mut self,
        f: impl Fn(&Handshake<'_>) -> Result<Option<Guard>, Refusal> + Send + Sync + 'static,
    ) -> Self {
        self.admission = Some(Arc::new(f));
        self
    }

    /// Has the engine count into `stats` (owned by the caller: its metrics, or its
    /// admission, read them). Defaults to counters of the engine's own.
    pub fn engine_stats(mut self, stats: Arc<engineio::EngineStats>) -> Self {
        self.engine_stats = Some(stats);
        self
    }

    /// Calls `handler` with each ack from a client that nothing waits for, on the
    /// namespace added last: the acks of packets broadcast with a shared ack id
    /// ([`BroadcastOperator::ack_id`](crate::BroadcastOperator::ack_id)), with the
    /// socket that sent it and the id. Acks of no one's packet are dropped without it.
    ///
    /// # Panics
    ///
    /// When no namespace was added yet.
    pub fn on_ack(
        mut self,
        handler: impl Fn(&SocketRef, u64, crate::AckResponse) + Send + Sync + 'static,
    ) -> Self {
        self.specs
            .last_mut()
            .expect("add a namespace before its handlers")
            .hooks
            .on_ack = Some(Arc::new(handler));
        self
    }

    /// Calls `handler` with each event another server of the cluster emitted to the
    /// namespace added last with `serverSideEmit` (never one of this server's own).
    ///
    /// # Panics
    ///
    /// When no namespace was added yet.
    pub fn on_server_side_emit(
        mut self,
        handler: impl Fn(&Arc<Namespace>, ServerEvent) + Send + Sync + 'static,
    ) -> Self {
        self.specs
            .last_mut()
            .expect("add a namespace before its handlers")
            .hooks
            .on_server_event = Some(Arc::new(handler));
        self
    }

    /// Sets what makes the adapter of each namespace. Defaults to [`LocalAdapter`].
    pub fn adapter(mut self, adapters: Arc<dyn AdapterFactory>) -> Self {
        self.adapters = Some(adapters);
        self
    }

    /// Builds the server and starts its engine and timers on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn build(self, config: Config) -> Server {
        let common = Common {
            parser: config.parser,
            adapters: self.adapters.unwrap_or_else(|| Arc::new(LocalAdapter)),
            stats: Arc::default(),
            event_rate: config.event_rate,
            epoch: Instant::now(),
        };
        let inner = Arc::new(Inner {
            namespaces: DashMap::new(),
            common,
            specs: self.specs,
            admission: self.admission,
            pending: Mutex::new(VecDeque::new()),
            config,
        });
        for spec in &inner.specs {
            if let Matcher::Name(name) = &spec.matcher {
                let ns = Namespace::new(
                    Str::from(name.clone()),
                    spec.hooks.clone(),
                    inner.common.clone(),
                );
                inner.namespaces.insert(Str::from(name.clone()), ns.clone());
                ns.adapter.init(&ns);
            }
        }
        let engine = Engine::with_stats(
            inner.config.engine.clone(),
            Handler {
                inner: inner.clone(),
            },
            self.engine_stats.unwrap_or_default(),
        );
        tokio::spawn(connect_timeouts(Arc::downgrade(&inner)));
        Server { inner, engine }
    }
}

pub(crate) struct Inner {
    config: Config,
    common: Common,
    namespaces: DashMap<Str, Arc<Namespace>>,
    specs: Vec<NsSpec>,
    admission: Option<Admission>,
    /// Connections not yet in a namespace, by connect deadline. One timer for all of
    /// them; the deadline is the same for every connection, so the queue stays sorted.
    pending: Mutex<VecDeque<(Instant, Weak<Conn>)>>,
}

impl Inner {
    /// See [`Server::remove_empty_namespace`].
    fn forget_if_empty(&self, name: &str) -> bool {
        let is_static = self
            .specs
            .iter()
            .any(|s| matches!(&s.matcher, Matcher::Name(m) if m == name));
        if is_static {
            return false;
        }
        let removed = self
            .namespaces
            .remove_if(&Str::from(name.to_owned()), |_, ns| ns.is_empty());
        match removed {
            Some((_, ns)) => {
                ns.adapter.close();
                true
            }
            None => false,
        }
    }

    fn namespace(&self, name: &Str) -> Option<Arc<Namespace>> {
        if let Some(ns) = self.namespaces.get(name) {
            return Some(ns.value().clone());
        }
        let spec = self.specs.iter().find(|s| match &s.matcher {
            Matcher::Dynamic(accepts) => accepts(name.as_str()),
            Matcher::Name(_) => false,
        })?;
        let mut created = false;
        let ns = self
            .namespaces
            .entry(name.clone())
            .or_insert_with(|| {
                created = true;
                Namespace::new(name.clone(), spec.hooks.clone(), self.common.clone())
            })
            .clone();
        if created {
            ns.adapter.init(&ns);
        }
        Some(ns)
    }
}

/// A namespace name with its leading `/` (`chat` and `/chat` are the same).
fn rooted(name: &str) -> Str {
    if name.starts_with('/') {
        Str::from(name.to_owned())
    } else {
        Str::from(format!("/{name}"))
    }
}

/// A Socket.IO server. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
    engine: Arc<Engine<Handler>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("namespaces", &self.inner.namespaces.len())
            .field("connections", &self.engine.len())
            .finish()
    }
}

impl Server {
    /// Starts setting up a server.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The Engine.IO engine, for serving requests ([`Engine::handle`]).
    pub fn engine(&self) -> &Arc<Engine<Handler>> {
        &self.engine
    }

    /// Serves one accepted TCP connection (HTTP/1.1, upgrades included); other paths
    /// than the engine's get 404 (see [`engineio::serve_connection`] to serve them).
    pub async fn serve_connection(self, stream: TcpStream, remote: SocketAddr) {
        let _ = stream.set_nodelay(true);
        engineio::serve_connection(self.engine, stream, remote, engineio::NotFound).await;
    }

    /// The namespace `name`, if it exists (dynamic ones once a client joined).
    pub fn of(&self, name: &str) -> Option<Arc<Namespace>> {
        self.inner
            .namespaces
            .get(&rooted(name))
            .map(|n| n.value().clone())
    }

    /// The namespace `name`, made now if it does not exist and a dynamic namespace
    /// accepts the name (as a client's CONNECT would make it): to emit on it, to this
    /// node's sockets and, clustered, to the other nodes', before any client joined here.
    pub fn of_or_create(&self, name: &str) -> Option<Arc<Namespace>> {
        self.inner.namespace(&rooted(name))
    }

    /// The layer's counters and histograms.
    pub fn stats(&self) -> &Arc<crate::Stats> {
        &self.inner.common.stats
    }

    /// Forgets the dynamic namespace `name` if no socket is in it (its adapter closed);
    /// a later connect makes it again. Returns whether it was removed. Namespaces added
    /// by name stay.
    pub fn remove_empty_namespace(&self, name: &str) -> bool {
        self.inner.forget_if_empty(name)
    }

    /// Every namespace (dynamic ones once a client joined).
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.inner
            .namespaces
            .iter()
            .map(|n| n.value().clone())
            .collect()
    }

    /// Closes every connection (reason "server shutting down"), then the namespaces'
    /// adapters.
    pub fn close(&self) {
        self.engine.close_all(CloseReason::ServerShutdown);
        for ns in self.namespaces() {
            ns.adapter.close();
        }
    }
}

/// The engine handler: decodes Socket.IO packets and dispatches them.
pub struct Handler {
    inner: Arc<Inner>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler").finish_non_exhaustive()
    }
}

impl EngineHandler for Handler {
    type Data = ConnState;

    fn admit(&self, handshake: &Handshake<'_>) -> Result<Option<Guard>, Refusal> {
        match &self.inner.admission {
            Some(admit) => admit(handshake),
            None => Ok(None),
        }
    }

    fn on_open(&self, conn: &Arc<Conn>) {
        let deadline = Instant::now() + self.inner.config.connect_timeout;
        self.inner
            .pending
            .lock()
            .push_back((deadline, Arc::downgrade(conn)));
    }

    fn on_message(&self, conn: &Arc<Conn>, text: Bytes) {
        let result = match self.inner.config.parser {
            Parser::Default => {
                let mut decoder = conn.data().decoder.lock();
                decoder
                    .get_or_insert_with(|| json::Decoder::new(self.inner.config.limits))
                    .text(text)
            }
            // The msgpack parser sends binary messages only.
            Parser::Msgpack => Err(DecodeError::UnknownType),
        };
        self.decoded(conn, result);
    }

    fn on_binary(&self, conn: &Arc<Conn>, data: Bytes) {
        let result = match self.inner.config.parser {
            Parser::Default => {
                let mut decoder = conn.data().decoder.lock();
                decoder
                    .get_or_insert_with(|| json::Decoder::new(self.inner.config.limits))
                    .binary(data)
            }
            Parser::Msgpack => msgpack::decode(data).map(Some),
        };
        self.decoded(conn, result);
    }

    fn on_close(&self, conn: &Arc<Conn>, reason: CloseReason) {
        let sockets: Vec<SocketRef> = std::mem::take(&mut *conn.data().sockets.lock());
        for socket in sockets {
            socket.leave_namespace(reason.into());
        }
        conn.data().decoder.lock().take();
    }
}

impl Handler {
    fn decoded(&self, conn: &Arc<Conn>, result: Result<Option<Packet>, DecodeError>) {
        match result {
            Ok(Some(packet)) => self.on_packet(conn, packet),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(sid = %conn.sid(), error = %e, "invalid socket.io packet");
                conn.close_with(CloseReason::ParseError);
            }
        }
    }

    fn on_packet(&self, conn: &Arc<Conn>, packet: Packet) {
        let socket = conn.data().socket(&packet.nsp);
        match (packet.kind, socket) {
            (PacketType::Connect, None) => self.connect(conn, packet),
            (PacketType::Event | PacketType::BinaryEvent, Some(socket)) => socket.dispatch(packet),
            (PacketType::Ack | PacketType::BinaryAck, Some(socket)) => socket.on_ack(packet),
            (PacketType::Disconnect, Some(socket)) => {
                socket.leave_namespace(crate::DisconnectReason::ClientNamespaceDisconnect);
            }
            // A second CONNECT, a CONNECT_ERROR from a client, or a packet for a
            // namespace not joined: the Node server closes the connection (§2.4).
            _ => conn.close_with(CloseReason::ParseError),
        }
    }

    fn connect(&self, conn: &Arc<Conn>, packet: Packet) {
        let parser = self.inner.config.parser;
        let Some(ns) = self.inner.namespace(&packet.nsp) else {
            self.refuse(conn, &packet.nsp, &ConnectError::new("Invalid namespace"));
            return;
        };
        let request = ConnectRequest {
            nsp: packet.nsp.clone(),
            auth: packet.data,
            conn: conn.clone(),
            data: Mutex::new(Extensions::default()),
        };
        for middleware in &ns.middlewares {
            if let Err(e) = middleware(&request) {
                self.refuse(conn, &packet.nsp, &e);
                // A refused client leaves no dynamic namespace behind.
                self.inner.forget_if_empty(packet.nsp.as_str());
                return;
            }
        }
        let mut data = std::mem::take(&mut *request.data.lock());
        if ns.keep_handshake {
            data.insert(crate::socket::KeptHandshake::new(&request));
        }
        let socket = Arc::new(Socket::new(ns.clone(), conn.clone(), parser, data));
        let reply = serde_json::json!({ "sid": socket.id().as_str() });
        // The reply is queued first, then the socket becomes reachable (a broadcast
        // cannot overtake the reply), then the connect handler installs the event
        // handlers; all before the connection's next packet is read.
        match encode(
            parser,
            PacketType::Connect,
            ns.name(),
            None,
            Body::Value(&reply),
        ) {
            Ok(frames) => {
                if conn.send_all(frames).is_err() {
                    return;
                }
                // The reply in a write of its own, before what the connect handler
                // sends (as the Node server writes them; see `write_boundary`).
                conn.write_boundary();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a CONNECT reply");
                return;
            }
        }
        conn.data()
            .joined
            .store(true, std::sync::atomic::Ordering::Release);
        ns.insert(&socket);
        {
            let mut sockets = conn.data().sockets.lock();
            // Most connections join one namespace: room for one, not the default four.
            sockets.reserve_exact(1);
            sockets.push(socket.clone());
        }
        // The connection may have closed meanwhile (a ping timeout, a kick from another
        // task): its `on_close` then ran before the push above and did not see this
        // socket. The engine marks a session closed before calling `on_close`, so
        // checking after the push leaves no gap; leaving twice is harmless.
        if conn.is_closed() {
            socket.leave_namespace(crate::DisconnectReason::TransportClose);
            return;
        }
        (ns.on_connect)(&socket, &request);
    }

    fn refuse(&self, conn: &Arc<Conn>, nsp: &Str, error: &ConnectError) {
        let body = error.to_json();
        if let Ok(frames) = encode(
            self.inner.config.parser,
            PacketType::ConnectError,
            nsp.as_str(),
            None,
            Body::Value(&body),
        ) {
            let _ = conn.send_all(frames);
        }
    }
}

/// Closes connections that joined no namespace within the connect timeout.
async fn connect_timeouts(inner: Weak<Inner>) {
    let tick = match inner.upgrade() {
        Some(i) => {
            (i.config.connect_timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
        }
        None => return,
    };
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        loop {
            let expired = {
                let mut queue = inner.pending.lock();
                match queue.front() {
                    Some((deadline, _)) if *deadline <= now => queue.pop_front(),
                    _ => None,
                }
            };
            let Some((_, conn)) = expired else { break };
            if let Some(conn) = conn.upgrade() {
                if !conn
                    .data()
                    .joined
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    tracing::debug!(sid = %conn.sid(), "no namespace joined in time");
                    conn.close();
                }
            }
        }
    }
}
