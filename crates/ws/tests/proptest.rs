//! Property tests of the codec: any message, fragmented any way and delivered in chunks of
//! any size, decodes to itself; arbitrary bytes never panic the decoder.

use bytes::BytesMut;
use proptest::prelude::*;
use ws::{Decoder, Frame, Message, OpCode, Role};

/// One message to send: text or binary, split into fragments at these cut points, with a
/// ping after the first fragment or not.
#[derive(Debug, Clone)]
struct Case {
    text: bool,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    ping_between: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        prop_oneof![
            ".{0,40}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..300),
        ],
        proptest::collection::vec(any::<usize>(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(text, payload, cuts, ping_between)| {
            let payload = if text {
                String::from_utf8_lossy(&payload).into_owned().into_bytes()
            } else {
                payload
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (payload.len() + 1)).collect();
            cuts.sort_unstable();
            Case {
                text,
                payload,
                cuts,
                ping_between,
            }
        })
}

fn encode(case: &Case, role: Role, wire: &mut Vec<u8>, expected: &mut Vec<Message>) {
    let mask = match role {
        Role::Client => Some([0x12, 0x34, 0x56, 0x78]),
        Role::Server => None,
    };
    let mut bounds = vec![0];
    bounds.extend(&case.cuts);
    bounds.push(case.payload.len());
    let pieces: Vec<&[u8]> = bounds
        .windows(2)
        .map(|w| &case.payload[w[0]..w[1]])
        .collect();
    let first_op = if case.text {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    let whole = if case.text {
        Message::Text(case.payload.clone().into())
    } else {
        Message::Binary(case.payload.clone().into())
    };
    for (i, piece) in pieces.iter().enumerate() {
        let op = if i == 0 {
            first_op
        } else {
            OpCode::Continuation
        };
        let fin = i == pieces.len() - 1;
        wire.extend_from_slice(Frame::fragment(op, piece, fin, mask).as_bytes());
        if fin {
            expected.push(whole.clone());
        }
        if i == 0 && case.ping_between {
            wire.extend_from_slice(Frame::fragment(OpCode::Ping, b"pi", true, mask).as_bytes());
            expected.push(Message::Ping("pi".into()));
        }
    }
}

proptest! {
    /// Client-encoded messages decode in the server role (and server-encoded ones in the
    /// client role) whatever the fragmentation and the read sizes.
    #[test]
    fn round_trip(cases in proptest::collection::vec(case(), 1..5), chunk in 1usize..64, client in any::<bool>()) {
        let (send_role, recv_role) = if client { (Role::Client, Role::Server) } else { (Role::Server, Role::Client) };
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for c in &cases {
            encode(c, send_role, &mut wire, &mut expected);
        }
        let mut decoder = Decoder::new(recv_role, 1 << 16);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(m) = decoder.decode(&mut buf).expect("valid stream") {
                got.push(m);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert!(!decoder.in_message());
        prop_assert_eq!(got, expected);
    }

    /// Arbitrary bytes give messages or an error, never a panic, in both roles.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), server in any::<bool>()) {
        let role = if server { Role::Server } else { Role::Client };
        let mut decoder = Decoder::new(role, 1024);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
    }

    /// Text that is not UTF-8 is always refused with close code 1007.
    #[test]
    fn invalid_utf8_is_refused(prefix in ".{0,10}", cut in 0usize..12) {
        let mut payload = prefix.into_bytes();
        payload.push(0xff);
        let cut = cut.min(payload.len());
        let key = Some([1, 2, 3, 4]);
        let mut wire = Vec::new();
        wire.extend_from_slice(Frame::fragment(OpCode::Text, &payload[..cut], false, key).as_bytes());
        wire.extend_from_slice(Frame::fragment(OpCode::Continuation, &payload[cut..], true, key).as_bytes());
        let mut decoder = Decoder::new(Role::Server, 1024);
        let mut buf = BytesMut::from(&wire[..]);
        let err = match decoder.decode(&mut buf) {
            Ok(m) => panic!("accepted {m:?}"),
            Err(e) => e,
        };
        prop_assert_eq!(err.close_code(), ws::CloseCode::INVALID_DATA);
    }
}
