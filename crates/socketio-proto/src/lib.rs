//! Socket.IO v5 wire format, with no I/O (`PROTOCOL.md` §2 and §3).
//!
//! A Socket.IO packet travels inside Engine.IO messages. Its payload stays in wire form
//! (raw JSON text, or raw msgpack bytes) until a handler asks for a type: decoding a packet
//! validates it and finds its parts, and allocates nothing for the payload.
//!
//! # Layout
//!
//! - [`packet`]: [`Packet`], [`PacketType`], [`Data`], and [`Str`], a string that shares the
//!   bytes it was read from.
//! - [`json`]: the default parser (`socket.io-parser`): the text form
//!   `<type>[<n>-][<nsp>,][<id>][<json>]`, binary attachments with placeholders, and
//!   [`json::Decoder`], which reassembles a packet from its text and binary parts within
//!   [`Limits`].
//! - [`msgpack`]: the msgpack parser (`socket.io-msgpack-parser`): one msgpack map per packet,
//!   with the quirks of notepack.io 2.2 (encoded `undefined`, extra keys).
//! - [`error`]: [`DecodeError`], why a packet was refused.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use socketio_proto::{json, Data, PacketType};
//!
//! let mut decoder = json::Decoder::default();
//! let packet = decoder
//!     .text(Bytes::from_static(br#"2/chat,12["message","hi"]"#))
//!     .unwrap()
//!     .expect("a whole packet");
//! assert_eq!(packet.kind, PacketType::Event);
//! assert_eq!(packet.nsp.as_str(), "/chat");
//! assert_eq!(packet.id, Some(12));
//! assert_eq!(packet.event_name().unwrap().as_str(), "message");
//! assert!(matches!(packet.data, Data::Json(ref raw) if &raw[..] == br#"["message","hi"]"#));
//! ```

pub mod error;
pub mod json;
pub mod msgpack;
pub mod packet;

pub use error::DecodeError;
pub use packet::{Data, Packet, PacketType, Str};

/// Bounds applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Binary attachments one packet may announce. Defaults to 10 (the Node server's
    /// `maxAttachments`).
    pub max_attachments: usize,
    /// Bytes all attachments of one packet may add up to. Defaults to 10 MB.
    pub max_attachment_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attachments: 10,
            max_attachment_bytes: 10_000_000,
        }
    }
}

/// Event names a client may not use (`PROTOCOL.md` §2.1).
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];
