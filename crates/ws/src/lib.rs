//! RFC 6455 WebSocket codec for both roles, with no I/O of its own.
//!
//! The crate turns bytes into WebSocket messages and messages into bytes; the caller owns
//! the socket. That split is what keeps an idle connection cheap: a connection that is not
//! in the middle of a frame owns no read buffer at all (see `ARCHITECTURE.md` §3).
//!
//! # Layout
//!
//! - [`frame`]: opcodes, the frame header, and [`Frame`], a whole frame (header and
//!   payload) encoded **once** into one shared [`bytes::Bytes`], so a broadcast costs one
//!   encoding whatever the number of recipients.
//! - [`mask`]: the XOR masking applied by clients.
//! - [`decode`]: [`Decoder`], the incremental reader: masking rules per role, reserved bits,
//!   control-frame rules, fragmentation with control frames between fragments, UTF-8
//!   validation of text (including code points split across fragments), size limits.
//! - [`close`]: close codes and the close frame payload.
//! - [`handshake`]: the opening handshake (`Sec-WebSocket-Key` / `Sec-WebSocket-Accept`)
//!   for both roles.
//! - [`error`]: [`ProtocolError`], each variant mapped to the close code the spec asks for.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use ws::{Decoder, Frame, Message, OpCode, Role};
//!
//! // A client encodes a masked text frame...
//! let frame = Frame::client(OpCode::Text, b"hello", [1, 2, 3, 4]);
//! // ...and the server decodes it.
//! let mut decoder = Decoder::new(Role::Server, 1 << 20);
//! let mut buf = BytesMut::from(frame.as_bytes().as_ref());
//! assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Message::Text("hello".into())));
//! ```

pub mod close;
pub mod decode;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;

pub use close::{CloseCode, CloseFrame};
pub use decode::{Decoder, Message};
pub use error::ProtocolError;
pub use frame::{Frame, Header, OpCode};

/// Which side of the connection this codec plays. It decides the masking rules: frames
/// from a client are masked, frames from a server are not (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The accepting side: expects masked frames, sends unmasked ones.
    Server,
    /// The connecting side: expects unmasked frames, sends masked ones.
    Client,
}
