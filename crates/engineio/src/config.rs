//! Engine.IO server options. Names and meanings follow the Node server's options.

use std::time::Duration;

/// Options of an [`Engine`](crate::Engine). Immutable once the engine is built.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path prefix served, with leading and trailing slash. Defaults to `/engine.io/`.
    pub path: String,
    /// Interval between the server's pings. Defaults to 25 s.
    pub ping_interval: Duration,
    /// Time to wait for a pong before closing. Defaults to 20 s.
    pub ping_timeout: Duration,
    /// Largest message, WebSocket frame or polling POST body accepted, in bytes
    /// (`maxHttpBufferSize`). Defaults to 1,000,000.
    pub max_payload: usize,
    /// Time a client has to complete an upgrade after its WebSocket opened. Defaults to
    /// 10 s.
    pub upgrade_timeout: Duration,
    /// Whether the polling transport is enabled. Defaults to true.
    pub polling: bool,
    /// Whether the WebSocket transport is enabled. Defaults to true.
    pub websocket: bool,
    /// Bytes a session may have queued for sending before [`send`](crate::Socket::send)
    /// refuses more (the slow-consumer bound). Defaults to 4 MiB.
    pub max_buffered_bytes: usize,
    /// How long a closed polling session waits for the GET that delivers its last
    /// packets. Defaults to 5 s.
    pub close_grace: Duration,
    /// CORS for the polling transport. Defaults to none (no CORS headers).
    pub cors: Option<Cors>,
    /// Whether a WebSocket writer drains its whole queue in vectored writes (true) or
    /// makes one system call per frame (false, only to measure what coalescing buys).
    /// Defaults to true.
    pub coalesce_writes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: "/engine.io/".to_owned(),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_secs(10),
            polling: true,
            websocket: true,
            max_buffered_bytes: 4 << 20,
            close_grace: Duration::from_secs(5),
            cors: None,
            coalesce_writes: true,
        }
    }
}

/// Cross-origin rules for polling requests (`PROTOCOL.md` §1.10).
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// Allowed origins; empty means any origin.
    pub origins: Vec<String>,
    /// Whether credentials are allowed. The exact origin is then echoed, never `*`.
    pub credentials: bool,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    pub(crate) fn allow_origin(&self, origin: Option<&str>) -> Option<String> {
        match origin {
            Some(o) if self.origins.is_empty() || self.origins.iter().any(|a| a == o) => {
                Some(o.to_owned())
            }
            None if self.origins.is_empty() && !self.credentials => Some("*".to_owned()),
            _ => None,
        }
    }
}
