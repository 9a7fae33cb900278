//! Feeds a sequence of text and binary messages to the default-parser decoder. Input:
//! records of [kind byte][length byte][bytes]; kind's low bit picks text or binary.
//! Every packet that decodes must encode back to text that decodes to the same packet.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use socketio_proto::{json, Limits};

const LIMITS: Limits = Limits {
    max_attachments: 4,
    max_attachment_bytes: 1024,
};

fuzz_target!(|data: &[u8]| {
    let mut decoder = json::Decoder::new(LIMITS);
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let bytes = Bytes::copy_from_slice(chunk);
        let result = if kind & 1 == 0 {
            if std::str::from_utf8(chunk).is_err() {
                continue; // the WebSocket layer only passes UTF-8 text
            }
            decoder.text(bytes)
        } else {
            decoder.binary(bytes)
        };
        match result {
            Ok(Some(packet)) => {
                let (text, attachments) = json::encode(&packet);
                let mut again = json::Decoder::new(LIMITS);
                let mut back = again.text(text).expect("re-encoded text decodes");
                for a in attachments {
                    back = again.binary(a).expect("re-encoded attachment decodes");
                }
                assert_eq!(back.as_ref(), Some(&packet));
                let _ = packet.event_name();
            }
            Ok(None) => {}
            Err(_) => decoder = json::Decoder::new(LIMITS),
        }
    }
});
