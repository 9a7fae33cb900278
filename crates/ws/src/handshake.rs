//! The opening handshake (RFC 6455 §4) for both roles, on header values only: the caller
//! owns the HTTP parser (hyper on the server side) or uses [`parse_response`] on the
//! client side.

use base64::Engine as _;
use sha1::{Digest, Sha1};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an opening handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// `Upgrade` is missing or does not name `websocket`.
    #[error("missing or invalid Upgrade header")]
    Upgrade,
    /// `Connection` is missing or does not carry the `upgrade` token.
    #[error("missing or invalid Connection header")]
    Connection,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported Sec-WebSocket-Version (13 expected)")]
    Version,
    /// `Sec-WebSocket-Key` is missing or is not the base64 of 16 bytes.
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
    /// The server answered with another status than 101.
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    /// `Sec-WebSocket-Accept` does not match the key sent.
    #[error("Sec-WebSocket-Accept does not match")]
    Accept,
    /// The response head could not be parsed.
    #[error("malformed HTTP response")]
    Malformed,
}

/// The header values of an upgrade request that the server checks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Request<'a> {
    /// `Upgrade`.
    pub upgrade: Option<&'a [u8]>,
    /// `Connection`.
    pub connection: Option<&'a [u8]>,
    /// `Sec-WebSocket-Version`.
    pub version: Option<&'a [u8]>,
    /// `Sec-WebSocket-Key`.
    pub key: Option<&'a [u8]>,
}

impl Request<'_> {
    /// Checks the request (§4.2.1) and returns the `Sec-WebSocket-Accept` value to answer
    /// with.
    ///
    /// # Errors
    ///
    /// The first header found missing or invalid.
    pub fn accept(&self) -> Result<String, HandshakeError> {
        if !self.upgrade.is_some_and(|v| has_token(v, b"websocket")) {
            return Err(HandshakeError::Upgrade);
        }
        if !self.connection.is_some_and(|v| has_token(v, b"upgrade")) {
            return Err(HandshakeError::Connection);
        }
        if self.version.map(trim) != Some(b"13".as_slice()) {
            return Err(HandshakeError::Version);
        }
        let key = self.key.map(trim).ok_or(HandshakeError::Key)?;
        match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(raw) if raw.len() == 16 => Ok(accept_key(key)),
            _ => Err(HandshakeError::Key),
        }
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A client's `Sec-WebSocket-Key` made from 16 random bytes chosen by the caller.
pub fn client_key(nonce: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// The text of a client upgrade request for `path` (with its query) on `host`.
pub fn client_request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// The head of an HTTP response, as read by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Length of the head in bytes, blank line included; the body or frames follow.
    pub len: usize,
}

impl ResponseHead {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks a server's answer to an upgrade request sent with `key` (§4.1).
    ///
    /// # Errors
    ///
    /// A status other than 101, missing upgrade headers, or a wrong accept value.
    pub fn check_upgrade(&self, key: &str) -> Result<(), HandshakeError> {
        if self.status != 101 {
            return Err(HandshakeError::Status(self.status));
        }
        if !self
            .header("upgrade")
            .is_some_and(|v| has_token(v.as_bytes(), b"websocket"))
        {
            return Err(HandshakeError::Upgrade);
        }
        if !self
            .header("connection")
            .is_some_and(|v| has_token(v.as_bytes(), b"upgrade"))
        {
            return Err(HandshakeError::Connection);
        }
        if self.header("sec-websocket-accept") != Some(accept_key(key.as_bytes()).as_str()) {
            return Err(HandshakeError::Accept);
        }
        Ok(())
    }
}

/// Parses an HTTP/1.1 response head from the start of `buf`; `None` until the blank line
/// has arrived.
///
/// # Errors
///
/// [`HandshakeError::Malformed`] when the head is not HTTP/1.x.
pub fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, HandshakeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HandshakeError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HandshakeError::Malformed)?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(HandshakeError::Malformed);
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(HandshakeError::Malformed)?;
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').ok_or(HandshakeError::Malformed)?;
            Ok((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(ResponseHead {
        status,
        headers,
        len: end + 4,
    }))
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Whether the comma-separated header value holds `token`, ignoring case.
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example key of RFC 6455 §1.3.
    #[test]
    fn rfc_accept_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// Request checks: tokens in lists, case, version and key shape.
    #[test]
    fn request_checks() {
        let good = Request {
            upgrade: Some(b"WebSocket"),
            connection: Some(b"keep-alive, Upgrade"),
            version: Some(b"13"),
            key: Some(b"dGhlIHNhbXBsZSBub25jZQ=="),
        };
        assert_eq!(good.accept().unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut r = good;
        r.upgrade = Some(b"h2c");
        assert_eq!(r.accept(), Err(HandshakeError::Upgrade));
        let mut r = good;
        r.connection = None;
        assert_eq!(r.accept(), Err(HandshakeError::Connection));
        let mut r = good;
        r.version = Some(b"8");
        assert_eq!(r.accept(), Err(HandshakeError::Version));
        let mut r = good;
        r.key = Some(b"c2hvcnQ=");
        assert_eq!(r.accept(), Err(HandshakeError::Key));
    }

    /// A client parses and checks a 101 answer.
    #[test]
    fn response_parse_and_check() {
        let key = client_key([7; 16]);
        let text = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\nrest",
            accept_key(key.as_bytes())
        );
        assert_eq!(parse_response(&text.as_bytes()[..20]).unwrap(), None);
        let head = parse_response(text.as_bytes()).unwrap().unwrap();
        assert_eq!(&text[head.len..], "rest");
        head.check_upgrade(&key).unwrap();
        assert_eq!(
            head.check_upgrade(&client_key([8; 16])),
            Err(HandshakeError::Accept)
        );
        let bad = parse_response(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(bad.check_upgrade(&key), Err(HandshakeError::Status(400)));
        assert_eq!(
            parse_response(b"SMTP 220\r\n\r\n"),
            Err(HandshakeError::Malformed)
        );
    }
}
