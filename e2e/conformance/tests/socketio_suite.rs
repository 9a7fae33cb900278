//! Every case of the official Socket.IO v5 protocol test suite (socketio/socket.io-protocol,
//! `test-suite/`), written for this project, over real sockets against the real
//! `conformance` binary on `/socket.io/`; and the same cases with the msgpack parser.

#![allow(clippy::unwrap_used)] // helpers unwrap what the test set up

mod support;

use std::time::Duration;

use support::{sid_of, Got, Server, Ws};

fn server() -> Server {
    Server::start_with(&[], "/socket.io/")
}

async fn engine_ws(server: &Server) -> Ws {
    let mut ws = server.ws("").await;
    assert!(matches!(ws.recv().await, Got::Text(t) if t.starts_with('0')));
    ws
}

/// A WebSocket connected to the main namespace, its auth event read.
async fn sio_ws(server: &Server) -> Ws {
    let mut ws = engine_ws(server).await;
    ws.text("40").await;
    assert!(matches!(ws.recv().await, Got::Text(t) if t.starts_with("40{")));
    assert_eq!(ws.recv().await, Got::Text(r#"42["auth",{}]"#.into()));
    ws
}

fn connect_sid(reply: &str, prefix: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(reply.strip_prefix(prefix).unwrap()).unwrap();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["sid"]);
    json["sid"].as_str().unwrap().to_owned()
}

// --- Engine.IO checks of the suite, on /socket.io/ ---

/// Handshake over polling on `/socket.io/`.
#[tokio::test]
async fn engine_handshake_polling() {
    let server = server();
    let res = server.get(None).await;
    assert_eq!(res.status, 200);
    let json: serde_json::Value = serde_json::from_str(&res.body[1..]).unwrap();
    assert_eq!(json["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(
        (json["pingInterval"].as_u64(), json["pingTimeout"].as_u64()),
        (Some(300), Some(200))
    );
    assert_eq!(json["maxPayload"], 1_000_000);
}

/// Handshake errors on `/socket.io/`: bad EIO, bad transport, bad method.
#[tokio::test]
async fn engine_handshake_errors() {
    let server = server();
    assert_eq!(
        server.request("GET", "transport=polling", b"").await.status,
        400
    );
    assert_eq!(
        server
            .request("GET", "EIO=4&transport=abc", b"")
            .await
            .status,
        400
    );
    assert_eq!(
        server
            .request("POST", "EIO=4&transport=polling", b"")
            .await
            .status,
        400
    );
    assert!(server
        .ws_query("EIO=abc&transport=websocket")
        .await
        .is_err());
}

/// Heartbeat on `/socket.io/` over polling: pings answered keep the session; a silent one
/// is closed.
#[tokio::test]
async fn engine_heartbeat() {
    let server = server();
    let sid = server.open_polling().await;
    for _ in 0..2 {
        assert_eq!(server.get(Some(&sid)).await.body, "2");
        assert_eq!(server.post(&sid, b"3").await.status, 200);
    }
    let silent = server.open_polling().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.get(Some(&silent)).await.status, 400);
}

/// Heartbeat on `/socket.io/` over WebSocket: three pings answered; a session that does
/// not answer (nor joins a namespace) is closed.
#[tokio::test]
async fn engine_websocket_heartbeat() {
    let server = server();
    let mut ws = engine_ws(&server).await;
    for _ in 0..3 {
        assert_eq!(ws.recv().await, Got::Text("2".into()));
        ws.text("3").await;
    }
    let mut silent = engine_ws(&server).await;
    assert!(matches!(
        silent.closed_without_pongs().await,
        Got::Close(_) | Got::Eof
    ));
}

/// Close on `/socket.io/`: over polling a `1` releases the pending GET with a noop and
/// the session is gone; over WebSocket a `1` closes the connection.
#[tokio::test]
async fn engine_close() {
    let server = server();
    let sid = server.open_polling().await;
    let poll = server.get(Some(&sid));
    let close = async {
        // The suite sends both at once, the GET first; the pause keeps that order here
        // (the server is another process: its pending GET cannot be observed).
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.post(&sid, b"1").await
    };
    let (poll, close) = support::within(async { tokio::join!(poll, close) }).await;
    assert_eq!(close.status, 200);
    assert_eq!((poll.status, poll.body.as_str()), (200, "6"));
    assert_eq!(server.get(Some(&sid)).await.status, 400);
    let mut ws = engine_ws(&server).await;
    ws.text("1").await;
    assert_eq!(ws.closed().await, Got::Close(1000));
}

/// Upgrade on `/socket.io/`, then polling is refused and a second WebSocket is
/// accepted and closed at once (as the Node server does); the first goes on.
#[tokio::test]
async fn engine_upgrade() {
    let server = server();
    let sid = server.open_polling().await;
    let mut ws = server.ws(&format!("&sid={sid}")).await;
    ws.text("2probe").await;
    assert_eq!(ws.recv().await, Got::Text("3probe".into()));
    ws.text("5").await;
    assert_eq!(ws.recv().await, Got::Text("6".into()));
    assert_eq!(server.get(Some(&sid)).await.status, 400);
    let mut second = server
        .ws_query(&format!("EIO=4&transport=websocket&sid={sid}"))
        .await
        .expect("accepted, then closed");
    assert_eq!(second.recv().await, Got::Close(1005));
    ws.text("40").await;
    let Got::Text(reply) = ws.recv_skipping_pings().await else {
        panic!()
    };
    connect_sid(&reply, "40");
}

// --- connect ---

/// CONNECT to `/`: the reply holds only `sid`, then `auth` echoes `{}`.
#[tokio::test]
async fn connect_main_namespace() {
    let server = server();
    let mut ws = engine_ws(&server).await;
    ws.text("40").await;
    let Got::Text(reply) = ws.recv().await else {
        panic!()
    };
    assert_eq!(connect_sid(&reply, "40").len(), 20);
    assert_eq!(ws.recv().await, Got::Text(r#"42["auth",{}]"#.into()));
}

/// CONNECT to `/` with a payload: `auth` echoes it.
#[tokio::test]
async fn connect_main_namespace_with_payload() {
    let server = server();
    let mut ws = engine_ws(&server).await;
    ws.text(r#"40{"token":"123"}"#).await;
    let Got::Text(reply) = ws.recv().await else {
        panic!()
    };
    connect_sid(&reply, "40");
    assert_eq!(
        ws.recv().await,
        Got::Text(r#"42["auth",{"token":"123"}]"#.into())
    );
}

/// The CONNECT payload keeps its key order when handed to handlers and echoed (a relay
/// must not reorder a user's object), nested objects included.
#[tokio::test]
async fn connect_payload_keeps_key_order() {
    let server = server();
    let mut ws = engine_ws(&server).await;
    let payload = r#"{"token":"abc","n":1,"z":{"b":2,"a":[{"y":1,"x":0}]},"a":null}"#;
    ws.text(&format!("40{payload}")).await;
    let Got::Text(reply) = ws.recv().await else {
        panic!()
    };
    connect_sid(&reply, "40");
    assert_eq!(
        ws.recv().await,
        Got::Text(format!(r#"42["auth",{payload}]"#))
    );
}

/// The CONNECT reply goes out in a write of its own, and what the connect handler
/// sends follows later, as from the Node server: the official suite's client takes all
/// the messages of one read at once while it waits for them one at a time, and misses
/// `auth` when it comes in the reply's read. (Timing on loopback: most connects, not
/// necessarily all on a loaded machine, see the reply alone; written together, as they
/// were, none does: they go out in one write.)
#[tokio::test]
async fn connect_reply_is_written_alone() {
    let server = server();
    let mut alone = 0;
    for _ in 0..10 {
        let mut ws = engine_ws(&server).await;
        ws.text("40").await;
        assert!(matches!(ws.recv().await, Got::Text(t) if t.starts_with("40{")));
        if ws.buffered() == 0 {
            alone += 1;
        }
        assert_eq!(ws.recv().await, Got::Text(r#"42["auth",{}]"#.into()));
    }
    assert!(alone >= 3, "the reply came alone in {alone} of 10 connects");
}

/// CONNECT to `/custom`.
#[tokio::test]
async fn connect_custom_namespace() {
    let server = server();
    let mut ws = engine_ws(&server).await;
    ws.text("40/custom,").await;
    let Got::Text(reply) = ws.recv().await else {
        panic!()
    };
    connect_sid(&reply, "40/custom,");
    assert_eq!(
        ws.recv().await,
        Got::Text(r#"42/custom,["auth",{}]"#.into())
    );
}

/// CONNECT to `/custom` with a payload.
#[tokio::test]
async fn connect_custom_namespace_with_payload() {
    let server = server();
    let mut ws = engine_ws(&server).await;
    ws.text(r#"40/custom,{"token":"abc"}"#).await;
    let Got::Text(reply) = ws.recv().await else {
        panic!()
    };
    connect_sid(&reply, "40/custom,");
    assert_eq!(
        ws.recv().await,
        Got::Text(r#"42/custom,["auth",{"token":"abc"}]"#.into())
    );
}

/// CONNECT to an unknown namespace: refused with `Invalid namespace`.
#[tokio::test]
async fn connect_unknown_namespace() {
    let server = server();
    let mut ws = engine_ws(&server).await;
    ws.text("40/random").await;
    assert_eq!(
        ws.recv().await,
        Got::Text(r#"44/random,{"message":"Invalid namespace"}"#.into())
    );
}

/// An invalid handshake packet closes the connection.
#[tokio::test]
async fn connect_invalid_handshake() {
    let server = server();
    let mut ws = engine_ws(&server).await;
    ws.text("4abc").await;
    assert_eq!(ws.closed().await, Got::Close(1000));
    assert_eq!(ws.close_reason(), Some("parse error"));
}

/// No namespace joined within the connect timeout (1 s): the connection is closed.
#[tokio::test]
async fn connect_timeout() {
    let server = server();
    let mut ws = engine_ws(&server).await;
    let started = tokio::time::Instant::now();
    loop {
        match ws.recv().await {
            Got::Text(t) if t == "2" => ws.text("3").await,
            Got::Close(_) | Got::Eof => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
}

// --- disconnect ---

/// DISCONNECT from `/`: the namespace is left, the connection stays and keeps pinging.
#[tokio::test]
async fn disconnect_main_namespace() {
    let server = server();
    let mut ws = sio_ws(&server).await;
    ws.text("41").await;
    assert_eq!(ws.recv().await, Got::Text("2".into()));
    ws.text("3").await;
    // A packet for the namespace left is a protocol error now.
    ws.text(r#"42["message","x"]"#).await;
    assert_eq!(ws.closed().await, Got::Close(1000));
    assert_eq!(ws.close_reason(), Some("parse error"));
}

/// CONNECT then DISCONNECT `/custom`; the main namespace still answers.
#[tokio::test]
async fn connect_then_disconnect_custom_namespace() {
    let server = server();
    let mut ws = sio_ws(&server).await;
    ws.text("40/custom").await;
    let Got::Text(reply) = ws.recv().await else {
        panic!()
    };
    assert!(reply.starts_with("40/custom,"));
    assert_eq!(
        ws.recv().await,
        Got::Text(r#"42/custom,["auth",{}]"#.into())
    );
    ws.text("41/custom").await;
    ws.text(r#"42["message","message to main namespace"]"#)
        .await;
    assert_eq!(
        ws.recv_skipping_pings().await,
        Got::Text(r#"42["message-back","message to main namespace"]"#.into())
    );
}

// --- message ---

/// A plain-text event is answered with `message-back` and the same arguments.
#[tokio::test]
async fn message_plain_text() {
    let server = server();
    let mut ws = sio_ws(&server).await;
    ws.text(r#"42["message",1,"2",{"3":[true]}]"#).await;
    assert_eq!(
        ws.recv_skipping_pings().await,
        Got::Text(r#"42["message-back",1,"2",{"3":[true]}]"#.into())
    );
}

/// An event with binary attachments comes back with the same attachments.
#[tokio::test]
async fn message_binary_attachments() {
    let server = server();
    let mut ws = sio_ws(&server).await;
    ws.text(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    ws.binary(&[1, 2, 3]).await;
    ws.binary(&[4, 5, 6]).await;
    assert_eq!(
        ws.recv_skipping_pings().await,
        Got::Text(
            r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
                .into()
        )
    );
    assert_eq!(ws.recv_skipping_pings().await, Got::Binary(vec![1, 2, 3]));
    assert_eq!(ws.recv_skipping_pings().await, Got::Binary(vec![4, 5, 6]));
}

/// A plain-text event with an ack id is acknowledged with its arguments.
#[tokio::test]
async fn message_with_ack() {
    let server = server();
    let mut ws = sio_ws(&server).await;
    ws.text(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#)
        .await;
    assert_eq!(
        ws.recv_skipping_pings().await,
        Got::Text(r#"43456[1,"2",{"3":[false]}]"#.into())
    );
}

/// An event with attachments and an ack id is acknowledged with a binary ack.
#[tokio::test]
async fn message_binary_with_ack() {
    let server = server();
    let mut ws = sio_ws(&server).await;
    ws.text(r#"452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    ws.binary(&[1, 2, 3]).await;
    ws.binary(&[4, 5, 6]).await;
    assert_eq!(
        ws.recv_skipping_pings().await,
        Got::Text(r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#.into())
    );
    assert_eq!(ws.recv_skipping_pings().await, Got::Binary(vec![1, 2, 3]));
    assert_eq!(ws.recv_skipping_pings().await, Got::Binary(vec![4, 5, 6]));
}

/// Invalid formats close the connection: unknown packet type, invalid payload, bad ack id.
#[tokio::test]
async fn message_invalid_formats_close() {
    let server = server();
    for bad in [
        "4abc",
        "42{}",
        r#"42abc["message-with-ack",1,"2",{"3":[false]}]"#,
    ] {
        let mut ws = sio_ws(&server).await;
        ws.text(bad).await;
        assert_eq!(ws.closed().await, Got::Close(1000), "{bad}");
        assert_eq!(ws.close_reason(), Some("parse error"), "{bad}");
    }
}

/// Over polling: connect, `auth`, and an event answered in the next poll.
#[tokio::test]
async fn polling_connect_and_message() {
    let server = server();
    let sid = server.open_polling().await;
    assert_eq!(server.post(&sid, b"40").await.body, "ok");
    let res = server.get(Some(&sid)).await;
    let mut records = res.body.split('\x1e');
    let reply = records.next().unwrap();
    assert!(reply.starts_with("40{\"sid\":"), "{reply}");
    let rest: Vec<&str> = records.collect();
    let auth = if rest.is_empty() {
        server.get(Some(&sid)).await.body
    } else {
        rest.join("\x1e")
    };
    assert_eq!(auth, r#"42["auth",{}]"#);
    assert_eq!(
        server
            .post(&sid, br#"42["message","over polling"]"#)
            .await
            .status,
        200
    );
    let res = server.get(Some(&sid)).await;
    assert_eq!(res.body, r#"42["message-back","over polling"]"#);
    let _ = sid_of(&format!("0{{\"sid\":\"{sid}\"}}"));
}

// --- msgpack parser ---

fn mp_str(s: &str) -> Vec<u8> {
    let mut out = vec![0xa0 | s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A msgpack packet `{type, data?, id?, nsp}` built by hand, as the npm client sends it.
fn mp_packet(kind: u8, nsp: &str, data: Option<&[u8]>, id: Option<u8>) -> Vec<u8> {
    let pairs = 2 + u8::from(data.is_some()) + u8::from(id.is_some());
    let mut out = vec![0x80 | pairs];
    out.extend(mp_str("type"));
    out.push(kind);
    if let Some(data) = data {
        out.extend(mp_str("data"));
        out.extend_from_slice(data);
    }
    if let Some(id) = id {
        out.extend(mp_str("id"));
        out.push(id);
    }
    out.extend(mp_str("nsp"));
    out.extend(mp_str(nsp));
    out
}

fn decode_mp(bytes: &[u8]) -> socketio_proto::Packet {
    socketio_proto::msgpack::decode(bytes::Bytes::copy_from_slice(bytes)).unwrap()
}

/// Msgpack parser: CONNECT (with `data: undefined`, as the client sends it), the reply,
/// `auth`, an echoed event with binary, an ack, and a refused namespace.
#[tokio::test]
async fn msgpack_parser() {
    let server = Server::start_with(&["--parser", "msgpack"], "/socket.io/");
    let mut ws = engine_ws(&server).await;
    ws.binary(&mp_packet(0, "/", Some(&[0xd4, 0x00, 0x00]), None))
        .await;
    let Got::Binary(reply) = ws.recv().await else {
        panic!("expected a binary CONNECT reply")
    };
    let reply = decode_mp(&reply);
    assert_eq!(reply.kind, socketio_proto::PacketType::Connect);
    let Got::Binary(auth) = ws.recv().await else {
        panic!()
    };
    assert_eq!(decode_mp(&auth).event_name().unwrap(), "auth");

    // ["message", 1, <bin 01 02 03>]
    let mut data = vec![0x93];
    data.extend(mp_str("message"));
    data.push(0x01);
    data.extend([0xc4, 0x03, 1, 2, 3]);
    ws.binary(&mp_packet(2, "/", Some(&data), None)).await;
    let Got::Binary(back) = ws.recv_skipping_pings().await else {
        panic!()
    };
    let back = decode_mp(&back);
    assert_eq!(back.event_name().unwrap(), "message-back");
    let socketio_proto::Data::Msgpack(raw) = &back.data else {
        panic!()
    };
    let mut expected = vec![0x93];
    expected.extend(mp_str("message-back"));
    expected.push(0x01);
    expected.extend([0xc4, 0x03, 1, 2, 3]);
    assert_eq!(&raw[..], &expected[..]);

    // ["message-with-ack", "x"] with id 7 → ack 7 ["x"]
    let mut data = vec![0x92];
    data.extend(mp_str("message-with-ack"));
    data.extend(mp_str("x"));
    ws.binary(&mp_packet(2, "/", Some(&data), Some(7))).await;
    let Got::Binary(ack) = ws.recv_skipping_pings().await else {
        panic!()
    };
    let ack = decode_mp(&ack);
    assert_eq!(
        (ack.kind, ack.id),
        (socketio_proto::PacketType::Ack, Some(7))
    );

    ws.binary(&mp_packet(0, "/random", None, None)).await;
    let Got::Binary(refused) = ws.recv_skipping_pings().await else {
        panic!()
    };
    let refused = decode_mp(&refused);
    assert_eq!(
        (refused.kind, refused.nsp.as_str()),
        (socketio_proto::PacketType::ConnectError, "/random")
    );

    // A text frame is not a msgpack packet: the connection is closed.
    ws.text("40").await;
    assert_eq!(ws.closed().await, Got::Close(1000));
    assert_eq!(ws.close_reason(), Some("parse error"));
}
