//! Adapters: where broadcasts and operations on sets of sockets go.
//!
//! Each namespace has an adapter of its own, made by the server's [`AdapterFactory`]
//! when the namespace is created (dynamic ones included), told when the namespace is
//! ready ([`Adapter::init`]) and when the server closes ([`Adapter::close`]), and told
//! when a room appears on this node and when its last local member leaves
//! ([`Adapter::room_created`], [`Adapter::room_deleted`]; the room of each socket's own
//! id too), so that a cluster adapter can subscribe by interest.
//!
//! [`LocalAdapter`] serves one node. A cluster adapter (Redis, `PROTOCOL.md` §4)
//! delivers locally as the local adapter does (its methods are the building blocks) and
//! forwards to the other nodes what is not `local`; what other nodes send it, it hands
//! to the namespace it holds a [`Weak`] reference to. Options travel as the Node
//! adapters' `opts` (`rooms`, `except`, flags), an emit hands over the arguments
//! ([`Args`] can write them as msgpack, the Node adapters' encoding), and the operations
//! whose answers come from other nodes return futures that end at their timeout with
//! what was answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use engineio::Sid;
use socketio_proto::{PacketType, Str};

use crate::args::{encode, Body};
use crate::{AckError, AckResponse, Args, Error, Namespace, SocketRef, Stats};

/// A boxed future, as the adapter's asynchronous operations return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Which sockets an operation targets, and how (the Node adapters' `opts`).
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    /// Target rooms; none means every socket of the namespace.
    pub rooms: Vec<Str>,
    /// Rooms whose sockets are left out.
    pub except: Vec<Str>,
    /// One socket left out (the sender of `socket.to(..)`); it lives on this node.
    pub except_socket: Option<Sid>,
    /// The packet may be dropped for a socket that cannot take it now.
    pub volatile: bool,
    /// This node only.
    pub local: bool,
    /// How long to wait for acks or remote answers.
    pub timeout: Duration,
    /// An ack id every recipient's packet carries (the same for all: the packet is still
    /// encoded once). The clients' acks of it reach the namespace's ack handler
    /// ([`Builder::on_ack`](crate::Builder::on_ack)), nothing waits for them. Ids from
    /// [`SHARED_ACK_IDS`] up never collide with a socket's own.
    pub ack_id: Option<u64>,
}

/// The first ack id of those a broadcast may share (`2^52`): a socket numbers its own
/// acks from 0 and never gets there; below `2^53`, clients that read ids as
/// double-precision numbers (JavaScript) echo them exactly.
pub const SHARED_ACK_IDS: u64 = 1 << 52;

impl Default for BroadcastOptions {
    fn default() -> Self {
        BroadcastOptions {
            rooms: Vec::new(),
            except: Vec::new(),
            except_socket: None,
            volatile: false,
            local: false,
            timeout: Duration::from_secs(5),
            ack_id: None,
        }
    }
}

/// A socket found by [`Adapter::fetch_sockets`].
#[derive(Debug, Clone)]
pub struct FetchedSocket {
    /// The socket id (20 characters, as Node's).
    pub id: Str,
    /// Its rooms, the room of its own id first.
    pub rooms: Vec<Str>,
    /// The socket itself when it lives on this node; `None` on another node.
    pub local: Option<SocketRef>,
    /// Its handshake as the Node server shapes it (`headers`, `time`, `address`,
    /// `xdomain`, `secure`, `issued`, `url`, `query`, `auth`); for a local socket, made
    /// on demand ([`Socket::handshake`](crate::Socket::handshake)).
    pub handshake: serde_json::Value,
    /// Its [`SharedData`] (`{}` when it has none).
    pub data: serde_json::Value,
}

impl FetchedSocket {
    /// A socket of this node.
    pub fn of_local(socket: SocketRef) -> FetchedSocket {
        FetchedSocket {
            id: Str::from(socket.id().as_str().to_owned()),
            rooms: socket.rooms(),
            handshake: socket.handshake(),
            data: socket.shared_data(),
            local: Some(socket),
        }
    }
}

/// What a socket shows to other nodes (Node's `socket.data`, as `fetchSockets` on any
/// node of a cluster returns it): set with [`Socket::set_data`](crate::Socket::set_data).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedData(pub serde_json::Value);

