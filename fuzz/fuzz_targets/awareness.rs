//! Feeds arbitrary bytes to the awareness decoder, and what it accepts to a document's
//! awareness: never a panic; what is accepted encodes back to what decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = collab::awareness::decode(data) else {
        return;
    };
    let again = collab::awareness::encode(
        entries
            .iter()
            .map(|(c, clock, s)| (*c, *clock, s.as_deref()))
            .collect::<Vec<_>>()
            .into_iter(),
    );
    assert_eq!(collab::awareness::decode(&again).ok().as_ref(), Some(&entries));
});
