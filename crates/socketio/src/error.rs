//! Errors, and why sockets leave.

/// A failure of an operation of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value could not be serialized for the wire.
    #[error("cannot serialize: {0}")]
    Serialize(String),
    /// Arguments could not be read as the asked type.
    #[error("cannot deserialize: {0}")]
    Deserialize(String),
    /// The socket has left its namespace or its connection closed.
    #[error("socket disconnected")]
    Disconnected,
    /// The connection's outbound queue is over its byte budget. For a packet that may
    /// not be dropped, the connection has been closed ("slow consumer").
    #[error("outbound queue full")]
    QueueFull,
    /// This event asked for no acknowledgement, or it was sent already.
    #[error("no acknowledgement expected")]
    NoAck,
}

/// Why an acknowledgement did not come.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No answer within the timeout.
    #[error("ack timed out")]
    Timeout,
    /// The socket disconnected first.
    #[error("socket disconnected before acknowledging")]
    Disconnected,
    /// The emit itself failed.
    #[error(transparent)]
    Send(#[from] Error),
}

/// A refused connection to a namespace: sent to the client as `CONNECT_ERROR` with a
/// message and optional data.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    /// Shown to the client as the error's message.
    pub message: String,
    /// Extra data for the client (`err.data`).
    pub data: Option<serde_json::Value>,
}

impl ConnectError {
    /// A refusal with a message.
    pub fn new(message: impl Into<String>) -> ConnectError {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    /// Adds data for the client.
    pub fn with_data(mut self, data: serde_json::Value) -> ConnectError {
        self.data = Some(data);
        self
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "message": self.message });
        if let Some(data) = &self.data {
            v["data"] = data.clone();
        }
        v
    }
}

/// Why a socket left its namespace, worded as the Node server words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The connection closed without a word (TCP closed or reset, a WebSocket close
    /// frame, a polling client gone).
    TransportClose,
    /// The client closed its Engine.IO session on purpose (a `close` packet), as a
    /// client that leaves without a Socket.IO disconnect does. Said "transport close",
    /// as Node says it.
    ClientClose,
    /// The connection failed.
    TransportError,
    /// The client stopped answering pings.
    PingTimeout,
    /// The client sent something that does not parse.
    ParseError,
    /// The server closed the connection.
    ForcedClose,
    /// The server shut down.
    ServerShuttingDown,
    /// The server disconnected the socket from the namespace.
    ServerNamespaceDisconnect,
    /// The client left the namespace.
    ClientNamespaceDisconnect,
    /// The client did not read fast enough: a packet that may not be dropped did not fit
    /// in its outbound budget.
    SlowConsumer,
}

impl DisconnectReason {
    /// The reason's text.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::TransportClose | DisconnectReason::ClientClose => "transport close",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::ParseError => "parse error",
            DisconnectReason::ForcedClose => "forced close",
            DisconnectReason::ServerShuttingDown => "server shutting down",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::SlowConsumer => "slow consumer",
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<engineio::CloseReason> for DisconnectReason {
    fn from(r: engineio::CloseReason) -> Self {
        use engineio::CloseReason as C;
        match r {
            C::ClientClose => DisconnectReason::ClientClose,
            C::TransportClose => DisconnectReason::TransportClose,
            C::TransportError | C::PayloadTooLarge => DisconnectReason::TransportError,
            C::PingTimeout => DisconnectReason::PingTimeout,
            C::ParseError => DisconnectReason::ParseError,
            C::ServerClose => DisconnectReason::ForcedClose,
            C::ServerShutdown => DisconnectReason::ServerShuttingDown,
            C::SlowConsumer => DisconnectReason::SlowConsumer,
        }
    }
}
