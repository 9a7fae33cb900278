//! Arguments of an emit, and the encoding of packets into frames.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use socketio_proto::{json, msgpack, PacketType};
use ws::{Frame, OpCode};

use crate::{Error, Parser};

/// The arguments of an emitted event or an ack: a tuple of serializable values, `()`
/// for none, or [`RawArgs`] to pass on arguments as they came.
pub trait Args: Send + Sync {
    /// Appends the arguments as JSON, each preceded by a comma.
    ///
    /// # Errors
    ///
    /// A value that does not serialize.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), Error>;
    /// Appends the arguments as msgpack values.
    ///
    /// # Errors
    ///
    /// A value that does not serialize.
    fn write_msgpack(&self, out: &mut Vec<u8>) -> Result<(), Error>;
    /// How many arguments there are.
    fn count(&self) -> usize;
    /// Binary attachments the JSON form refers to with placeholders.
    fn attachments(&self) -> &[Bytes] {
        &[]
    }
}

macro_rules! tuple_args {
    ($($name:ident $idx:tt),*) => {
        impl<$($name: Serialize + Send + Sync),*> Args for ($($name,)*) {
            #[allow(unused_variables)]
            fn write_json(&self, out: &mut Vec<u8>) -> Result<(), Error> {
                $(
                    out.push(b',');
                    serde_json::to_writer(&mut *out, &self.$idx).map_err(|e| Error::Serialize(e.to_string()))?;
                )*
                Ok(())
            }
            #[allow(unused_variables)]
            fn write_msgpack(&self, out: &mut Vec<u8>) -> Result<(), Error> {
                $(
                    rmp_serde::encode::write_named(&mut *out, &self.$idx).map_err(|e| Error::Serialize(e.to_string()))?;
                )*
                Ok(())
            }
            fn count(&self) -> usize {
                <[&str]>::len(&[$(stringify!($name)),*])
            }
        }
    };
}

tuple_args!();
tuple_args!(A 0);
tuple_args!(A 0, B 1);
tuple_args!(A 0, B 1, C 2);
tuple_args!(A 0, B 1, C 2, D 3);
tuple_args!(A 0, B 1, C 2, D 3, E 4);
tuple_args!(A 0, B 1, C 2, D 3, E 4, F 5);

/// Arguments in wire form, passed on without decoding (what an event or ack carried).
#[derive(Debug, Clone)]
pub enum RawArgs {
    /// JSON text after the event name (`,1,"2"`), with the attachments it refers to.
    Json(Bytes, Vec<Bytes>),
    /// Msgpack values, and how many.
    Msgpack(Bytes, usize),
}

impl Args for RawArgs {
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            RawArgs::Json(text, _) => {
                out.extend_from_slice(text);
                Ok(())
            }
            RawArgs::Msgpack(..) => Err(Error::Serialize(
                "msgpack arguments on a JSON parser".into(),
            )),
        }
    }
    fn write_msgpack(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            RawArgs::Msgpack(raw, _) => {
                out.extend_from_slice(raw);
                Ok(())
            }
            RawArgs::Json(..) => Err(Error::Serialize(
                "JSON arguments on a msgpack parser".into(),
            )),
        }
    }
    fn count(&self) -> usize {
        match self {
            RawArgs::Json(text, _) => usize::from(!text.iter().all(u8::is_ascii_whitespace)),
            RawArgs::Msgpack(_, n) => *n,
        }
    }
    fn attachments(&self) -> &[Bytes] {
        match self {
            RawArgs::Json(_, attachments) => attachments,
            RawArgs::Msgpack(..) => &[],
        }
    }
}

/// An event encoded once for the sockets of one namespace, to send to any number of them
/// ([`crate::Namespace::encode`], [`crate::Socket::send_encoded`]): a service that keeps
/// its own lists of recipients pays for the encoding once.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub(crate) frames: Vec<Frame>,
}

impl Encoded {
    /// Bytes on the wire (frame headers included).
    pub fn len(&self) -> usize {
        self.frames.iter().map(Frame::len).sum()
    }

