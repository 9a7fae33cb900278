//! Request errors of the Engine.IO server and packet decoding errors.

/// An error answered to an HTTP request before or outside a session (`PROTOCOL.md` §1.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: `transport` missing, unknown or not enabled.
    UnknownTransport,
    /// 1: the `sid` is not (or no longer) a session.
    UnknownSid,
    /// 2: a handshake request that is not a GET.
    BadHandshakeMethod,
    /// 3: anything else wrong with the request (transport mismatch, a websocket
    /// transport without an upgrade, ...).
    BadRequest,
    /// 4: the application refused the request.
    Forbidden,
    /// 5: `EIO` is not 4.
    UnsupportedProtocolVersion,
}

impl ErrorCode {
    /// The numeric code of the JSON body.
    pub fn code(self) -> u8 {
        match self {
            ErrorCode::UnknownTransport => 0,
            ErrorCode::UnknownSid => 1,
            ErrorCode::BadHandshakeMethod => 2,
            ErrorCode::BadRequest => 3,
            ErrorCode::Forbidden => 4,
            ErrorCode::UnsupportedProtocolVersion => 5,
        }
    }

    /// The message of the JSON body, as the Node server words it.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::UnknownTransport => "Transport unknown",
            ErrorCode::UnknownSid => "Session ID unknown",
            ErrorCode::BadHandshakeMethod => "Bad handshake method",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// The HTTP status: 403 for [`ErrorCode::Forbidden`], 400 otherwise.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Forbidden => 403,
            _ => 400,
        }
    }

    /// The JSON body: `{"code":1,"message":"Session ID unknown"}`.
    pub fn json(self) -> String {
        format!(
            r#"{{"code":{},"message":"{}"}}"#,
            self.code(),
            self.message()
        )
    }
}

/// Why a packet or payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An empty packet.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type (`0`-`6`, or `b` in a payload).
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    /// A `b` record whose base64 does not decode.
    #[error("invalid base64 in a binary record")]
    Base64,
    /// A text packet that is not UTF-8.
    #[error("packet is not valid UTF-8")]
    Utf8,
}
