//! `bench-floor`: the least a server can do for the bench app, to measure what the
//! machine itself costs: the floor under every server's figures. Not a Socket.IO
//! server: it answers one WebSocket handshake per connection (no polling, no sessions,
//! no heartbeat, no limits, no outbound queues), the CONNECT to `/`, and the bench app's
//! events, parsed by their bytes alone:
//!
//! - `42<id>["echo",data]` → `43<id>[data]`;
//! - `42<id>["join",room]` → the socket joins the room; `43<id>["ok"]`;
//! - `42["broadcast",room,data]` → `42["msg",data]` written to every socket of the
//!   room by the broadcasting task itself, one non-blocking write each (a socket whose
//!   buffer is full misses the packet: fine at the low rates it is meant for).
//!
//! ```text
//! bench-floor [--port P]    # or PORT=P; binds 127.0.0.1
//! ```
//!
//! Prints `PID <pid>` and `LISTENING <port>` when ready, as every server of
//! `scripts/compare.py` does; stopped by SIGTERM.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use bytes::BytesMut;
use tokio::net::TcpStream;
use ws::{Decoder, Frame, Message, OpCode, Role};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Rooms and their sockets.
type Rooms = Arc<Mutex<HashMap<Vec<u8>, Vec<Arc<TcpStream>>>>>;

const SID: &str = "floorfloorfloorfloor";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = bench_app::port("bench-floor", &args);
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    bench_app::runtime("bench-floor").block_on(async move {
        let listener = bench_app::listen("bench-floor", port);
        let rooms = Rooms::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let rooms = rooms.clone();
            tokio::spawn(async move {
                let stream = Arc::new(stream);
                let _ = serve(&stream, &rooms).await;
                for members in rooms.lock().values_mut() {
                    members.retain(|s| !Arc::ptr_eq(s, &stream));
                }
            });
        }
    });
}

/// Writes all of `bytes`, waiting for the socket as needed.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what the socket has into `buf`; 0 at the end.
async fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match stream.try_read_buf(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

async fn serve(stream: &Arc<TcpStream>, rooms: &Rooms) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(1024);
    let end = loop {
        if read_some(stream, &mut buf).await? == 0 {
            return Ok(());
        }
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let _ = buf.split_to(end);
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let mut first = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        ws::handshake::accept_key(key.as_bytes())
    )
    .into_bytes();
    let open = format!(
        r#"0{{"sid":"{SID}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
    );
    first.extend_from_slice(Frame::server(OpCode::Text, open.as_bytes()).as_bytes());
    write_all(stream, &first).await?;
    let mut decoder = Decoder::new(Role::Server, 1 << 20);
    loop {
        while let Some(message) = decoder
            .decode(&mut buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?
        {
            let Message::Text(text) = message else {
                continue;
            };
            if let Some(reply) = answer(&text, stream, rooms) {
                write_all(stream, Frame::server(OpCode::Text, &reply).as_bytes()).await?;
            }
        }
        if read_some(stream, &mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// What to answer to one message (broadcasts are written here, to the room).
fn answer(text: &[u8], stream: &Arc<TcpStream>, rooms: &Rooms) -> Option<Vec<u8>> {
    if text == b"40" {
        return Some(format!(r#"40{{"sid":"{SID}"}}"#).into_bytes());
    }
    let rest = text.strip_prefix(b"42")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let (id, args) = rest.split_at(digits);
    let ack = |body: &[u8]| [b"43", id, body].concat();
    if let Some(data) = args.strip_prefix(br#"["echo","#) {
        return Some(ack(&[b"[", data].concat()));
    }
    if let Some(room) = quoted_after(args, br#"["join",""#) {
        rooms
            .lock()
            .entry(room.to_vec())
            .or_default()
            .push(stream.clone());
        return Some(ack(br#"["ok"]"#));
    }
    let prefix = br#"["broadcast",""#;
    let room = quoted_after(args, prefix)?;
    // After the room's closing quote and its comma: the data and the closing bracket.
    let data = args.get(prefix.len() + room.len() + 2..)?;
    let frame = Frame::server(OpCode::Text, &[br#"42["msg","#, data].concat());
    let members = rooms.lock().get(room).cloned().unwrap_or_default();
    for member in members {
        let _ = member.try_write(frame.as_bytes());
    }
    None
}

/// The string in quotes right after `prefix` (no escapes: the bench app's room names
/// have none).
fn quoted_after<'a>(args: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let rest = args.strip_prefix(prefix)?;
    let end = rest.iter().position(|&c| c == b'"')?;
    Some(&rest[..end])
}