/// The answers of the other servers to [`Adapter::server_side_emit_with_ack`].
#[derive(Debug, Clone, Default)]
pub struct ServerAcks {
    /// One answer per server that answered (its handler's first ack argument).
    pub responses: Vec<serde_json::Value>,
    /// Whether every server counted answered before the timeout.
    pub complete: bool,
}

/// An event another server emitted with `serverSideEmit`.
pub struct ServerEvent {
    /// The event name.
    pub name: String,
    /// Its arguments.
    pub args: Vec<serde_json::Value>,
    /// Answers the emitting server, when it waits for an answer (only the first call
    /// counts, as in Node).
    pub ack: Option<Box<dyn FnOnce(serde_json::Value) + Send>>,
}

impl std::fmt::Debug for ServerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerEvent")
            .field("name", &self.name)
            .field("args", &self.args)
            .field("ack", &self.ack.is_some())
            .finish()
    }
}

/// Makes the adapter of each namespace, when the namespace is created.
pub trait AdapterFactory: Send + Sync + 'static {
    /// The adapter of the namespace `name`; `ns` reaches the namespace once it is
    /// built (inbound messages go there), and dangles after it is dropped.
    fn create(&self, name: &str, ns: Weak<Namespace>) -> Arc<dyn Adapter>;
}

/// Where broadcasts, room changes and socket queries of a namespace go.
pub trait Adapter: Send + Sync + 'static {
    /// The namespace is built and registered: start receiving for it.
    fn init(&self, _ns: &Arc<Namespace>) {}

    /// The server closes: stop receiving, let go of the namespace.
    fn close(&self) {}

    /// `room` has its first member on this node (a joined room, or the room of a new
    /// socket's own id). Called with a lock of the namespace's maps held: queue work,
    /// never block or call back into the namespace.
    fn room_created(&self, _room: &str) {}

    /// `room` lost its last member on this node; as [`Adapter::room_created`].
    fn room_deleted(&self, _room: &str) {}

    /// Whether sockets keep their handshake (auth payload and time) for
    /// [`Socket::handshake`](crate::Socket::handshake), which other nodes ask for.
    fn keeps_handshake(&self) -> bool {
        false
    }

    /// How many servers share the namespace, this one included.
    fn server_count(&self, _ns: &Arc<Namespace>) -> BoxFuture<usize> {
        Box::pin(async { 1 })
    }

    /// Emits `event` with `args` to the sockets matching `opts`. Returns how many local
    /// sockets took it.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] when the arguments do not serialize.
    fn broadcast(
        &self,
        ns: &Arc<Namespace>,
        event: &str,
        args: &dyn Args,
        opts: &BroadcastOptions,
    ) -> Result<usize, Error>;

    /// Emits `event` to each matching socket with an ack id of its own; the future
    /// collects one result per socket until `opts.timeout`.
    fn broadcast_with_ack(
        &self,
        ns: &Arc<Namespace>,
        event: &str,
        args: &dyn Args,
        opts: &BroadcastOptions,
    ) -> BoxFuture<Vec<Result<AckResponse, AckError>>>;

    /// Makes the matching sockets join `rooms`.
    fn add_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, rooms: &[Str]);

    /// Makes the matching sockets leave `rooms`.
    fn del_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, rooms: &[Str]);

    /// Disconnects the matching sockets from the namespace; with `close`, closes their
    /// connections too.
    fn disconnect_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, close: bool);

    /// The matching sockets.
    fn fetch_sockets(
        &self,
        ns: &Arc<Namespace>,
        opts: &BroadcastOptions,
    ) -> BoxFuture<Vec<FetchedSocket>>;

    /// The rooms of every node (the rooms of sockets' own ids included, as Node's).
    fn all_rooms(&self, ns: &Arc<Namespace>) -> BoxFuture<Vec<Str>> {
        let rooms = LocalAdapter::rooms(ns);
        Box::pin(async move { rooms })
    }

    /// Emits `event` to the other servers and collects their answers until `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] when the arguments do not serialize.
    fn server_side_emit_with_ack(
        &self,
        _ns: &Arc<Namespace>,
        _event: &str,
        _args: &[serde_json::Value],
        _timeout: Duration,
    ) -> Result<BoxFuture<ServerAcks>, Error> {
        Ok(Box::pin(async {
            ServerAcks {
                responses: Vec::new(),
                complete: true,
            }
        }))
    }

    /// Emits `event` to the other servers of the cluster (not to clients).
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] when the arguments do not serialize.
    fn server_side_emit(
        &self,
        ns: &Arc<Namespace>,
        event: &str,
        args: &dyn Args,
    ) -> Result<(), Error>;
}