    /// Whether it is empty (never: a packet has at least its type).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// What a packet's payload is, before encoding.
pub(crate) enum Body<'a> {
    /// No payload.
    None,
    /// An event: its name and arguments.
    Event(&'a str, &'a dyn Args),
    /// An ack: its arguments.
    Ack(&'a dyn Args),
    /// A JSON value (CONNECT reply, CONNECT_ERROR), given for both parsers.
    Value(&'a serde_json::Value),
}

/// Encodes one packet into the frames that carry it: for the default parser a text frame
/// and one binary frame per attachment, for msgpack one binary frame. Encoded once, the
/// frames can be queued on any number of sockets.
pub(crate) fn encode(
    parser: Parser,
    kind: PacketType,
    nsp: &str,
    id: Option<u64>,
    body: Body<'_>,
) -> Result<Vec<Frame>, Error> {
    match parser {
        Parser::Default => {
            let mut payload = Vec::with_capacity(64);
            // `Binary` values written here become placeholders and attachments.
            let (written, collected) = crate::binary::writing(|| -> Result<(), Error> {
                match &body {
                    Body::None => {}
                    Body::Event(name, args) => {
                        payload.push(b'[');
                        serde_json::to_writer(&mut payload, name)
                            .map_err(|e| Error::Serialize(e.to_string()))?;
                        args.write_json(&mut payload)?;
                        payload.push(b']');
                    }
                    Body::Ack(args) => {
                        args.write_json(&mut payload)?;
                        // Arguments are written with a leading comma each; an ack array
                        // has no name before them.
                        if payload.first() == Some(&b',') {
                            payload[0] = b'[';
                        } else {
                            payload.insert(0, b'[');
                        }
                        payload.push(b']');
                    }
                    Body::Value(v) => {
                        serde_json::to_writer(&mut payload, v)
                            .map_err(|e| Error::Serialize(e.to_string()))?;
                    }
                }
                Ok(())
            });
            written?;
            let attachments = if collected.is_empty() {
                match &body {
                    Body::Event(_, args) | Body::Ack(args) => args.attachments().to_vec(),
                    _ => Vec::new(),
                }
            } else {
                collected
            };
            let kind = match (kind, attachments.is_empty()) {
                (PacketType::Event, false) => PacketType::BinaryEvent,
                (PacketType::Ack, false) => PacketType::BinaryAck,
                (kind, _) => kind,
            };
            let mut head = BytesMut::with_capacity(16);
            head.put_u8(b'4');
            json::encode_head(&mut head, kind, nsp, id, attachments.len());
            let mut frames = Vec::with_capacity(1 + attachments.len());
            frames.push(Frame::server_parts(OpCode::Text, &[&head, &payload]));
            frames.extend(attachments.iter().map(|a| Frame::server(OpCode::Binary, a)));
            Ok(frames)
        }
        Parser::Msgpack => {
            let mut data = Vec::with_capacity(64);
            let has_data = match body {
                Body::None => false,
                Body::Event(name, args) => {
                    let mut head = BytesMut::new();
                    msgpack::write_array_len(&mut head, 1 + args.count());
                    msgpack::write_str(&mut head, name);
                    data.extend_from_slice(&head);
                    args.write_msgpack(&mut data)?;
                    true
                }
                Body::Ack(args) => {
                    let mut head = BytesMut::new();
                    msgpack::write_array_len(&mut head, args.count());
                    data.extend_from_slice(&head);
                    args.write_msgpack(&mut data)?;
                    true
                }
                Body::Value(v) => {
                    rmp_serde::encode::write_named(&mut data, v)
                        .map_err(|e| Error::Serialize(e.to_string()))?;
                    true
                }
            };
            let wire = msgpack::encode(kind, nsp, id, has_data.then_some(&data[..]));
            Ok(vec![Frame::server(OpCode::Binary, &wire)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frames: &[Frame]) -> String {
        String::from_utf8(frames[0].payload().to_vec()).unwrap()
    }

    /// Events, acks and values in the default parser's text form.
    #[test]
    fn default_parser_text() {
        let f = encode(
            Parser::Default,
            PacketType::Event,
            "/",
            None,
            Body::Event("hey", &("Jude",)),
        )
        .unwrap();
        assert_eq!(text(&f), r#"42["hey","Jude"]"#);
        let f = encode(
            Parser::Default,
            PacketType::Event,
            "/chat",
            Some(7),
            Body::Event("x", &()),
        )
        .unwrap();
        assert_eq!(text(&f), r#"42/chat,7["x"]"#);
        let f = encode(
            Parser::Default,
            PacketType::Ack,
            "/",
            Some(456),
            Body::Ack(&(1, "2")),
        )
        .unwrap();
        assert_eq!(text(&f), r#"43456[1,"2"]"#);
        let f = encode(
            Parser::Default,
            PacketType::Ack,
            "/",
            Some(1),
            Body::Ack(&()),
        )
        .unwrap();
        assert_eq!(text(&f), "431[]");
        let v = serde_json::json!({"sid": "abc"});
        let f = encode(
            Parser::Default,
            PacketType::Connect,
            "/admin",
            None,
            Body::Value(&v),
        )
        .unwrap();
        assert_eq!(text(&f), r#"40/admin,{"sid":"abc"}"#);
        let f = encode(
            Parser::Default,
            PacketType::Disconnect,
            "/admin",
            None,
            Body::None,
        )
        .unwrap();
        assert_eq!(text(&f), "41/admin,");
    }

    /// Raw arguments with attachments become a binary event with its frames.
    #[test]
    fn raw_binary_args() {
        let raw = RawArgs::Json(
            Bytes::from_static(br#",{"_placeholder":true,"num":0}"#),
            vec![Bytes::from_static(&[1, 2, 3])],
        );
        let f = encode(
            Parser::Default,
            PacketType::Event,
            "/",
            None,
            Body::Event("back", &raw),
        )
        .unwrap();
        assert_eq!(text(&f), r#"451-["back",{"_placeholder":true,"num":0}]"#);
        assert_eq!(f.len(), 2);
        assert_eq!(&f[1].payload()[..], &[1, 2, 3]);
    }

    /// Typed `Binary` arguments become placeholders and attachments with the default
    /// parser, and `bin` values with msgpack.
    #[test]
    fn typed_binary() {
        use crate::Binary;
        let args = (
            "name",
            Binary::from(vec![1u8, 2]),
            vec![Binary::from(vec![3u8])],
        );
        let f = encode(
            Parser::Default,
            PacketType::Event,
            "/",
            None,
            Body::Event("file", &args),
        )
        .unwrap();
        assert_eq!(
            text(&f),
            r#"452-["file","name",{"_placeholder":true,"num":0},[{"_placeholder":true,"num":1}]]"#
        );
        assert_eq!(
            (&f[1].payload()[..], &f[2].payload()[..]),
            (&[1u8, 2][..], &[3u8][..])
        );
        let f = encode(
            Parser::Msgpack,
            PacketType::Event,
            "/",
            None,
            Body::Event("file", &args),
        )
        .unwrap();
        let p = socketio_proto::msgpack::decode(f[0].payload()).unwrap();
        let socketio_proto::Data::Msgpack(raw) = p.data else {
            panic!()
        };
        // ["file", "name", bin[1,2], [bin[3]]]
        assert!(raw.windows(4).any(|w| w == [0xc4, 0x02, 1, 2]));
    }

    /// The msgpack form decodes back with the proto crate.
    #[test]
    fn msgpack_round_trip() {
        let f = encode(
            Parser::Msgpack,
            PacketType::Event,
            "/x",
            Some(3),
            Body::Event("ev", &(1u8, "two")),
        )
        .unwrap();
        let p = socketio_proto::msgpack::decode(f[0].payload()).unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id),
            (PacketType::Event, "/x", Some(3))
        );
        assert_eq!(p.event_name().unwrap(), "ev");
    }
}
