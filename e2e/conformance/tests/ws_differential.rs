//! Differential tests of the `ws` codec against tokio-tungstenite, in both roles: our
//! server (`ws-peer server`) with a tungstenite client, and our client (`ws-peer client`)
//! with a tungstenite server.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// A started `ws-peer server`, killed on drop.
struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(max: usize) -> Peer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ws-peer"))
        .args(["server", "--port", "0", "--max", &max.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ws-peer");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let port = loop {
        let line = lines.next().expect("ws-peer exited").expect("read stdout");
        if let Some(p) = line.strip_prefix("LISTENING ") {
            break p.parse().expect("port");
        }
    };
    Peer { child, port }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

/// Our server echoes what tungstenite sends: text, binary, empty and large messages.
#[tokio::test]
async fn server_role_echoes_tungstenite_messages() {
    let peer = start_server(1 << 20);
    let url = format!("ws://127.0.0.1:{}/", peer.port);
    let (mut ws, _) = within(tokio_tungstenite::connect_async(url))
        .await
        .expect("connect");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let messages = vec![
        Message::text("hello"),
        Message::text("€ 𝄞 ü"),
        Message::text(""),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(big),
    ];
    for m in messages {
        ws.send(m.clone()).await.expect("send");
        let back = within(ws.next()).await.expect("message").expect("ok");
        assert_eq!(back, m);
    }
    ws.send(Message::Ping(b"p".to_vec().into()))
        .await
        .expect("ping");
    let back = within(ws.next()).await.expect("pong").expect("ok");
    assert_eq!(back, Message::Pong(b"p".to_vec().into()));
}

/// A fragmented text message from tungstenite, with a ping between fragments and a code
/// point split across them, is reassembled; the pong comes first.
#[tokio::test]
async fn server_role_reassembles_tungstenite_fragments() {
    let peer = start_server(1 << 20);
    let url = format!("ws://127.0.0.1:{}/", peer.port);
    let (mut ws, _) = within(tokio_tungstenite::connect_async(url))
        .await
        .expect("connect");
    let euro = "€".as_bytes();
    let frame = |fin: bool, opcode: OpCode, payload: &[u8]| {
        let header = FrameHeader {
            is_final: fin,
            opcode,
            ..FrameHeader::default()
        };
        Message::Frame(Frame::from_payload(header, payload.to_vec().into()))
    };
    ws.send(frame(false, OpCode::Data(Data::Text), &[b'x', euro[0]]))
        .await
        .expect("send");
    ws.send(Message::Ping(b"mid".to_vec().into()))
        .await
        .expect("ping");
    ws.send(frame(false, OpCode::Data(Data::Continue), &euro[1..2]))
        .await
        .expect("send");
    ws.send(frame(true, OpCode::Data(Data::Continue), &[euro[2], b'y']))
        .await
        .expect("send");
    let first = within(ws.next()).await.expect("pong").expect("ok");
    assert_eq!(first, Message::Pong(b"mid".to_vec().into()));
    let second = within(ws.next()).await.expect("text").expect("ok");
    assert_eq!(second, Message::text("x€y"));
}

/// Our server answers a message over its limit with close code 1009, and a close frame
/// with the same code.
#[tokio::test]
async fn server_role_limits_and_close_codes() {
    let peer = start_server(1000);
    let url = format!("ws://127.0.0.1:{}/", peer.port);
    let (mut ws, _) = within(tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("connect");
    ws.send(Message::binary(vec![0u8; 1001]))
        .await
        .expect("send");
    match within(ws.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }

    let (mut ws, _) = within(tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("connect");
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4321),
        reason: "done".into(),
    })))
    .await
    .expect("close");
    match within(ws.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4321),
        other => panic!("expected close 4321, got {other:?}"),
    }
}

/// Our client runs its script against a tungstenite echo server, which accepts every
/// frame it sends (masked, fragmented, ping, close 4000).
#[tokio::test]
async fn client_role_against_tungstenite_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("handshake");
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(_) | Message::Binary(_) => ws.send(m).await.expect("echo"),
                Message::Close(_) => break,
                _ => {}
            }
        }
        // tungstenite answers pings and the close handshake by itself.
        let _ = ws.flush().await;
    });
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-peer"))
        .args(["client", &format!("127.0.0.1:{port}"), "/"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start client");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut got = Vec::new();
    while let Some(line) = within(lines.next_line()).await.expect("read") {
        got.push(line);
    }
    let status = within(child.wait()).await.expect("wait");
    assert!(status.success());
    within(server).await.expect("server task");
    assert_eq!(
        got,
        [
            "text hello",
            "text héllo wörld €",
            "binary 4 000102ff",
            "binary 70000 0001020304050607",
            "text a€z",
            "pong are you there",
            "close 4000",
        ]
    );
}
