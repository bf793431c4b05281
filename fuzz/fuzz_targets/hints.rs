//! `ingress::parse_hints` for every dialect (selector bits 0-1), with and without a required
//! model (selector bit 2). Property: no panic.
#![no_main]

use gateway_core::ingress::parse_hints;
use gateway_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let _ = parse_hints(input.body, input.dialect(), input.bit(2));
});
