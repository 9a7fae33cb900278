//! What handlers receive: events, acknowledgements, connect requests.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
use serde::Deserializer as _;
use socketio_proto::{json, msgpack, Data, Packet, PacketType, Str};

use crate::args::{encode, Body};
use crate::socket::Conn;
use crate::{Args, Error, RawArgs, SocketRef};

/// An event from a client: its name, its arguments (still in wire form), and the means
/// to acknowledge it when the client asked for that.
pub struct Event {
    pub(crate) packet: Packet,
    pub(crate) socket: SocketRef,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name())
            .field("id", &self.packet.id)
            .finish_non_exhaustive()
    }
}

impl Event {
    /// The socket that sent it.
    pub fn socket(&self) -> &SocketRef {
        &self.socket
    }

    /// The event name.
    pub fn name(&self) -> Str {
        self.packet.event_name().unwrap_or(Str::ROOT)
    }

    /// The arguments after the name, read as `T` (a tuple, or anything that reads from a
    /// sequence, such as `Vec<serde_json::Value>`). Arguments beyond what `T` reads are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Deserialize`] when they do not read as `T`.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, Error> {
        read_seq(
            &self.packet.data,
            SkipName::<T>(Rest::All, std::marker::PhantomData),
        )
    }

    /// The first argument after the name, read as `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Deserialize`] when it is missing or does not read as `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        read_seq(
            &self.packet.data,
            SkipName::<T>(Rest::First, std::marker::PhantomData),
        )
    }

    /// The binary attachments of the event (default parser), in placeholder order.
    pub fn attachments(&self) -> &[Bytes] {
        match &self.packet.data {
            Data::JsonBinary { attachments, .. } => attachments,
            _ => &[],
        }
    }

    /// The arguments in wire form, to pass on unchanged (binary included).
    pub fn raw_args(&self) -> RawArgs {
        raw_event_args(&self.packet.data)
    }

    /// The arguments after the first `n`, in wire form, to pass on unchanged (a relay
    /// that reads a room and an event name, then forwards the rest without decoding it).
    /// `None` when the event has fewer than `n` arguments.
    pub fn raw_args_after(&self, n: usize) -> Option<RawArgs> {
        match raw_event_args(&self.packet.data) {
            RawArgs::Json(text, attachments) => {
                // Placeholders count attachments from the start of the packet: all are
                // kept, so the numbers in the remaining arguments stay right.
                json::skip_args(&text, n).map(|rest| RawArgs::Json(rest, attachments))
            }
            RawArgs::Msgpack(raw, count) if count >= n => {
                msgpack::skip_args(&raw, n).map(|rest| RawArgs::Msgpack(rest, count - n))
            }
            RawArgs::Msgpack(..) => None,
        }
    }

    /// Whether the client waits for an acknowledgement.
    pub fn wants_ack(&self) -> bool {
        self.packet.id.is_some()
    }

    /// Acknowledges the event with `args`.
    ///
    /// # Errors
    ///
    /// [`Error::NoAck`] when the client asked for none; otherwise as an emit.
    pub fn ack<A: Args>(&self, args: A) -> Result<(), Error> {
        let id = self.packet.id.ok_or(Error::NoAck)?;
        let frames = encode(
            self.socket.parser(),
            PacketType::Ack,
            self.socket.nsp(),
            Some(id),
            Body::Ack(&args),
        )?;
        self.socket.send_frames(frames)
    }
}

/// A client's answer to an emit with ack.
#[derive(Debug, Clone)]
pub struct AckResponse {
    pub(crate) data: Data,
}

impl AckResponse {
    /// An answer from its arguments in wire form (an array of them), for adapters that
    /// pass on answers from other nodes.
    pub fn from_data(data: Data) -> AckResponse {
        AckResponse { data }
    }

    /// The answer's arguments in wire form.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The answer's arguments read as `T` (a tuple, or anything that reads from a
    /// sequence).
    ///
    /// # Errors
    ///
    /// [`Error::Deserialize`] when they do not read as `T`.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, Error> {
        read_seq(&self.data, Whole::<T>(std::marker::PhantomData))
    }

    /// The binary attachments of the answer (default parser).
    pub fn attachments(&self) -> &[Bytes] {
        match &self.data {
            Data::JsonBinary { attachments, .. } => attachments,
            _ => &[],
        }
    }
}

