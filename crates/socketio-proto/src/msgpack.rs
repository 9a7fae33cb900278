//! The msgpack parser (npm `socket.io-msgpack-parser` 3.0.2 on notepack.io 2.2,
//! `PROTOCOL.md` §3): each packet is one msgpack map `{type, nsp, data?, id?}`, sent as
//! one binary Engine.IO message; binary travels inline as `bin`.
//!
//! Quirks handled: keys in any order and unknown keys skipped (the client adds
//! `options`); `undefined` encoded as fixext 1 of type 0 (`d4 00 00`) read as absent
//! (as `nil` inside the data); `ArrayBuffer`s and typed arrays, which notepack.io 2.2
//! writes as ext 8/16/32 of type 0, read as `bin`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Data, DecodeError, Packet, PacketType, Str};

/// Nesting deeper than this is refused (it would only serve to exhaust the stack).
const MAX_DEPTH: usize = 128;

/// Decodes one packet.
///
/// # Errors
///
/// [`DecodeError::Malformed`] for bytes that are not one msgpack map, and the shape
/// errors of the parser's `checkPacket`.
pub fn decode(raw: Bytes) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(&raw);
    let pairs = r.map_len()?.ok_or(DecodeError::Malformed)?;
    let mut kind = None;
    let mut nsp = None;
    let mut data = None;
    let mut id = None;
    for _ in 0..pairs {
        let key = r.str()?.ok_or(DecodeError::Malformed)?;
        let start = r.pos;
        match key {
            (s, e) if &raw[s..e] == b"type" => {
                kind = Some(r.uint()?.ok_or(DecodeError::UnknownType)?)
            }
            (s, e) if &raw[s..e] == b"nsp" => {
                let (s, e) = r.str()?.ok_or(DecodeError::Namespace)?;
                nsp = Some(Str::from_utf8(raw.slice(s..e)).map_err(|_| DecodeError::Namespace)?);
            }
            (s, e) if &raw[s..e] == b"data" => {
                r.skip(0)?;
                data = Some(start..r.pos);
            }
            (s, e) if &raw[s..e] == b"id" => {
                if r.is_undefined() || r.is_nil() {
                    r.skip(0)?;
                } else {
                    id = Some(r.uint()?.ok_or(DecodeError::AckId)?);
                }
            }
            _ => r.skip(0)?,
        }
    }
    if r.pos != raw.len() {
        return Err(DecodeError::Malformed);
    }
    let kind = kind
        .and_then(|k| u8::try_from(k).ok())
        .filter(|k| *k <= 4)
        .and_then(PacketType::from_u8)
        .ok_or(DecodeError::UnknownType)?;
    let nsp = nsp.ok_or(DecodeError::Namespace)?;
    if !nsp.as_str().starts_with('/') {
        return Err(DecodeError::Namespace);
    }
    // `undefined` is absent.
    let data = data.filter(|range| !Reader::at(&raw, range.start).is_undefined());
    let data = data.map(|range| {
        let at: Vec<usize> = r
            .notepack
            .iter()
            .copied()
            .filter(|p| range.contains(p))
            .collect();
        if at.is_empty() {
            raw.slice(range)
        } else {
            standard_forms(&raw, range, &at)
        }
    });
    let first = data.as_ref().map(|d| d[0]);
    let ok = match (kind, first) {
        (PacketType::Connect | PacketType::Disconnect, None) => true,
        (PacketType::Connect, Some(m)) => is_map(m),
        (PacketType::ConnectError, Some(m)) => is_map(m) || is_str(m),
        (PacketType::Event, Some(_)) => data.as_ref().is_some_and(|d| event_name(d).is_some()),
        (PacketType::Ack, Some(m)) => is_array(m),
        _ => false,
    };
    if !ok {
        return Err(DecodeError::InvalidPayload);
    }
    Ok(Packet {
        kind,
        nsp,
        id,
        data: data.map_or(Data::None, Data::Msgpack),
    })
}

