//! Every case of the official Engine.IO v4 protocol test suite (socketio/engine.io-protocol,
//! `test-suite/`), written for this project, over real sockets against the real
//! `conformance` binary (ping interval 300 ms, ping timeout 200 ms, max payload 1,000,000).

#![allow(clippy::unwrap_used)] // helpers unwrap what the test set up

mod support;

use std::time::Duration;

use support::{sid_of, within, Got, Server};

const PING_INTERVAL: u64 = 300;
const PING_TIMEOUT: u64 = 200;

fn check_open_packet(open: &str, upgrades: &[&str]) {
    let json: serde_json::Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    let mut keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert_eq!(json["sid"].as_str().unwrap().len(), 20);
    assert_eq!(json["upgrades"], serde_json::json!(upgrades));
    assert_eq!(json["pingInterval"], PING_INTERVAL);
    assert_eq!(json["pingTimeout"], PING_TIMEOUT);
    assert_eq!(json["maxPayload"], 1_000_000);
}

/// Handshake over polling: 200 and an open packet with exactly the spec's keys.
#[tokio::test]
async fn handshake_polling_opens_a_session() {
    let server = Server::start();
    let res = server.get(None).await;
    assert_eq!(res.status, 200);
    assert!(res
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    check_open_packet(&res.body, &["websocket"]);
}

/// Handshake over polling with a missing or invalid `EIO`: 400.
#[tokio::test]
async fn handshake_polling_invalid_eio() {
    let server = Server::start();
    for query in [
        "transport=polling",
        "EIO=abc&transport=polling",
        "EIO=3&transport=polling",
    ] {
        let res = server.request("GET", query, b"").await;
        assert_eq!(res.status, 400, "{query}");
        assert_eq!(res.error_code(), 5, "{query}");
    }
}

/// Handshake over polling with a missing or invalid `transport`: 400.
#[tokio::test]
async fn handshake_polling_invalid_transport() {
    let server = Server::start();
    for query in ["EIO=4", "EIO=4&transport=abc"] {
        let res = server.request("GET", query, b"").await;
        assert_eq!(res.status, 400, "{query}");
        assert_eq!(res.error_code(), 0, "{query}");
    }
}

/// Handshake with another method than GET: 400.
#[tokio::test]
async fn handshake_polling_invalid_method() {
    let server = Server::start();
    for method in ["POST", "PUT"] {
        let res = server.request(method, "EIO=4&transport=polling", b"").await;
        assert_eq!(res.status, 400, "{method}");
        assert_eq!(res.error_code(), 2, "{method}");
    }
}

/// Handshake over WebSocket: the first frame is the open packet, with no upgrades.
#[tokio::test]
async fn handshake_websocket_opens_a_session() {
    let server = Server::start();
    let mut ws = server.ws("").await;
    let Got::Text(open) = ws.recv().await else {
        panic!("expected the open packet")
    };
    check_open_packet(&open, &[]);
}

/// WebSocket handshake with a missing or invalid `EIO`: refused.
#[tokio::test]
async fn handshake_websocket_invalid_eio() {
    let server = Server::start();
    for query in ["transport=websocket", "EIO=abc&transport=websocket"] {
        let refused = server.ws_query(query).await.err().expect("refused");
        assert_eq!(refused.status, 400, "{query}");
    }
}

/// WebSocket handshake with a missing or invalid `transport`: refused.
#[tokio::test]
async fn handshake_websocket_invalid_transport() {
    let server = Server::start();
    for query in ["EIO=4", "EIO=4&transport=abc"] {
        let refused = server.ws_query(query).await.err().expect("refused");
        assert_eq!(refused.status, 400, "{query}");
    }
}

/// Polling: one text packet is echoed.
#[tokio::test]
async fn message_polling_one_text_packet() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let res = server.post(&sid, b"4hello").await;
    assert_eq!((res.status, res.body.as_str()), (200, "ok"));
    let res = server.get(Some(&sid)).await;
    assert_eq!((res.status, res.body.as_str()), (200, "4hello"));
}

/// Polling: several text packets in one payload are echoed in one payload, in order.
#[tokio::test]
async fn message_polling_several_text_packets() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let res = server.post(&sid, b"4test1\x1e4test2\x1e4test3").await;
    assert_eq!((res.status, res.body.as_str()), (200, "ok"));
    let res = server.get(Some(&sid)).await;
    assert_eq!(res.body, "4test1\x1e4test2\x1e4test3");
}

