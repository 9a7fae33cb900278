//! The engine in-process, over real sockets: close reasons reported to the handler,
//! CORS, and the outbound byte budget.

#![allow(clippy::unwrap_used)] // test helpers unwrap what the test itself set up

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engineio::{CloseReason, Config, Cors, Engine, EngineHandler, SendError, Socket};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the handler saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Open(String),
    Message(String),
    Close(String, CloseReason),
}

/// Records events; echoes messages unless told to stay quiet.
struct Recorder {
    events: mpsc::UnboundedSender<Event>,
    sockets: Mutex<Vec<Arc<Socket<()>>>>,
}

impl EngineHandler for Recorder {
    type Data = ();

    fn on_open(&self, socket: &Arc<Socket<()>>) {
        self.sockets.lock().push(socket.clone());
        let _ = self.events.send(Event::Open(socket.sid().to_string()));
    }

    fn on_message(&self, socket: &Arc<Socket<()>>, text: Bytes) {
        let text = String::from_utf8(text.to_vec()).unwrap();
        let _ = self.events.send(Event::Message(text.clone()));
        if text == "close me" {
            socket.close();
        }
        if text == "last words" {
            let _ = socket.send_text(b"bye");
            socket.close();
        }
    }

    fn on_binary(&self, _socket: &Arc<Socket<()>>, _data: Bytes) {}

    fn on_close(&self, socket: &Arc<Socket<()>>, reason: CloseReason) {
        let _ = self
            .events
            .send(Event::Close(socket.sid().to_string(), reason));
    }
}

