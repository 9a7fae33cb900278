//! Opcodes, the frame header, and whole frames encoded once into shared bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{mask, CloseCode, ProtocolError, Role};

/// The largest payload a control frame may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: first (or only) frame of a UTF-8 text message.
    Text,
    /// 0x2: first (or only) frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Parses the low four bits of the first header byte.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::UnknownOpCode`] for the reserved values.
    pub fn from_u8(v: u8) -> Result<OpCode, ProtocolError> {
        Ok(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::UnknownOpCode(other)),
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong are control frames.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN: this frame ends its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on frames sent by a client.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub len: u64,
}

impl Header {
    /// Decodes a header from the start of `buf`. Returns the header and its length in
    /// bytes, or `None` when `buf` does not yet hold the whole header.
    ///
    /// Checks what the header alone can tell: reserved bits, opcode, the 64-bit length's
    /// top bit, and the control-frame rules. Masking rules depend on the role and are
    /// checked by the [`Decoder`](crate::Decoder).
    ///
    /// # Errors
    ///
    /// The [`ProtocolError`] for the first rule broken.
    pub fn decode(buf: &[u8]) -> Result<Option<(Header, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let opcode = OpCode::from_u8(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 => {
                let Some(b) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
            }
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut word = [0u8; 8];
                word.copy_from_slice(b);
                let len = u64::from_be_bytes(word);
                if len >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong(len));
            }
        }
        let mask = if masked {
            let Some(b) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([b[0], b[1], b[2], b[3]])
        } else {
            None
        };
        Ok(Some((
            Header {
                fin,
                opcode,
                mask,
                len,
            },
            at,
        )))
    }

    /// The encoded size of a header for a payload of `len` bytes.
    pub fn encoded_len(len: usize, masked: bool) -> usize {
        let base = match len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        if masked {
            base + 4
        } else {
            base
        }
    }

    /// Appends the encoded header to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let b0 = (u8::from(self.fin) << 7) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        dst.put_u8(b0);
        match self.len {
            0..=125 => dst.put_u8(mask_bit | self.len as u8),
            126..=0xffff => {
                dst.put_u8(mask_bit | 126);
                dst.put_u16(self.len as u16);
            }
            _ => {
                dst.put_u8(mask_bit | 127);
                dst.put_u64(self.len);
            }
        }
        if let Some(key) = self.mask {
            dst.put_slice(&key);
        }
    }
}

