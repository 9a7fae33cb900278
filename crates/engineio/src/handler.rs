//! The trait the layer above implements, and why sessions end.

use std::sync::Arc;

use bytes::Bytes;

use crate::Socket;

/// Callbacks from the engine into the layer above (the Socket.IO layer).
///
/// Callbacks run on the connection's task and must not block: anything slow belongs on
/// a task of its own. Per session, callbacks arrive in order: `on_open`, then messages in
/// the order they were received, then `on_close` exactly once.
pub trait EngineHandler: Send + Sync + 'static {
    /// Per-session state the handler keeps inside [`Socket`].
    type Data: Default + Send + Sync + 'static;

    /// A session opened. Packets sent from here go out after the open packet.
    fn on_open(&self, socket: &Arc<Socket<Self::Data>>);

    /// A text message arrived; `text` is valid UTF-8.
    fn on_message(&self, socket: &Arc<Socket<Self::Data>>, text: Bytes);

    /// A binary message arrived.
    fn on_binary(&self, socket: &Arc<Socket<Self::Data>>, data: Bytes);

    /// The session ended. Sending on it is refused from now on.
    fn on_close(&self, socket: &Arc<Socket<Self::Data>>, reason: CloseReason);
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent a `close` packet.
    ClientClose,
    /// The connection went away without a `close` packet (TCP closed, WebSocket close
    /// frame, polling client gone).
    TransportClose,
    /// The transport failed: an I/O error, a WebSocket protocol violation, or a polling
    /// request that broke the rules (a second concurrent GET or POST).
    TransportError,
    /// No pong within the ping timeout.
    PingTimeout,
    /// The server closed the session ([`Socket::close`]).
    ServerClose,
    /// The server is shutting down.
    ServerShutdown,
    /// A packet that does not parse, or that is not allowed in its place.
    ParseError,
    /// A message or polling body larger than `max_payload`.
    PayloadTooLarge,
    /// The client did not read fast enough: a packet that may not be dropped did not fit
    /// in its outbound budget.
    SlowConsumer,
}

impl CloseReason {
    /// Every reason, in the order of [`CloseReason::index`].
    pub const ALL: [CloseReason; 9] = [
        CloseReason::ClientClose,
        CloseReason::TransportClose,
        CloseReason::TransportError,
        CloseReason::PingTimeout,
        CloseReason::ServerClose,
        CloseReason::ServerShutdown,
        CloseReason::ParseError,
        CloseReason::PayloadTooLarge,
        CloseReason::SlowConsumer,
    ];

    /// The reason's position in [`CloseReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short machine-readable name (metrics labels).
    pub fn code(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_close",
            CloseReason::TransportClose => "transport_close",
            CloseReason::TransportError => "transport_error",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::ServerClose => "server_close",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::ParseError => "parse_error",
            CloseReason::PayloadTooLarge => "payload_too_large",
            CloseReason::SlowConsumer => "slow_consumer",
        }
    }

    /// The reason as the Node server words it, where it has one.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClose | CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ServerClose => "forced close",
            CloseReason::ServerShutdown => "server shutting down",
            CloseReason::ParseError => "parse error",
            CloseReason::PayloadTooLarge => "payload too large",
            CloseReason::SlowConsumer => "slow consumer",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every reason at its index, each with its own code.
    #[test]
    fn reasons_are_indexed() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut codes: Vec<_> = CloseReason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CloseReason::ALL.len());
    }
}
