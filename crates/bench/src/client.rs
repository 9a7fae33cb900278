//! An Engine.IO v4 client over WebSocket, on the project's own codec.

use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use engineio_proto::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use ws::{Decoder, Frame, Message, OpCode, Role};

use crate::Target;

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The upgrade or the open packet was wrong.
    #[error("handshake: {0}")]
    Handshake(String),
    /// Reading or writing failed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The server broke the WebSocket protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] ws::ProtocolError),
    /// The server closed the connection or the session.
    #[error("closed by the server")]
    Closed,
}

impl ClientError {
    /// A short label for counting failures by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ClientError::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused => "refused",
            ClientError::Connect(e) if e.kind() == io::ErrorKind::AddrNotAvailable => "no_port",
            ClientError::Connect(_) => "connect",
            ClientError::Handshake(_) => "handshake",
            ClientError::Io(_) => "io",
            ClientError::Protocol(_) => "protocol",
            ClientError::Closed => "closed",
        }
    }
}

/// A TCP connection to the target from connection `i`'s source address, no delay.
///
/// # Errors
///
/// [`ClientError::Connect`] when it cannot be made.
pub async fn tcp_connect(target: &Target, i: usize) -> Result<TcpStream, ClientError> {
    let addr = target.addr_of(i);
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ClientError::Connect)?;
    if let Some(source) = target.source(i) {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(ClientError::Connect)?;
    }
    let stream = socket.connect(addr).await.map_err(ClientError::Connect)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The number after `key` (e.g. `"seq":`) in a packet, read from its bytes (no JSON
/// parse per delivery).
pub fn number_after(packet: &[u8], key: &[u8]) -> Option<u64> {
    let first = *key.first()?;
    let mut from = 0;
    while let Some(at) = packet[from..].iter().position(|&b| b == first) {
        let start = from + at;
        if packet[start..].starts_with(key) {
            return digits(&packet[start + key.len()..]).map(|(n, _)| n);
        }
        from = start + 1;
    }
    None
}

/// The fan-out fields of a packet, `"p":P,"s":S,"t":T` in any order, in one pass over
/// the bytes before the padding: (phase, sequence number, send time).
pub fn fanout_fields(packet: &[u8]) -> Option<(u64, u64, u64)> {
    let (mut p, mut s, mut t) = (None, None, None);
    let mut i = 0;
    while i + 4 < packet.len() {
        // `"k":` with a one-letter key.
        if packet[i] == b'"' && packet[i + 2] == b'"' && packet[i + 3] == b':' {
            let slot = match packet[i + 1] {
                b'p' => &mut p,
                b's' => &mut s,
                b't' => &mut t,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let (n, len) = digits(&packet[i + 4..])?;
            *slot = Some(n);
            if let (Some(p), Some(s), Some(t)) = (p, s, t) {
                return Some((p, s, t));
            }
            i += 4 + len;
        } else {
            i += 1;
        }
    }
    None
}

/// The decimal number at the start of `bytes`, and its length.
fn digits(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut n: u64 = 0;
    let mut len = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        len += 1;
    }
    (len > 0).then_some((n, len))
}

/// A connection messages can be read from, whatever its transport.
pub trait Receive: Send + 'static {
    /// The next message; pings are answered.
    fn recv(&mut self) -> impl std::future::Future<Output = Result<Bytes, ClientError>> + Send;
}

impl Receive for Conn {
    fn recv(&mut self) -> impl std::future::Future<Output = Result<Bytes, ClientError>> + Send {
        self.recv_message()
    }
}

impl Receive for crate::polling::PollConn {
    fn recv(&mut self) -> impl std::future::Future<Output = Result<Bytes, ClientError>> + Send {
        self.recv_message()
    }
}

/// One Engine.IO session over WebSocket.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    /// The session id from the open packet.
    pub sid: String,
}