/// A whole frame, header and payload, encoded once into one shared buffer.
///
/// Cloning a `Frame` copies a reference count, not the bytes: this is what a broadcast
/// hands to every recipient. Server frames also expose their payload without a copy
/// ([`Frame::payload`]), which is what the polling transport sends.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    header_len: u8,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("header_len", &self.header_len)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Frame {
    /// Encodes a single, final, unmasked frame (server role) whose payload is the
    /// concatenation of `parts`: one allocation, one copy of each part.
    ///
    /// # Panics
    ///
    /// If `opcode` is a control opcode and the payload exceeds 125 bytes.
    pub fn server_parts(opcode: OpCode, parts: &[&[u8]]) -> Frame {
        Self::encode(opcode, parts, None)
    }

    /// Encodes a single, final, unmasked frame (server role).
    ///
    /// # Panics
    ///
    /// If `opcode` is a control opcode and the payload exceeds 125 bytes.
    pub fn server(opcode: OpCode, payload: &[u8]) -> Frame {
        Self::encode(opcode, &[payload], None)
    }

    /// Encodes a single, final frame masked with `key` (client role).
    ///
    /// # Panics
    ///
    /// If `opcode` is a control opcode and the payload exceeds 125 bytes.
    pub fn client(opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Frame {
        Self::encode(opcode, &[payload], Some(key))
    }

    /// Encodes a frame for `role`; `key` is used only by the client role.
    ///
    /// # Panics
    ///
    /// If `opcode` is a control opcode and the payload exceeds 125 bytes.
    pub fn for_role(role: Role, opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Frame {
        match role {
            Role::Server => Self::server(opcode, payload),
            Role::Client => Self::client(opcode, payload, key),
        }
    }

    /// Encodes one frame of a fragmented message, with an explicit FIN bit; `mask` is
    /// `Some` for the client role.
    ///
    /// # Panics
    ///
    /// If `opcode` is a control opcode and the payload exceeds 125 bytes.
    pub fn fragment(opcode: OpCode, payload: &[u8], fin: bool, mask: Option<[u8; 4]>) -> Frame {
        let mut frame = Self::encode(opcode, &[payload], mask);
        if !fin {
            let mut bytes = BytesMut::from(frame.bytes.as_ref());
            bytes[0] &= 0x7f;
            frame.bytes = bytes.freeze();
        }
        frame
    }

    /// A server close frame with `code` and a reason (cut to fit 125 bytes on a UTF-8
    /// boundary).
    pub fn close(code: CloseCode, reason: &str) -> Frame {
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self::server_parts(
            OpCode::Close,
            &[&code.0.to_be_bytes(), &reason.as_bytes()[..end]],
        )
    }

    fn encode(opcode: OpCode, parts: &[&[u8]], mask: Option<[u8; 4]>) -> Frame {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        assert!(
            !opcode.is_control() || len <= MAX_CONTROL_PAYLOAD,
            "control frame payload of {len} bytes"
        );
        let header_len = Header::encoded_len(len, mask.is_some());
        let mut dst = BytesMut::with_capacity(header_len + len);
        Header {
            fin: true,
            opcode,
            mask,
            len: len as u64,
        }
        .encode(&mut dst);
        for part in parts {
            dst.put_slice(part);
        }
        if let Some(key) = mask {
            mask::apply(&mut dst[header_len..], key);
        }
        Frame {
            bytes: dst.freeze(),
            header_len: header_len as u8,
        }
    }

    /// The opcode of the frame.
    pub fn opcode(&self) -> OpCode {
        // Built by this type from a valid opcode, so the low nibble always parses.
        OpCode::from_u8(self.bytes[0] & 0x0f).unwrap_or(OpCode::Binary)
    }

    /// The whole frame, ready to write.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Consumes the frame into its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The payload as sent (masked for a client frame), sharing the frame's buffer.
    pub fn payload(&self) -> Bytes {
        self.bytes.slice(usize::from(self.header_len)..)
    }

    /// The length of the encoded frame in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a frame has at least a two-byte header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths at the boundaries of the three length encodings round-trip.
    #[test]
    fn header_length_encodings() {
        for len in [0u64, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let h = Header {
                    fin: true,
                    opcode: OpCode::Binary,
                    mask,
                    len,
                };
                let mut buf = BytesMut::new();
                h.encode(&mut buf);
                assert_eq!(buf.len(), Header::encoded_len(len as usize, mask.is_some()));
                let (back, used) = Header::decode(&buf).unwrap().unwrap();
                assert_eq!(back, h);
                assert_eq!(used, buf.len());
                for cut in 0..buf.len() {
                    assert_eq!(Header::decode(&buf[..cut]).unwrap(), None, "cut at {cut}");
                }
            }
        }
    }

    /// A server frame is header then payload, and the payload slice shares the buffer.
    #[test]
    fn server_frame_layout() {
        let f = Frame::server_parts(OpCode::Text, &[b"4", b"hello"]);
        assert_eq!(f.as_bytes().as_ref(), b"\x81\x064hello");
        assert_eq!(f.payload().as_ref(), b"4hello");
    }

    /// Close frames carry the code big-endian and cut long reasons on a char boundary.
    #[test]
    fn close_frame_cuts_reason() {
        let f = Frame::close(CloseCode::TOO_BIG, &"é".repeat(100));
        let p = f.payload();
        assert_eq!(&p[..2], &1009u16.to_be_bytes());
        assert!(p.len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }

    /// Reserved bits, reserved opcodes and bad control frames are refused from the header.
    #[test]
    fn header_rejections() {
        assert_eq!(
            Header::decode(&[0xc1, 0x80]),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            Header::decode(&[0x83, 0x80]),
            Err(ProtocolError::UnknownOpCode(3))
        );
        assert_eq!(
            Header::decode(&[0x8b, 0x80]),
            Err(ProtocolError::UnknownOpCode(0xb))
        );
        assert_eq!(
            Header::decode(&[0x09, 0x80]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            Header::decode(&[0x89, 0xfe, 0, 126]),
            Err(ProtocolError::ControlFrameTooLong(126))
        );
        assert_eq!(
            Header::decode(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::InvalidLength)
        );
    }
}
