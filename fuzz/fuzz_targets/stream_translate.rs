//! `StreamTranslator::new(from, to)` for every pair (from: selector bits 0-1, to: bits 2-3), fed
//! the body in the fuzzer's chunks, then `finish` (with an upstream error when selector bit 4 is
//! set). Properties: no panic, and what the client gets is a complete stream of its own protocol:
//! the target's decoder, run over the output, reads exactly one terminal event (stop or error)
//! and reports no malformed event.
#![no_main]

use gateway_core::translate::StreamTranslator;
use gateway_fuzz::{Input, decode_stream, is_terminal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let (from, to) = (input.dialect(), input.second_dialect());
    let Ok(mut translator) = StreamTranslator::new(from, to) else { return };
    let mut out = Vec::new();
    for chunk in input.chunks() {
        out.extend_from_slice(&translator.push(chunk));
    }
    let upstream_error = input.bit(4).then_some("upstream connection reset");
    out.extend_from_slice(&translator.finish(upstream_error));

    let decoded = decode_stream(to, &[&out]);
    let terminals = decoded.events.iter().filter(|e| is_terminal(e)).count();
    let shown = String::from_utf8_lossy(&out);
    assert!(!decoded.failed, "{from} -> {to}: the {to} decoder rejects the output:\n{shown}");
    assert_eq!(
        terminals, 1,
        "{from} -> {to}: {terminals} terminal events in the output:\n{shown}\n{:?}",
        decoded.events
    );
});
