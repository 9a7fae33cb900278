//! The default parser (npm `socket.io-parser`): packets in text form, binary as
//! attachments (`PROTOCOL.md` §2.2, §2.3).

use std::fmt;
use std::io::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

use crate::{Data, DecodeError, Limits, Packet, PacketType, Str, RESERVED_EVENTS};

/// Reassembles packets from Engine.IO messages: a text packet, then as many binary
/// messages as it announced. Holds nothing between packets.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    pending: Option<Box<Pending>>,
}

#[derive(Debug)]
struct Pending {
    packet: Packet,
    json: Bytes,
    attachments: Vec<Bytes>,
    expected: usize,
    bytes: usize,
}

impl Decoder {
    /// Raises the bytes one packet's attachments may add up to (never lowers it).
    pub fn raise_attachment_bytes(&mut self, max: usize) {
        self.limits.max_attachment_bytes = self.limits.max_attachment_bytes.max(max);
    }

    /// A decoder with these limits.
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            pending: None,
        }
    }

    /// Whether binary attachments are awaited.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Decodes a text message. Returns the packet, or `None` when it announced
    /// attachments that must come first.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`]; the connection should then be closed.
    pub fn text(&mut self, text: Bytes) -> Result<Option<Packet>, DecodeError> {
        if self.pending.is_some() {
            return Err(DecodeError::UnexpectedText);
        }
        let (packet, attachments) = decode_text(text, &self.limits)?;
        if attachments == 0 {
            return Ok(Some(packet));
        }
        let Data::Json(json) = &packet.data else {
            return Err(DecodeError::InvalidPayload);
        };
        let json = json.clone();
        self.pending = Some(Box::new(Pending {
            packet,
            json,
            attachments: Vec::with_capacity(attachments),
            expected: attachments,
            bytes: 0,
        }));
        Ok(None)
    }

    /// Decodes a binary message: the next attachment of the pending packet. Returns the
    /// packet once its last attachment arrived.
    ///
    /// # Errors
    ///
    /// [`DecodeError::UnexpectedBinary`] when no packet awaits attachments, the size
    /// limit, or placeholders that do not match the attachments.
    pub fn binary(&mut self, data: Bytes) -> Result<Option<Packet>, DecodeError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(DecodeError::UnexpectedBinary);
        };
        pending.bytes += data.len();
        if pending.bytes > self.limits.max_attachment_bytes {
            self.pending = None;
            return Err(DecodeError::AttachmentsTooLarge {
                max: self.limits.max_attachment_bytes,
            });
        }
        pending.attachments.push(data);
        if pending.attachments.len() < pending.expected {
            return Ok(None);
        }
        let Some(done) = self.pending.take() else {
            return Err(DecodeError::UnexpectedBinary);
        };
        check_placeholders(&done.json, done.attachments.len())?;
        let mut packet = done.packet;
        packet.data = Data::JsonBinary {
            json: done.json,
            attachments: done.attachments,
        };
        Ok(Some(packet))
    }
}

