//! Namespaces: their sockets and rooms.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use dashmap::DashMap;
use engineio::Sid;
use socketio_proto::Str;

use crate::adapter::{Adapter, BroadcastOptions};
use crate::socket::EventHandler;
use crate::{BroadcastOperator, ConnectError, ConnectRequest, Parser, SocketRef};

pub(crate) type Middleware = Arc<dyn Fn(&ConnectRequest) -> Result<(), ConnectError> + Send + Sync>;
pub(crate) type ConnectHandler = Arc<dyn Fn(&SocketRef, &ConnectRequest) + Send + Sync>;
pub(crate) type DisconnectHandler = Arc<dyn Fn(&SocketRef, crate::DisconnectReason) + Send + Sync>;
pub(crate) type RateLimitedHandler =
    Arc<dyn Fn(&SocketRef, crate::Event, crate::RateLimited) + Send + Sync>;
pub(crate) type AckHandler = Arc<dyn Fn(&SocketRef, u64, crate::AckResponse) + Send + Sync>;

/// What a namespace runs, as set on the builder.
#[derive(Clone)]
pub(crate) struct Hooks {
    pub(crate) middlewares: Vec<Middleware>,
    pub(crate) on_connect: ConnectHandler,
    pub(crate) handlers: HashMap<Box<str>, EventHandler>,
    pub(crate) on_disconnect: Option<DisconnectHandler>,
    pub(crate) on_rate_limited: Option<RateLimitedHandler>,
    pub(crate) on_ack: Option<AckHandler>,
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
        }
    }
}

/// What every namespace of a server shares.
#[derive(Clone)]
pub(crate) struct Common {
    pub(crate) parser: Parser,
    pub(crate) adapter: Arc<dyn Adapter>,
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
    pub(crate) adapter: Arc<dyn Adapter>,
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
    pub(crate) fn new(name: Str, hooks: Hooks, common: Common) -> Namespace {
        Namespace {
            name,
            parser: common.parser,
            middlewares: hooks.middlewares,
            on_connect: hooks.on_connect,
            handlers: hooks.handlers,
            on_disconnect: hooks.on_disconnect,
            on_rate_limited: hooks.on_rate_limited,
            on_ack: hooks.on_ack,
            adapter: common.adapter,
            stats: common.stats,
            event_rate: common.event_rate,
            epoch: common.epoch,
            sockets: DashMap::new(),
            rooms: DashMap::new(),
        }
    }

    /// The counters of the server this namespace belongs to.
    pub fn stats(&self) -> &Arc<crate::Stats> {
        &self.stats
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
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
        self.rooms
            .entry(room)
            .or_default()
            .insert(socket.id(), socket.clone());
    }

    pub(crate) fn remove_from_room(&self, room: &Str, id: Sid) {
        // Remove the room itself once empty, under the same shard lock.
        self.rooms.remove_if_mut(room, |_, members| {
            members.remove(&id);
            members.is_empty()
        });
    }

    pub(crate) fn remove(&self, id: Sid) {
        self.sockets.remove(&id);
    }
}
