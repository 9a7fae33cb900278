//! Decodes arbitrary bytes as a msgpack packet; what decodes must re-encode to a packet
//! that decodes the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use socketio_proto::{msgpack, Data};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = msgpack::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let raw = match &packet.data {
        Data::Msgpack(raw) => Some(&raw[..]),
        _ => None,
    };
    let wire = msgpack::encode(packet.kind, packet.nsp.as_str(), packet.id, raw);
    let back = msgpack::decode(wire).expect("re-encoded packet decodes");
    assert_eq!(back, packet);
    let _ = packet.event_name();
});
