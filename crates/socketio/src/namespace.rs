//! Namespaces: their sockets and rooms.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use dashmap::DashMap;
use engineio::Sid;
use socketio_proto::Str;

use crate::socket::EventHandler;
use crate::{BroadcastOperator, ConnectError, ConnectRequest, Parser, SocketRef};

pub(crate) type Middleware = Arc<dyn Fn(&ConnectRequest) -> Result<(), ConnectError> + Send + Sync>;
pub(crate) type ConnectHandler = Arc<dyn Fn(&SocketRef, &ConnectRequest) + Send + Sync>;

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
    pub(crate) fn new(
        name: Str,
        parser: Parser,
        middlewares: Vec<Middleware>,
        on_connect: ConnectHandler,
        handlers: HashMap<Box<str>, EventHandler>,
    ) -> Namespace {
        Namespace {
            name,
            parser,
            middlewares,
            on_connect,
            handlers,
            sockets: DashMap::new(),
            rooms: DashMap::new(),
        }
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

    /// The rooms and how many sockets each holds.
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
