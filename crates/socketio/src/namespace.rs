//! Namespaces: their sockets and rooms.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use engineio::Sid;
use socketio_proto::Str;

use crate::adapter::{Adapter, AdapterFactory, BroadcastOptions, ServerAcks, ServerEvent};
use crate::socket::EventHandler;
use crate::{BroadcastOperator, ConnectError, ConnectRequest, Parser, SocketRef};

pub(crate) type Middleware = Arc<dyn Fn(&ConnectRequest) -> Result<(), ConnectError> + Send + Sync>;
pub(crate) type ConnectHandler = Arc<dyn Fn(&SocketRef, &ConnectRequest) + Send + Sync>;
pub(crate) type DisconnectHandler = Arc<dyn Fn(&SocketRef, crate::DisconnectReason) + Send + Sync>;
pub(crate) type RateLimitedHandler =
    Arc<dyn Fn(&SocketRef, crate::Event, crate::RateLimited) + Send + Sync>;
pub(crate) type AckHandler = Arc<dyn Fn(&SocketRef, u64, crate::AckResponse) + Send + Sync>;
pub(crate) type ServerEventHandler = Arc<dyn Fn(&Arc<Namespace>, ServerEvent) + Send + Sync>;

/// What a namespace runs, as set on the builder.
#[derive(Clone)]
pub(crate) struct Hooks {
    pub(crate) middlewares: Vec<Middleware>,
    pub(crate) on_connect: ConnectHandler,
    pub(crate) handlers: HashMap<Box<str>, EventHandler>,
    pub(crate) on_disconnect: Option<DisconnectHandler>,
    pub(crate) on_rate_limited: Option<RateLimitedHandler>,
    pub(crate) on_ack: Option<AckHandler>,
    pub(crate) on_server_event: Option<ServerEventHandler>,
    /// The namespace's own per-socket event rate, in place of the server's.
    pub(crate) event_rate: Option<Option<crate::RateLimit>>,
}

impl Hooks {
    pub(crate) fn new(on_connect: ConnectHandler) -> Hooks {
        Hooks {
            middlewares: Vec::new(),
            on_connect,
            handlers: HashMap::new(),
            on_disconnect: None,
            on_rate_limited: None,
            on_ack: None,
            on_server_event: None,
            event_rate: None,
        }
    }
}

/// What every namespace of a server shares.
#[derive(Clone)]
pub(crate) struct Common {
    pub(crate) parser: Parser,
    pub(crate) adapters: Arc<dyn AdapterFactory>,
    pub(crate) stats: Arc<crate::Stats>,
    pub(crate) event_rate: Option<crate::RateLimit>,
    /// The clock of the rate limits.
    pub(crate) epoch: tokio::time::Instant,
}

/// A namespace: its connect handlers, its sockets and its rooms.
///
/// Sockets and rooms sit in sharded maps: joining, leaving and broadcasting lock one
/// shard at a time, never the whole namespace.
pub struct Namespace {
    pub(crate) name: Str,
    pub(crate) parser: Parser,
    pub(crate) middlewares: Vec<Middleware>,
    pub(crate) on_connect: ConnectHandler,
    /// Event handlers every socket of the namespace shares; fixed when the server is built.
    pub(crate) handlers: HashMap<Box<str>, EventHandler>,
    pub(crate) on_disconnect: Option<DisconnectHandler>,
    pub(crate) on_rate_limited: Option<RateLimitedHandler>,
    /// Acks nothing waits for (of packets broadcast with a shared ack id).
    pub(crate) on_ack: Option<AckHandler>,
    /// Events other servers emitted with `serverSideEmit`.
    pub(crate) on_server_event: Option<ServerEventHandler>,
    pub(crate) adapter: Arc<dyn Adapter>,
    /// Whether sockets keep their handshake (the adapter asks for it).
    pub(crate) keep_handshake: bool,
    pub(crate) stats: Arc<crate::Stats>,
    pub(crate) event_rate: Option<crate::RateLimit>,
    pub(crate) epoch: tokio::time::Instant,
    pub(crate) sockets: DashMap<Sid, SocketRef>,
    pub(crate) rooms: DashMap<Str, HashMap<Sid, SocketRef>>,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .field("sockets", &self.sockets.len())
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

impl Namespace {
    /// Builds the namespace with its adapter (which gets a weak reference to it); the
    /// caller registers it, then calls [`Adapter::init`].
    pub(crate) fn new(name: Str, hooks: Hooks, common: Common) -> Arc<Namespace> {
        Arc::new_cyclic(|weak: &Weak<Namespace>| {
            let adapter = common.adapters.create(name.as_str(), weak.clone());
            Namespace::with_adapter(name, hooks, common, adapter)
        })
    }