/// A copy of `raw[range]` with notepack.io's own forms, at the offsets `at` (in order),
/// made standard: `undefined` (`d4 00 00`) becomes `nil`, an ext 8/16/32 of type 0 (an
/// `ArrayBuffer` or typed array) becomes the `bin` of the same bytes.
fn standard_forms(raw: &Bytes, range: std::ops::Range<usize>, at: &[usize]) -> Bytes {
    let mut out = BytesMut::with_capacity(range.len());
    let mut from = range.start;
    for &p in at {
        out.put_slice(&raw[from..p]);
        match raw[p] {
            0xd4 => {
                out.put_u8(0xc0);
                from = p + 3;
            }
            m => {
                // ext 8/16/32 → bin 8/16/32: the marker changes, the length stays, the
                // type byte goes.
                let width = 1usize << (m - 0xc7);
                out.put_u8(m - 3);
                out.put_slice(&raw[p + 1..p + 1 + width]);
                from = p + 2 + width;
            }
        }
    }
    out.put_slice(&raw[from..range.end]);
    out.freeze()
}

/// Encodes a packet; `data` is the msgpack of the `data` value (for events, the array of
/// the name and arguments). Keys in the order the Node server writes them.
pub fn encode(kind: PacketType, nsp: &str, id: Option<u64>, data: Option<&[u8]>) -> Bytes {
    let mut dst = BytesMut::with_capacity(24 + nsp.len() + data.map_or(0, <[u8]>::len));
    let pairs = 2 + u8::from(data.is_some()) + u8::from(id.is_some());
    dst.put_u8(0x80 | pairs);
    write_str(&mut dst, "type");
    dst.put_u8(kind.as_u8());
    if let Some(data) = data {
        write_str(&mut dst, "data");
        dst.put_slice(data);
    }
    if let Some(id) = id {
        write_str(&mut dst, "id");
        write_uint(&mut dst, id);
    }
    write_str(&mut dst, "nsp");
    write_str(&mut dst, nsp);
    dst.freeze()
}

/// The event name: the first element of the `data` array, a string (or a number, in
/// its text form).
pub(crate) fn event_name(data: &Bytes) -> Option<Str> {
    let mut r = Reader::new(data);
    if r.array_len().ok()?? == 0 {
        return None;
    }
    let name = if let Some((s, e)) = r.str().ok()? {
        Str::from_utf8(data.slice(s..e)).ok()?
    } else {
        Str::from(r.uint().ok()??.to_string())
    };
    if crate::RESERVED_EVENTS.contains(&name.as_str()) {
        return None;
    }
    Some(name)
}

/// The raw arguments of an event's `data` array: the bytes of the elements after the
/// name, and how many there are.
pub fn event_args(data: &Bytes) -> Option<(Bytes, usize)> {
    let mut r = Reader::new(data);
    let n = r.array_len().ok()??;
    if n == 0 {
        return None;
    }
    r.skip(0).ok()?;
    Some((data.slice(r.pos..), n - 1))
}

/// Skips the first `n` values of raw event arguments as [`event_args`] gives them,
/// returning the bytes of the rest, or `None` when they are fewer than `n` or malformed.
pub fn skip_args(args: &Bytes, n: usize) -> Option<Bytes> {
    let mut r = Reader::new(args);
    for _ in 0..n {
        if r.pos >= args.len() {
            return None;
        }
        r.skip(0).ok()?;
    }
    Some(args.slice(r.pos..))
}

/// Appends a msgpack array header for `n` elements.
pub fn write_array_len(dst: &mut BytesMut, n: usize) {
    if n < 16 {
        dst.put_u8(0x90 | n as u8);
    } else if n <= 0xffff {
        dst.put_u8(0xdc);
        dst.put_u16(n as u16);
    } else {
        dst.put_u8(0xdd);
        dst.put_u32(n as u32);
    }
}