/// Polling: text and base64 binary packets are echoed as sent.
#[tokio::test]
async fn message_polling_text_and_binary() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let res = server.post(&sid, b"4hello\x1ebAQIDBA==").await;
    assert_eq!((res.status, res.body.as_str()), (200, "ok"));
    let res = server.get(Some(&sid)).await;
    assert_eq!(res.body, "4hello\x1ebAQIDBA==");
}

/// Polling: a payload that is not a packet closes the session.
#[tokio::test]
async fn message_polling_invalid_packet_closes() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let res = server.post(&sid, b"abc").await;
    assert_eq!(res.status, 400);
    let res = server.get(Some(&sid)).await;
    assert_eq!(res.status, 400);
}

/// Polling: a second concurrent GET closes the session; the pending one gets `1`.
#[tokio::test]
async fn message_polling_duplicate_get_closes() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let first = server.get(Some(&sid));
    let second = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        server
            .request(
                "GET",
                &format!("EIO=4&transport=polling&sid={sid}&t=burst"),
                b"",
            )
            .await
    };
    let (first, second) = within(async { tokio::join!(first, second) }).await;
    assert_eq!((first.status, first.body.as_str()), (200, "1"));
    assert_eq!(second.status, 400);
    assert_eq!(server.get(Some(&sid)).await.status, 400);
}

/// WebSocket: a text packet is echoed.
#[tokio::test]
async fn message_websocket_text() {
    let server = Server::start();
    let mut ws = server.ws("").await;
    ws.recv().await;
    ws.text("4hello").await;
    assert_eq!(ws.recv_skipping_pings().await, Got::Text("4hello".into()));
}

/// WebSocket: a binary packet is echoed as binary.
#[tokio::test]
async fn message_websocket_binary() {
    let server = Server::start();
    let mut ws = server.ws("").await;
    ws.recv().await;
    ws.binary(&[1, 2, 3, 4]).await;
    assert_eq!(
        ws.recv_skipping_pings().await,
        Got::Binary(vec![1, 2, 3, 4])
    );
}

/// WebSocket: a frame that is not a packet closes the connection.
#[tokio::test]
async fn message_websocket_invalid_packet_closes() {
    let server = Server::start();
    let mut ws = server.ws("").await;
    ws.recv().await;
    ws.text("abc").await;
    // Pings are answered meanwhile: the packet, not the heartbeat, ends the session.
    assert_eq!(ws.closed().await, Got::Close(1000));
    assert_eq!(ws.close_reason(), Some("parse error"));
}

/// Polling heartbeat: the server pings, the client pongs, three times.
#[tokio::test]
async fn heartbeat_polling_ping_pong() {
    let server = Server::start();
    let sid = server.open_polling().await;
    for _ in 0..3 {
        let res = server.get(Some(&sid)).await;
        assert_eq!((res.status, res.body.as_str()), (200, "2"));
        let res = server.post(&sid, b"3").await;
        assert_eq!(res.status, 200);
    }
}

/// Polling heartbeat: without a pong the session is closed after interval + timeout.
#[tokio::test]
async fn heartbeat_polling_ping_timeout() {
    let server = Server::start();
    let sid = server.open_polling().await;
    tokio::time::sleep(Duration::from_millis(PING_INTERVAL + PING_TIMEOUT)).await;
    let res = server.get(Some(&sid)).await;
    assert_eq!(res.status, 400);
}

/// WebSocket heartbeat: the server pings, the client pongs, three times.
#[tokio::test]
async fn heartbeat_websocket_ping_pong() {
    let server = Server::start();
    let mut ws = server.ws("").await;
    ws.recv().await;
    for _ in 0..3 {
        assert_eq!(ws.recv().await, Got::Text("2".into()));
        ws.text("3").await;
    }
}

/// WebSocket heartbeat: without pongs the server closes the connection.
#[tokio::test]
async fn heartbeat_websocket_ping_timeout() {
    let server = Server::start();
    let mut ws = server.ws("").await;
    assert_eq!(ws.closed_without_pongs().await, Got::Close(1000));
    assert_eq!(ws.close_reason(), Some("ping timeout"));
}

/// Polling close: a `1` from the client releases the pending GET with a noop; the
/// session is gone afterwards.
#[tokio::test]
async fn close_polling() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let poll = server.get(Some(&sid));
    let close = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.post(&sid, b"1").await
    };
    let (poll, _) = within(async { tokio::join!(poll, close) }).await;
    assert_eq!((poll.status, poll.body.as_str()), (200, "6"));
    assert_eq!(server.get(Some(&sid)).await.status, 400);
}