struct Server {
    addr: SocketAddr,
    engine: Arc<Engine<Recorder>>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Server {
    async fn start(config: Config) -> Server {
        let (tx, events) = mpsc::unbounded_channel();
        let engine = Engine::new(
            config,
            Recorder {
                events: tx,
                sockets: Mutex::new(Vec::new()),
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let e = engine.clone();
        tokio::spawn(async move {
            loop {
                let (stream, remote) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                tokio::spawn(engineio::serve_connection(
                    e.clone(),
                    stream,
                    remote,
                    engineio::NotFound,
                ));
            }
        });
        Server {
            addr,
            engine,
            events,
        }
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("no event within 5 s")
            .expect("channel open")
    }

    async fn close_reason(&mut self) -> CloseReason {
        loop {
            if let Event::Close(_, reason) = self.next().await {
                return reason;
            }
        }
    }

    async fn ws(
        &self,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
        let url = format!("ws://{}/engine.io/?EIO=4&transport=websocket", self.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let open = ws.next().await.unwrap().unwrap();
        assert!(open.to_text().unwrap().starts_with("0{"));
        ws
    }

    /// The body of a raw HTTP/1.1 request to `addr`.
    async fn client_http(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        text.split_once("\r\n\r\n").unwrap().1.to_owned()
    }

    /// A raw HTTP/1.1 request; returns status, headers (lower-case names) and body.
    /// Opens a polling session; returns its sid (from the handler's open event) and
    /// the handshake's body.
    async fn open_polling(&mut self) -> (String, String) {
        let (status, _, body) = self
            .http("GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        assert_eq!(status, 200);
        let Event::Open(sid) = self.next().await else {
            panic!("expected open")
        };
        (sid, body)
    }

    async fn http(&self, request: &str) -> (u16, Vec<(String, String)>, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("response within 5 s")
            .unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }
}

/// A raw TCP connection that asks for a WebSocket session and then reads nothing.
async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    stream
}

/// Sends 16 KiB packets to a session whose client reads nothing until one is refused:
/// how many went, and the error.
async fn fill(socket: &Socket<()>) -> (usize, SendError) {
    let chunk = vec![b'x'; 16 * 1024];
    for i in 0..100_000 {
        if let Err(e) = socket.send_text(&chunk) {
            return (i, e);
        }
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    panic!("the budget was never hit")
}

fn config() -> Config {
    Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1000,
        ..Config::default()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Each way a WebSocket session ends reaches the handler with its reason, once.
#[tokio::test]
async fn close_reasons_over_websocket() {
    let mut server = Server::start(config()).await;

    let mut ws = server.ws().await;
    ws.send(Message::text("1")).await.unwrap();
    assert_eq!(server.close_reason().await, CloseReason::ClientClose);

    let mut ws = server.ws().await;
    ws.send(Message::text("not a packet")).await.unwrap();
    assert_eq!(server.close_reason().await, CloseReason::ParseError);

    let mut ws = server.ws().await;
    ws.send(Message::text(format!("4{}", "x".repeat(2000))))
        .await
        .unwrap();
    assert_eq!(server.close_reason().await, CloseReason::PayloadTooLarge);

    let ws = server.ws().await;
    drop(ws);
    assert_eq!(server.close_reason().await, CloseReason::TransportClose);

    // Never answers pings.
    let _silent = server.ws().await;
    assert_eq!(server.close_reason().await, CloseReason::PingTimeout);

    let mut ws = server.ws().await;
    ws.send(Message::text("4close me")).await.unwrap();
    assert_eq!(server.close_reason().await, CloseReason::ServerClose);
    // The server's close reaches the client as a close frame.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }

    assert!(server.engine.is_empty(), "closed sessions left the table");
    // Nothing was reported twice.
    assert!(server.events.try_recv().is_err());
}

/// A session that answers pings stays open across several intervals.
#[tokio::test]
async fn pongs_keep_a_session_alive() {
    let mut server = Server::start(config()).await;
    let mut ws = server.ws().await;
    let opened = server.next().await;
    assert!(matches!(opened, Event::Open(_)));
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    let mut pings = 0;
    while tokio::time::Instant::now() < until {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
            assert_eq!(m.to_text().unwrap(), "2");
            ws.send(Message::text("3")).await.unwrap();
            pings += 1;
        }
    }
    assert!(pings >= 3, "{pings} pings in 1.2 s at a 300 ms interval");
    ws.send(Message::text("4still here")).await.unwrap();
    assert_eq!(server.next().await, Event::Message("still here".into()));
    assert_eq!(server.engine.len(), 1);
}

/// CORS: preflight, an allowed origin echoed with credentials, another origin refused
/// its header.
#[tokio::test]
async fn cors() {
    let server = Server::start(Config {
        cors: Some(Cors {
            origins: vec!["https://app.example".into()],
            credentials: true,
        }),
        ..config()
    })
    .await;
    let (status, headers, _) = server
        .http(
            "OPTIONS /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\
             Origin: https://app.example\r\nAccess-Control-Request-Headers: x-custom\r\n\
             Connection: close\r\n\r\n",
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        header(&headers, "access-control-allow-headers"),
        Some("x-custom")
    );
    assert_eq!(
        header(&headers, "access-control-allow-credentials"),
        Some("true")
    );
    assert!(header(&headers, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));

    let (status, headers, body) = server
        .http(
            "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\
             Origin: https://app.example\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("0{"));
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );

    let (status, headers, _) = server
        .http(
            "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\
             Origin: https://evil.example\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}

/// Without CORS configured, no CORS header is sent.
#[tokio::test]
async fn no_cors_by_default() {
    let server = Server::start(config()).await;
    let (status, headers, _) = server
        .http(
            "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\
             Origin: https://app.example\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}

/// A client that stops reading fills its byte budget: sends are refused with
/// `QueueFull` while another session on the same server is unaffected.
#[tokio::test]
async fn slow_consumer_hits_the_byte_budget() {
    let mut server = Server::start(Config {
        ping_interval: Duration::from_secs(60),
        ping_timeout: Duration::from_secs(60),
        max_buffered_bytes: 64 * 1024,
        ..Config::default()
    })
    .await;
    // Connect raw, upgrade, then never read again.
    let slow = raw_upgrade(server.addr).await;
    let Event::Open(slow_sid) = server.next().await else {
        panic!("expected open")
    };
    let mut fast = server.ws().await;
    let Event::Open(_) = server.next().await else {
        panic!("expected open")
    };
    let slow_socket = server
        .engine
        .get(engineio::Sid::parse(&slow_sid).unwrap())
        .unwrap();
    let (after, error) = fill(&slow_socket).await;
    assert_eq!(error, SendError::QueueFull);
    // At least the budget's worth (4 x 16 KiB) is accepted; the socket buffers may
    // absorb more before the queue fills.
    assert!(after >= 4, "refused after {after} packets");
    fast.send(Message::text("4ping me")).await.unwrap();
    assert_eq!(server.next().await, Event::Message("ping me".into()));
    drop(slow);
}

/// A client that stops reading and is closed as a slow consumer does not keep its
/// connection (or its queue): the server drops it within a bounded time, and counts the
/// close by reason.
#[tokio::test]
async fn a_stuck_slow_consumer_is_dropped() {
    let mut server = Server::start(Config {
        ping_interval: Duration::from_secs(60),
        ping_timeout: Duration::from_secs(60),
        max_buffered_bytes: 64 * 1024,
        ..Config::default()
    })
    .await;
    let mut slow = raw_upgrade(server.addr).await;
    let Event::Open(sid) = server.next().await else {
        panic!("expected open")
    };
    let socket = server
        .engine
        .get(engineio::Sid::parse(&sid).unwrap())
        .unwrap();
    let (_, error) = fill(&socket).await;
    assert_eq!(error, SendError::QueueFull);
    socket.close_with(CloseReason::SlowConsumer);
    assert_eq!(server.close_reason().await, CloseReason::SlowConsumer);
    assert_eq!(socket.queued_bytes(), 0, "the queue is dropped at once");
    // The client still does not read for a while; then it finds the connection gone.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut sink)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the server kept the connection open"
    );
    let stats = server.engine.stats();
    assert_eq!(
        stats.closes[CloseReason::SlowConsumer.index()].load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Regression: a message that arrives after the server closed a session (the client
/// sent it before it knew) is dropped; it does not end the connection as if TCP were
/// gone, so what the server queued before closing still arrives, then the close frame.
#[tokio::test]
async fn last_words_survive_packets_after_close() {
    let server = Server::start(config()).await;
    let mut ws = server.ws().await;
    ws.feed(Message::text("4last words")).await.unwrap();
    ws.feed(Message::text("4after")).await.unwrap();
    ws.flush().await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
        let close = m.is_close();
        got.push(m);
        if close {
            break;
        }
    }
    assert_eq!(got.first(), Some(&Message::text("4bye")), "{got:?}");
    assert!(got.last().is_some_and(Message::is_close), "{got:?}");
}

/// A polling session the server closed lingers for its last GET; a WebSocket for it in
/// the meantime is refused as for an unknown session (`400`, code 1), not upgraded.
#[tokio::test]
async fn websocket_for_a_lingering_session_is_refused() {
    let mut server = Server::start(Config {
        ping_interval: Duration::from_secs(60),
        ping_timeout: Duration::from_secs(60),
        ..Config::default()
    })
    .await;
    let (sid, _) = server.open_polling().await;
    let socket = server
        .engine
        .get(engineio::Sid::parse(&sid).unwrap())
        .unwrap();
    socket.close_with(CloseReason::ServerClose);
    assert!(server.engine.get(socket.sid()).is_some(), "it lingers");
    let (status, _, body) = server
        .http(&format!(
            "GET /engine.io/?EIO=4&transport=websocket&sid={sid} HTTP/1.1\r\nHost: x\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
}

/// A polling session closed by the server while its GET waits: that GET gets the last
/// packets alone, the next one the close packet (in one payload, the socket.io client
/// would drop the packets).
#[tokio::test]
async fn polling_last_words_come_before_the_close_packet() {
    let mut server = Server::start(Config {
        ping_interval: Duration::from_secs(60),
        ping_timeout: Duration::from_secs(60),
        ..Config::default()
    })
    .await;
    let (sid, body) = server.open_polling().await;
    assert!(body.starts_with("0{"));
    let get = format!(
        "GET /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let addr = server.addr;
    let pending = {
        let get = get.clone();
        tokio::spawn(async move { Server::client_http(addr, &get).await })
    };
    let socket = server
        .engine
        .get(engineio::Sid::parse(&sid).unwrap())
        .unwrap();
    // The GET is pending before the server speaks.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !socket.is_polled() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the GET arrives");
    socket.send_text(b"bye").unwrap();
    socket.close_with(CloseReason::ServerShutdown);
    assert_eq!(pending.await.unwrap(), "4bye");
    assert_eq!(Server::client_http(addr, &get).await, "1");
}

const UPGRADE_HEAD: &str = "GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\
    Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Reads until `buf` holds `n` bytes past the HTTP head; returns the head's length.
async fn read_past_head(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> usize {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if buf.len() >= at + 4 + n {
                return at + 4;
            }
        }
        let mut chunk = [0u8; 4096];
        let got = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("bytes within 5 s")
            .unwrap();
        assert!(got > 0, "closed early: {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// A WebSocket opened directly is answered without hyper: the 101 and the open packet
/// arrive in one write (one read on loopback gets both), and a frame the client sent
/// in the same write as its request is not lost.
#[tokio::test]
async fn direct_websocket_answers_in_one_write_and_keeps_early_frames() {
    let mut server = Server::start(config()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // The request and a masked text frame "4hi" in one write.
    let mut first = UPGRADE_HEAD.as_bytes().to_vec();
    let key = [1u8, 2, 3, 4];
    first.extend_from_slice(&[0x81, 0x80 | 3]);
    first.extend_from_slice(&key);
    first.extend(b"4hi".iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    stream.write_all(&first).await.unwrap();
    let mut chunk = vec![0u8; 4096];
    let got = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk[..got]).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{text}"
    );
    let (_, frames) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        frames.contains("0{\"sid\":"),
        "open packet in the same read: {text:?}"
    );
    assert!(matches!(server.next().await, Event::Open(_)));
    assert_eq!(server.next().await, Event::Message("hi".into()));
}

/// A request head that arrives in pieces is still read whole; a WebSocket upgrade with
/// a bad query gets the engine's error, written in full, and the connection closes; one
/// for another path gets 404.
#[tokio::test]
async fn direct_websocket_split_heads_and_refusals() {
    let mut server = Server::start(config()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (a, b) = UPGRADE_HEAD.split_at(40);
    stream.write_all(a.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head = read_past_head(&mut stream, &mut buf, 4).await;
    assert!(buf.starts_with(b"HTTP/1.1 101 "));
    assert_eq!(&buf[head + 2..head + 4], b"0{");
    assert!(matches!(server.next().await, Event::Open(_)));

    let bad = UPGRADE_HEAD.replace("EIO=4", "EIO=3");
    let (status, headers, body) = server.http(&bad).await;
    assert_eq!(status, 400);
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert_eq!(
        header(&headers, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(body.contains("\"code\":5"), "{body}");

    // Another path goes to hyper, which answers 404 and keeps the connection.
    let elsewhere = UPGRADE_HEAD.replace("/engine.io/", "/other/");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(elsewhere.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    read_past_head(&mut stream, &mut buf, 0).await;
    assert!(
        buf.starts_with(b"HTTP/1.1 404 "),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // Plain requests still go to hyper, after the bytes read to tell them apart.
    let (status, _, body) = server
        .http("GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("0{"), "{body}");
}

/// A masked client text frame.
fn client_text(text: &str) -> Vec<u8> {
    let key = [7u8, 1, 9, 3];
    let mut out = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap()];
    out.extend_from_slice(&key);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// A WebSocket upgrade that is not the first request on its connection goes through
/// hyper (after the bytes read to tell were put back) and still takes the connection
/// over: the upgrade of a polling session on the connection that polled.
#[tokio::test]
async fn upgrade_on_a_reused_connection_goes_through_hyper() {
    let mut server = Server::start(config()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_past_head(&mut stream, &mut buf, 0).await;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    let length: usize = text
        .split("content-length: ")
        .nth(1)
        .and_then(|r| r.split("\r\n").next())
        .unwrap()
        .parse()
        .unwrap();
    read_past_head(&mut stream, &mut buf, length).await;
    let body = String::from_utf8_lossy(&buf[head..head + length]).into_owned();
    let sid = body
        .split("\"sid\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(matches!(server.next().await, Event::Open(_)));
    buf.drain(..head + length);

    let upgrade = UPGRADE_HEAD.replace(
        "transport=websocket",
        &format!("transport=websocket&sid={sid}"),
    );
    stream.write_all(upgrade.as_bytes()).await.unwrap();
    let head = read_past_head(&mut stream, &mut buf, 0).await;
    assert!(
        buf.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    buf.drain(..head);
    stream.write_all(&client_text("2probe")).await.unwrap();
    while buf.len() < 8 {
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("the probe is answered")
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(&buf[..8], b"\x81\x063probe");
    stream.write_all(&client_text("5")).await.unwrap();
    stream
        .write_all(&client_text("4over websocket"))
        .await
        .unwrap();
    assert_eq!(server.next().await, Event::Message("over websocket".into()));
}

/// Sends a packet as soon as it hears of a session.
struct Greeter;

impl EngineHandler for Greeter {
    type Data = ();
    fn on_open(&self, socket: &Arc<Socket<()>>) {
        let _ = socket.send_text(b"welcome");
    }
    fn on_message(&self, _socket: &Arc<Socket<()>>, _text: Bytes) {}
    fn on_binary(&self, _socket: &Arc<Socket<()>>, _data: Bytes) {}
    fn on_close(&self, _socket: &Arc<Socket<()>>, _reason: CloseReason) {}
}

/// A packet the handler sends from `on_open` comes after the open packet, on a
/// WebSocket answered directly and on one upgraded through hyper.
#[tokio::test]
async fn the_open_packet_comes_first() {
    let engine = Engine::new(config(), Greeter);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, remote) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(engineio::serve_connection(
                engine.clone(),
                stream,
                remote,
                engineio::NotFound,
            ));
        }
    });
    for through_hyper in [false, true] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        if through_hyper {
            // A first request on the connection, so the upgrade is not the first one.
            stream
                .write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let head = read_past_head(&mut stream, &mut buf, 9).await;
            assert!(buf.starts_with(b"HTTP/1.1 404"));
            buf.drain(..head + 9); // "Not Found"
        }
        stream.write_all(UPGRADE_HEAD.as_bytes()).await.unwrap();
        let head = read_past_head(&mut stream, &mut buf, 0).await;
        assert!(buf.starts_with(b"HTTP/1.1 101 "), "{through_hyper}");
        buf.drain(..head);
        let mut decoder = ws::Decoder::new(ws::Role::Client, 1 << 20);
        let mut texts = Vec::new();
        let mut bytes = bytes::BytesMut::from(&buf[..]);
        while texts.len() < 2 {
            while let Some(m) = decoder.decode(&mut bytes).unwrap() {
                if let ws::Message::Text(t) = m {
                    texts.push(String::from_utf8(t.to_vec()).unwrap());
                }
            }
            if texts.len() >= 2 {
                break;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            bytes.extend_from_slice(&chunk[..n]);
        }
        assert!(texts[0].starts_with("0{"), "{through_hyper}: {texts:?}");
        assert_eq!(texts[1], "4welcome", "{through_hyper}");
    }
}