/// A client asking to join a namespace: its auth payload and the connection it came on.
/// Middlewares may attach typed data to it; the socket inherits that data.
pub struct ConnectRequest {
    pub(crate) nsp: Str,
    pub(crate) auth: Data,
    pub(crate) conn: Arc<Conn>,
    pub(crate) data: parking_lot::Mutex<crate::socket::Extensions>,
}

impl fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl ConnectRequest {
    /// The namespace asked for (a dynamic namespace's full name).
    pub fn nsp(&self) -> &str {
        self.nsp.as_str()
    }

    /// The auth payload read as `T`; an absent payload reads as an empty object.
    ///
    /// # Errors
    ///
    /// [`Error::Deserialize`] when it does not read as `T`.
    pub fn auth<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match &self.auth {
            Data::None => {
                serde_json::from_slice(b"{}").map_err(|e| Error::Deserialize(e.to_string()))
            }
            Data::Json(raw) | Data::JsonBinary { json: raw, .. } => {
                serde_json::from_slice(raw).map_err(|e| Error::Deserialize(e.to_string()))
            }
            Data::Msgpack(raw) => {
                rmp_serde::from_slice(raw).map_err(|e| Error::Deserialize(e.to_string()))
            }
        }
    }

    /// The auth payload as JSON; an absent payload is `{}`.
    pub fn auth_json(&self) -> serde_json::Value {
        self.auth().unwrap_or_else(|_| serde_json::json!({}))
    }

    /// The Engine.IO connection (address, headers, query of the opening request).
    pub fn connection(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Attaches a typed value for the socket to be (verified claims, a user id, ...).
    pub fn set_data<T: std::any::Any + Send + Sync>(&self, value: T) {
        self.data.lock().insert(value);
    }

    /// A copy of a value a middleware attached.
    pub fn data<T: std::any::Any + Clone + Send + Sync>(&self) -> Option<T> {
        self.data.lock().get::<T>().cloned()
    }
}

/// The raw arguments after the event name.
pub(crate) fn raw_event_args(data: &Data) -> RawArgs {
    match data {
        Data::Json(raw) => RawArgs::Json(json::event_args(raw).unwrap_or_default(), Vec::new()),
        Data::JsonBinary {
            json: raw,
            attachments,
        } => RawArgs::Json(
            json::event_args(raw).unwrap_or_default(),
            attachments.clone(),
        ),
        Data::Msgpack(raw) => {
            let (args, n) = msgpack::event_args(raw).unwrap_or_default();
            RawArgs::Msgpack(args, n)
        }
        Data::None => RawArgs::Json(Bytes::new(), Vec::new()),
    }
}

/// Reads a packet's payload array with `visitor`, whichever the parser.
fn read_seq<'de, V: Visitor<'de>>(data: &'de Data, visitor: V) -> Result<V::Value, Error> {
    match data {
        Data::Json(raw) => {
            let mut de = serde_json::Deserializer::from_slice(raw);
            de.deserialize_seq(visitor)
                .map_err(|e| Error::Deserialize(e.to_string()))
        }
        // Placeholders in the JSON find their bytes in the packet's attachments.
        Data::JsonBinary {
            json: raw,
            attachments,
        } => crate::binary::reading(attachments, || {
            let mut de = serde_json::Deserializer::from_slice(raw);
            de.deserialize_seq(visitor)
                .map_err(|e| Error::Deserialize(e.to_string()))
        }),
        Data::Msgpack(raw) => {
            let mut de = rmp_serde::Deserializer::new(&raw[..]);
            de.deserialize_seq(visitor)
                .map_err(|e| Error::Deserialize(e.to_string()))
        }
        Data::None => Err(Error::Deserialize("no arguments".into())),
    }
}

enum Rest {
    All,
    First,
}

/// Skips the event name, reads the rest (or the first argument) as `T`, drains the rest.
struct SkipName<T>(Rest, std::marker::PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for SkipName<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        seq.next_element::<IgnoredAny>()?;
        let value = match self.0 {
            Rest::All => T::deserialize(de::value::SeqAccessDeserializer::new(&mut seq))?,
            Rest::First => seq
                .next_element::<T>()?
                .ok_or_else(|| de::Error::custom("missing argument"))?,
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(value)
    }
}

/// Reads the whole array as `T`, draining what `T` leaves.
struct Whole<T>(std::marker::PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for Whole<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ack array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        let value = T::deserialize(de::value::SeqAccessDeserializer::new(&mut seq))?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(value)
    }
}
