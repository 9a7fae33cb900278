//! Bad input against the real `conformance` binary: each abuse gets the spec's error or
//! close code, and the server stays up with another session untouched.

#![allow(clippy::unwrap_used)] // helpers unwrap what the test set up

mod support;

use support::{raw_frame, Got, Server, Ws};

/// A WebSocket session that is open before the abuse and must still echo after it.
async fn bystander(server: &Server) -> Ws {
    let mut ws = server.ws("").await;
    assert!(matches!(ws.recv().await, Got::Text(t) if t.starts_with('0')));
    ws
}

async fn still_fine(server: &mut Server, ws: &mut Ws) {
    ws.text("4still here").await;
    assert_eq!(
        ws.recv_skipping_pings().await,
        Got::Text("4still here".into())
    );
    let res = server.get(None).await;
    assert_eq!(res.status, 200, "new sessions still open");
    assert!(server.alive());
}

/// Sends raw bytes on a fresh WebSocket session and returns how the server ended it.
async fn abuse(server: &Server, bytes: &[u8]) -> Got {
    let mut ws = server.ws("").await;
    assert!(matches!(ws.recv().await, Got::Text(t) if t.starts_with('0')));
    ws.raw(bytes).await;
    ws.closed().await
}

/// An unmasked client frame: close 1002.
#[tokio::test]
async fn unmasked_frame() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    assert_eq!(
        abuse(&server, &raw_frame(0x81, b"4hi", false)).await,
        Got::Close(1002)
    );
    still_fine(&mut server, &mut other).await;
}

/// Reserved bits set without an extension: close 1002.
#[tokio::test]
async fn reserved_bits() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    for b0 in [0xc1, 0xa1, 0x91] {
        assert_eq!(
            abuse(&server, &raw_frame(b0, b"4hi", true)).await,
            Got::Close(1002)
        );
    }
    still_fine(&mut server, &mut other).await;
}

/// Reserved opcodes: close 1002.
#[tokio::test]
async fn unknown_opcode() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    for b0 in [0x83, 0x87, 0x8b, 0x8f] {
        assert_eq!(
            abuse(&server, &raw_frame(b0, b"x", true)).await,
            Got::Close(1002)
        );
    }
    still_fine(&mut server, &mut other).await;
}

/// A ping with 126 bytes of payload: close 1002.
#[tokio::test]
async fn oversized_control_frame() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    assert_eq!(
        abuse(&server, &raw_frame(0x89, &[0; 126], true)).await,
        Got::Close(1002)
    );
    still_fine(&mut server, &mut other).await;
}

/// A ping without FIN: close 1002.
#[tokio::test]
async fn fragmented_control_frame() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    assert_eq!(
        abuse(&server, &raw_frame(0x09, b"p", true)).await,
        Got::Close(1002)
    );
    still_fine(&mut server, &mut other).await;
}

/// Text frames that are not UTF-8, whole or across fragments: close 1007.
#[tokio::test]
async fn invalid_utf8() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    assert_eq!(
        abuse(&server, &raw_frame(0x81, b"4\xff\xfe", true)).await,
        Got::Close(1007)
    );
    let mut split = raw_frame(0x01, b"4\xe2\x82", true);
    split.extend(raw_frame(0x80, b"(", true));
    assert_eq!(abuse(&server, &split).await, Got::Close(1007));
    still_fine(&mut server, &mut other).await;
}

/// Close frames with codes that may not be sent, or a one-byte payload: close 1002.
#[tokio::test]
async fn invalid_close_code() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
        let frame = raw_frame(0x88, &code.to_be_bytes(), true);
        assert_eq!(
            abuse(&server, &frame).await,
            Got::Close(1002),
            "code {code}"
        );
    }
    assert_eq!(
        abuse(&server, &raw_frame(0x88, &[3], true)).await,
        Got::Close(1002)
    );
    still_fine(&mut server, &mut other).await;
}

/// A valid close code is echoed in the closing handshake.
#[tokio::test]
async fn valid_close_code_is_echoed() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    let frame = raw_frame(0x88, &4001u16.to_be_bytes(), true);
    assert_eq!(abuse(&server, &frame).await, Got::Close(4001));
    still_fine(&mut server, &mut other).await;
}

/// A message over maxPayload (1,000,000 bytes), whole or in fragments: close 1009.
#[tokio::test]
async fn oversized_message() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    let mut big = vec![b'x'; 1_000_001];
    big[0] = b'4';
    assert_eq!(
        abuse(&server, &raw_frame(0x81, &big, true)).await,
        Got::Close(1009)
    );
    let mut fragments = raw_frame(0x01, &big[..600_000], true);
    fragments.extend(raw_frame(0x80, &big[600_000..], true));
    assert_eq!(abuse(&server, &fragments).await, Got::Close(1009));
    // Announced but never sent: refused from the header alone.
    let mut header = vec![0x82, 0xff];
    header.extend_from_slice(&(u64::from(u32::MAX)).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(abuse(&server, &header).await, Got::Close(1009));
    still_fine(&mut server, &mut other).await;
}

