//! Close codes (RFC 6455 §7.4) and the payload of a close frame.

use bytes::Bytes;

/// A WebSocket close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no code was present. Never sent on the wire.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: closed without a close frame. Never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type (invalid UTF-8 in text).
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// 1008: a message that violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (overload).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Whether a peer may send this code in a close frame (§7.4.1 and the IANA registry):
    /// 1000-1003, 1007-1014 and the 3000-4999 ranges for libraries and applications.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// The decoded payload of a close frame that carried a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, valid UTF-8, at most 123 bytes.
    pub reason: Bytes,
}

impl CloseFrame {
    /// Parses and validates a close payload: empty (no code), or a valid code followed by
    /// a UTF-8 reason (§5.5.1).
    ///
    /// # Errors
    ///
    /// A one-byte payload, a code not allowed on the wire, or a reason that is not UTF-8.
    pub fn parse(payload: Bytes) -> Result<Option<CloseFrame>, crate::ProtocolError> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(crate::ProtocolError::InvalidClosePayload),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_valid_on_wire() {
                    return Err(crate::ProtocolError::InvalidCloseCode(code.0));
                }
                if simdutf8::basic::from_utf8(&payload[2..]).is_err() {
                    return Err(crate::ProtocolError::InvalidUtf8);
                }
                Ok(Some(CloseFrame {
                    code,
                    reason: payload.slice(2..),
                }))
            }
        }
    }
}
