//! The incremental frame reader.

use bytes::{Buf, Bytes, BytesMut};

use crate::{frame::Header, mask, CloseFrame, OpCode, ProtocolError, Role};

/// A complete message, after defragmentation and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the peer expects a pong with the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame, with its code and reason when it had one.
    Close(Option<CloseFrame>),
}

/// Reads messages out of a byte stream, one role's rules applied.
///
/// The decoder owns no buffer while no fragmented message is in progress: the caller owns
/// the bytes read so far and passes them to [`Decoder::decode`], which consumes whole
/// frames from the front. A fragmented message is assembled in a buffer that exists only
/// until its last fragment.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_message: usize,
    partial: Option<Box<Partial>>,
}

#[derive(Debug)]
struct Partial {
    text: bool,
    buf: BytesMut,
    /// Bytes of `buf` known to be valid UTF-8 up to a code point boundary.
    checked: usize,
}

impl Decoder {
    /// A decoder for `role` that refuses messages larger than `max_message` bytes.
    pub fn new(role: Role, max_message: usize) -> Decoder {
        Decoder {
            role,
            max_message,
            partial: None,
        }
    }

    /// The role this decoder enforces.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The largest message accepted, in bytes.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Changes the largest message accepted, from the next message on.
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// Whether a fragmented message is being assembled.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Consumes complete frames from the front of `src` until one completes a message,
    /// and returns it. Returns `Ok(None)` when `src` holds no complete message yet; the
    /// bytes of an incomplete frame stay in `src`, and fragments already consumed are
    /// kept by the decoder.
    ///
    /// Control frames are returned as soon as they arrive, also between the fragments of
    /// a message (§5.4).
    ///
    /// # Errors
    ///
    /// The first [`ProtocolError`] met. A message announced larger than the limit is
    /// refused as soon as its header is read, before its payload arrives. After an error
    /// the connection must be closed with [`ProtocolError::close_code`].
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            let Some((header, header_len)) = Header::decode(src)? else {
                return Ok(None);
            };
            match (self.role, header.mask.is_some()) {
                (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
                (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
                _ => {}
            }
            if !header.opcode.is_control() {
                let so_far = self.partial.as_ref().map_or(0, |p| p.buf.len()) as u64;
                let size = so_far.saturating_add(header.len);
                if size > self.max_message as u64 {
                    return Err(ProtocolError::MessageTooBig {
                        size,
                        max: self.max_message,
                    });
                }
                match (header.opcode, self.partial.is_some()) {
                    (OpCode::Continuation, false) => {
                        return Err(ProtocolError::UnexpectedContinuation)
                    }
                    (OpCode::Text | OpCode::Binary, true) => {
                        return Err(ProtocolError::ExpectedContinuation)
                    }
                    _ => {}
                }
            }
            // The length fits in usize: it is at most max_message, or 125 for control.
            let len = header.len as usize;
            if src.len() - header_len < len {
                return Ok(None);
            }
            src.advance(header_len);
            let mut payload = src.split_to(len);
            if let Some(key) = header.mask {
                mask::apply(&mut payload, key);
            }
            if let Some(message) = self.on_frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    fn on_frame(
        &mut self,
        header: Header,
        payload: BytesMut,
    ) -> Result<Option<Message>, ProtocolError> {
        let message = match header.opcode {
            OpCode::Ping => Message::Ping(payload.freeze()),
            OpCode::Pong => Message::Pong(payload.freeze()),
            OpCode::Close => Message::Close(CloseFrame::parse(payload.freeze())?),
            OpCode::Text if header.fin => {
                if simdutf8::basic::from_utf8(&payload).is_err() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                Message::Text(payload.freeze())
            }
            OpCode::Binary if header.fin => Message::Binary(payload.freeze()),
            OpCode::Text | OpCode::Binary => {
                let text = header.opcode == OpCode::Text;
                let mut partial = Partial {
                    text,
                    buf: payload,
                    checked: 0,
                };
                if text {
                    partial.checked = check_utf8(&partial.buf, 0, false)?;
                }
                self.partial = Some(Box::new(partial));
                return Ok(None);
            }
            OpCode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                partial.buf.extend_from_slice(&payload);
                if partial.text {
                    partial.checked = check_utf8(&partial.buf, partial.checked, header.fin)?;
                }
                if !header.fin {
                    return Ok(None);
                }
                let Some(partial) = self.partial.take() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                let bytes = partial.buf.freeze();
                if partial.text {
                    Message::Text(bytes)
                } else {
                    Message::Binary(bytes)
                }
            }
        };
        Ok(Some(message))
    }
}

/// Validates `buf[from..]`, which follows a prefix already known to be valid UTF-8.
/// Returns how much of `buf` is valid up to a code point boundary. A code point cut at
/// the end is allowed unless `fin`: its first bytes must still be a valid prefix, so
/// invalid input fails as early as the spec asks (fail fast, §8.1).
fn check_utf8(buf: &[u8], from: usize, fin: bool) -> Result<usize, ProtocolError> {
    match simdutf8::compat::from_utf8(&buf[from..]) {
        Ok(_) => Ok(buf.len()),
        Err(e) if e.error_len().is_none() && !fin => Ok(from + e.valid_up_to()),
        Err(_) => Err(ProtocolError::InvalidUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CloseCode, Frame};

    fn decode_all(role: Role, bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        let mut d = Decoder::new(role, 1 << 20);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    fn frag(op: OpCode, payload: &[u8], fin: bool) -> Vec<u8> {
        Frame::fragment(op, payload, fin, Some([0xa, 0xb, 0xc, 0xd]))
            .into_bytes()
            .to_vec()
    }

    /// A fragmented text message with a ping between fragments yields the ping first.
    #[test]
    fn control_frame_between_fragments() {
        let mut wire = frag(OpCode::Text, b"hel", false);
        wire.extend(frag(OpCode::Ping, b"p", true));
        wire.extend(frag(OpCode::Continuation, b"lo", true));
        let got = decode_all(Role::Server, &wire).unwrap();
        assert_eq!(
            got,
            vec![Message::Ping("p".into()), Message::Text("hello".into())]
        );
    }

    /// A code point split across fragments is accepted; an invalid byte fails at once.
    #[test]
    fn utf8_across_fragments() {
        let euro = "€".as_bytes();
        let mut wire = frag(OpCode::Text, &euro[..1], false);
        wire.extend(frag(OpCode::Continuation, &euro[1..2], false));
        wire.extend(frag(OpCode::Continuation, &euro[2..], true));
        assert_eq!(
            decode_all(Role::Server, &wire).unwrap(),
            vec![Message::Text("€".into())]
        );

        // 0xff can start no code point: refused in the first fragment, before FIN.
        let wire = frag(OpCode::Text, b"ok\xff", false);
        assert_eq!(
            decode_all(Role::Server, &wire),
            Err(ProtocolError::InvalidUtf8)
        );

        // A truncated code point at the end of the final fragment is refused.
        let mut wire = frag(OpCode::Text, b"a", false);
        wire.extend(frag(OpCode::Continuation, &euro[..2], true));
        assert_eq!(
            decode_all(Role::Server, &wire),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    /// Masking rules per role.
    #[test]
    fn masking_rules() {
        let unmasked = Frame::server(OpCode::Text, b"x").into_bytes();
        assert_eq!(
            decode_all(Role::Server, &unmasked),
            Err(ProtocolError::UnmaskedFrame)
        );
        assert_eq!(
            decode_all(Role::Client, &unmasked).unwrap(),
            vec![Message::Text("x".into())]
        );
        let masked = frag(OpCode::Text, b"x", true);
        assert_eq!(
            decode_all(Role::Client, &masked),
            Err(ProtocolError::MaskedFrame)
        );
    }

    /// Continuation without a start, and a new message inside a fragmented one.
    #[test]
    fn fragmentation_sequence_errors() {
        assert_eq!(
            decode_all(Role::Server, &frag(OpCode::Continuation, b"x", true)),
            Err(ProtocolError::UnexpectedContinuation)
        );
        let mut wire = frag(OpCode::Binary, b"a", false);
        wire.extend(frag(OpCode::Text, b"b", true));
        assert_eq!(
            decode_all(Role::Server, &wire),
            Err(ProtocolError::ExpectedContinuation)
        );
    }

    /// The size limit is applied to the header of a frame and to the sum of fragments.
    #[test]
    fn size_limit() {
        let mut d = Decoder::new(Role::Server, 10);
        // Header announcing 11 bytes: refused before any payload arrives.
        let mut buf = BytesMut::from(&[0x82u8, 0x80 | 11, 1, 2, 3, 4][..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(ProtocolError::MessageTooBig { size: 11, max: 10 })
        ));
        let mut d = Decoder::new(Role::Server, 10);
        let mut wire = frag(OpCode::Binary, &[0; 6], false);
        wire.extend(frag(OpCode::Continuation, &[0; 6], true));
        let mut buf = BytesMut::from(&wire[..]);
        let err = d.decode(&mut buf).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::TOO_BIG);
    }

    /// Close payloads: empty, one byte, bad codes, bad reason.
    #[test]
    fn close_payloads() {
        assert_eq!(
            decode_all(Role::Server, &frag(OpCode::Close, b"", true)).unwrap(),
            vec![Message::Close(None)]
        );
        assert_eq!(
            decode_all(Role::Server, &frag(OpCode::Close, b"\x03", true)),
            Err(ProtocolError::InvalidClosePayload)
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                decode_all(
                    Role::Server,
                    &frag(OpCode::Close, &code.to_be_bytes(), true)
                ),
                Err(ProtocolError::InvalidCloseCode(code)),
                "code {code}"
            );
        }
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend(b"\xc3\x28");
        assert_eq!(
            decode_all(Role::Server, &frag(OpCode::Close, &p, true)),
            Err(ProtocolError::InvalidUtf8)
        );
        let mut p = 4001u16.to_be_bytes().to_vec();
        p.extend("bye".as_bytes());
        assert_eq!(
            decode_all(Role::Server, &frag(OpCode::Close, &p, true)).unwrap(),
            vec![Message::Close(Some(CloseFrame {
                code: CloseCode(4001),
                reason: "bye".into()
            }))]
        );
    }

    /// Bytes that arrive one at a time decode to the same messages.
    #[test]
    fn byte_at_a_time() {
        let mut wire = frag(OpCode::Text, "héllo wörld".as_bytes(), true);
        wire.extend(frag(OpCode::Binary, &[7u8; 300], true));
        let mut d = Decoder::new(Role::Server, 1 << 20);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(m) = d.decode(&mut buf).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(
            out,
            vec![
                Message::Text("héllo wörld".into()),
                Message::Binary(Bytes::from(vec![7u8; 300]))
            ]
        );
        assert!(buf.is_empty());
    }
}
