//! A check of Yjs v1 updates before `yrs` reads them. `yrs` takes the strings of an update
//! as UTF-8 without checking (`from_utf8_unchecked`: undefined behaviour on bad bytes, an
//! abort in debug builds), recurses without bound into nested values, and panics on
//! client ids past 53 bits; a client can send any bytes. This walks the same structure
//! as `yrs`'s decoder (`Update::decode`, `ItemContent::decode`, `Any::decode`,
//! `IdSet::decode`, for v1) and refuses what could hurt it.

/// Why an update was refused.
pub(crate) type Invalid = &'static str;

/// Nesting of values (arrays, maps) an update may have.
const MAX_DEPTH: u32 = 64;

/// Largest client id `yrs` takes (JavaScript's safe integers).
const MAX_CLIENT: u64 = (1 << 53) - 1;

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, Invalid> {
        let b = *self.buf.get(self.at).ok_or("truncated")?;
        self.at += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or("truncated")?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn var(&mut self) -> Result<u64, Invalid> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift >= 64 || (shift == 63 && b > 1) {
                return Err("number too large");
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    fn var_u32(&mut self) -> Result<u32, Invalid> {
        u32::try_from(self.var()?).map_err(|_| "number too large")
    }

    /// A count of things each at least one byte long: never more than the bytes left.
    fn count(&mut self) -> Result<usize, Invalid> {
        let n = self.var()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.left())
            .ok_or("count larger than the update")
    }

    fn signed(&mut self) -> Result<(), Invalid> {
        let mut b = self.u8()?;
        let mut n = 1;
        while b & 0x80 != 0 {
            b = self.u8()?;
            n += 1;
            if n > 10 {
                return Err("number too large");
            }
        }
        Ok(())
    }

    fn buf(&mut self) -> Result<&'a [u8], Invalid> {
        let n = self.var()?;
        let n = usize::try_from(n).map_err(|_| "truncated")?;
        self.bytes(n)
    }

    fn string(&mut self) -> Result<&'a str, Invalid> {
        std::str::from_utf8(self.buf()?).map_err(|_| "a string is not UTF-8")
    }

    fn client(&mut self) -> Result<u64, Invalid> {
        let c = self.var()?;
        if c > MAX_CLIENT {
            return Err("client id too large");
        }
        Ok(c)
    }

    fn id(&mut self) -> Result<(u64, u32), Invalid> {
        Ok((self.client()?, self.var_u32()?))
    }

    fn any(&mut self, depth: u32) -> Result<(), Invalid> {
        if depth > MAX_DEPTH {
            return Err("values nested too deep");
        }
        match self.u8()? {
            127 | 126 | 121 | 120 => Ok(()),
            125 => self.signed(),
            124 => self.bytes(4).map(drop),
            123 | 122 => self.bytes(8).map(drop),
            119 => self.string().map(drop),
            118 => {
                for _ in 0..self.count()? {
                    self.string()?;
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            117 => {
                for _ in 0..self.count()? {
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            116 => self.buf().map(drop),
            _ => Err("unknown value type"),
        }
    }

    /// An item's content; its length in clock units.
    fn content(&mut self, info: u8) -> Result<u64, Invalid> {
        Ok(match info & 0x0f {
            // Deleted.
            1 => u64::from(self.var_u32()?),
            // JSON: `yrs` reads one string more than the count says.
            2 => {
                let n = self.var_u32()?;
                if n > i32::MAX as u32 || n as usize >= self.left() {
                    return Err("count larger than the update");
                }
                for _ in 0..=n {
                    self.string()?;
                }
                u64::from(n) + 1
            }
            // Binary.
            3 => {
                self.buf()?;
                1
            }
            // String: its length counts UTF-16 units.
            4 => self.string()?.encode_utf16().count() as u64,
            // Embed (JSON text).
            5 => {
                self.string()?;
                1
            }
            // Format: key, JSON text.
            6 => {
                self.string()?;
                self.string()?;
                1
            }
            // Type.
            7 => {
                match self.u8()? {
                    0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => {}
                    3 => {
                        self.string()?;
                    }
                    _ => return Err("unknown type"),
                }
                1
            }
            // Any.
            8 => {
                let n = self.count()?;
                for _ in 0..n {
                    self.any(0)?;
                }
                n as u64
            }
            // Subdocument: guid, options.
            9 => {
                self.string()?;
                self.any(0)?;
                1
            }
            _ => return Err("unknown content"),
        })
    }
}

/// Checks that `update` is a Yjs v1 update `yrs` reads safely; gives the number of its
/// items that continue the one before them (left origin the clock just before theirs, of
/// the same client), which `yrs` integrates in time quadratic in their number.
pub(crate) fn update_v1(update: &[u8]) -> Result<usize, Invalid> {
    let mut chained = 0;
    let mut r = Reader { buf: update, at: 0 };
    let clients = r.count()?;
    // Yjs writes each client once per section; `yrs` mis-integrates repeats.
    let mut seen = std::collections::HashSet::with_capacity(clients.min(1024));
    for _ in 0..clients {
        let blocks = r.count()?;
        let client = r.client()?;
        if !seen.insert(client) {
            return Err("a client twice");
        }
        let mut clock = u64::from(r.var_u32()?);
        for _ in 0..blocks {
            let info = r.u8()?;
            let len = match info {
                // Skip, GC: never empty (`yrs` takes one from the length).
                10 | 0 => match r.var_u32()? {
                    0 => return Err("an empty range"),
                    n => u64::from(n),
                },
                _ => {
                    let copies_parent = info & (0x80 | 0x40) != 0;
                    if info & 0x80 != 0 {
                        let (c, k) = r.id()?;
                        if c == client && u64::from(k) + 1 == clock {
                            chained += 1;
                        }
                    }
                    if info & 0x40 != 0 {
                        r.id()?;
                    }
                    if !copies_parent {
                        if r.var_u32()? == 1 {
                            r.string()?;
                        } else {
                            r.id()?;
                        }
                        if info & 0x20 != 0 {
                            r.string()?;
                        }
                    }
                    r.content(info)?
                }
            };
            clock += len;
            if clock > u64::from(u32::MAX) {
                return Err("clock past 2^32");
            }
        }
    }
    // The delete set.
    seen.clear();
    for _ in 0..r.count()? {
        if !seen.insert(r.client()?) {
            return Err("a client twice in the delete set");
        }
        for _ in 0..r.count()? {
            let start = u64::from(r.var_u32()?);
            let len = u64::from(r.var_u32()?);
            if len == 0 {
                return Err("an empty deleted range");
            }
            if start + len > u64::from(u32::MAX) {
                return Err("delete range past 2^32");
            }
        }
    }
    if r.left() != 0 {
        return Err("bytes after the update");
    }
    Ok(chained)
}

/// Checks a state vector: `varuint n`, then `n` pairs of client id and clock.
pub(crate) fn state_vector_v1(sv: &[u8]) -> Result<(), Invalid> {
    let mut r = Reader { buf: sv, at: 0 };
    for _ in 0..r.count()? {
        r.client()?;
        r.var_u32()?;
    }
    if r.left() != 0 {
        return Err("bytes after the state vector");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use yrs::updates::encoder::Encode;
    use yrs::{Array, Doc, Map, ReadTxn, StateVector, Text, Transact, WriteTxn};

    /// A document with some of everything (text with deletions and formatting, maps,
    /// arrays of nested values, binary).
    fn sample(seed: u64, ops: &[(u8, u16)]) -> Doc {
        let doc = Doc::with_client_id(seed % (1 << 40) + 1);
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("t");
            let map = txn.get_or_insert_map("m");
            let arr = txn.get_or_insert_array("a");
            for (i, (op, n)) in ops.iter().enumerate() {
                let len = text.len(&txn);
                match op % 5 {
                    0 => text.insert(&mut txn, u32::from(*n) % (len + 1), "hello world"),
                    1 if len > 0 => {
                        let at = u32::from(*n) % len;
                        text.remove_range(&mut txn, at, 1.min(len - at));
                    }
                    2 => {
                        map.insert(&mut txn, format!("k{n}"), vec![1i64, 2, i as i64]);
                    }
                    3 => {
                        arr.push_back(&mut txn, yrs::Any::from(vec![0u8, 1, 2, *op]));
                    }
                    _ => {
                        map.insert(&mut txn, "s", format!("v{n}"));
                    }
                }
            }
        }
        doc
    }

    fn whole(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    proptest! {
        #[test]
        fn real_updates_pass(seed in any::<u64>(), ops in proptest::collection::vec((any::<u8>(), any::<u16>()), 0..40)) {
            let doc = sample(seed, &ops);
            let update = whole(&doc);
            prop_assert!(update_v1(&update).is_ok());
            let sv = doc.transact().state_vector().encode_v1();
            prop_assert_eq!(state_vector_v1(&sv), Ok(()));
        }

        /// Real updates with a byte changed, inserted or cut off: the check and the
        /// service never panic, whatever they decide.
        #[test]
        fn mutated_updates_never_hurt(
            seed in any::<u64>(),
            ops in proptest::collection::vec((any::<u8>(), any::<u16>()), 1..20),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            how in 0u8..3,
        ) {
            let mut update = whole(&sample(seed, &ops));
            let i = at.index(update.len());
            match how {
                0 => update[i] = byte,
                1 => update.insert(i, byte),
                _ => update.truncate(i),
            }
            let mut st = crate::doc::Document::loading("d".into()).state.into_inner();
            let _ = st.apply(&update);
            let _ = st.diff(&update);
        }
    }
}

#[cfg(test)]
mod found {
    use super::*;

    /// Inputs the fuzzer found (`fuzz/fuzz_targets/yjs_update.rs`) that made `yrs`
    /// panic or misbehave: refused before it reads them.
    #[test]
    fn refused() {
        // Empty GC blocks: `yrs` subtracts one from their length.
        assert!(update_v1(&[1, 4, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0]).is_err());
        // An empty deleted range.
        assert!(update_v1(&[0, 1, 1, 1, 5, 0]).is_err());
        // One client twice, its ranges overlapping.
        assert!(update_v1(&[3, 1, 1, 0, 0, 3, 1, 1, 2, 0, 2, 0, 1, 0xe8, 0, 1, 0, 0]).is_err());
        assert!(update_v1(&[0, 2, 1, 1, 0, 1, 1, 1, 0, 1]).is_err());
        // A string that is not UTF-8.
        assert!(update_v1(&[1, 1, 1, 0, 4, 1, 1, 116, 2, 0xc3, 0x28, 0]).is_err());
        // The same with a good string passes.
        assert_eq!(
            update_v1(&[1, 1, 1, 0, 4, 1, 1, 116, 2, b'o', b'k', 0]),
            Ok(0)
        );
    }

    /// A well-formed update `yrs` keeps as pending and then cannot read back (it
    /// panicked at every later sync reply): refused when applied, the copy unharmed.
    #[test]
    fn unreadable_pending_refused() {
        let update: &[u8] = &[
            1, 4, 147, 0, 129, 0, 1, 0, 0, 1, 0, 1, 134, 1, 2, 0, 1, 1, 1, 2, 0, 0, 147, 0, 66, 4,
            58, 0, 1, 0, 2, 0, 1, 15, 232, 15, 11, 0,
        ];
        let mut st = crate::doc::Document::loading("d".into()).state.into_inner();
        assert_eq!(st.apply(update), Err(crate::doc::Refused::Broken));
        // The copy is spoilt: the service drops it and loads the document again without
        // the update (never stored).
    }
}
