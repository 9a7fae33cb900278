//! An Engine.IO v4 client over HTTP long-polling, for small runs: a handshake GET, then
//! a long-poll GET always pending and a POST per message, each on a keep-alive
//! HTTP/1.1 connection of its own.

use bytes::{Bytes, BytesMut};
use engineio_proto::{payload, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{tcp_connect, ClientError};
use crate::Target;

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
struct Http {
    stream: TcpStream,
    buf: BytesMut,
    host: String,
}

impl Http {
    async fn connect(target: &Target, i: usize) -> Result<Http, ClientError> {
        Ok(Http {
            stream: tcp_connect(target, i).await?,
            buf: BytesMut::with_capacity(1024),
            host: target.addr.to_string(),
        })
    }

    /// Sends a request and reads the response: status and body (Content-Length only,
    /// which is what Engine.IO servers send).
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Bytes), ClientError> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n",
            self.host
        );
        if method == "POST" {
            req.push_str(&format!(
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        self.stream.write_all(&out).await?;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| ClientError::Handshake("bad status line".into()))?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(ClientError::Closed);
                    }
                }
                let _ = self.buf.split_to(end + 4);
                let body = self.buf.split_to(len).freeze();
                return Ok((status, body));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One Engine.IO session over polling.
#[derive(Debug)]
pub struct PollConn {
    get: Http,
    post: Http,
    query: String,
    /// Messages received but not yet handed out.
    inbox: std::collections::VecDeque<Bytes>,
    /// The session id.
    pub sid: String,
}

impl PollConn {
    /// Opens a session (connection `i` picks the source address), joining the Socket.IO
    /// namespace `/` when `socketio` is set.
    ///
    /// # Errors
    ///
    /// A [`ClientError`] saying which step failed.
    pub async fn connect(
        target: &Target,
        i: usize,
        socketio: bool,
    ) -> Result<PollConn, ClientError> {
        let mut get = Http::connect(target, i).await?;
        let path = format!("{}?EIO=4&transport=polling", target.path);
        let (status, body) = get.request("GET", &path, b"").await?;
        if status != 200 {
            return Err(ClientError::Handshake(format!(
                "handshake answered {status}"
            )));
        }
        let open = String::from_utf8_lossy(&body).into_owned();
        let sid = open
            .split("\"sid\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or_else(|| ClientError::Handshake("no sid in the open packet".into()))?
            .to_owned();
        let post = Http::connect(target, i).await?;
        let mut conn = PollConn {
            get,
            post,
            query: format!("{path}&sid={sid}"),
            inbox: Default::default(),
            sid,
        };
        if socketio {
            conn.send_message(b"0").await?;
            let reply = conn.recv_message().await?;
            if reply.first() != Some(&b'0') {
                return Err(ClientError::Handshake(format!(
                    "CONNECT refused: {}",
                    String::from_utf8_lossy(&reply)
                )));
            }
        }
        Ok(conn)
    }

    /// Sends one Engine.IO message (`4` + text) in a POST.
    ///
    /// # Errors
    ///
    /// The request's error, or a status other than 200.
    pub async fn send_message(&mut self, text: &[u8]) -> Result<(), ClientError> {
        let mut body = Vec::with_capacity(text.len() + 1);
        body.push(b'4');
        body.extend_from_slice(text);
        self.post_raw(&body).await
    }

    async fn post_raw(&mut self, body: &[u8]) -> Result<(), ClientError> {
        let (status, _) = self.post.request("POST", &self.query, body).await?;
        if status == 200 {
            Ok(())
        } else {
            Err(ClientError::Closed)
        }
    }

    /// The next message; pings are answered (by POST) and noops skipped.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] on a close packet or an error status.
    pub async fn recv_message(&mut self) -> Result<Bytes, ClientError> {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Ok(m);
            }
            let (status, body) = self.get.request("GET", &self.query, b"").await?;
            if status != 200 {
                return Err(ClientError::Closed);
            }
            let mut pong = false;
            for packet in payload::decode(&body) {
                match packet.map_err(|e| ClientError::Handshake(e.to_string()))? {
                    Packet::Message(m) | Packet::Binary(m) => self.inbox.push_back(m),
                    Packet::Ping(_) => pong = true,
                    Packet::Close => return Err(ClientError::Closed),
                    _ => {}
                }
            }
            if pong {
                self.post_raw(b"3").await?;
            }
        }
    }
}