impl Conn {
    /// Connects (connection number `i` picks the source address), upgrades, and waits
    /// for the open packet.
    ///
    /// # Errors
    ///
    /// A [`ClientError`] saying which step failed.
    pub async fn connect(target: &Target, i: usize) -> Result<Conn, ClientError> {
        let stream = tcp_connect(target, i).await?;
        let key = ws::handshake::client_key(rand::random());
        let path = format!("{}?EIO=4&transport=websocket", target.path);
        let request = ws::handshake::client_request(&target.addr.to_string(), &path, &key);
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(512),
            decoder: Decoder::new(Role::Client, 64 << 20),
            sid: String::new(),
        };
        conn.stream.write_all(request.as_bytes()).await?;
        let head = loop {
            match ws::handshake::parse_response(&conn.buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => return Err(ClientError::Handshake(e.to_string())),
            }
            if conn.stream.read_buf(&mut conn.buf).await? == 0 {
                return Err(ClientError::Handshake("closed before the response".into()));
            }
        };
        head.check_upgrade(&key)
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
        let _ = conn.buf.split_to(head.len);
        match conn.recv_packet().await? {
            Packet::Open(json) => {
                let text = String::from_utf8_lossy(&json);
                conn.sid = text
                    .split("\"sid\":\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or_default()
                    .to_owned();
                Ok(conn)
            }
            other => Err(ClientError::Handshake(format!(
                "expected the open packet, got {other:?}"
            ))),
        }
    }

