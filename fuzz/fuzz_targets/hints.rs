//! `ingress::parse_hints` for every dialect (selector bits 0-1), with and without a required
//! model (selector bit 2). Properties: no panic, and the same answer (hints or error) as the
//! `serde_json`-only reading the fast reader stands in front of.
#![no_main]

use gateway_core::ingress::{parse_hints, parse_hints_with_serde};
use gateway_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let (dialect, require_model) = (input.dialect(), input.bit(2));
    let hints = parse_hints(input.body, dialect, require_model);
    let reference = parse_hints_with_serde(input.body, dialect, require_model);
    assert_eq!(
        format!("{hints:?}"),
        format!("{reference:?}"),
        "{dialect:?}: {}",
        String::from_utf8_lossy(input.body)
    );
});
