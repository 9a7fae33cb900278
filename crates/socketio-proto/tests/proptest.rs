//! Property tests of both parsers: packets round-trip, arbitrary input never panics.

#![allow(clippy::unwrap_used)] // strategies unwrap what they built themselves

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use socketio_proto::{json, msgpack, Data, Limits, Packet, PacketType, Str};

fn nsp() -> impl Strategy<Value = String> {
    prop_oneof![Just("/".to_owned()), "/[a-z]{1,8}"]
}

/// A JSON event payload: a non-reserved name and some simple arguments.
fn event_json() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9_]{0,10}",
        proptest::collection::vec(
            prop_oneof![
                any::<i32>().prop_map(|n| n.to_string()),
                "[a-zA-Z0-9 é€]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
                Just("null".to_owned()),
                Just("{\"a\":[1,2,{\"b\":true}]}".to_owned()),
            ],
            0..4,
        ),
    )
        .prop_filter("not reserved", |(name, _)| {
            !socketio_proto::RESERVED_EVENTS.contains(&name.as_str())
        })
        .prop_map(|(name, args)| {
            let mut parts = vec![serde_json::to_string(&name).unwrap()];
            parts.extend(args);
            format!("[{}]", parts.join(","))
        })
}

proptest! {
    /// Events and acks encode to text and decode to the same packet.
    #[test]
    fn json_round_trip(nsp in nsp(), id in proptest::option::of(0u64..1_000_000_000_000), payload in event_json(), ack in any::<bool>()) {
        let packet = Packet {
            kind: if ack { PacketType::Ack } else { PacketType::Event },
            nsp: Str::from(nsp),
            id,
            data: Data::Json(Bytes::from(payload)),
        };
        let (text, attachments) = json::encode(&packet);
        prop_assert!(attachments.is_empty());
        let mut decoder = json::Decoder::default();
        let back = decoder.text(text).unwrap().unwrap();
        prop_assert_eq!(back, packet);
    }

    /// Binary events with any number of attachments (within the limit) reassemble.
    #[test]
    fn json_binary_round_trip(nsp in nsp(), blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..10)) {
        let placeholders: Vec<String> = (0..blobs.len())
            .map(|i| format!(r#"{{"_placeholder":true,"num":{i}}}"#))
            .collect();
        let json = format!(r#"["file",{}]"#, placeholders.join(","));
        let attachments: Vec<Bytes> = blobs.into_iter().map(Bytes::from).collect();
        let packet = Packet {
            kind: PacketType::BinaryEvent,
            nsp: Str::from(nsp),
            id: None,
            data: Data::JsonBinary { json: Bytes::from(json), attachments: attachments.clone() },
        };
        let (text, out) = json::encode(&packet);
        prop_assert_eq!(&out, &attachments);
        let mut decoder = json::Decoder::default();
        prop_assert_eq!(decoder.text(text).unwrap(), None);
        let mut result = None;
        for a in out {
            result = decoder.binary(a).unwrap();
        }
        prop_assert_eq!(result, Some(packet));
    }

    /// Msgpack envelopes round-trip for every type and namespace.
    #[test]
    fn msgpack_round_trip(nsp in nsp(), id in proptest::option::of(any::<u64>()), name in "[a-z]{1,10}", arg in any::<u8>()) {
        prop_assume!(!socketio_proto::RESERVED_EVENTS.contains(&name.as_str()));
        let mut data = BytesMut::new();
        data.extend_from_slice(&[0x92]);
        msgpack::write_str(&mut data, &name);
        msgpack::write_uint(&mut data, u64::from(arg));
        let wire = msgpack::encode(PacketType::Event, &nsp, id, Some(&data));
        let p = msgpack::decode(wire).unwrap();
        prop_assert_eq!(p.kind, PacketType::Event);
        prop_assert_eq!(p.nsp.as_str(), nsp.as_str());
        prop_assert_eq!(p.id, id);
        let event = p.event_name().unwrap();
        prop_assert_eq!(event.as_str(), name.as_str());
        prop_assert_eq!(p.data, Data::Msgpack(data.freeze()));
    }

    /// Arbitrary text and binary messages give packets or errors, never a panic.
    #[test]
    fn json_arbitrary_input(messages in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..8)) {
        let mut decoder = json::Decoder::new(Limits { max_attachments: 3, max_attachment_bytes: 100 });
        for (binary, bytes) in messages {
            let bytes = Bytes::from(bytes);
            let _ = if binary { decoder.binary(bytes) } else { decoder.text(bytes) };
        }
    }

    /// Arbitrary bytes as msgpack give a packet or an error, never a panic.
    #[test]
    fn msgpack_arbitrary_input(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = msgpack::decode(Bytes::from(bytes));
    }
}