/// WebSocket close: a `1` from the client closes the connection.
#[tokio::test]
async fn close_websocket() {
    let server = Server::start();
    let mut ws = server.ws("").await;
    ws.recv().await;
    ws.text("1").await;
    assert_eq!(ws.closed().await, Got::Close(1000));
    assert_eq!(ws.close_reason(), Some(""));
}

/// Upgrade: probe, the pending poll is released with a noop, `5`, then messages flow
/// on the WebSocket.
#[tokio::test]
async fn upgrade_from_polling() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let mut ws = server.ws(&format!("&sid={sid}")).await;
    ws.text("2probe").await;
    assert_eq!(ws.recv().await, Got::Text("3probe".into()));
    let res = server.get(Some(&sid)).await;
    assert_eq!((res.status, res.body.as_str()), (200, "6"));
    ws.text("5").await;
    ws.text("4hello").await;
    assert_eq!(ws.recv_skipping_pings().await, Got::Text("4hello".into()));
}

/// After an upgrade, polling requests with the sid are refused and the WebSocket goes on.
#[tokio::test]
async fn upgrade_then_polling_is_refused() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let mut ws = server.ws(&format!("&sid={sid}")).await;
    ws.text("2probe").await;
    assert_eq!(ws.recv().await, Got::Text("3probe".into()));
    ws.text("5").await;
    // The noop queued for the poll nobody made arrives here.
    assert_eq!(ws.recv().await, Got::Text("6".into()));
    let res = server.get(Some(&sid)).await;
    assert_eq!(res.status, 400);
    ws.text("4hello").await;
    assert_eq!(ws.recv_skipping_pings().await, Got::Text("4hello".into()));
}

/// After an upgrade, a second WebSocket with the sid is accepted and closed at once
/// (as the Node server does; the suite's `ws` client fails on a refused handshake), and
/// the first goes on ("ignores WebSocket connection with same sid after upgrade").
#[tokio::test]
async fn upgrade_then_second_websocket_is_closed() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let mut ws = server.ws(&format!("&sid={sid}")).await;
    ws.text("2probe").await;
    assert_eq!(ws.recv().await, Got::Text("3probe".into()));
    ws.text("5").await;
    assert_eq!(ws.recv().await, Got::Text("6".into()));
    second_websocket_is_closed(&server, &sid).await;
    ws.text("4hello").await;
    assert_eq!(ws.recv_skipping_pings().await, Got::Text("4hello".into()));
}

/// The suite's sequence exactly: `2probe` and `5` sent without waiting, then a second
/// WebSocket with the sid; it is closed, and the upgraded one still echoes.
#[tokio::test]
async fn upgrade_unawaited_then_second_websocket_is_closed() {
    let server = Server::start();
    let sid = server.open_polling().await;
    let mut ws = server.ws(&format!("&sid={sid}")).await;
    ws.text("2probe").await;
    ws.text("5").await;
    second_websocket_is_closed(&server, &sid).await;
    ws.text("4hello").await;
    loop {
        match ws.recv_skipping_pings().await {
            Got::Text(t) if t == "3probe" || t == "6" => continue,
            other => {
                assert_eq!(other, Got::Text("4hello".into()));
                break;
            }
        }
    }
}

/// A WebSocket for a session the client closed is refused as for an unknown one.
#[tokio::test]
async fn websocket_for_closed_session_is_refused() {
    let server = Server::start();
    let sid = server.open_polling().await;
    assert_eq!(server.post(&sid, b"1").await.status, 200);
    let refused = server
        .ws_query(&format!("EIO=4&transport=websocket&sid={sid}"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error_code(), 1);
}

/// A second WebSocket for the session `sid`: its handshake is accepted, then it is
/// closed at once, with no status (as `ws` closes it for the Node server).
async fn second_websocket_is_closed(server: &Server, sid: &str) {
    let mut second = server
        .ws_query(&format!("EIO=4&transport=websocket&sid={sid}"))
        .await
        .expect("the second WebSocket's handshake is accepted");
    assert_eq!(second.recv().await, Got::Close(1005));
}

/// The open packet's sid is usable right away (a sanity check of the helpers).
#[tokio::test]
async fn sid_round_trip() {
    let server = Server::start();
    let res = server.get(None).await;
    let sid = sid_of(&res.body);
    let res = server.post(&sid, b"4x").await;
    assert_eq!(res.status, 200);
}
