//! The values that travel between nodes: msgpack (notepack.io, what the Node adapters
//! write) and JSON, converted both ways, binary included.
//!
//! Inside the crate every message is an [`rmpv::Value`] tree: JSON messages are read
//! into one too, so one set of accessors serves both encodings (`PROTOCOL.md` §4.4
//! rule 7: a payload whose first byte is `{` is JSON, anything else msgpack).

use std::sync::OnceLock;

use bytes::Bytes;
use rmpv::Value;
use socketio::{Args, Error, Parser};

/// How deep a message may nest: deeper ones are refused, not recursed into.
const MAX_DEPTH: usize = 64;

/// Reads a message in either encoding.
///
/// # Errors
///
/// A message that is neither valid JSON (starting with `{`) nor valid msgpack, or that
/// nests too deeply.
pub(crate) fn decode(payload: &[u8]) -> Result<Value, String> {
    if payload.first() == Some(&b'{') {
        let json: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("bad JSON: {e}"))?;
        Ok(from_json(&json, &[]))
    } else {
        let mut rd = payload;
        let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
            .map_err(|e| format!("bad msgpack: {e}"))?;
        if !rd.is_empty() {
            return Err("bad msgpack: trailing bytes".into());
        }
        Ok(value)
    }
}

/// Writes a value as msgpack.
/// Whether `value` holds binary anywhere.
pub(crate) fn has_binary(value: &Value) -> bool {
    match value {
        Value::Binary(_) => true,
        Value::Array(items) => items.iter().any(has_binary),
        Value::Map(pairs) => pairs.iter().any(|(k, v)| has_binary(k) || has_binary(v)),
        _ => false,
    }
}

pub(crate) fn to_msgpack(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a vector cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

/// The field `key` of a map.
pub(crate) fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// A map with string keys.
pub(crate) fn map(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// A field read as a string; numbers are written out (Node allows numeric room names).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.as_str().map(str::to_owned),
        Value::Integer(n) => Some(n.to_string()),
        Value::F64(f) => Some(f.to_string()),
        Value::F32(f) => Some(f.to_string()),
        _ => None,
    }
}

/// A list field read as strings (absent: empty).
pub(crate) fn texts(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(text).collect())
        .unwrap_or_default()
}

/// JSON to msgpack; `{"_placeholder":true,"num":i}` becomes `attachments[i]` as binary.
pub(crate) fn from_json(json: &serde_json::Value, attachments: &[Bytes]) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::Array(items.iter().map(|v| from_json(v, attachments)).collect())
        }
        serde_json::Value::Object(fields) => {
            if fields.get("_placeholder") == Some(&serde_json::Value::Bool(true)) {
                let at = fields.get("num").and_then(serde_json::Value::as_u64);
                if let Some(data) = at.and_then(|n| attachments.get(n as usize)) {
                    return Value::Binary(data.to_vec());
                }
            }
            Value::Map(
                fields
                    .iter()
                    .map(|(k, v)| (Value::from(k.as_str()), from_json(v, attachments)))
                    .collect(),
            )
        }
    }
}

/// Msgpack to JSON; binary becomes a placeholder and is appended to `attachments`.
/// Extension values (dates from `@msgpack/msgpack`) have no JSON form and become null.
pub(crate) fn to_json(value: &Value, attachments: &mut Vec<Bytes>) -> serde_json::Value {
    match value {
        Value::Nil | Value::Ext(..) => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(n) => n
            .as_u64()
            .map(serde_json::Value::from)
            .or_else(|| n.as_i64().map(serde_json::Value::from))
            .unwrap_or(serde_json::Value::Null),
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::String(s) => {
            serde_json::Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        Value::Binary(data) => {
            attachments.push(Bytes::copy_from_slice(data));
            serde_json::json!({"_placeholder": true, "num": attachments.len() - 1})
        }
        Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| to_json(v, attachments)).collect())
        }
        Value::Map(fields) => serde_json::Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let key = text(k).unwrap_or_else(|| to_json(k, &mut Vec::new()).to_string());
                    (key, to_json(v, attachments))
                })
                .collect(),
        ),
    }
}

/// Msgpack to plain JSON, binary left out as null (what a JSON message can carry).
pub(crate) fn to_plain_json(value: &Value) -> serde_json::Value {
    to_json(value, &mut Vec::new())
}

fn float(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The arguments of an emit as msgpack values, whatever form they came in: typed
/// arguments write msgpack themselves; arguments in JSON form (a client's, passed on)
/// are converted, their attachments as binary.
///
/// # Errors
///
/// [`Error::Serialize`] when they do not serialize.
pub(crate) fn args_to_msgpack(args: &dyn Args) -> Result<Vec<Value>, Error> {
    let mut raw = Vec::new();
    if args.write_msgpack(&mut raw).is_ok() {
        let mut rd = raw.as_slice();
        let mut out = Vec::with_capacity(args.count());
        while !rd.is_empty() {
            let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
                .map_err(|e| Error::Serialize(e.to_string()))?;
            out.push(value);
        }
        return Ok(out);
    }
    let mut text = vec![b'['];
    args.write_json(&mut text)?;
    // The arguments come each after a comma: `[,1,2` becomes `[1,2]`.
    if text.len() > 1 {
        text.remove(1);
    }
    text.push(b']');
    let json: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::Serialize(e.to_string()))?;
    match from_json(&json, args.attachments()) {
        Value::Array(items) => Ok(items),
        _ => Ok(Vec::new()),
    }
}

