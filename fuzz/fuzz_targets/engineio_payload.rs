//! Decodes arbitrary bytes as an Engine.IO polling payload and as one text packet. Every
//! packet that decodes must encode back to a record that decodes to the same packet.
#![no_main]

use bytes::{Bytes, BytesMut};
use engineio_proto::{payload, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    for packet in payload::decode(&body).flatten() {
        let mut out = BytesMut::new();
        packet.encode_record(&mut out);
        let back = Packet::decode_record(out.freeze()).expect("re-encoded record decodes");
        assert_eq!(back, packet);
    }
    let _ = Packet::decode_text(body);
});
