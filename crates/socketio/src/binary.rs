//! Binary values in typed payloads.
//!
//! The default parser carries binary as attachments, replaced in the JSON by
//! `{"_placeholder":true,"num":i}`; msgpack carries it inline as `bin`. [`Binary`]
//! reads and writes both: while this crate (de)serializes a payload it keeps the packet's
//! attachments in a thread-local scope, where a placeholder finds its bytes (reading) or
//! puts them (writing). Outside such a scope a `Binary` serializes as plain bytes.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Binary data inside a typed payload (a `Buffer` or `ArrayBuffer` for JavaScript clients).
#[derive(Clone, PartialEq, Eq, Default, Hash)]
pub struct Binary(pub Bytes);

impl fmt::Debug for Binary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Binary({} bytes)", self.0.len())
    }
}

impl From<Bytes> for Binary {
    fn from(b: Bytes) -> Binary {
        Binary(b)
    }
}

impl From<Vec<u8>> for Binary {
    fn from(v: Vec<u8>) -> Binary {
        Binary(Bytes::from(v))
    }
}

impl std::ops::Deref for Binary {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// What the current (de)serialization does with placeholders.
enum Scope {
    /// Reading a default-parser payload with these attachments.
    Read(Vec<Bytes>),
    /// Writing a default-parser payload: attachments collected so far.
    Write(Vec<Bytes>),
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` with `attachments` available to the placeholders it reads.
pub(crate) fn reading<R>(attachments: &[Bytes], f: impl FnOnce() -> R) -> R {
    let previous = SCOPE.with(|s| s.replace(Some(Scope::Read(attachments.to_vec()))));
    let result = f();
    SCOPE.with(|s| *s.borrow_mut() = previous);
    result
}

/// Runs `f` collecting the attachments of the `Binary` values it writes as placeholders.
pub(crate) fn writing<R>(f: impl FnOnce() -> R) -> (R, Vec<Bytes>) {
    let previous = SCOPE.with(|s| s.replace(Some(Scope::Write(Vec::new()))));
    let result = f();
    let collected = SCOPE.with(|s| std::mem::replace(&mut *s.borrow_mut(), previous));
    let attachments = match collected {
        Some(Scope::Write(a)) => a,
        _ => Vec::new(),
    };
    (result, attachments)
}

impl Serialize for Binary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let num = SCOPE.with(|s| match &mut *s.borrow_mut() {
            Some(Scope::Write(attachments)) => {
                attachments.push(self.0.clone());
                Some(attachments.len() - 1)
            }
            _ => None,
        });
        match num {
            Some(num) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("_placeholder", &true)?;
                map.serialize_entry("num", &num)?;
                map.end()
            }
            None => serializer.serialize_bytes(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Binary, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Binary;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("binary data or an attachment placeholder")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Binary, E> {
                Ok(Binary(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Binary, E> {
                Ok(Binary(Bytes::from(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Binary, A::Error> {
                let mut placeholder = false;
                let mut num = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "_placeholder" => placeholder = map.next_value()?,
                        "num" => num = Some(map.next_value::<usize>()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let num = num
                    .filter(|_| placeholder)
                    .ok_or_else(|| de::Error::custom("not a placeholder"))?;
                SCOPE
                    .with(|s| match &*s.borrow() {
                        Some(Scope::Read(attachments)) => attachments.get(num).cloned(),
                        _ => None,
                    })
                    .map(Binary)
                    .ok_or_else(|| de::Error::custom("placeholder names no attachment"))
            }
        }
        deserializer.deserialize_any(V)
    }
}