    /// The next Engine.IO packet; WebSocket pings are answered on the way.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] on a close frame or EOF, or the I/O or protocol error.
    pub async fn recv_packet(&mut self) -> Result<Packet, ClientError> {
        loop {
            while let Some(message) = self.decoder.decode(&mut self.buf)? {
                match message {
                    Message::Text(text) => {
                        return Packet::decode_text(text)
                            .map_err(|e| ClientError::Handshake(e.to_string()))
                    }
                    Message::Binary(data) => return Ok(Packet::Binary(data)),
                    Message::Ping(p) => {
                        let pong = Frame::client(OpCode::Pong, &p, rand::random());
                        self.stream.write_all(pong.as_bytes()).await?;
                    }
                    Message::Pong(_) => {}
                    Message::Close(_) => return Err(ClientError::Closed),
                }
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// The next message, text or binary; Engine.IO pings are answered and noops skipped.
    ///
    /// # Errors
    ///
    /// As [`Conn::recv_packet`]; a `close` packet is [`ClientError::Closed`].
    pub async fn recv_message(&mut self) -> Result<Bytes, ClientError> {
        loop {
            match self.recv_packet().await? {
                Packet::Message(m) | Packet::Binary(m) => return Ok(m),
                Packet::Ping(_) => self.send_raw(b"3").await?,
                Packet::Close => return Err(ClientError::Closed),
                _ => {}
            }
        }
    }

    /// Sends an Engine.IO text message (`4` + text).
    ///
    /// # Errors
    ///
    /// The write error.
    pub async fn send_message(&mut self, text: &[u8]) -> Result<(), ClientError> {
        let mut packet = Vec::with_capacity(text.len() + 1);
        packet.push(b'4');
        packet.extend_from_slice(text);
        self.send_raw(&packet).await
    }

    /// Connects as [`Conn::connect`], then joins the Socket.IO namespace `/` and waits for
    /// the CONNECT reply.
    ///
    /// # Errors
    ///
    /// As [`Conn::connect`]; a refused or unexpected reply is a handshake error.
    pub async fn connect_socketio(target: &Target, i: usize) -> Result<Conn, ClientError> {
        let mut conn = Conn::connect(target, i).await?;
        conn.send_message(b"0").await?;
        let reply = conn.recv_message().await?;
        if reply.first() == Some(&b'0') {
            Ok(conn)
        } else {
            Err(ClientError::Handshake(format!(
                "CONNECT refused: {}",
                String::from_utf8_lossy(&reply)
            )))
        }
    }

    /// Splits the connection into a reader and a writer that can run in separate tasks
    /// (the reader answers pings through a handle on the writer).
    pub fn split(self) -> (Reader, Writer) {
        let (read, write) = self.stream.into_split();
        let writer = Writer(std::sync::Arc::new(tokio::sync::Mutex::new(write)));
        (
            Reader {
                read,
                buf: self.buf,
                decoder: self.decoder,
                writer: writer.clone(),
            },
            writer,
        )
    }

    /// Sends a raw Engine.IO text packet and one binary frame after it (a Socket.IO
    /// packet with one attachment), in one write.
    ///
    /// # Errors
    ///
    /// The write error.
    pub async fn send_raw_with_binary(
        &mut self,
        packet: &[u8],
        binary: &[u8],
    ) -> Result<(), ClientError> {
        let mut out = Frame::client(OpCode::Text, packet, rand::random())
            .as_bytes()
            .to_vec();
        out.extend_from_slice(Frame::client(OpCode::Binary, binary, rand::random()).as_bytes());
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Sends a raw Engine.IO text packet (`3`, `4...`).
    ///
    /// # Errors
    ///
    /// The write error.
    pub async fn send_raw(&mut self, packet: &[u8]) -> Result<(), ClientError> {
        let frame = Frame::client(OpCode::Text, packet, rand::random());
        self.stream.write_all(frame.as_bytes()).await?;
        Ok(())
    }
}

/// The writing half of a split connection; clones share it.
#[derive(Debug, Clone)]
pub struct Writer(std::sync::Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>);

impl Writer {
    /// Sends several raw Engine.IO text packets in one write.
    ///
    /// # Errors
    ///
    /// The write error.
    pub async fn send_raw_batch<'a>(
        &self,
        packets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), ClientError> {
        let mut out = Vec::new();
        for p in packets {
            out.extend_from_slice(Frame::client(OpCode::Text, p, rand::random()).as_bytes());
        }
        // tokio mutex: held across the write, which may wait for the socket.
        self.0.lock().await.write_all(&out).await?;
        Ok(())
    }

    /// Sends a raw Engine.IO text packet followed by binary frames (a Socket.IO
    /// `BINARY_EVENT` or `BINARY_ACK` and its attachments), in one write.
    ///
    /// # Errors
    ///
    /// The write error.
    pub async fn send_with_binary(
        &self,
        packet: &[u8],
        binary: &[&[u8]],
    ) -> Result<(), ClientError> {
        let mut out = Frame::client(OpCode::Text, packet, rand::random())
            .as_bytes()
            .to_vec();
        for b in binary {
            out.extend_from_slice(Frame::client(OpCode::Binary, b, rand::random()).as_bytes());
        }
        // tokio mutex: held across the write, which may wait for the socket.
        self.0.lock().await.write_all(&out).await?;
        Ok(())
    }

    /// Sends a raw Engine.IO text packet.
    ///
    /// # Errors
    ///
    /// The write error.
    pub async fn send_raw(&self, packet: &[u8]) -> Result<(), ClientError> {
        let frame = Frame::client(OpCode::Text, packet, rand::random());
        // tokio mutex: held across the write, which may wait for the socket.
        self.0.lock().await.write_all(frame.as_bytes()).await?;
        Ok(())
    }
}

/// The reading half of a split connection.
#[derive(Debug)]
pub struct Reader {
    read: tokio::net::tcp::OwnedReadHalf,
    buf: BytesMut,
    decoder: Decoder,
    writer: Writer,
}

/// An Engine.IO message and whether it came in a binary frame.
#[derive(Debug)]
pub enum Incoming {
    /// A text message (`4` stripped).
    Text(Bytes),
    /// A binary message (a Socket.IO attachment).
    Binary(Bytes),
}

impl Reader {
    /// The next Engine.IO message (text or binary); pings are answered, noops skipped.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] on a close frame, a close packet or EOF.
    pub async fn recv_message(&mut self) -> Result<Bytes, ClientError> {
        match self.recv_incoming().await? {
            Incoming::Text(m) | Incoming::Binary(m) => Ok(m),
        }
    }

    /// As [`Reader::recv_message`], saying whether the message was binary.
    ///
    /// # Errors
    ///
    /// As [`Reader::recv_message`].
    pub async fn recv_incoming(&mut self) -> Result<Incoming, ClientError> {
        loop {
            while let Some(message) = self.decoder.decode(&mut self.buf)? {
                let packet = match message {
                    Message::Text(text) => Packet::decode_text(text)
                        .map_err(|e| ClientError::Handshake(e.to_string()))?,
                    Message::Binary(data) => Packet::Binary(data),
                    Message::Ping(p) => {
                        let pong = Frame::client(OpCode::Pong, &p, rand::random());
                        self.writer
                            .0
                            .lock()
                            .await
                            .write_all(pong.as_bytes())
                            .await?;
                        continue;
                    }
                    Message::Pong(_) => continue,
                    Message::Close(_) => return Err(ClientError::Closed),
                };
                match packet {
                    Packet::Message(m) => return Ok(Incoming::Text(m)),
                    Packet::Binary(m) => return Ok(Incoming::Binary(m)),
                    Packet::Ping(_) => self.writer.send_raw(b"3").await?,
                    Packet::Close => return Err(ClientError::Closed),
                    _ => {}
                }
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}
