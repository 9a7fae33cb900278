//! The packet envelope, shared by both parsers.

use bytes::Bytes;

use crate::DecodeError;

/// A Socket.IO packet type (`PROTOCOL.md` §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// 0: connect to a namespace (client), or its acceptance (server).
    Connect,
    /// 1: leave a namespace.
    Disconnect,
    /// 2: an event.
    Event,
    /// 3: an acknowledgement.
    Ack,
    /// 4: refusal of a connect.
    ConnectError,
    /// 5: an event with binary attachments (default parser only).
    BinaryEvent,
    /// 6: an acknowledgement with binary attachments (default parser only).
    BinaryAck,
}

impl PacketType {
    /// Parses the numeric type.
    pub fn from_u8(n: u8) -> Option<PacketType> {
        Some(match n {
            0 => PacketType::Connect,
            1 => PacketType::Disconnect,
            2 => PacketType::Event,
            3 => PacketType::Ack,
            4 => PacketType::ConnectError,
            5 => PacketType::BinaryEvent,
            6 => PacketType::BinaryAck,
            _ => return None,
        })
    }

    /// The numeric type.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Event or binary event.
    pub fn is_event(self) -> bool {
        matches!(self, PacketType::Event | PacketType::BinaryEvent)
    }

    /// Ack or binary ack.
    pub fn is_ack(self) -> bool {
        matches!(self, PacketType::Ack | PacketType::BinaryAck)
    }
}

/// A UTF-8 string that shares the bytes it was read from.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Str(Bytes);

impl Str {
    /// The root namespace, `/`.
    pub const ROOT: Str = Str(Bytes::from_static(b"/"));

    /// Wraps bytes known to be UTF-8.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Malformed`] when they are not.
    pub fn from_utf8(bytes: Bytes) -> Result<Str, DecodeError> {
        std::str::from_utf8(&bytes).map_err(|_| DecodeError::Malformed)?;
        Ok(Str(bytes))
    }

    /// A static string.
    pub const fn from_static(s: &'static str) -> Str {
        Str(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Checked at construction; validating again costs a few ns on these short strings
        // and keeps the crate free of unsafe code.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str(Bytes::from(s))
    }
}

impl From<&'static str> for Str {
    fn from(s: &'static str) -> Str {
        Str::from_static(s)
    }
}

impl std::fmt::Debug for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

/// A packet's payload, still in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// No payload.
    None,
    /// Default parser: the raw JSON of the payload.
    Json(Bytes),
    /// Default parser: the raw JSON with placeholders, and the attachments they name, in
    /// order (`{"_placeholder":true,"num":i}` stands for `attachments[i]`).
    JsonBinary {
        /// The raw JSON.
        json: Bytes,
        /// The binary attachments.
        attachments: Vec<Bytes>,
    },
    /// Msgpack parser: the raw msgpack of the `data` value (binary inline as `bin`).
    Msgpack(Bytes),
}

/// One Socket.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The type. A default-parser packet with attachments is `BinaryEvent` or `BinaryAck`.
    pub kind: PacketType,
    /// The namespace, `/` by default.
    pub nsp: Str,
    /// The ack id, when the sender wants an acknowledgement (or this is one).
    pub id: Option<u64>,
    /// The payload.
    pub data: Data,
}

impl Packet {
    /// The event name of an event packet: the first element of its array.
    ///
    /// Decoding has checked it is there; numbers are given in their text form (the Node
    /// server accepts numeric event names).
    pub fn event_name(&self) -> Option<Str> {
        if !self.kind.is_event() {
            return None;
        }
        match &self.data {
            Data::Json(json) | Data::JsonBinary { json, .. } => crate::json::event_name(json),
            Data::Msgpack(raw) => crate::msgpack::event_name(raw),
            Data::None => None,
        }
    }
}
