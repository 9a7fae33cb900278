//! The payload of the `open` packet.

use crate::{Sid, Transport};

/// What the server tells a new session (`PROTOCOL.md` §1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The session id.
    pub sid: Sid,
    /// Transports the session may upgrade to.
    pub upgrades: Vec<Transport>,
    /// Milliseconds between the server's pings.
    pub ping_interval: u64,
    /// Milliseconds the server waits for a pong.
    pub ping_timeout: u64,
    /// Largest payload accepted, in bytes.
    pub max_payload: u64,
}

impl Handshake {
    /// The JSON, keys in the order the Node server writes them.
    pub fn to_json(&self) -> String {
        let upgrades = self
            .upgrades
            .iter()
            .map(|t| format!("\"{}\"", t.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            r#"{{"sid":"{}","upgrades":[{}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            self.sid, upgrades, self.ping_interval, self.ping_timeout, self.max_payload
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The open packet JSON has exactly the spec's keys.
    #[test]
    fn json() {
        let sid = Sid::parse("lv_VI97HAXpY6yYWAAAC").unwrap();
        let h = Handshake {
            sid,
            upgrades: vec![Transport::Websocket],
            ping_interval: 25000,
            ping_timeout: 20000,
            max_payload: 1_000_000,
        };
        assert_eq!(
            h.to_json(),
            r#"{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
    }
}
