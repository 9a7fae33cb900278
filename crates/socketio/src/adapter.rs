//! Adapters: where broadcasts and operations on sets of sockets go.
//!
//! [`LocalAdapter`] serves one node. A cluster adapter (Redis, `PROTOCOL.md` §4) will
//! implement the same trait: it delivers locally as the local adapter does and forwards
//! to the other nodes what is not `local`. The trait is shaped for that: options travel
//! as the Node adapters' `opts` (`rooms`, `except`, flags), an emit hands over the
//! arguments ([`Args`] can write them as msgpack, the Node adapters' encoding), and the
//! operations whose answers come from other nodes (fetching sockets, collecting acks)
//! return futures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    /// The socket id.
    pub id: Sid,
    /// Its rooms.
    pub rooms: Vec<Str>,
    /// The socket itself when it lives on this node; `None` on another node.
    pub local: Option<SocketRef>,
}

/// Where broadcasts, room changes and socket queries of a namespace go.
pub trait Adapter: Send + Sync + 'static {
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

/// The adapter of a single node: everything is local.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalAdapter;

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
            .map(|s| FetchedSocket {
                id: s.id(),
                rooms: s.rooms(),
                local: Some(s),
            })
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