/// A message of exactly maxPayload bytes is accepted.
#[tokio::test]
async fn message_at_the_limit() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    let mut ws = server.ws("").await;
    ws.recv().await;
    let mut big = "x".repeat(1_000_000);
    big.replace_range(0..1, "4");
    ws.text(&big).await;
    assert_eq!(ws.recv_skipping_pings().await, Got::Text(big));
    still_fine(&mut server, &mut other).await;
}

/// Garbage instead of an HTTP request: 400 or a closed connection, nothing else.
#[tokio::test]
async fn garbage_before_the_handshake() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"HELLO WORLD\r\n\r\n",
        b"GET /engine.io/?EIO=4 HTTP/9.9\r\n\r\n",
        &[0u8; 4096][..],
    ] {
        let res = server.raw(garbage, b"").await;
        assert!(matches!(res.status, 0 | 400 | 505), "status {}", res.status);
    }
    still_fine(&mut server, &mut other).await;
}

/// Unknown and malformed sids: 400 with code 1, on GET, POST and WebSocket.
#[tokio::test]
async fn unknown_sid() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    for sid in ["AAAAAAAAAAAAAAAAAAAA", "short", "../../etc/passwd", ""] {
        let res = server.get(Some(sid)).await;
        assert_eq!((res.status, res.error_code()), (400, 1), "GET {sid:?}");
        let res = server.post(sid, b"4hi").await;
        assert_eq!((res.status, res.error_code()), (400, 1), "POST {sid:?}");
    }
    let refused = server
        .ws_query("EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA")
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 400);
    still_fine(&mut server, &mut other).await;
}

/// Wrong EIO and wrong transport: 400 with codes 5 and 0 and the JSON body.
#[tokio::test]
async fn wrong_eio_and_transport() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    let res = server.request("GET", "EIO=3&transport=polling", b"").await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(
        res.body,
        r#"{"code":5,"message":"Unsupported protocol version"}"#
    );
    let res = server
        .request("GET", "EIO=4&transport=carrier-pigeon", b"")
        .await;
    assert_eq!(res.body, r#"{"code":0,"message":"Transport unknown"}"#);
    // transport=websocket on a plain GET is not an upgrade.
    let res = server
        .request("GET", "EIO=4&transport=websocket", b"")
        .await;
    assert_eq!((res.status, res.error_code()), (400, 3));
    still_fine(&mut server, &mut other).await;
}

/// Concurrent polling GETs end the session; a concurrent POST is refused the same way.
#[tokio::test]
async fn concurrent_polling_requests() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    let sid = server.open_polling().await;
    let (first, second) = tokio::join!(server.get(Some(&sid)), async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        server.get(Some(&sid)).await
    });
    assert_eq!((first.status, first.body.as_str()), (200, "1"));
    assert_eq!((second.status, second.error_code()), (400, 3));
    assert_eq!(server.get(Some(&sid)).await.status, 400);
    still_fine(&mut server, &mut other).await;
}

/// A polling POST over maxPayload: 413, and the session is closed.
#[tokio::test]
async fn oversized_polling_post() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    let sid = server.open_polling().await;
    let mut body = vec![b'x'; 1_000_001];
    body[0] = b'4';
    let res = server.post(&sid, &body).await;
    assert_eq!(res.status, 413);
    assert_eq!(server.get(Some(&sid)).await.status, 400);
    // Exactly at the limit is fine.
    let sid = server.open_polling().await;
    let res = server.post(&sid, &body[..1_000_000]).await;
    assert_eq!(res.status, 200);
    still_fine(&mut server, &mut other).await;
}

/// A chunked polling POST that grows past maxPayload is cut off with 413 too.
#[tokio::test]
async fn oversized_chunked_polling_post() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    let sid = server.open_polling().await;
    let head = format!(
        "POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..20 {
        body.extend_from_slice(b"10000\r\n");
        body.extend(std::iter::repeat_n(b'x', 0x10000));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let res = server.raw(head.as_bytes(), &body).await;
    assert_eq!(res.status, 413);
    still_fine(&mut server, &mut other).await;
}

/// A v3 binary payload (octet-stream) and a pong that is not a pong in v4 order: the
/// session is closed, the request refused.
#[tokio::test]
async fn protocol_violations_over_polling() {
    let mut server = Server::start();
    let mut other = bystander(&server).await;
    let sid = server.open_polling().await;
    let head = format!(
        "POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    );
    let res = server.raw(head.as_bytes(), b"4x").await;
    assert_eq!(res.status, 400);
    assert_eq!(server.get(Some(&sid)).await.status, 400);
    // A client ping (v3 direction) ends a v4 session.
    let sid = server.open_polling().await;
    assert_eq!(server.post(&sid, b"2").await.status, 400);
    assert_eq!(server.get(Some(&sid)).await.status, 400);
    still_fine(&mut server, &mut other).await;
}
