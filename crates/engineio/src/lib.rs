//! Engine.IO v4 server (`PROTOCOL.md` §1): sessions over WebSocket and HTTP long-polling,
//! the upgrade between them, the heartbeat, and a per-session outbound queue.
//!
//! The crate binds nothing. It is given whole connections through [`serve_connection`]
//! (or HTTP requests, with the peer's address, through [`Engine::handle`]) by the
//! caller's accept loop, and it calls up into the layer above through [`EngineHandler`]:
//! to admit a new session ([`EngineHandler::admit`]), then with its messages.
//!
//! # Layout
//!
//! - [`config`]: [`Config`] and [`Cors`], with documented defaults.
//! - [`handler`]: [`EngineHandler`], implemented by the Socket.IO layer, and
//!   [`CloseReason`].
//! - [`socket`]: [`Socket`], one session: its outbound queue (allocated only while
//!   non-empty, bounded in bytes) and heartbeat state.
//! - [`engine`]: [`Engine`], the sharded session table and request routing.
//! - `transport::polling` and `transport::websocket`: the two transports; the
//!   WebSocket one takes the raw `TcpStream` back from hyper, keeps no read buffer while
//!   idle, and drains the queue into one vectored write per wakeup.
//! - `heartbeat`: one sweeper task for all sessions, no timer per connection.
//! - [`stats`]: [`EngineStats`], atomic counters read by the server's metrics.
//! - [`direct`]: WebSockets opened directly, answered without hyper: the first request
//!   is read into a small buffer, the `101` and the open packet go out in one write;
//!   anything else goes on to hyper with the bytes read put back.
//! - [`serve`]: [`serve_connection`], an accepted connection (TCP, TLS, any
//!   [`Stream`]): the direct path for WebSockets, hyper's HTTP/1.1 with upgrades for the
//!   rest, other paths to the caller's fallback service.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use engineio::{CloseReason, Config, Engine, EngineHandler, Socket};
//!
//! /// Echoes every message back.
//! struct Echo;
//!
//! impl EngineHandler for Echo {
//!     type Data = ();
//!     fn on_open(&self, _socket: &Arc<Socket<()>>) {}
//!     fn on_message(&self, socket: &Arc<Socket<()>>, text: Bytes) {
//!         let _ = socket.send_text(&text);
//!     }
//!     fn on_binary(&self, socket: &Arc<Socket<()>>, data: Bytes) {
//!         let _ = socket.send_binary(&data);
//!     }
//!     fn on_close(&self, _socket: &Arc<Socket<()>>, _reason: CloseReason) {}
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let engine = Engine::new(Config::default(), Echo);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (stream, remote) = listener.accept().await?;
//!     stream.set_nodelay(true)?;
//!     tokio::spawn(engineio::serve_connection(engine.clone(), stream, remote, engineio::NotFound));
//! }
//! # }
//! ```

pub mod config;
pub mod direct;
pub mod engine;
pub mod handler;
mod heartbeat;
pub mod serve;
pub mod socket;
pub mod stats;
mod transport;

pub use config::{Config, Cors};
pub use direct::{read_first_request, Connection, DirectUpgrade, FirstRequest, Rewind};
pub use engine::Engine;
pub use engineio_proto::{Sid, Transport};
pub use handler::{CloseReason, EngineHandler, Handshake, Refusal};
pub use serve::{serve_connection, Fallback, NotFound};
pub use socket::{Guard, SendError, Socket};
pub use stats::EngineStats;

/// A stream a connection runs on: a `TcpStream`, a TLS stream over one, anything that
/// reads and writes. The WebSocket transport runs on the stream's own type (no box).
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}
