//! The masking transform of RFC 6455 §5.3.

/// XORs `buf` in place with the 4-byte `key`, as if `buf` started at offset 0 of the
/// masked payload. Applying it twice restores the input.
pub fn apply(buf: &mut [u8], key: [u8; 4]) {
    // Eight bytes at a time: the key repeats every four bytes, so a u64 made of the key
    // twice lines up with every 8-byte chunk that starts at a multiple of 8.
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time path agrees with the byte-at-a-time definition for every length.
    #[test]
    fn matches_bytewise_definition() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31)).collect();
            let mut fast = original.clone();
            apply(&mut fast, key);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow, "length {len}");
            apply(&mut fast, key);
            assert_eq!(fast, original);
        }
    }

    /// The example of RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
    #[test]
    fn rfc_example() {
        let mut buf = *b"Hello";
        apply(&mut buf, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(buf, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }
}