/// Decodes a text packet; returns it with the number of attachments it announced (its
/// data is then `Data::Json` with placeholders, completed by the [`Decoder`]).
///
/// # Errors
///
/// A [`DecodeError`] for the first rule broken.
pub fn decode_text(text: Bytes, limits: &Limits) -> Result<(Packet, usize), DecodeError> {
    let b = &text[..];
    let first = *b.first().ok_or(DecodeError::Empty)?;
    let kind = first
        .checked_sub(b'0')
        .and_then(PacketType::from_u8)
        .ok_or(DecodeError::UnknownType)?;
    let mut i = 1;
    let mut attachments = 0;
    if matches!(kind, PacketType::BinaryEvent | PacketType::BinaryAck) {
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || b.get(i + digits) != Some(&b'-') {
            return Err(DecodeError::AttachmentCount);
        }
        attachments = std::str::from_utf8(&b[i..i + digits])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or(DecodeError::AttachmentCount)?;
        if attachments == 0 {
            return Err(DecodeError::AttachmentCount);
        }
        if attachments > limits.max_attachments {
            return Err(DecodeError::TooManyAttachments {
                count: attachments,
                max: limits.max_attachments,
            });
        }
        i += digits + 1;
    }
    let nsp = if b.get(i) == Some(&b'/') {
        // The namespace runs to the first comma, or to the end (the Node decoder accepts
        // `40/custom` without a comma, and the suite sends it).
        let end = b[i..]
            .iter()
            .position(|&c| c == b',')
            .map_or(b.len(), |p| i + p);
        let nsp = Str::from_utf8(text.slice(i..end)).map_err(|_| DecodeError::Namespace)?;
        i = if end < b.len() { end + 1 } else { end };
        nsp
    } else {
        Str::ROOT
    };
    let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let id = if digits > 0 {
        let id = std::str::from_utf8(&b[i..i + digits])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(DecodeError::AckId)?;
        i += digits;
        Some(id)
    } else {
        None
    };
    let payload = text.slice(i..);
    let data = check_payload(kind, payload)?;
    Ok((
        Packet {
            kind,
            nsp,
            id,
            data,
        },
        attachments,
    ))
}

/// Checks the payload against its packet type (socket.io-parser `isPayloadValid`).
fn check_payload(kind: PacketType, payload: Bytes) -> Result<Data, DecodeError> {
    let first = payload.iter().find(|c| !c.is_ascii_whitespace()).copied();
    match (kind, first) {
        (PacketType::Connect, None) | (PacketType::Disconnect, None) => return Ok(Data::None),
        (PacketType::Connect, Some(b'{')) => validate::<IgnoredAny>(&payload)?,
        (PacketType::ConnectError, Some(b'{' | b'"')) => validate::<IgnoredAny>(&payload)?,
        (PacketType::Event | PacketType::BinaryEvent, Some(b'[')) => {
            validate::<EventCheck>(&payload)?
        }
        (PacketType::Ack | PacketType::BinaryAck, Some(b'[')) => validate::<IgnoredAny>(&payload)?,
        (_, None) => return Err(DecodeError::InvalidPayload),
        _ => {
            // Not the right shape; still tell malformed JSON from a wrong shape.
            validate::<IgnoredAny>(&payload)?;
            return Err(DecodeError::InvalidPayload);
        }
    }
    Ok(Data::Json(payload))
}

fn validate<T: de::DeserializeOwned>(raw: &[u8]) -> Result<(), DecodeError> {
    serde_json::from_slice::<T>(raw).map(drop).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            DecodeError::InvalidPayload
        } else {
            DecodeError::Malformed
        }
    })
}

/// Accepts a non-empty array whose first element is a non-reserved string or a number,
/// walking the rest without building anything.
struct EventCheck;

impl<'de> de::Deserialize<'de> for EventCheck {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EventCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventCheck, A::Error> {
                seq.next_element::<NameCheck>()?
                    .ok_or_else(|| de::Error::custom("empty event array"))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(EventCheck)
            }
        }
        d.deserialize_seq(V)
    }
}

struct NameCheck;

