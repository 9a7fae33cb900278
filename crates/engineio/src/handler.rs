//! The trait the layer above implements, and why sessions end.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};

use crate::{Guard, Socket, Transport};

/// A request that would open a new session, as [`EngineHandler::admit`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Handshake<'a> {
    /// The peer's address (a proxy's, behind one).
    pub remote: SocketAddr,
    /// The transport it opens.
    pub transport: Transport,
    /// The request's URI (path and query).
    pub uri: &'a Uri,
    /// The request's headers (`X-Forwarded-For`, `Origin`, cookies...).
    pub headers: &'a HeaderMap,
}

/// A handshake refused by [`EngineHandler::admit`]: answered with `status` and the JSON
/// body `{ "code": code, "message": message }` (with the CORS headers of the engine's
/// own answers, and `Retry-After` in whole seconds when given), then the connection is
/// closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status (429, 503, 403...).
    pub status: StatusCode,
    /// A short machine-readable code.
    pub code: Cow<'static, str>,
    /// What the client is told.
    pub message: Cow<'static, str>,
    /// When trying again may help.
    pub retry_after: Option<Duration>,
}

/// Callbacks from the engine into the layer above (the Socket.IO layer).
///
/// Callbacks run on the connection's task and must not block: anything slow belongs on
/// a task of its own. Per session, callbacks arrive in order: `on_open`, then messages in
/// the order they were received, then `on_close` exactly once.
pub trait EngineHandler: Send + Sync + 'static {
    /// Per-session state the handler keeps inside [`Socket`].
    type Data: Default + Send + Sync + 'static;

    /// Decides on a request that would open a session, before anything is made for it;
    /// called once per such request, whatever the transport and the path it came by.
    /// The [`Guard`] returned, if any, is held by the session until it closes (a place
    /// in a count of connections, say). Admits everyone by default.
    ///
    /// # Errors
    ///
    /// The [`Refusal`] the client gets instead of a session.
    fn admit(&self, handshake: &Handshake<'_>) -> Result<Option<Guard>, Refusal> {
        let _ = handshake;
        Ok(None)
    }

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