/// Appends a msgpack string.
pub fn write_str(dst: &mut BytesMut, s: &str) {
    let n = s.len();
    if n < 32 {
        dst.put_u8(0xa0 | n as u8);
    } else if n <= 0xff {
        dst.put_u8(0xd9);
        dst.put_u8(n as u8);
    } else if n <= 0xffff {
        dst.put_u8(0xda);
        dst.put_u16(n as u16);
    } else {
        dst.put_u8(0xdb);
        dst.put_u32(n as u32);
    }
    dst.put_slice(s.as_bytes());
}

/// Appends a msgpack unsigned integer in its smallest form.
pub fn write_uint(dst: &mut BytesMut, n: u64) {
    if n < 128 {
        dst.put_u8(n as u8);
    } else if n <= 0xff {
        dst.put_u8(0xcc);
        dst.put_u8(n as u8);
    } else if n <= 0xffff {
        dst.put_u8(0xcd);
        dst.put_u16(n as u16);
    } else if n <= 0xffff_ffff {
        dst.put_u8(0xce);
        dst.put_u32(n as u32);
    } else {
        dst.put_u8(0xcf);
        dst.put_u64(n);
    }
}

fn is_map(m: u8) -> bool {
    matches!(m, 0x80..=0x8f | 0xde | 0xdf)
}

fn is_array(m: u8) -> bool {
    matches!(m, 0x90..=0x9f | 0xdc | 0xdd)
}

fn is_str(m: u8) -> bool {
    matches!(m, 0xa0..=0xbf | 0xd9..=0xdb)
}

