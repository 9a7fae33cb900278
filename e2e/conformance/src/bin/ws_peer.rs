//! The bare WebSocket codec over TCP, for differential tests against other
//! implementations (tokio-tungstenite, Python `websockets`).
//!
//! ```text
//! ws-peer server [--port P] [--max N]   # echo server; prints PID and LISTENING <port>
//! ws-peer client <host:port> [path]     # runs a fixed script, prints what comes back
//! ```
//!
//! The server echoes text and binary messages (as one frame each), answers pings, and
//! answers a close frame with the same code. Protocol errors are answered with a close
//! frame carrying the code the RFC asks for.
//!
//! The client sends, one step at a time, waiting for the reply to each: a text, a text with multi-byte characters, a binary, a
//! 70,000-byte binary, a text in three fragments that split a code point, a ping, and a
//! close with code 4000. It prints one line per message received: `text <utf8>`,
//! `binary <len> <first bytes hex>`, `pong <utf8>`, `close <code>`.

use std::io::Write as _;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ws::{CloseCode, Decoder, Frame, Message, OpCode, Role};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    let result = match args.first().map(String::as_str) {
        Some("server") => {
            let port = flag(&args, "--port")
                .map_or(Ok(0), |p| p.parse())
                .unwrap_or_else(|_| fail("bad --port"));
            let max = flag(&args, "--max")
                .map_or(Ok(1 << 20), |p| p.parse())
                .unwrap_or_else(|_| fail("bad --max"));
            runtime.block_on(server(port, max))
        }
        Some("client") => {
            let addr = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| fail("client needs <host:port>"));
            let path = args.get(2).cloned().unwrap_or_else(|| "/".to_owned());
            runtime.block_on(client(&addr, &path))
        }
        _ => fail("usage: ws-peer server [--port P] [--max N] | ws-peer client <host:port> [path]"),
    };
    if let Err(e) = result {
        fail(&e.to_string());
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("ws-peer: {msg}");
    std::process::exit(2)
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
}

async fn server(port: u16, max: usize) -> Result<(), BoxError> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "PID {}", std::process::id())?;
    writeln!(out, "LISTENING {}", listener.local_addr()?.port())?;
    out.flush()?;
    drop(out);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(stream, max).await {
                eprintln!("ws-peer: connection: {e}");
            }
        });
    }
}

/// Reads an HTTP head from `stream`; returns it and any bytes after it.
async fn read_head(stream: &mut TcpStream) -> Result<(Vec<u8>, BytesMut), BoxError> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf.to_vec(), rest));
        }
        if buf.len() > 16 * 1024 || stream.read_buf(&mut buf).await? == 0 {
            return Err("no HTTP head".into());
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a [u8]> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().as_bytes())
    })
}

async fn serve(mut stream: TcpStream, max: usize) -> Result<(), BoxError> {
    let (head, mut buf) = read_head(&mut stream).await?;
    let head = String::from_utf8(head)?;
    let request = ws::handshake::Request {
        upgrade: header(&head, "upgrade"),
        connection: header(&head, "connection"),
        version: header(&head, "sec-websocket-version"),
        key: header(&head, "sec-websocket-key"),
    };
    let accept = match request.accept() {
        Ok(accept) => accept,
        Err(e) => {
            stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Err(e.into());
        }
    };
    stream
        .write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut decoder = Decoder::new(Role::Server, max);
    loop {
        loop {
            let reply = match decoder.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(Message::Text(t))) => Frame::server(OpCode::Text, &t),
                Ok(Some(Message::Binary(b))) => Frame::server(OpCode::Binary, &b),
                Ok(Some(Message::Ping(p))) => Frame::server(OpCode::Pong, &p),
                Ok(Some(Message::Pong(_))) => continue,
                Ok(Some(Message::Close(close))) => {
                    let code = close.map_or(CloseCode::NORMAL, |c| c.code);
                    stream.write_all(Frame::close(code, "").as_bytes()).await?;
                    return Ok(());
                }
                Err(e) => {
                    stream
                        .write_all(Frame::close(e.close_code(), "").as_bytes())
                        .await?;
                    return Ok(());
                }
            };
            stream.write_all(reply.as_bytes()).await?;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

async fn client(addr: &str, path: &str) -> Result<(), BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    let key = ws::handshake::client_key(rand::random());
    stream
        .write_all(ws::handshake::client_request(addr, path, &key).as_bytes())
        .await?;
    let mut buf = BytesMut::with_capacity(1024);
    let head = loop {
        if let Some(head) = ws::handshake::parse_response(&buf)? {
            break head;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("connection closed during the handshake".into());
        }
    };
    head.check_upgrade(&key)?;
    let _ = buf.split_to(head.len);

    let key = || rand::random::<[u8; 4]>();
    let euro = "€".as_bytes();
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    // Each step is sent whole, then one reply is read before the next step.
    let script: Vec<Vec<Frame>> = vec![
        vec![Frame::client(OpCode::Text, b"hello", key())],
        vec![Frame::client(
            OpCode::Text,
            "héllo wörld €".as_bytes(),
            key(),
        )],
        vec![Frame::client(OpCode::Binary, &[0, 1, 2, 255], key())],
        vec![Frame::client(OpCode::Binary, &big, key())],
        vec![
            Frame::fragment(OpCode::Text, &[b'a', euro[0]], false, Some(key())),
            Frame::fragment(OpCode::Continuation, &euro[1..2], false, Some(key())),
            Frame::fragment(OpCode::Continuation, &[euro[2], b'z'], true, Some(key())),
        ],
        vec![Frame::client(OpCode::Ping, b"are you there", key())],
        vec![Frame::client(OpCode::Close, &4000u16.to_be_bytes(), key())],
    ];
    let mut decoder = Decoder::new(Role::Client, 1 << 20);
    let mut out = std::io::stdout().lock();
    for step in &script {
        for frame in step {
            stream.write_all(frame.as_bytes()).await?;
        }
        let message = loop {
            match decoder.decode(&mut buf)? {
                Some(Message::Ping(_)) => continue,
                Some(message) => break message,
                None => {
                    if stream.read_buf(&mut buf).await? == 0 {
                        writeln!(out, "eof")?;
                        return Ok(());
                    }
                }
            }
        };
        match message {
            Message::Text(t) => writeln!(out, "text {}", String::from_utf8_lossy(&t))?,
            Message::Binary(b) => {
                let hex: String = b.iter().take(8).map(|x| format!("{x:02x}")).collect();
                writeln!(out, "binary {} {hex}", b.len())?;
            }
            Message::Pong(p) => writeln!(out, "pong {}", String::from_utf8_lossy(&p))?,
            Message::Close(c) => {
                writeln!(out, "close {}", c.map_or(1005, |c| c.code.0))?;
                return Ok(());
            }
            Message::Ping(_) => {}
        }
    }
    Ok(())
}
