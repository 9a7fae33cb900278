//! What clients send and receive (`IM.md`): message bodies both ways, the conversation
//! and message objects.

use std::sync::atomic::Ordering;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use socketio::Binary;
use store::{Body, Kind, Message};

use crate::cache::Conv;

/// A body from a client: any JSON value, or binary (an attachment of the default parser,
/// `bin` of msgpack).
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "body is a JSON value, or binary data as the whole body (not inside a JSON value)"
)]
pub(crate) enum BodyIn {
    /// Binary first: a JSON object that is not an attachment placeholder falls through.
    Binary(Binary),
    Json(Value),
}

impl BodyIn {
    /// The body as stored (JSON as its text, key order kept), or `None` for a JSON value
    /// with binary inside (the default parser's attachment placeholders): its bytes
    /// would be lost, so it is refused.
    pub(crate) fn into_store(self) -> Option<Body> {
        match self {
            BodyIn::Binary(b) => Some(Body::Binary(b.0.to_vec())),
            BodyIn::Json(v) if has_placeholder(&v) => None,
            BodyIn::Json(v) => Some(Body::Json(v.to_string())),
        }
    }
}

/// Whether `v` holds an attachment placeholder (`{"_placeholder": true, "num": n}`).
fn has_placeholder(v: &Value) -> bool {
    match v {
        Value::Object(map) => {
            (map.len() == 2
                && map.get("_placeholder") == Some(&Value::Bool(true))
                && map.get("num").is_some_and(Value::is_u64))
                || map.values().any(has_placeholder)
        }
        Value::Array(items) => items.iter().any(has_placeholder),
        _ => false,
    }
}

/// A stored body on its way to a client.
pub(crate) struct BodyOut<'a>(pub(crate) &'a Body);

impl Serialize for BodyOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Body::Binary(b) => Binary(b.clone().into()).serialize(s),
            // Stored JSON is valid JSON (it was a value when it came in): written as it
            // is for JSON, read back into a value for msgpack.
            Body::Json(text) if s.is_human_readable() => {
                match serde_json::value::RawValue::from_string(text.clone()) {
                    Ok(raw) => raw.serialize(s),
                    Err(e) => Err(serde::ser::Error::custom(e)),
                }
            }
            Body::Json(text) => match serde_json::from_str::<Value>(text) {
                Ok(v) => v.serialize(s),
                Err(e) => Err(serde::ser::Error::custom(e)),
            },
        }
    }
}

/// The `message` object.
pub(crate) struct MessageOut<'a>(pub(crate) &'a Message);

impl Serialize for MessageOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut map = s.serialize_map(Some(7))?;
        map.serialize_entry("conversation", &m.conversation)?;
        map.serialize_entry("id", &m.id)?;
        map.serialize_entry("seq", &m.seq)?;
        map.serialize_entry("from", &m.sender)?;
        map.serialize_entry("cid", &m.cid)?;
        map.serialize_entry("body", &BodyOut(&m.body))?;
        map.serialize_entry("ts", &m.ts_ms)?;
        map.end()
    }
}

/// Members listed in a conversation object at most; larger groups page them.
pub(crate) const LISTED_MEMBERS: usize = 100;

/// The `conversation` object as `user` sees it (`read_seq` and `unread` are theirs).
pub(crate) struct ConversationOut<'a> {
    pub(crate) conv: &'a Conv,
    pub(crate) user: &'a str,
}

impl ConversationOut<'_> {
    /// `user`'s read watermark and unread count.
    pub(crate) fn read_and_unread(conv: &Conv, user: &str) -> (u64, u64) {
        let last = conv.last_seq.load(Ordering::Acquire);
        let read = conv
            .members
            .read()
            .get(user)
            .map_or(last, |m| m.read_seq.load(Ordering::Acquire));
        // Sending marks a conversation read up to the message sent, so every message
        // after the watermark is someone else's.
        (read.min(last), last.saturating_sub(read))
    }
}

impl Serialize for ConversationOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.conv;
        let (read_seq, unread) = ConversationOut::read_and_unread(c, self.user);
        let last = c.last.lock().clone();
        let (count, members) = {
            let members = c.members.read();
            let listed = (members.len() <= LISTED_MEMBERS).then(|| {
                let mut v: Vec<&str> = members.keys().map(|k| &**k).collect();
                v.sort_unstable();
                v.into_iter().map(str::to_owned).collect::<Vec<String>>()
            });
            (members.len(), listed)
        };
        let mut map = s.serialize_map(Some(10))?;
        map.serialize_entry("id", &c.id)?;
        map.serialize_entry("type", c.kind.as_str())?;
        map.serialize_entry("title", &c.title)?;
        map.serialize_entry("members", &members)?;
        map.serialize_entry("member_count", &count)?;
        map.serialize_entry("owner", &c.owner.read().as_deref())?;
        map.serialize_entry("last_seq", &c.last_seq.load(Ordering::Acquire))?;
        map.serialize_entry("read_seq", &read_seq)?;
        map.serialize_entry("unread", &unread)?;
        map.serialize_entry("last_message", &last.as_deref().map(MessageOut))?;
        map.end()
    }
}

/// A conversation's kind from a client's `type`.
pub(crate) fn kind(s: &str) -> Option<Kind> {
    match s {
        "direct" => Some(Kind::Direct),
        "group" => Some(Kind::Group),
        _ => None,
    }
}
