//! Feeds arbitrary bytes to the document service as a client's Yjs update and state
//! vector (the first byte says where the one ends): checked, decoded, applied, diffed,
//! merged. Nothing may panic or abort (`yrs` reads strings unchecked: the check before it
//! is what stands between a client and undefined behaviour).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (sv, update) = rest.split_at(at);
    collab::take_update(update, sv);
});
