//! Why a packet could not be decoded.

/// A packet that breaks the Socket.IO protocol. The server closes the connection
/// (`PROTOCOL.md` §2.2: the Node server closes on any decoding error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An empty packet.
    #[error("empty packet")]
    Empty,
    /// A packet type outside 0 to 6 (0 to 4 for msgpack).
    #[error("unknown packet type")]
    UnknownType,
    /// A binary packet's attachment count is missing, zero or malformed.
    #[error("invalid attachment count")]
    AttachmentCount,
    /// More attachments than the limit.
    #[error("{count} attachments exceed the limit of {max}")]
    TooManyAttachments {
        /// Attachments announced.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Attachments adding up to more bytes than the limit.
    #[error("attachments exceed {max} bytes")]
    AttachmentsTooLarge {
        /// The limit.
        max: usize,
    },
    /// A placeholder that names no attachment, or attachments no placeholder names.
    #[error("placeholders do not match the attachments")]
    Placeholders,
    /// A text packet arrived while attachments were still expected.
    #[error("text packet while binary attachments were expected")]
    UnexpectedText,
    /// A binary message arrived while no attachment was expected.
    #[error("binary message while no attachment was expected")]
    UnexpectedBinary,
    /// A namespace that does not start with `/` or is not UTF-8.
    #[error("invalid namespace")]
    Namespace,
    /// An ack id that is not a number that fits 64 bits.
    #[error("invalid ack id")]
    AckId,
    /// A payload that is not valid JSON or msgpack.
    #[error("malformed payload")]
    Malformed,
    /// A payload of the wrong shape for its packet type (an event that is not a non-empty
    /// array, a reserved event name, a CONNECT payload that is not an object, ...).
    #[error("invalid payload for the packet type")]
    InvalidPayload,
}
