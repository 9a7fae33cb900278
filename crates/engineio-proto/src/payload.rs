//! Long-polling payloads: records joined by the ASCII record separator `\x1e`
//! (`PROTOCOL.md` §1.5).

use bytes::{BufMut, Bytes, BytesMut};

use crate::{DecodeError, Packet};

/// The record separator.
pub const SEPARATOR: u8 = 0x1e;

/// Decodes a payload into its packets, sharing the body's bytes.
///
/// The body as a whole must be UTF-8 (binary travels as base64); a body that is not
/// yields a single [`DecodeError::Utf8`].
pub fn decode(body: &Bytes) -> impl Iterator<Item = Result<Packet, DecodeError>> + '_ {
    let utf8 = std::str::from_utf8(body).is_ok();
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        if !utf8 {
            done = true;
            return Some(Err(DecodeError::Utf8));
        }
        let end = body[start..]
            .iter()
            .position(|&b| b == SEPARATOR)
            .map_or(body.len(), |p| start + p);
        let record = body.slice(start..end);
        if end == body.len() {
            done = true;
        }
        start = end + 1;
        Some(Packet::decode_record(record))
    })
}

/// Appends a text record (a type digit and its data, already encoded) to a payload.
pub fn push_text(dst: &mut BytesMut, record: &[u8]) {
    if !dst.is_empty() {
        dst.put_u8(SEPARATOR);
    }
    dst.put_slice(record);
}

/// Appends a binary message to a payload as `b` + base64.
pub fn push_binary(dst: &mut BytesMut, data: &[u8]) {
    if !dst.is_empty() {
        dst.put_u8(SEPARATOR);
    }
    crate::packet::encode_binary_record(data, dst);
}

/// Encodes packets into one payload.
pub fn encode<'a>(packets: impl IntoIterator<Item = &'a Packet>) -> Bytes {
    let mut dst = BytesMut::new();
    for p in packets {
        if !dst.is_empty() {
            dst.put_u8(SEPARATOR);
        }
        p.encode_record(&mut dst);
    }
    dst.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The example of the spec: text, then binary.
    #[test]
    fn spec_example() {
        let body = Bytes::from_static(b"4hello\x1ebAQIDBA==");
        let got: Vec<_> = decode(&body).collect();
        assert_eq!(
            got,
            vec![
                Ok(Packet::Message("hello".into())),
                Ok(Packet::Binary(vec![1, 2, 3, 4].into()))
            ]
        );
        assert_eq!(
            encode(&[
                Packet::Message("hello".into()),
                Packet::Binary(vec![1, 2, 3, 4].into())
            ]),
            body
        );
    }

    /// Empty bodies and empty records are errors; so is a body that is not UTF-8.
    #[test]
    fn bad_payloads() {
        let empty = Bytes::new();
        assert_eq!(
            decode(&empty).collect::<Vec<_>>(),
            vec![Err(DecodeError::Empty)]
        );
        let body = Bytes::from_static(b"4a\x1e\x1e4b");
        assert_eq!(decode(&body).nth(1), Some(Err(DecodeError::Empty)));
        let body = Bytes::from_static(b"4\xff");
        assert_eq!(
            decode(&body).collect::<Vec<_>>(),
            vec![Err(DecodeError::Utf8)]
        );
    }

    fn packet() -> impl Strategy<Value = Packet> {
        prop_oneof![
            "[^\u{1e}]*".prop_map(|s| Packet::Message(s.into())),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|v| Packet::Binary(v.into())),
            Just(Packet::Close),
            Just(Packet::Noop),
            "[a-z]*".prop_map(|s| Packet::Ping(s.into())),
        ]
    }

    proptest! {
        /// Any list of packets without separators in their text survives a round trip.
        #[test]
        fn round_trip(packets in proptest::collection::vec(packet(), 1..8)) {
            let body = encode(&packets);
            let back: Vec<Packet> = decode(&body).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(back, packets);
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn no_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let body = Bytes::from(body);
            for _ in decode(&body) {}
        }
    }
}
