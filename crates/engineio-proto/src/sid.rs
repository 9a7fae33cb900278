//! Session ids.

use base64::Engine as _;

/// A 20-character session id: 15 random bytes in URL-safe base64, the shape the Node
/// server uses (some cluster adapters tell socket ids apart by their length of 20).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid([u8; 20]);

impl Sid {
    /// Makes an id from 15 bytes (random bytes, chosen by the caller).
    pub fn from_random(raw: [u8; 15]) -> Sid {
        let mut out = [0u8; 20];
        // 15 bytes encode to exactly 20 characters without padding.
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out)
            .unwrap_or(0);
        debug_assert_eq!(n, 20);
        Sid(out)
    }

    /// Parses an id from a request: exactly 20 characters of the URL-safe base64 alphabet.
    pub fn parse(s: &str) -> Option<Sid> {
        let bytes: [u8; 20] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Sid(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Built only from the base64 alphabet, so always ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are 20 characters and parse back; other shapes do not parse.
    #[test]
    fn shape() {
        let sid = Sid::from_random([0xfb; 15]);
        assert_eq!(sid.as_str().len(), 20);
        assert_eq!(Sid::parse(sid.as_str()), Some(sid));
        assert!(sid.as_str().contains('-') || sid.as_str().contains('_'));
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaa/"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaaaa"), None);
    }
}