    fn with_adapter(
        name: Str,
        hooks: Hooks,
        common: Common,
        adapter: Arc<dyn Adapter>,
    ) -> Namespace {
        Namespace {
            keep_handshake: adapter.keeps_handshake(),
            on_server_event: hooks.on_server_event,
            name,
            parser: common.parser,
            middlewares: hooks.middlewares,
            on_connect: hooks.on_connect,
            handlers: hooks.handlers,
            on_disconnect: hooks.on_disconnect,
            on_rate_limited: hooks.on_rate_limited,
            on_ack: hooks.on_ack,
            adapter,
            stats: common.stats,
            event_rate: hooks.event_rate.unwrap_or(common.event_rate),
            epoch: common.epoch,
            sockets: DashMap::new(),
            rooms: DashMap::new(),
        }
    }

    /// The counters of the server this namespace belongs to.
    pub fn stats(&self) -> &Arc<crate::Stats> {
        &self.stats
    }

    /// The parser of the namespace's clients.
    pub fn parser(&self) -> Parser {
        self.parser
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// `event` with `args`, encoded once for any number of this namespace's sockets
    /// (see [`crate::Socket::send_encoded`]).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Serialize`].
    pub fn encode<A: crate::Args>(
        &self,
        event: &str,
        args: A,
    ) -> Result<crate::args::Encoded, crate::Error> {
        crate::args::encode(
            self.parser,
            socketio_proto::PacketType::Event,
            self.name(),
            None,
            crate::args::Body::Event(event, &args),
        )
        .map(|frames| crate::args::Encoded { frames })
    }

    /// The socket with this id.
    pub fn socket(&self, id: Sid) -> Option<SocketRef> {
        self.sockets.get(&id).map(|s| s.value().clone())
    }

    /// How many sockets are connected.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether no socket is connected.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The rooms sockets joined and how many sockets each holds. The room of each
    /// socket's own id is not listed (see [`Namespace::for_each_local`]).
    pub fn rooms(&self) -> Vec<(Str, usize)> {
        self.rooms
            .iter()
            .map(|e| (e.key().clone(), e.value().len()))
            .collect()
    }

    /// How many of this node's sockets are in `room` (a socket's own id room included).
    pub fn room_len(&self, room: &Str) -> usize {
        if let Some(r) = self.rooms.get(room) {
            return r.len();
        }
        Sid::parse(room.as_str()).map_or(0, |sid| usize::from(self.sockets.contains_key(&sid)))
    }

    /// A broadcast to the namespace.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone())
    }

    /// A broadcast to `room`.
    pub fn to(self: &Arc<Self>, room: impl Into<Str>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).to(room)
    }