/// The arguments of an emit as JSON values (binary as null).
///
/// # Errors
///
/// [`Error::Serialize`] when they do not serialize.
pub(crate) fn args_to_json(args: &dyn Args) -> Result<Vec<serde_json::Value>, Error> {
    Ok(args_to_msgpack(args)?
        .iter()
        .map(to_plain_json)
        .collect::<Vec<_>>())
}

/// Arguments that came from another node, ready for either parser: the msgpack form is
/// written once; the JSON form (with its attachments) on first use.
pub(crate) struct RemoteArgs {
    values: Vec<Value>,
    msgpack: Vec<u8>,
    json: OnceLock<(Vec<u8>, Vec<Bytes>)>,
}

impl RemoteArgs {
    pub(crate) fn new(values: Vec<Value>, parser: Parser) -> RemoteArgs {
        let args = RemoteArgs {
            msgpack: values.iter().flat_map(to_msgpack).collect(),
            values,
            json: OnceLock::new(),
        };
        if parser == Parser::Default {
            args.json();
        }
        args
    }

    fn json(&self) -> &(Vec<u8>, Vec<Bytes>) {
        self.json.get_or_init(|| {
            let mut attachments = Vec::new();
            let mut text = Vec::new();
            for value in &self.values {
                text.push(b',');
                let json = to_json(value, &mut attachments);
                // A JSON value always serializes.
                let _ = serde_json::to_writer(&mut text, &json);
            }
            (text, attachments)
        })
    }
}

impl Args for RemoteArgs {
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.extend_from_slice(&self.json().0);
        Ok(())
    }

    fn write_msgpack(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.extend_from_slice(&self.msgpack);
        Ok(())
    }

    fn count(&self) -> usize {
        self.values.len()
    }

    fn attachments(&self) -> &[Bytes] {
        &self.json().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_msgpack_both_decode() {
        let from_json = decode(br#"{"type":1,"requestId":"abc","rooms":["a",2]}"#).unwrap();
        assert_eq!(field(&from_json, "type").and_then(Value::as_u64), Some(1));
        assert_eq!(texts(field(&from_json, "rooms")), ["a", "2"]);
        let packed = to_msgpack(&from_json);
        assert_eq!(decode(&packed).unwrap(), from_json);
        assert!(decode(b"{not json").is_err());
        assert!(decode(&[0x92, 0x01]).is_err(), "an array cut short");
        let mut trailing = packed.clone();
        trailing.push(0xc0);
        assert!(decode(&trailing).is_err());
        // Nesting deeper than the limit is refused, not recursed into.
        let deep = vec![0x91u8; 10_000];
        assert!(decode(&deep).is_err());
    }

    #[test]
    fn binary_round_trips_through_placeholders() {
        let value = Value::Array(vec![
            Value::from("file"),
            Value::Binary(vec![1, 2, 3]),
            map(vec![("inner", Value::Binary(vec![9]))]),
        ]);
        let mut attachments = Vec::new();
        let json = to_json(&value, &mut attachments);
        assert_eq!(
            json,
            serde_json::json!(["file", {"_placeholder": true, "num": 0},
                {"inner": {"_placeholder": true, "num": 1}}])
        );
        assert_eq!(
            attachments,
            [Bytes::from_static(&[1, 2, 3]), Bytes::from_static(&[9])]
        );
        assert_eq!(from_json(&json, &attachments), value);
        // A placeholder naming no attachment stays an object.
        let stray = serde_json::json!({"_placeholder": true, "num": 5});
        assert!(from_json(&stray, &attachments).is_map());
    }

    #[test]
    fn remote_args_write_both_forms() {
        let args = RemoteArgs::new(
            vec![Value::from(1), Value::from("two"), Value::Binary(vec![7])],
            Parser::Default,
        );
        let mut json = Vec::new();
        args.write_json(&mut json).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#",1,"two",{"_placeholder":true,"num":0}"#
        );
        assert_eq!(args.attachments(), [Bytes::from_static(&[7])]);
        assert_eq!(args.count(), 3);
        let back = args_to_msgpack(&args).unwrap();
        assert_eq!(back[2], Value::Binary(vec![7]));
        // Typed arguments and JSON-form arguments give the same values.
        let typed = args_to_msgpack(&(1, "two")).unwrap();
        let raw = socketio::RawArgs::Json(Bytes::from_static(br#",1,"two""#), Vec::new());
        assert_eq!(args_to_msgpack(&raw).unwrap(), typed);
        let none = socketio::RawArgs::Json(Bytes::new(), Vec::new());
        assert!(args_to_msgpack(&none).unwrap().is_empty());
    }
}
