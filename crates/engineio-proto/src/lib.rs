//! Engine.IO v4 wire format, with no I/O (`PROTOCOL.md` §1).
//!
//! # Layout
//!
//! - [`packet`]: [`Packet`], the seven packet types in their text form (`4hello`, `2probe`)
//!   and binary messages.
//! - [`payload`]: the long-polling payload, packets joined by `\x1e`, binary as `b<base64>`.
//! - [`handshake`]: the JSON of the `open` packet.
//! - [`sid`]: [`Sid`], the 20-character session id.
//! - [`error`]: [`ErrorCode`], the request errors with their codes and HTTP statuses, and
//!   [`DecodeError`].
//!
//! # Example
//!
//! ```
//! use engineio_proto::{payload, Packet};
//!
//! let body = bytes::Bytes::from_static(b"4hello\x1ebAQIDBA==");
//! let packets: Vec<Packet> = payload::decode(&body).collect::<Result<_, _>>().unwrap();
//! assert_eq!(packets, vec![
//!     Packet::Message("hello".into()),
//!     Packet::Binary(vec![1, 2, 3, 4].into()),
//! ]);
//! ```

pub mod error;
pub mod handshake;
pub mod packet;
pub mod payload;
pub mod sid;

pub use error::{DecodeError, ErrorCode};
pub use handshake::Handshake;
pub use packet::{Packet, PacketType};
pub use sid::Sid;

/// The transports of Engine.IO v4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

impl Transport {
    /// Parses the `transport` query parameter.
    pub fn parse(s: &str) -> Option<Transport> {
        match s {
            "polling" => Some(Transport::Polling),
            "websocket" => Some(Transport::Websocket),
            _ => None,
        }
    }

    /// The name used in the query and the handshake.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::Websocket => "websocket",
        }
    }
}
