//! Feeds arbitrary bytes, in arbitrary chunks, to the WebSocket decoder in both roles.
//! The first byte picks the role and the chunk size. The decoder must return messages or
//! an error, never panic, and never accept a text message that is not UTF-8.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ws::{Decoder, Message, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 { Role::Server } else { Role::Client };
    let chunk = usize::from(control >> 1).max(1);
    let mut decoder = Decoder::new(role, 4096);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Message::Text(t))) => assert!(std::str::from_utf8(&t).is_ok()),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
