//! Feeds arbitrary bytes to the document service as a client's Yjs update and state
//! vector (the first byte says where the one ends): checked, decoded, applied, diffed,
//! merged. Nothing may panic or abort (`yrs` reads strings unchecked: the check before it
//! is what stands between a client and undefined behaviour).
//!
//! A panic inside `yrs` on a well-formed but hostile update is caught by the service
//! (the document is reloaded from the store): the panic hook is made quiet so that only
//! what the server would not survive (an abort, undefined behaviour caught by the
//! checks, a stack overflow, running out of memory) stops the fuzzer.
#![no_main]

use libfuzzer_sys::fuzz_target;

static QUIET: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (sv, update) = rest.split_at(at);
    collab::take_update(update, sv);
});