impl<'de> de::Deserialize<'de> for NameCheck {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NameCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NameCheck, E> {
                if RESERVED_EVENTS.contains(&s) {
                    Err(E::custom("reserved event name"))
                } else {
                    Ok(NameCheck)
                }
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<NameCheck, E> {
                Ok(NameCheck)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<NameCheck, E> {
                Ok(NameCheck)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<NameCheck, E> {
                Ok(NameCheck)
            }
        }
        d.deserialize_any(V)
    }
}

/// The first element of an event array, sharing `json`'s bytes when it has no escapes.
///
/// The array was validated when the packet was decoded, so a scan for the end of the
/// first element is enough: no second parse of the whole payload.
pub(crate) fn event_name(json: &Bytes) -> Option<Str> {
    let b = &json[..];
    let skip_ws = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let open = skip_ws(0);
    if b.get(open) != Some(&b'[') {
        return None;
    }
    let start = skip_ws(open + 1);
    match *b.get(start)? {
        b'"' => {
            let mut i = start + 1;
            let mut escaped = false;
            loop {
                match *b.get(i)? {
                    b'\\' => {
                        escaped = true;
                        i += 2;
                    }
                    b'"' => break,
                    _ => i += 1,
                }
            }
            if escaped {
                let name: String = serde_json::from_slice(&b[start..=i]).ok()?;
                Some(Str::from(name))
            } else {
                Str::from_utf8(json.slice(start + 1..i)).ok()
            }
        }
        c if c == b'-' || c.is_ascii_digit() => {
            let end = b[start..]
                .iter()
                .position(|c| {
                    !(c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
                })
                .map_or(b.len(), |p| start + p);
            Str::from_utf8(json.slice(start..end)).ok()
        }
        _ => None,
    }
}

/// The raw arguments of an event array: the text after the name, without the closing
/// bracket, e.g. `,1,"2"` for `["name",1,"2"]` (empty when there are none). The array
/// was validated when the packet was decoded.
pub fn event_args(json: &Bytes) -> Option<Bytes> {
    let b = &json[..];
    let open = b.iter().position(|c| !c.is_ascii_whitespace())?;
    let start = open
        + 1
        + b[open + 1..]
            .iter()
            .position(|c| !c.is_ascii_whitespace())?;
    // The end of the name: a string (skipping escapes) or a number.
    let mut i = start;
    if b[start] == b'"' {
        i = string_end(b, start)? + 1;
    } else {
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            i += 1;
        }
    }
    let close = b.iter().rposition(|&c| c == b']')?;
    (i <= close).then(|| json.slice(i..close))
}

/// The index of the quote that closes the JSON string opening at `open`, escapes
/// skipped; `None` when the string does not end.
fn string_end(b: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        match *b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
}

/// Skips the first `n` values of raw event arguments as [`event_args`] gives them
/// (`,1,"2",{..}`), returning the text of the rest in the same form (`,{..}` for `n`
/// = 2), or `None` when there are fewer than `n` values.
///
/// The arguments were validated when the packet was decoded, so a scan that follows
/// strings and nesting is enough to find where a value ends.
pub fn skip_args(args: &Bytes, n: usize) -> Option<Bytes> {
    let b = &args[..];
    let skip_ws = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut i = 0;
    for _ in 0..n {
        i = skip_ws(i);
        if b.get(i) != Some(&b',') {
            return None;
        }
        i = skip_ws(i + 1);
        if i >= b.len() {
            return None;
        }
        // One value: ends at the first comma outside strings and brackets, or the end.
        let mut depth = 0usize;
        while let Some(&c) = b.get(i) {
            match c {
                b'"' => i = string_end(b, i)?,
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.checked_sub(1)?,
                b',' if depth == 0 => break,
                _ => {}
            }
            i += 1;
        }
    }
    Some(args.slice(i.min(b.len())..))
}

/// Checks that every placeholder names an attachment (`0 <= num < count`).
fn check_placeholders(json: &[u8], count: usize) -> Result<(), DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|_| DecodeError::Malformed)?;
    fn walk(v: &serde_json::Value, count: usize) -> bool {
        match v {
            serde_json::Value::Array(items) => items.iter().all(|i| walk(i, count)),
            serde_json::Value::Object(map) => {
                if map.get("_placeholder") == Some(&serde_json::Value::Bool(true)) {
                    return map
                        .get("num")
                        .and_then(serde_json::Value::as_u64)
                        .is_some_and(|n| (n as usize) < count);
                }
                map.values().all(|i| walk(i, count))
            }
            _ => true,
        }
    }
    if walk(&value, count) {
        Ok(())
    } else {
        Err(DecodeError::Placeholders)
    }
}