/// The adapter of a single node: everything is local. Its methods are what a cluster
/// adapter does on its own node.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalAdapter;

impl LocalAdapter {
    /// This node's rooms, the rooms of sockets' own ids included.
    pub fn rooms(ns: &Namespace) -> Vec<Str> {
        let mut rooms: Vec<Str> = ns.rooms.iter().map(|e| e.key().clone()).collect();
        rooms.extend(
            ns.sockets
                .iter()
                .map(|e| Str::from(e.key().as_str().to_owned())),
        );
        rooms
    }
}

impl AdapterFactory for LocalAdapter {
    fn create(&self, _name: &str, _ns: Weak<Namespace>) -> Arc<dyn Adapter> {
        Arc::new(LocalAdapter)
    }
}

impl Adapter for LocalAdapter {
    fn broadcast(
        &self,
        ns: &Arc<Namespace>,
        event: &str,
        args: &dyn Args,
        opts: &BroadcastOptions,
    ) -> Result<usize, Error> {
        let started = tokio::time::Instant::now();
        // Encoded once; every recipient gets a reference to the same frames.
        let frames = encode(
            ns.parser,
            PacketType::Event,
            ns.name(),
            opts.ack_id,
            Body::Event(event, args),
        )?;
        let mut delivered = 0;
        let mut dropped = 0;
        let mut slow = Vec::new();
        // The frames' bytes are shared: each recipient gets references, no copy and no
        // allocation of its own.
        ns.for_each_local(opts, |socket| {
            match socket.send_volatile(frames.iter().cloned()) {
                Ok(()) => delivered += 1,
                // A volatile packet that does not fit is dropped; any other closes the
                // connection of the socket that cannot keep up.
                Err(Error::QueueFull) if !opts.volatile => slow.push(socket.clone()),
                Err(Error::QueueFull) => dropped += 1,
                Err(_) => {}
            }
        });
        let stats = &ns.stats;
        Stats::add(&stats.broadcasts, 1);
        Stats::add(&stats.deliveries, delivered as u64);
        Stats::add(&stats.dropped_volatile, dropped);
        Stats::add(&stats.dropped_slow_consumer, slow.len() as u64);
        // Closed after the walk: closing takes the socket out of the maps the walk
        // holds shards of.
        for socket in slow {
            socket
                .connection()
                .close_with(engineio::CloseReason::SlowConsumer);
        }
        stats.broadcast_fanout.observe(started.elapsed());
        Ok(delivered)
    }

    fn broadcast_with_ack(
        &self,
        ns: &Arc<Namespace>,
        event: &str,
        args: &dyn Args,
        opts: &BroadcastOptions,
    ) -> BoxFuture<Vec<Result<AckResponse, AckError>>> {
        // Targets first: an emit may close a slow socket, which must not happen while
        // a shard of the namespace's maps is held.
        let waits: Vec<_> = ns
            .local_sockets(opts)
            .iter()
            .map(|socket| socket.emit_with_ack_dyn(event, args, opts.timeout))
            .collect();
        Box::pin(async move {
            let mut out = Vec::with_capacity(waits.len());
            for wait in waits {
                out.push(wait.await);
            }
            out
        })
    }

    fn add_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, rooms: &[Str]) {
        for socket in ns.local_sockets(opts) {
            for room in rooms {
                socket.join(room.clone());
            }
        }
    }

    fn del_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, rooms: &[Str]) {
        for socket in ns.local_sockets(opts) {
            for room in rooms {
                socket.leave(room);
            }
        }
    }

    fn disconnect_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, close: bool) {
        for socket in ns.local_sockets(opts) {
            socket.disconnect();
            if close {
                socket.close();
            }
        }
    }

    fn fetch_sockets(
        &self,
        ns: &Arc<Namespace>,
        opts: &BroadcastOptions,
    ) -> BoxFuture<Vec<FetchedSocket>> {
        let found: Vec<FetchedSocket> = ns
            .local_sockets(opts)
            .into_iter()
            .map(FetchedSocket::of_local)
            .collect();
        Box::pin(async move { found })
    }

    fn server_side_emit(
        &self,
        _ns: &Arc<Namespace>,
        _event: &str,
        _args: &dyn Args,
    ) -> Result<(), Error> {
        // No other server to tell.
        Ok(())
    }
}
