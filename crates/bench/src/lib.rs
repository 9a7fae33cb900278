//! Herald's load generator. It shares only the `ws` codec and the `-proto` crates with
//! the server: a client that shared server logic would hide the bugs both have.
//!
//! # Layout
//!
//! - [`client`]: an Engine.IO v4 client over WebSocket: connect (from a chosen source
//!   address), handshake, packets in and out, pings answered.
//! - [`polling`]: an Engine.IO client over HTTP long-polling, for small runs.
//! - [`proc`]: what `/proc` says about a process: resident memory and CPU time.
//! - [`idle`]: open N connections at a bounded rate and hold them; handshake latency and
//!   server memory per connection.
//! - [`burst`]: N receivers, one trigger; deliveries per second of one pre-encoded frame.
//! - [`sio_burst`]: Socket.IO receivers in a room of the bench app; broadcasts per second,
//!   loss and order.
//! - [`fanout`]: `fanout` and `fanout-max`: receivers in a room, a paced publisher;
//!   latency, loss, order, the highest sustained rate.
//! - [`echo`]: events with acks at an aggregate rate; round-trip time.
//! - [`storm`]: `connect-storm`, handshakes per second.
//! - [`docs`]: `docs-edit`, `docs-cursors`, `docs-cold`: Yjs editors on `y-socket.io`
//!   namespaces; propagation, memory per open document, merged cursors, cold loads.
//! - [`report`]: the JSON line and the human summary.
//! - [`shard`]: several load-generator processes (`--procs`): the parent spawns the
//!   children, tells them when to start and stop, and merges what they measured.
//! - [`cli`]: the command line, shared by `herald-bench` and `herald bench`.

pub mod burst;
pub mod cli;
pub mod client;
pub mod docs;
pub mod echo;
pub mod fanout;
pub mod idle;
pub mod im;
pub mod im_presence;
pub mod im_storm;
pub mod im_sync;
pub mod im_typing;
pub mod polling;
pub mod proc;
pub mod report;
pub mod shard;
pub mod sio_burst;
pub mod storm;

use std::net::{IpAddr, SocketAddr};

/// Where and how to connect: the target, the Engine.IO path, and the loopback source
/// addresses to spread connections over (about 28k ports per address pair).
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// Engine.IO path, e.g. `/engine.io/`.
    pub path: String,
    /// Source addresses, used round-robin; empty means the system's choice.
    pub sources: Vec<IpAddr>,
    /// Where this process's connections start in the round-robin (a shard of a
    /// multi-process run starts after the shards before it).
    pub offset: usize,
    /// More servers of one cluster: connection `i` goes to `[addr, also..]` round-robin
    /// (from the offset), so `addr` gets every N-th connection, the first included.
    pub also: Vec<SocketAddr>,
}

impl Target {
    /// The server connection number `i` goes to.
    pub fn addr_of(&self, i: usize) -> SocketAddr {
        if self.also.is_empty() {
            return self.addr;
        }
        match (i + self.offset) % (self.also.len() + 1) {
            0 => self.addr,
            k => self.also[k - 1],
        }
    }

    /// The source address of connection number `i`.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[(i + self.offset) % self.sources.len()])
    }

    /// Refuses anything outside 127.0.0.0/8 (and ::1): load is only ever sent to this
    /// machine.
    ///
    /// # Errors
    ///
    /// A message naming the address that is not loopback.
    pub fn check_loopback(&self) -> Result<(), String> {
        for addr in std::iter::once(&self.addr).chain(&self.also) {
            if !addr.ip().is_loopback() {
                return Err(format!("{} is not a loopback address", addr.ip()));
            }
        }
        if let Some(s) = self.sources.iter().find(|s| !s.is_loopback()) {
            return Err(format!("source {s} is not a loopback address"));
        }
        Ok(())
    }
}
