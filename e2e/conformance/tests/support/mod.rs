//! Test support: start the `conformance` binary, speak raw HTTP/1.1 and WebSocket to it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each test binary uses a part; helpers unwrap their own setup

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ws::{Decoder, Frame, Message, OpCode, Role};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `f`, failing the test after [`WAIT`].
pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

/// A running `conformance` server, killed on drop.
pub struct Server {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// The path requests go to (`/engine.io/` or `/socket.io/`).
    pub path: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary on a free port and waits for `LISTENING`; requests go to
    /// `/engine.io/`.
    pub fn start() -> Server {
        Server::start_with(&[], "/engine.io/")
    }

    /// Starts the binary with extra arguments; requests go to `path`.
    pub fn start_with(extra: &[&str], path: &'static str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_conformance"))
            .args(["--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start conformance");
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let first = lines.next().unwrap().unwrap();
        assert!(first.starts_with("PID "), "first line {first:?}");
        let second = lines.next().unwrap().unwrap();
        let port = second
            .strip_prefix("LISTENING ")
            .expect("LISTENING line")
            .parse()
            .unwrap();
        Server { child, port, path }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends one raw HTTP/1.1 request (`Connection: close`) and reads the response.
    pub async fn request(&self, method: &str, query: &str, body: &[u8]) -> Response {
        self.raw(
            format!(
                "{method} {}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                self.path,
                body.len()
            )
            .as_bytes(),
            body,
        )
        .await
    }

    /// `GET /engine.io/?EIO=4&transport=polling[&sid=..]`.
    pub async fn get(&self, sid: Option<&str>) -> Response {
        self.request("GET", &polling_query(sid), b"").await
    }

    /// `POST` of a payload to a polling session.
    pub async fn post(&self, sid: &str, body: &[u8]) -> Response {
        self.request("POST", &polling_query(Some(sid)), body).await
    }

    /// Opens a polling session; returns its sid.
    pub async fn open_polling(&self) -> String {
        let res = self.get(None).await;
        assert_eq!(res.status, 200);
        sid_of(&res.body)
    }

    /// Sends raw bytes (head and body) and reads the whole response.
    pub async fn raw(&self, head: &[u8], body: &[u8]) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        stream.write_all(head).await.unwrap();
        // The server may answer (413) and close before the body is all sent.
        let _ = stream.write_all(body).await;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        within(async {
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        Response::parse(&raw)
    }

    /// Opens a WebSocket (`EIO=4&transport=websocket` plus `extra` query).
    pub async fn ws(&self, extra: &str) -> Ws {
        self.ws_query(&format!("EIO=4&transport=websocket{extra}"))
            .await
            .expect("upgrade accepted")
    }

    /// Opens a WebSocket with exactly this query; `Err` holds the refusal's status.
    pub async fn ws_query(&self, query: &str) -> Result<Ws, Response> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let key = ws::handshake::client_key([9; 16]);
        let request =
            ws::handshake::client_request("127.0.0.1", &format!("{}?{query}", self.path), &key);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let head = loop {
            if let Some(head) = ws::handshake::parse_response(&buf).unwrap() {
                break head;
            }
            if within(stream.read_buf(&mut buf)).await.unwrap() == 0 {
                return Err(Response::parse(&buf));
            }
        };
        if head.status != 101 {
            // The refusal closes the connection: read the rest of it.
            let mut rest = buf.to_vec();
            within(stream.read_to_end(&mut rest)).await.unwrap();
            return Err(Response::parse(&rest));
        }
        head.check_upgrade(&key).unwrap();
        let _ = buf.split_to(head.len);
        Ok(Ws {
            stream,
            buf,
            decoder: Decoder::new(Role::Client, 64 << 20),
            close_reason: None,
        })
    }
}

/// The query of a polling request.
pub fn polling_query(sid: Option<&str>) -> String {
    match sid {
        Some(sid) => format!("EIO=4&transport=polling&sid={sid}"),
        None => "EIO=4&transport=polling".to_owned(),
    }
}

/// The sid inside an open packet (`0{"sid":...}`).
pub fn sid_of(open: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').expect("open packet")).unwrap();
    json["sid"].as_str().unwrap().to_owned()
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code (0 when the connection closed without a response).
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return Response {
                status: 0,
                headers: Vec::new(),
                body: text.into_owned(),
            };
        };
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Response {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `code` of a JSON error body.
    pub fn error_code(&self) -> i64 {
        let json: serde_json::Value = serde_json::from_str(&self.body).expect("JSON error body");
        json["code"].as_i64().unwrap()
    }
}

/// What arrived on a WebSocket.
#[derive(Debug, PartialEq)]
pub enum Got {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame, with its code (1005 when it had none).
    Close(u16),
    /// The TCP connection ended without a close frame.
    Eof,
}

/// A client WebSocket on the project's codec (client role), plus raw writes for
/// malformed frames.
pub struct Ws {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    /// The reason of the server's close frame, once one arrived.
    close_reason: Option<String>,
}

impl Ws {
    /// Sends a text frame.
    pub async fn text(&mut self, text: &str) {
        self.frame(Frame::client(OpCode::Text, text.as_bytes(), [1, 2, 3, 4]))
            .await;
    }

    /// Sends a binary frame.
    pub async fn binary(&mut self, data: &[u8]) {
        self.frame(Frame::client(OpCode::Binary, data, [5, 6, 7, 8]))
            .await;
    }

    /// Sends an encoded frame.
    pub async fn frame(&mut self, frame: Frame) {
        self.raw(frame.as_bytes()).await;
    }

    /// Writes raw bytes (errors ignored: the server may already have closed).
    pub async fn raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next data or close frame (pings are skipped).
    pub async fn recv(&mut self) -> Got {
        within(async {
            loop {
                match self.decoder.decode(&mut self.buf) {
                    Ok(Some(Message::Text(t))) => {
                        return Got::Text(String::from_utf8(t.to_vec()).unwrap())
                    }
                    Ok(Some(Message::Binary(b))) => return Got::Binary(b.to_vec()),
                    Ok(Some(Message::Close(c))) => {
                        self.close_reason = Some(c.as_ref().map_or(String::new(), |c| {
                            String::from_utf8_lossy(&c.reason).into_owned()
                        }));
                        return Got::Close(c.map_or(1005, |c| c.code.0));
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(e) => panic!("server broke the protocol: {e}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return Got::Eof,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// Bytes read off the connection and not yet decoded (what came in the same reads
    /// as the frames returned so far).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next message that is not an Engine.IO ping.
    pub async fn recv_skipping_pings(&mut self) -> Got {
        loop {
            match self.recv().await {
                Got::Text(t) if t == "2" => self.text("3").await,
                other => return other,
            }
        }
    }

    /// Reads until the server's close frame (or EOF), answering Engine.IO pings so that
    /// the heartbeat cannot be what closes the connection; returns the close code.
    pub async fn closed(&mut self) -> Got {
        loop {
            match self.recv().await {
                Got::Text(t) if t == "2" => self.text("3").await,
                Got::Text(_) | Got::Binary(_) => {}
                end => return end,
            }
        }
    }

    /// Reads until the server's close frame (or EOF) without answering pings; returns
    /// the close code.
    pub async fn closed_without_pongs(&mut self) -> Got {
        loop {
            match self.recv().await {
                Got::Text(_) | Got::Binary(_) => {}
                end => return end,
            }
        }
    }

    /// The reason in the server's close frame, once it arrived.
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }
}

/// Builds a client frame by hand: first header byte `b0`, masked or not.
pub fn raw_frame(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![b0];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x11, 0x22, 0x33, 0x44];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}
