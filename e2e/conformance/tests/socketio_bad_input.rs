//! Bad input at the Socket.IO level against the real `conformance` binary: each offence
//! closes the offending connection; the server and a bystander socket are untouched.

#![allow(clippy::unwrap_used)] // helpers unwrap what the test set up

mod support;

use support::{Got, Server, Ws};

fn server() -> Server {
    Server::start_with(&[], "/socket.io/")
}

/// A socket connected to `/`, its auth event read.
async fn connected(server: &Server) -> Ws {
    let mut ws = server.ws("").await;
    assert!(matches!(ws.recv().await, Got::Text(t) if t.starts_with('0')));
    ws.text("40").await;
    assert!(matches!(ws.recv().await, Got::Text(t) if t.starts_with("40{")));
    assert_eq!(ws.recv().await, Got::Text(r#"42["auth",{}]"#.into()));
    ws
}

async fn still_fine(server: &mut Server, bystander: &mut Ws) {
    bystander.text(r#"42["message","still here"]"#).await;
    assert_eq!(
        bystander.recv_skipping_pings().await,
        Got::Text(r#"42["message-back","still here"]"#.into())
    );
    let mut fresh = connected(server).await;
    fresh.text(r#"42["message","new"]"#).await;
    assert_eq!(
        fresh.recv_skipping_pings().await,
        Got::Text(r#"42["message-back","new"]"#.into())
    );
    assert!(server.alive());
}

/// Sends `frames` (text, or binary when `Err`) on a fresh connected socket and expects the
/// connection to be closed for a parse error.
async fn closes(server: &Server, frames: &[Result<&str, &[u8]>]) {
    closes_with(server, frames, 1000, "parse error").await;
}

/// As [`closes`], with the close code and reason expected.
async fn closes_with(server: &Server, frames: &[Result<&str, &[u8]>], code: u16, reason: &str) {
    let mut ws = connected(server).await;
    for f in frames {
        match f {
            Ok(text) => ws.text(text).await,
            Err(bytes) => ws.binary(bytes).await,
        }
    }
    // Pings are answered meanwhile: the packets, not the heartbeat, end the session.
    assert_eq!(ws.closed().await, Got::Close(code), "{frames:?}");
    assert_eq!(ws.close_reason(), Some(reason), "{frames:?}");
}

/// Invalid packet types and formats.
#[tokio::test]
async fn invalid_type_or_format() {
    let mut server = server();
    let mut bystander = connected(&server).await;
    for bad in [
        "49",
        "4",
        "4a",
        "42{}",
        "42[]",
        "42",
        "42[\"message\"",
        "42[null]",
        r#"42["connect"]"#,
        r#"42["disconnecting"]"#,
        "43{}",
        "41{}",
        "44{\"message\":\"from a client\"}",
    ] {
        closes(&server, &[Ok(bad)]).await;
    }
    still_fine(&mut server, &mut bystander).await;
}

/// Ack ids that are not numbers, or do not fit 64 bits.
#[tokio::test]
async fn bad_ack_id() {
    let mut server = server();
    let mut bystander = connected(&server).await;
    closes(&server, &[Ok(r#"42abc["message-with-ack",1]"#)]).await;
    closes(
        &server,
        &[Ok(r#"4299999999999999999999999["message-with-ack",1]"#)],
    )
    .await;
    still_fine(&mut server, &mut bystander).await;
}

/// An unknown namespace is refused without closing; a packet for a namespace not joined
/// closes the connection, and so does a second CONNECT.
#[tokio::test]
async fn namespaces() {
    let mut server = server();
    let mut bystander = connected(&server).await;
    let mut ws = connected(&server).await;
    ws.text("40/nope,").await;
    assert_eq!(
        ws.recv_skipping_pings().await,
        Got::Text(r#"44/nope,{"message":"Invalid namespace"}"#.into())
    );
    ws.text(r#"42["message","after a refusal"]"#).await;
    assert_eq!(
        ws.recv_skipping_pings().await,
        Got::Text(r#"42["message-back","after a refusal"]"#.into())
    );
    closes(&server, &[Ok(r#"42/custom,["message","not joined"]"#)]).await;
    closes(&server, &[Ok("40")]).await;
    still_fine(&mut server, &mut bystander).await;
}

/// Attachments: too many announced, placeholders that do not match, text while
/// attachments are expected, binary when none is.
#[tokio::test]
async fn attachments() {
    let mut server = server();
    let mut bystander = connected(&server).await;
    closes(
        &server,
        &[Ok(r#"4511-["message",{"_placeholder":true,"num":0}]"#)],
    )
    .await;
    closes(&server, &[Ok(r#"450-["message"]"#)]).await;
    closes(
        &server,
        &[
            Ok(r#"451-["message",{"_placeholder":true,"num":1}]"#),
            Err(&[1, 2, 3]),
        ],
    )
    .await;
    closes(
        &server,
        &[
            Ok(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#),
            Err(&[1]),
            Ok(r#"42["message","too early"]"#),
        ],
    )
    .await;
    closes(&server, &[Err(&[1, 2, 3])]).await;
    still_fine(&mut server, &mut bystander).await;
}

/// Attachments adding up to more than the server's bound (10 MB) are refused; the
/// 1,000,000-byte message limit stops each one before that.
#[tokio::test]
async fn too_large_attachments() {
    let mut server = server();
    let mut bystander = connected(&server).await;
    let big = vec![0u8; 1_000_001];
    closes_with(
        &server,
        &[
            Ok(r#"451-["message",{"_placeholder":true,"num":0}]"#),
            Err(&big),
        ],
        1009,
        "",
    )
    .await;
    still_fine(&mut server, &mut bystander).await;
}