    /// The adapter of this namespace.
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.adapter
    }

    /// Emits `event` to the other servers of the cluster through the adapter (not to
    /// clients); nothing to do on a single node.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Serialize`] when the arguments do not serialize.
    pub fn server_side_emit<A: crate::Args>(
        self: &Arc<Self>,
        event: &str,
        args: A,
    ) -> Result<(), crate::Error> {
        self.adapter.server_side_emit(self, event, &args)
    }

    /// Emits `event` to the other servers and collects their answers until `timeout`
    /// (partial answers when some server did not answer in time).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Serialize`] when the arguments do not serialize.
    pub async fn server_side_emit_with_ack(
        self: &Arc<Self>,
        event: &str,
        args: &[serde_json::Value],
        timeout: std::time::Duration,
    ) -> Result<ServerAcks, crate::Error> {
        Ok(self
            .adapter
            .server_side_emit_with_ack(self, event, args, timeout)?
            .await)
    }

    /// The rooms of every server of the namespace (the rooms of sockets' own ids
    /// included).
    pub async fn all_rooms(self: &Arc<Self>) -> Vec<Str> {
        self.adapter.all_rooms(self).await
    }

    /// How many servers share the namespace, this one included.
    pub async fn server_count(self: &Arc<Self>) -> usize {
        self.adapter.server_count(self).await
    }

    /// Hands an event another server emitted to the namespace's handler
    /// ([`Builder::on_server_side_emit`](crate::Builder::on_server_side_emit)); for
    /// adapters. Dropped without a handler.
    pub fn server_event(self: &Arc<Self>, event: ServerEvent) {
        if let Some(h) = &self.on_server_event {
            h(self, event);
        }
    }

    /// This node's sockets matching `opts`.
    pub fn local_sockets(&self, opts: &BroadcastOptions) -> Vec<SocketRef> {
        let mut out = Vec::new();
        self.for_each_local(opts, |s| out.push(s.clone()));
        out
    }

    /// Calls `f` once on each of this node's sockets matching `opts`. Holds one shard of
    /// the room or socket map at a time, for reading only; `f` must not join or leave
    /// rooms.
    ///
    /// As in the Node server, every socket is in the room named by its own id, so
    /// `to(id)` reaches it and `except(id)` leaves it out. That room costs nothing: it is
    /// not in the room map, a room name that is a socket id of this namespace is
    /// resolved through the socket map.
    pub fn for_each_local(&self, opts: &BroadcastOptions, mut f: impl FnMut(&SocketRef)) {
        let mut excluded: HashSet<Sid> = HashSet::new();
        excluded.extend(opts.except_socket);
        for room in &opts.except {
            if let Some(members) = self.rooms.get(room) {
                excluded.extend(members.keys().copied());
            }
            excluded.extend(self.own_room(room).map(|s| s.id()));
        }
        let mut take = |id: &Sid, socket: &SocketRef| {
            if !excluded.contains(id) {
                f(socket);
            }
        };
        match opts.rooms.as_slice() {
            [] => {
                for entry in self.sockets.iter() {
                    take(entry.key(), entry.value());
                }
            }
            [room] => {
                if let Some(members) = self.rooms.get(room) {
                    for (id, socket) in members.iter() {
                        take(id, socket);
                    }
                }
                // Never also a member of the map's room of that name: a socket does not
                // join its own room (`Socket::join`).
                if let Some(socket) = self.own_room(room) {
                    take(&socket.id(), &socket);
                }
            }
            rooms => {
                // A socket in several of the rooms is taken once.
                let mut seen: HashSet<Sid> = HashSet::new();
                for room in rooms {
                    if let Some(members) = self.rooms.get(room) {
                        for (id, socket) in members.iter() {
                            if seen.insert(*id) {
                                take(id, socket);
                            }
                        }
                    }
                    if let Some(socket) = self.own_room(room) {
                        if seen.insert(socket.id()) {
                            take(&socket.id(), &socket);
                        }
                    }
                }
            }
        }
    }

    /// The socket whose own room is `room`, when `room` is the id of one of this
    /// namespace's sockets.
    fn own_room(&self, room: &Str) -> Option<SocketRef> {
        Sid::parse(room.as_str()).and_then(|id| self.socket(id))
    }

    pub(crate) fn add_to_room(&self, room: Str, socket: &SocketRef) {
        match self.rooms.entry(room) {
            dashmap::Entry::Occupied(mut members) => {
                members.get_mut().insert(socket.id(), socket.clone());
            }
            dashmap::Entry::Vacant(slot) => {
                // Told under the shard lock, so that the adapter sees creations and
                // deletions of one room in the order they happen.
                self.adapter.room_created(slot.key().as_str());
                slot.insert(HashMap::from([(socket.id(), socket.clone())]));
            }
        }
    }

    pub(crate) fn remove_from_room(&self, room: &Str, id: Sid) {
        // Remove the room itself once empty, under the same shard lock.
        let removed = self.rooms.remove_if_mut(room, |_, members| {
            members.remove(&id);
            members.is_empty()
        });
        if removed.is_some() {
            self.adapter.room_deleted(room.as_str());
        }
    }

    pub(crate) fn insert(&self, socket: &SocketRef) {
        self.sockets.insert(socket.id(), socket.clone());
        self.adapter.room_created(socket.id().as_str());
    }

    pub(crate) fn remove(&self, id: Sid) {
        if self.sockets.remove(&id).is_some() {
            self.adapter.room_deleted(id.as_str());
        }
    }
}