/// Appends the head of a text packet: type, attachment count, namespace (unless `/`),
/// ack id. The JSON payload, if any, follows.
pub fn encode_head(
    dst: &mut BytesMut,
    kind: PacketType,
    nsp: &str,
    id: Option<u64>,
    attachments: usize,
) {
    dst.put_u8(b'0' + kind.as_u8());
    let mut w = dst.writer();
    if attachments > 0 {
        let _ = write!(w, "{attachments}-");
    }
    if nsp != "/" {
        let _ = write!(w, "{nsp},");
    }
    if let Some(id) = id {
        let _ = write!(w, "{id}");
    }
}

/// Encodes a whole packet: its text form, and its attachments in order.
pub fn encode(packet: &Packet) -> (Bytes, Vec<Bytes>) {
    let mut dst = BytesMut::new();
    let (json, attachments): (Option<&Bytes>, Vec<Bytes>) = match &packet.data {
        Data::None => (None, Vec::new()),
        Data::Json(json) => (Some(json), Vec::new()),
        Data::JsonBinary { json, attachments } => (Some(json), attachments.clone()),
        // A msgpack payload has no text form; encoded without data.
        Data::Msgpack(_) => (None, Vec::new()),
    };
    let kind = match (packet.kind, attachments.is_empty()) {
        (PacketType::Event | PacketType::BinaryEvent, false) => PacketType::BinaryEvent,
        (PacketType::Ack | PacketType::BinaryAck, false) => PacketType::BinaryAck,
        (PacketType::BinaryEvent, true) => PacketType::Event,
        (PacketType::BinaryAck, true) => PacketType::Ack,
        (kind, _) => kind,
    };
    encode_head(
        &mut dst,
        kind,
        packet.nsp.as_str(),
        packet.id,
        attachments.len(),
    );
    if let Some(json) = json {
        dst.put_slice(json);
    }
    (dst.freeze(), attachments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<(Packet, usize), DecodeError> {
        decode_text(Bytes::copy_from_slice(s.as_bytes()), &Limits::default())
    }

    /// The examples of the spec decode to their parts and encode back.
    #[test]
    fn spec_examples() {
        for (wire, kind, nsp, id, data) in [
            ("0", PacketType::Connect, "/", None, None),
            (
                "0/admin,{\"token\":\"123\"}",
                PacketType::Connect,
                "/admin",
                None,
                Some("{\"token\":\"123\"}"),
            ),
            (
                "2[\"foo\"]",
                PacketType::Event,
                "/",
                None,
                Some("[\"foo\"]"),
            ),
            (
                "2/admin,[\"bar\"]",
                PacketType::Event,
                "/admin",
                None,
                Some("[\"bar\"]"),
            ),
            (
                "212[\"foo\"]",
                PacketType::Event,
                "/",
                Some(12),
                Some("[\"foo\"]"),
            ),
            (
                "3/admin,13[\"bar\"]",
                PacketType::Ack,
                "/admin",
                Some(13),
                Some("[\"bar\"]"),
            ),
            ("1/admin,", PacketType::Disconnect, "/admin", None, None),
            (
                "4{\"message\":\"Not authorized\"}",
                PacketType::ConnectError,
                "/",
                None,
                Some("{\"message\":\"Not authorized\"}"),
            ),
        ] {
            let (p, n) = decode(wire).unwrap();
            assert_eq!(n, 0);
            assert_eq!(p.kind, kind, "{wire}");
            assert_eq!(p.nsp, nsp, "{wire}");
            assert_eq!(p.id, id, "{wire}");
            match data {
                None => assert_eq!(p.data, Data::None, "{wire}"),
                Some(d) => assert_eq!(
                    p.data,
                    Data::Json(Bytes::copy_from_slice(d.as_bytes())),
                    "{wire}"
                ),
            }
            assert_eq!(&encode(&p).0[..], wire.as_bytes(), "{wire}");
        }
    }

    /// A namespace without a trailing comma runs to the end (`40/random`).
    #[test]
    fn namespace_without_comma() {
        let (p, _) = decode("0/random").unwrap();
        assert_eq!(p.nsp, "/random");
        assert_eq!(p.data, Data::None);
        let (p, _) = decode("1/custom").unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str()),
            (PacketType::Disconnect, "/custom")
        );
    }

    /// Binary packets announce attachments; the decoder waits for them and checks the
    /// placeholders.
    #[test]
    fn binary_reassembly() {
        let mut d = Decoder::default();
        let head = r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert_eq!(d.text(Bytes::from_static(head.as_bytes())).unwrap(), None);
        assert!(d.is_waiting());
        assert_eq!(d.binary(Bytes::from_static(&[1, 2, 3])).unwrap(), None);
        let p = d.binary(Bytes::from_static(&[4, 5, 6])).unwrap().unwrap();
        assert_eq!(p.kind, PacketType::BinaryEvent);
        assert_eq!(p.event_name().unwrap(), "message");
        let Data::JsonBinary { attachments, .. } = &p.data else {
            panic!()
        };
        assert_eq!(
            attachments,
            &[
                Bytes::from_static(&[1, 2, 3]),
                Bytes::from_static(&[4, 5, 6])
            ]
        );
        assert!(!d.is_waiting());
        let (text, atts) = encode(&p);
        assert_eq!(&text[..], head.as_bytes());
        assert_eq!(atts.len(), 2);

        let ack = "61-/admin,1[{\"_placeholder\":true,\"num\":0}]";
        let mut d = Decoder::default();
        assert_eq!(d.text(Bytes::from_static(ack.as_bytes())).unwrap(), None);
        let p = d.binary(Bytes::from_static(b"x")).unwrap().unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id),
            (PacketType::BinaryAck, "/admin", Some(1))
        );
    }

    /// Attachment rules: count bounds, order of text and binary, placeholders in range,
    /// total size.
    #[test]
    fn attachment_errors() {
        let mut d = Decoder::default();
        assert_eq!(
            d.binary(Bytes::from_static(b"x")),
            Err(DecodeError::UnexpectedBinary)
        );
        assert_eq!(
            d.text(Bytes::from_static(b"5-[\"a\"]")),
            Err(DecodeError::AttachmentCount)
        );
        assert_eq!(
            d.text(Bytes::from_static(b"50-[\"a\"]")),
            Err(DecodeError::AttachmentCount)
        );
        assert_eq!(
            d.text(Bytes::from_static(b"5x-[\"a\"]")),
            Err(DecodeError::AttachmentCount)
        );
        assert_eq!(
            d.text(Bytes::from_static(b"511-[\"a\"]")),
            Err(DecodeError::TooManyAttachments { count: 11, max: 10 })
        );
        assert_eq!(
            d.text(Bytes::from_static(b"599999999999999999999999-[\"a\"]")),
            Err(DecodeError::AttachmentCount)
        );
        // Text while waiting.
        d.text(Bytes::from_static(
            br#"51-["a",{"_placeholder":true,"num":0}]"#,
        ))
        .unwrap();
        assert_eq!(
            d.text(Bytes::from_static(b"2[\"b\"]")),
            Err(DecodeError::UnexpectedText)
        );
        // A placeholder out of range.
        let mut d = Decoder::default();
        d.text(Bytes::from_static(
            br#"51-["a",{"_placeholder":true,"num":3}]"#,
        ))
        .unwrap();
        assert_eq!(
            d.binary(Bytes::from_static(b"x")),
            Err(DecodeError::Placeholders)
        );
        // Too many bytes.
        let mut d = Decoder::new(Limits {
            max_attachments: 10,
            max_attachment_bytes: 4,
        });
        d.text(Bytes::from_static(
            br#"52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        ))
        .unwrap();
        d.binary(Bytes::from_static(b"abc")).unwrap();
        assert_eq!(
            d.binary(Bytes::from_static(b"de")),
            Err(DecodeError::AttachmentsTooLarge { max: 4 })
        );
        assert!(!d.is_waiting());
    }

    /// The invalid formats of the socket.io-protocol suite and others.
    #[test]
    fn invalid_packets() {
        for (wire, err) in [
            ("", DecodeError::Empty),
            ("8", DecodeError::UnknownType),
            ("a", DecodeError::UnknownType),
            ("2{}", DecodeError::InvalidPayload),
            ("2[]", DecodeError::InvalidPayload),
            ("2", DecodeError::InvalidPayload),
            ("2abc[\"x\"]", DecodeError::Malformed),
            ("2[\"x\"", DecodeError::Malformed),
            ("2[\"connect\"]", DecodeError::InvalidPayload),
            ("2[\"disconnecting\",1]", DecodeError::InvalidPayload),
            ("2[{\"a\":1}]", DecodeError::InvalidPayload),
            ("2[null]", DecodeError::InvalidPayload),
            ("3{}", DecodeError::InvalidPayload),
            ("0[]", DecodeError::InvalidPayload),
            ("0\"x\"", DecodeError::InvalidPayload),
            ("1{}", DecodeError::InvalidPayload),
            ("299999999999999999999999[\"x\"]", DecodeError::AckId),
        ] {
            assert_eq!(decode(wire).map(|_| ()), Err(err), "{wire:?}");
        }
        // Numbers are accepted as event names.
        let (p, _) = decode("2[42,\"x\"]").unwrap();
        assert_eq!(p.event_name().unwrap(), "42");
    }

    /// The arguments after an event's name, as raw text.
    #[test]
    fn event_arguments() {
        for (json, args) in [
            (r#"["a",1,"2",{"3":[false]}]"#, r#",1,"2",{"3":[false]}"#),
            (r#"["a"]"#, ""),
            (r#"[ "q\"x" , 5 ]"#, r#" , 5 "#),
            (r#"[12,true]"#, ",true"),
        ] {
            assert_eq!(
                event_args(&Bytes::from(json)).unwrap(),
                Bytes::from(args),
                "{json}"
            );
        }
    }

    /// Leading arguments are skipped by a scan that follows strings and nesting.
    #[test]
    fn skipping_arguments() {
        let args = Bytes::from(r#","room", "ev\",]" ,{"a":[1,{"b":"}"}]},[2],"x""#);
        assert_eq!(
            skip_args(&args, 1).unwrap(),
            Bytes::from(r#", "ev\",]" ,{"a":[1,{"b":"}"}]},[2],"x""#)
        );
        assert_eq!(
            skip_args(&args, 2).unwrap(),
            Bytes::from(r#",{"a":[1,{"b":"}"}]},[2],"x""#)
        );
        assert_eq!(skip_args(&args, 3).unwrap(), Bytes::from(r#",[2],"x""#));
        assert_eq!(skip_args(&args, 5).unwrap(), Bytes::new());
        assert_eq!(skip_args(&args, 6), None);
        assert_eq!(skip_args(&args, 0).unwrap(), args);
        assert_eq!(skip_args(&Bytes::new(), 1), None);
        assert_eq!(
            skip_args(&Bytes::from(",1.5e3,null"), 1).unwrap(),
            Bytes::from(",null")
        );
    }

    /// Event names: shared with the input when plain, decoded when escaped.
    #[test]
    fn event_names() {
        let (p, _) = decode(r#"2["caf\u00e9",1]"#).unwrap();
        assert_eq!(p.event_name().unwrap(), "café");
        let (p, _) = decode(r#"2/x,7[ "spaced" ]"#).unwrap();
        assert_eq!(p.event_name().unwrap(), "spaced");
        let (p, _) = decode(r#"3[1]"#).unwrap();
        assert_eq!(p.event_name(), None);
    }
}
