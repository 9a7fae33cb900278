//! Protocol errors found while decoding, each with the close code to answer it with.

use crate::CloseCode;

/// A violation of RFC 6455 by the peer. The connection must be closed with
/// [`ProtocolError::close_code`] and no further frame read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// One of RSV1..RSV3 is set while no extension was negotiated (§5.2).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// Opcodes 3-7 and 0xB-0xF are reserved (§5.2).
    #[error("unknown opcode {0:#x}")]
    UnknownOpCode(u8),
    /// A client sent an unmasked frame (§5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server sent a masked frame (§5.1).
    #[error("server frame is masked")]
    MaskedFrame,
    /// A control frame carries more than 125 bytes (§5.5).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(u64),
    /// A control frame has FIN clear (§5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame arrived with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived before the fragmented message ended (§5.4).
    #[error("data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// The 64-bit payload length has its most significant bit set (§5.2).
    #[error("payload length out of range")]
    InvalidLength,
    /// The message would be larger than the configured maximum.
    #[error("message of at least {size} bytes exceeds the limit of {max}")]
    MessageTooBig {
        /// Size the message has reached (or announced).
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A text message, or a close reason, is not valid UTF-8 (§8.1).
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A close frame payload of one byte (§5.5.1).
    #[error("close frame payload of one byte")]
    InvalidClosePayload,
    /// A close code that may not appear on the wire (§7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
}

impl ProtocolError {
    /// The close code the connection should be closed with (§7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::INVALID_DATA,
            ProtocolError::MessageTooBig { .. } => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}