/// A cursor over msgpack bytes: reads the few forms the envelope needs and skips any
/// value whole.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Where skipped values had notepack.io's own forms (see [`standard_forms`]).
    notepack: Vec<usize>,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader::at(buf, 0)
    }

    fn at(buf: &'a [u8], pos: usize) -> Reader<'a> {
        Reader {
            buf,
            pos,
            notepack: Vec::new(),
        }
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn is_undefined(&self) -> bool {
        self.buf.get(self.pos..self.pos + 3) == Some(&[0xd4, 0x00, 0x00])
    }

    fn is_nil(&self) -> bool {
        self.buf.get(self.pos) == Some(&0xc0)
    }

    /// A map header's pair count, or `None` (nothing consumed) when it is no map.
    fn map_len(&mut self) -> Result<Option<usize>, DecodeError> {
        let n = match self.peek()? {
            m @ 0x80..=0x8f => {
                self.pos += 1;
                usize::from(m & 0x0f)
            }
            0xde => {
                self.pos += 1;
                self.be(2)? as usize
            }
            0xdf => {
                self.pos += 1;
                self.be(4)? as usize
            }
            _ => return Ok(None),
        };
        Ok(Some(n))
    }

    /// An array header's length, or `None` when it is no array.
    fn array_len(&mut self) -> Result<Option<usize>, DecodeError> {
        let n = match self.peek()? {
            m @ 0x90..=0x9f => {
                self.pos += 1;
                usize::from(m & 0x0f)
            }
            0xdc => {
                self.pos += 1;
                self.be(2)? as usize
            }
            0xdd => {
                self.pos += 1;
                self.be(4)? as usize
            }
            _ => return Ok(None),
        };
        Ok(Some(n))
    }

    /// A string's byte range, or `None` (nothing consumed) when it is no string.
    fn str(&mut self) -> Result<Option<(usize, usize)>, DecodeError> {
        let n = match self.peek()? {
            m @ 0xa0..=0xbf => {
                self.pos += 1;
                usize::from(m & 0x1f)
            }
            0xd9 => {
                self.pos += 1;
                self.be(1)? as usize
            }
            0xda => {
                self.pos += 1;
                self.be(2)? as usize
            }
            0xdb => {
                self.pos += 1;
                self.be(4)? as usize
            }
            _ => return Ok(None),
        };
        let start = self.pos;
        self.take(n)?;
        Ok(Some((start, self.pos)))
    }

    /// A non-negative integer (also a float64 holding one, as JavaScript may send), or
    /// `None` (nothing consumed) when it is not one.
    fn uint(&mut self) -> Result<Option<u64>, DecodeError> {
        let v = match self.peek()? {
            m @ 0x00..=0x7f => {
                self.pos += 1;
                u64::from(m)
            }
            m @ 0xcc..=0xcf => {
                self.pos += 1;
                self.be(1 << (m - 0xcc))?
            }
            m @ 0xd0..=0xd3 => {
                let at = self.pos;
                self.pos += 1;
                let width = 1 << (m - 0xd0);
                let raw = self.be(width)?;
                let bits = width * 8;
                let negative = raw >> (bits - 1) & 1 == 1;
                if negative {
                    self.pos = at;
                    return Ok(None);
                }
                raw
            }
            0xcb => {
                let at = self.pos;
                self.pos += 1;
                let f = f64::from_bits(self.be(8)?);
                if f < 0.0 || f.fract() != 0.0 || f > 2f64.powi(53) {
                    self.pos = at;
                    return Ok(None);
                }
                f as u64
            }
            _ => return Ok(None),
        };
        Ok(Some(v))
    }

    /// Skips one whole value.
    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::Malformed);
        }
        let m = self.peek()?;
        let at = self.pos;
        self.pos += 1;
        match m {
            0xd4 if self.buf.get(self.pos) == Some(&0) => self.notepack.push(at),
            0xc7..=0xc9 => {
                let width = 1 << (m - 0xc7);
                if self.buf.get(self.pos + width) == Some(&0) {
                    self.notepack.push(at);
                }
            }
            _ => {}
        }
        match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {}
            0x80..=0x8f => self.skip_items(usize::from(m & 0x0f) * 2, depth)?,
            0x90..=0x9f => self.skip_items(usize::from(m & 0x0f), depth)?,
            0xa0..=0xbf => {
                self.take(usize::from(m & 0x1f))?;
            }
            0xc1 => return Err(DecodeError::Malformed),
            0xc4 | 0xd9 => {
                let n = self.be(1)? as usize;
                self.take(n)?;
            }
            0xc5 | 0xda => {
                let n = self.be(2)? as usize;
                self.take(n)?;
            }
            0xc6 | 0xdb => {
                let n = self.be(4)? as usize;
                self.take(n)?;
            }
            0xc7 => {
                let n = self.be(1)? as usize;
                self.take(n + 1)?;
            }
            0xc8 => {
                let n = self.be(2)? as usize;
                self.take(n + 1)?;
            }
            0xc9 => {
                let n = self.be(4)? as usize;
                self.take(n + 1)?;
            }
            0xca => {
                self.take(4)?;
            }
            0xcb => {
                self.take(8)?;
            }
            0xcc..=0xcf => {
                self.take(1 << (m - 0xcc))?;
            }
            0xd0..=0xd3 => {
                self.take(1 << (m - 0xd0))?;
            }
            0xd4..=0xd8 => {
                self.take(1 + (1 << (m - 0xd4)))?;
            }
            0xdc => {
                let n = self.be(2)? as usize;
                self.skip_items(n, depth)?;
            }
            0xdd => {
                let n = self.be(4)? as usize;
                self.skip_items(n, depth)?;
            }
            0xde => {
                let n = self.be(2)? as usize;
                self.skip_items(n * 2, depth)?;
            }
            0xdf => {
                let n = self.be(4)? as usize;
                self.skip_items(n.checked_mul(2).ok_or(DecodeError::Malformed)?, depth)?;
            }
        }
        Ok(())
    }

    fn skip_items(&mut self, n: usize, depth: usize) -> Result<(), DecodeError> {
        // Every item takes at least one byte: a count beyond the input is malformed, and
        // refusing it early bounds the work.
        if n > self.buf.len() - self.pos {
            return Err(DecodeError::Malformed);
        }
        for _ in 0..n {
            self.skip(depth + 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Bytes {
        let clean: String = s.split_whitespace().collect();
        (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
            .into()
    }

    fn mstr(s: &str) -> String {
        let mut out = format!("{:02x}", 0xa0 | s.len());
        for b in s.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The client's emit of `"hello", 1` on `/` (PROTOCOL.md §3), with its `options` key.
    #[test]
    fn client_event_with_options() {
        let wire = hex(&format!(
            "84 {} 02 {} 92 {} 01 {} 81 {} c3 {} {}",
            mstr("type"),
            mstr("data"),
            mstr("hello"),
            mstr("options"),
            mstr("compress"),
            mstr("nsp"),
            mstr("/")
        ));
        let p = decode(wire).unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id),
            (PacketType::Event, "/", None)
        );
        assert_eq!(p.event_name().unwrap(), "hello");
        let Data::Msgpack(data) = &p.data else {
            panic!()
        };
        assert_eq!(&data[..], &hex(&format!("92 {} 01", mstr("hello")))[..]);
    }

    /// notepack.io 2.2 writes a `Uint8Array` as ext 8 of type 0 and a nested
    /// `undefined` as `d4 00 00`: the data reads as `bin` and `nil`; the ext types it
    /// does not own (a `Date`'s fixext 8, another type's ext) stay as they are.
    #[test]
    fn notepack_forms_made_standard() {
        let wire = hex(&format!(
            "83 {} 02 {} 95 {} c7 03 00 090807 d4 00 00 c8 0001 00 ff d7 00 0000000000000001 {} {}",
            mstr("type"),
            mstr("data"),
            mstr("up"),
            mstr("nsp"),
            mstr("/")
        ));
        let p = decode(wire).unwrap();
        let Data::Msgpack(data) = &p.data else {
            panic!()
        };
        assert_eq!(
            &data[..],
            &hex(&format!(
                "95 {} c4 03 090807 c0 c5 0001 ff d7 00 0000000000000001",
                mstr("up")
            ))[..]
        );
        assert_eq!(p.event_name().unwrap(), "up");
        // An ext of another type is left alone.
        let wire = hex(&format!(
            "83 {} 02 {} 92 {} c7 01 05 aa {} {}",
            mstr("type"),
            mstr("data"),
            mstr("x"),
            mstr("nsp"),
            mstr("/")
        ));
        let Data::Msgpack(data) = decode(wire).unwrap().data else {
            panic!()
        };
        assert_eq!(
            &data[..],
            &hex(&format!("92 {} c7 01 05 aa", mstr("x")))[..]
        );
    }

    /// A CONNECT without auth carries `data: undefined` (`d4 00 00`): read as absent.
    #[test]
    fn connect_with_undefined_data() {
        let wire = hex(&format!(
            "83 {} 00 {} d4 00 00 {} {}",
            mstr("type"),
            mstr("data"),
            mstr("nsp"),
            mstr("/")
        ));
        let p = decode(wire).unwrap();
        assert_eq!((p.kind, p.data), (PacketType::Connect, Data::None));
        let wire = hex(&format!(
            "83 {} 00 {} 81 {} {} {} {}",
            mstr("type"),
            mstr("data"),
            mstr("token"),
            mstr("abc"),
            mstr("nsp"),
            mstr("/admin")
        ));
        let p = decode(wire).unwrap();
        assert_eq!(p.nsp, "/admin");
        assert!(matches!(p.data, Data::Msgpack(_)));
    }

    /// The arguments after an event's name are found without decoding them.
    #[test]
    fn event_arguments() {
        let data = hex(&format!("93 {} 01 c4 02 0a0b", mstr("ev")));
        let (args, n) = event_args(&data).unwrap();
        assert_eq!((&args[..], n), (&hex("01 c4 02 0a0b")[..], 2));
    }

    /// Leading arguments are skipped whole, nested ones included.
    #[test]
    fn skipping_arguments() {
        let args = hex(&format!("{} 92 01 {} c4 02 0a0b", mstr("room"), mstr("x")));
        assert_eq!(
            &skip_args(&args, 1).unwrap()[..],
            &hex(&format!("92 01 {} c4 02 0a0b", mstr("x")))[..]
        );
        assert_eq!(&skip_args(&args, 2).unwrap()[..], &hex("c4 02 0a0b")[..]);
        assert_eq!(skip_args(&args, 3).unwrap(), Bytes::new());
        assert_eq!(skip_args(&args, 4), None);
        assert_eq!(skip_args(&hex("92 01"), 1), None);
    }

    /// Encoding follows the Node server's key order and round-trips.
    #[test]
    fn encode_round_trip() {
        let data = hex(&format!("92 {} c4 03 010203", mstr("msg")));
        let wire = encode(PacketType::Event, "/chat", Some(300), Some(&data));
        assert_eq!(
            &wire[..],
            &hex(&format!(
                "84 {} 02 {} 92 {} c4 03 010203 {} cd 012c {} {}",
                mstr("type"),
                mstr("data"),
                mstr("msg"),
                mstr("id"),
                mstr("nsp"),
                mstr("/chat")
            ))[..]
        );
        let p = decode(wire).unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id),
            (PacketType::Event, "/chat", Some(300))
        );
        assert_eq!(p.data, Data::Msgpack(data));
        let ack = encode(PacketType::Ack, "/", Some(7), Some(&hex("90")));
        assert_eq!(decode(ack).unwrap().kind, PacketType::Ack);
    }

    /// checkPacket's rules, and malformed input.
    #[test]
    fn invalid_packets() {
        let t = mstr("type");
        let n = mstr("nsp");
        let d = mstr("data");
        let i = mstr("id");
        let root = mstr("/");
        for (wire, err) in [
            (format!("82 {t} 05 {n} {root}"), DecodeError::UnknownType),
            (
                format!("82 {t} {} {n} {root}", mstr("2")),
                DecodeError::UnknownType,
            ),
            (format!("81 {t} 02"), DecodeError::Namespace),
            (format!("82 {t} 00 {n} 01"), DecodeError::Namespace),
            (
                format!("82 {t} 00 {n} {}", mstr("x")),
                DecodeError::Namespace,
            ),
            (
                format!("83 {t} 02 {d} 80 {n} {root}"),
                DecodeError::InvalidPayload,
            ),
            (
                format!("83 {t} 02 {d} 90 {n} {root}"),
                DecodeError::InvalidPayload,
            ),
            (
                format!("83 {t} 02 {d} 91 {} {n} {root}", mstr("connect")),
                DecodeError::InvalidPayload,
            ),
            (
                format!("83 {t} 00 {d} 90 {n} {root}"),
                DecodeError::InvalidPayload,
            ),
            (
                format!("83 {t} 01 {d} 80 {n} {root}"),
                DecodeError::InvalidPayload,
            ),
            (
                format!("83 {t} 03 {d} 80 {n} {root}"),
                DecodeError::InvalidPayload,
            ),
            (
                format!("84 {t} 03 {d} 90 {i} {} {n} {root}", mstr("x")),
                DecodeError::AckId,
            ),
            (
                format!("84 {t} 03 {d} 90 {i} ff {n} {root}"),
                DecodeError::AckId,
            ),
            (format!("82 {t} 00 {n}"), DecodeError::Malformed),
            ("91 00".to_owned(), DecodeError::Malformed),
            (format!("82 {t} 00 {n} {root} 00"), DecodeError::Malformed),
            (
                format!("83 {t} 02 {d} dd ffffffff {n} {root}"),
                DecodeError::Malformed,
            ),
            (
                format!("83 {t} 02 {d} c1 {n} {root}"),
                DecodeError::Malformed,
            ),
        ] {
            assert_eq!(decode(hex(&wire)), Err(err), "{wire}");
        }
        // Deep nesting is refused, not a stack overflow.
        let mut deep = format!("83 {t} 02 {n} {root} {d} ");
        deep.push_str(&"91 ".repeat(10_000));
        deep.push_str("00");
        assert_eq!(decode(hex(&deep)), Err(DecodeError::Malformed));
    }
}
