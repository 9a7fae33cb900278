//! Socket.IO server options.

use std::time::Duration;

/// Which packet parser the server speaks. Nothing in the handshake negotiates it: clients
/// must be configured the same way (`PROTOCOL.md` §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parser {
    /// The default parser (`socket.io-parser`): JSON text, binary as attachments.
    #[default]
    Default,
    /// The msgpack parser (`socket.io-msgpack-parser`).
    Msgpack,
}

/// Options of a [`Server`](crate::Server).
#[derive(Debug, Clone)]
pub struct Config {
    /// The Engine.IO options. The path defaults to `/socket.io/` here.
    pub engine: engineio::Config,
    /// Time a connection has to join a namespace before it is closed. Defaults to 45 s.
    pub connect_timeout: Duration,
    /// The packet parser. Defaults to [`Parser::Default`].
    pub parser: Parser,
    /// Bounds on binary attachments (default parser).
    pub limits: socketio_proto::Limits,
    /// Events each socket may send, as a rate with a burst; events over it go to the
    /// namespace's [`on_rate_limited`](crate::Builder::on_rate_limited) handler instead
    /// of their own. Defaults to none (no limit).
    pub event_rate: Option<RateLimit>,
}

/// A rate with a burst, checked per socket by GCRA: 8 bytes of state per socket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained events per second.
    pub per_second: f64,
    /// Events allowed at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// Nanoseconds between events at the sustained rate.
    pub(crate) fn interval_ns(&self) -> u64 {
        (1e9 / self.per_second.max(1e-9)).min(u64::MAX as f64 / 4.0) as u64
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            engine: engineio::Config {
                path: "/socket.io/".to_owned(),
                ..engineio::Config::default()
            },
            connect_timeout: Duration::from_secs(45),
            parser: Parser::Default,
            limits: socketio_proto::Limits::default(),
            event_rate: None,
        }
    }
}
