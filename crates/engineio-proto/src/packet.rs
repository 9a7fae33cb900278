//! Engine.IO packets.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// The type digit of a text packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// `0`: server to client, first packet of a session.
    Open,
    /// `1`: either side, ends the session.
    Close,
    /// `2`: server to client (and `2probe` from the client during an upgrade).
    Ping,
    /// `3`: client to server (and `3probe` from the server during an upgrade).
    Pong,
    /// `4`: application data.
    Message,
    /// `5`: client to server, completes an upgrade.
    Upgrade,
    /// `6`: server to client, releases a pending poll.
    Noop,
}

impl PacketType {
    /// The ASCII digit on the wire.
    pub fn digit(self) -> u8 {
        b'0' + self as u8
    }

    /// Parses the ASCII digit.
    pub fn from_digit(d: u8) -> Option<PacketType> {
        Some(match d {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// The handshake, with its JSON payload.
    Open(Bytes),
    /// End of the session.
    Close,
    /// A ping, with its payload (`probe` during an upgrade, usually empty).
    Ping(Bytes),
    /// A pong, with its payload.
    Pong(Bytes),
    /// A text message; the bytes are UTF-8.
    Message(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// Completes an upgrade.
    Upgrade,
    /// Does nothing; releases a pending poll.
    Noop,
}

impl Packet {
    /// Decodes a text packet (a WebSocket text frame, or one record of a payload that is
    /// not a `b` record). `data` must be UTF-8; the payload is shared, not copied.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Empty`] or [`DecodeError::UnknownType`].
    pub fn decode_text(data: Bytes) -> Result<Packet, DecodeError> {
        let first = *data.first().ok_or(DecodeError::Empty)?;
        let kind = PacketType::from_digit(first).ok_or(DecodeError::UnknownType(first))?;
        let rest = data.slice(1..);
        Ok(match kind {
            PacketType::Open => Packet::Open(rest),
            PacketType::Close => Packet::Close,
            PacketType::Ping => Packet::Ping(rest),
            PacketType::Pong => Packet::Pong(rest),
            PacketType::Message => Packet::Message(rest),
            PacketType::Upgrade => Packet::Upgrade,
            PacketType::Noop => Packet::Noop,
        })
    }

    /// Decodes one record of a polling payload: a text packet, or `b` + base64 for binary.
    ///
    /// # Errors
    ///
    /// As [`Packet::decode_text`], plus [`DecodeError::Base64`].
    pub fn decode_record(data: Bytes) -> Result<Packet, DecodeError> {
        if data.first() == Some(&b'b') {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&data[1..])
                .map_err(|_| DecodeError::Base64)?;
            return Ok(Packet::Binary(raw.into()));
        }
        Packet::decode_text(data)
    }

    /// The packet's type; binary messages are of type message.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Open(_) => PacketType::Open,
            Packet::Close => PacketType::Close,
            Packet::Ping(_) => PacketType::Ping,
            Packet::Pong(_) => PacketType::Pong,
            Packet::Message(_) | Packet::Binary(_) => PacketType::Message,
            Packet::Upgrade => PacketType::Upgrade,
            Packet::Noop => PacketType::Noop,
        }
    }

    /// Appends the packet in its payload-record form: the type digit then the data, or
    /// `b` + base64 for a binary message.
    pub fn encode_record(&self, dst: &mut BytesMut) {
        match self {
            Packet::Binary(data) => encode_binary_record(data, dst),
            Packet::Open(d) | Packet::Ping(d) | Packet::Pong(d) | Packet::Message(d) => {
                dst.put_u8(self.packet_type().digit());
                dst.put_slice(d);
            }
            Packet::Close | Packet::Upgrade | Packet::Noop => {
                dst.put_u8(self.packet_type().digit());
            }
        }
    }
}

/// Appends `b` + base64 of `data`.
pub fn encode_binary_record(data: &[u8], dst: &mut BytesMut) {
    let start = dst.len();
    let encoded = base64::encoded_len(data.len(), true).unwrap_or(0);
    dst.resize(start + 1 + encoded, 0);
    dst[start] = b'b';
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut dst[start + 1..])
        .unwrap_or(0);
    dst.truncate(start + 1 + written);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text type decodes from its digit and encodes back.
    #[test]
    fn text_round_trip() {
        for (wire, packet) in [
            (&b"0{}"[..], Packet::Open("{}".into())),
            (b"1", Packet::Close),
            (b"2probe", Packet::Ping("probe".into())),
            (b"3", Packet::Pong(Bytes::new())),
            (b"4hello \xe2\x82\xac", Packet::Message("hello €".into())),
            (b"5", Packet::Upgrade),
            (b"6", Packet::Noop),
        ] {
            let decoded = Packet::decode_text(Bytes::copy_from_slice(wire)).unwrap();
            assert_eq!(decoded, packet);
            let mut out = BytesMut::new();
            decoded.encode_record(&mut out);
            assert_eq!(&out[..], wire);
        }
    }

    /// Unknown types and empty packets are errors.
    #[test]
    fn bad_packets() {
        assert_eq!(Packet::decode_text(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            Packet::decode_text("7".into()),
            Err(DecodeError::UnknownType(b'7'))
        );
        assert_eq!(
            Packet::decode_text("bAQID".into()),
            Err(DecodeError::UnknownType(b'b'))
        );
        assert_eq!(
            Packet::decode_record("b!!!".into()),
            Err(DecodeError::Base64)
        );
    }

    /// Binary records are `b` + standard base64 with padding.
    #[test]
    fn binary_record() {
        let mut out = BytesMut::new();
        Packet::Binary(vec![1, 2, 3, 4].into()).encode_record(&mut out);
        assert_eq!(&out[..], b"bAQIDBA==");
        assert_eq!(
            Packet::decode_record(out.freeze()).unwrap(),
            Packet::Binary(vec![1, 2, 3, 4].into())
        );
    }
}
