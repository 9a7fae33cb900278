//! Socket.IO v5 server library (`PROTOCOL.md` §2, §3) on Herald's Engine.IO layer.
//!
//! # Layout
//!
//! - [`config`]: [`Config`] and [`Parser`].
//! - [`server`]: [`Server`] and its [`Builder`]: namespaces (static and dynamic), the
//!   connect timeout, and the dispatch of packets from the engine.
//! - [`namespace`]: [`Namespace`]: its sockets and its rooms, in sharded maps.
//! - [`socket`]: [`Socket`]: event handlers, emits, acks in both directions, rooms,
//!   disconnect.
//! - [`event`]: [`Event`], what a handler receives, with typed access to its arguments,
//!   and [`AckResponse`].
//! - [`broadcast`]: [`BroadcastOperator`]: `to`, `except`, `volatile`, `timeout`; one
//!   encoding per broadcast, the same frames for every recipient.
//! - [`adapter`]: [`Adapter`], where broadcasts and operations on sets of sockets go,
//!   and [`LocalAdapter`] for a single node; shaped for a cluster adapter.
//! - [`args`]: [`Args`], the arguments of an emit (tuples of serializable values, or
//!   [`RawArgs`] passed on as they came).
//! - [`binary`]: [`Binary`], binary data inside typed payloads, for both parsers.
//! - [`error`]: [`Error`], [`AckError`], [`ConnectError`], [`DisconnectReason`].
//! - [`stats`]: [`Stats`], counters and latency histograms for the server's metrics.
//!
//! Handlers are plain closures called in the order packets arrive, on the connection's
//! task: a packet sent right after CONNECT always finds the handlers the connect handler
//! installed. Work that waits belongs in a task the handler spawns.
//!
//! # Example
//!
//! ```no_run
//! use socketio::{Config, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::builder()
//!     .ns("/", |socket, req| {
//!         // Runs once per socket, before any of its events is handled.
//!         let name = req.auth_json()["name"].as_str().unwrap_or("anonymous").to_owned();
//!         socket.set_data(name);
//!     })
//!     // Handlers shared by every socket of the namespace (nothing stored per socket;
//!     // `socket.on(..)` adds handlers to one socket only).
//!     .on("chat", |socket, ev| {
//!         let Ok((text,)) = ev.args::<(String,)>() else { return };
//!         let name: String = socket.data().unwrap_or_default();
//!         let _ = socket.broadcast().emit("chat", (name, text));
//!         let _ = ev.ack(("delivered",));
//!     })
//!     .build(Config::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (stream, remote) = listener.accept().await?;
//!     tokio::spawn(server.clone().serve_connection(stream, remote));
//! }
//! # }
//! ```

pub mod adapter;
pub mod args;
pub mod binary;
pub mod broadcast;
pub mod config;
pub mod error;
pub mod event;
pub mod namespace;
pub mod server;
pub mod socket;
pub mod stats;

pub use adapter::{
    Adapter, AdapterFactory, BroadcastOptions, FetchedSocket, LocalAdapter, ServerAcks,
    ServerEvent, SharedData, SHARED_ACK_IDS,
};
pub use args::{Args, Encoded, RawArgs};
pub use binary::Binary;
pub use broadcast::BroadcastOperator;
pub use config::{Config, Parser, RateLimit};
pub use engineio::Sid;
pub use error::{AckError, ConnectError, DisconnectReason, Error};
pub use event::{AckResponse, ConnectRequest, Event};
pub use namespace::Namespace;
pub use server::{Builder, Server};
pub use socket::{RateLimited, Socket, SocketRef};
pub use socketio_proto::Str;
pub use stats::{Histogram, HistogramSnapshot, Stats};
